"""The figures as a use case: run the endpoint analysis at a cut-off, extract the figure's data, draw it."""

from functools import partial

from matplotlib.figure import Figure

from app.db.engine import Database
from app.domain.protocol import Assay, Protocol
from app.plots import data, draw
from app.services import endpoints
from app.services.errors import InvalidInput, NotFound

PLOTS = ("km", "waterfall", "primary", "consort")
FORMATS = draw.FORMATS


def plot(
    db: Database,
    protocol: Protocol,
    *,
    name: str,
    fmt: str,
    as_of: endpoints.AsOf,
    assay: str | None = None,
    analysis_set: str = "full",
) -> bytes:
    """PNG or SVG bytes of one figure; the same store and `as_of` give the same bytes."""
    if name not in PLOTS:
        raise NotFound(f"no plot {name!r}; plots are {', '.join(PLOTS)}", parameter="name")
    if fmt not in FORMATS:
        raise NotFound(f"no format {fmt!r}; formats are {', '.join(FORMATS)}", parameter="format")
    if assay is not None and assay not in {a.value for a in Assay}:
        raise InvalidInput(f"assay must be one of {', '.join(a.value for a in Assay)}", parameter="assay")
    if name == "km":
        efs = endpoints.secondary(
            db, protocol, "efs", analysis_set=analysis_set, assay=assay, as_of=as_of, explain=False
        )
        figure = data.km_figure(efs)
        return draw.render(partial(draw.draw_km, data=figure), size_in=(8, 6), fmt=fmt)
    if name == "waterfall":
        response = endpoints.mrd_response(db, protocol, analysis_set=analysis_set, as_of=as_of, explain=False)
        chosen = [Assay(assay)] if assay else list(protocol.assays)
        panels = [
            data.waterfall_panel(
                response,
                assay=a.value,
                threshold_fraction=float(protocol.assays[a].threshold_fraction),
            )
            for a in chosen
        ]
        title = (
            f"MRD change {response['pre_timepoint']} -> {response['post_timepoint']} "
            f"({response['analysis_set']['label']}, data cut-off {response['as_of']})"
        )

        def waterfall(figure: Figure) -> None:
            draw.draw_waterfall(figure, panels, title=title)

        return draw.render(waterfall, size_in=(8, 3.2 * len(panels) + 0.6), fmt=fmt)
    if name == "primary":
        answer = endpoints.primary(
            db, protocol, assay=assay or "flow", analysis_set=analysis_set, as_of=as_of, explain=False
        )
        forest = data.forest_figure(answer)
        return draw.render(
            partial(draw.draw_forest, data=forest), size_in=(8, 0.4 * len(forest.rows) + 2), fmt=fmt
        )
    consort = data.consort_figure(endpoints.consort(db, protocol, as_of=as_of, explain=False))
    return draw.render(partial(draw.draw_consort, data=consort), size_in=(10, 8), fmt=fmt)

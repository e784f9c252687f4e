"""Publication figures of the endpoint analyses (issue 9), drawn at a data cut-off as PNG or SVG."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from app.api.auth import READ_PATIENT_DATA
from app.api.deps import DatabaseDep, ProtocolDep
from app.api.routes.endpoints import AnalysisSet, AsOf
from app.api.routes.trial import ERRORS
from app.plots import figures
from app.services import endpoints

router = APIRouter(prefix="/api/v1", tags=["Plots"], dependencies=[READ_PATIENT_DATA])

IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in figures.FORMATS.values()}, "description": "The figure"}
}


@router.get(
    "/plots/{name}.{fmt}",
    summary="A figure: km (EFS), waterfall (MRD change), primary (forest), consort",
    response_class=Response,
    responses={**IMAGE, **ERRORS},
)
def plot(
    name: Annotated[str, Path(description=f"One of {', '.join(figures.PLOTS)}")],
    fmt: Annotated[str, Path(description="png or svg")],
    db: DatabaseDep,
    protocol: ProtocolDep,
    as_of: AsOf = None,
    assay: Annotated[
        str | None, Query(description="flow or ngs: waterfall (default both) and primary (default flow)")
    ] = None,
    analysis_set: AnalysisSet = "full",
) -> Response:
    image = figures.plot(
        db,
        protocol,
        name=name,
        fmt=fmt,
        as_of=endpoints.parse_as_of(as_of),
        assay=assay,
        analysis_set=analysis_set,
    )
    return Response(content=image, media_type=figures.FORMATS[fmt])

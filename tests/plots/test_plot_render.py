"""Drawing: real PNG and SVG bytes, and the same bytes for the same data."""

from collections.abc import Callable
from functools import partial
from xml.etree import ElementTree

import pytest
from matplotlib.figure import Figure

from app.plots import draw
from app.plots.data import consort_figure, forest_figure, km_figure, waterfall_panel
from tests.plots.test_plot_data import CONSORT, EFS, PRIMARY, RESPONSE

DRAWINGS: dict[str, Callable[[Figure], None]] = {
    "km": partial(draw.draw_km, data=km_figure(EFS)),
    "waterfall": partial(
        draw.draw_waterfall,
        panels=[waterfall_panel(RESPONSE, assay="flow", threshold_fraction=0.0001)],
        title="waterfall",
    ),
    "primary": partial(draw.draw_forest, data=forest_figure(PRIMARY)),
    "consort": partial(draw.draw_consort, data=consort_figure(CONSORT)),
}


@pytest.mark.parametrize("name", DRAWINGS)
def test_png_is_a_png(name: str) -> None:
    image = draw.render(DRAWINGS[name], size_in=(6, 4), fmt="png")
    assert image.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("name", DRAWINGS)
def test_svg_parses_as_xml_and_is_the_same_twice(name: str) -> None:
    first = draw.render(DRAWINGS[name], size_in=(6, 4), fmt="svg")
    root = ElementTree.fromstring(first)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert b"<dc:date>" not in first
    assert draw.render(DRAWINGS[name], size_in=(6, 4), fmt="svg") == first


def test_png_is_the_same_twice() -> None:
    assert draw.render(DRAWINGS["km"], size_in=(6, 4), fmt="png") == draw.render(
        DRAWINGS["km"], size_in=(6, 4), fmt="png"
    )


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="png, svg"):
        draw.render(DRAWINGS["km"], size_in=(6, 4), fmt="pdf")


def test_the_km_band_stops_where_survival_reaches_zero_closing_its_last_step() -> None:
    nan = float("nan")
    x, lower, upper = draw._band((0.0, 0.5, 2.0), (1.0, 0.1, nan), (1.0, 0.9, nan))
    assert (x, lower, upper) == ([0.0, 0.5, 2.0], [1.0, 0.1, 0.1], [1.0, 0.9, 0.9])

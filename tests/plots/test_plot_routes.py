"""The figures over HTTP, drawn from a small cohort loaded through /fhir."""

from xml.etree import ElementTree

import httpx
import pytest

from tests.api.test_endpoints import cohort  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio


@pytest.mark.usefixtures("cohort")
@pytest.mark.parametrize("name", ["km", "waterfall", "primary", "consort"])
async def test_each_plot_is_served_as_png_and_svg(client: httpx.AsyncClient, name: str) -> None:
    png = await client.get(f"/api/v1/plots/{name}.png", params={"as_of": "2026-12-31"})
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    svg = await client.get(f"/api/v1/plots/{name}.svg", params={"as_of": "2026-12-31"})
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    ElementTree.fromstring(svg.content)


@pytest.mark.usefixtures("cohort")
async def test_the_same_cut_off_gives_the_same_svg(client: httpx.AsyncClient) -> None:
    params = {"as_of": "2026-12-31", "assay": "ngs"}
    first = await client.get("/api/v1/plots/primary.svg", params=params)
    again = await client.get("/api/v1/plots/primary.svg", params=params)
    assert first.status_code == 200
    assert first.content == again.content


@pytest.mark.parametrize("path", ["/api/v1/plots/histogram.png", "/api/v1/plots/km.pdf"])
async def test_an_unknown_plot_or_format_is_a_404_problem(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("params", [{"as_of": "yesterday"}, {"assay": "pcr"}, {"analysis_set": "everyone"}])
async def test_bad_parameters_are_a_422_problem(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    answer = await client.get("/api/v1/plots/waterfall.png", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_plots_need_a_token(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://mrdhub.test") as anonymous:
        answer = await anonymous.get("/api/v1/plots/km.png")
    assert answer.status_code == 401
    assert "WWW-Authenticate" in answer.headers

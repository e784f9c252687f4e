"""The dashboard through the real app over httpx: who may open it, and that it shows what the API shows."""

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.cli import load_demo
from app.main import create_app
from app.services.endpoints import resolve_as_of
from app.settings import Settings
from tests.conftest import TokenFactory

DEMO = Path(__file__).resolve().parents[2] / "demo" / "bundles"
BASE = "http://mrdhub.test"
pytestmark = pytest.mark.anyio
PAGES = (
    "/dashboard",
    "/dashboard/figures",
    "/dashboard/screening",
    "/dashboard/quality",
    "/dashboard/patients",
)


@pytest.fixture
def demo(app: object, settings: Settings) -> str:
    """The demo cohort loaded through the LIS ingest path; answers the cut-off to compare at."""
    assert load_demo(settings, DEMO) == 0
    return resolve_as_of(app.state.protocol, None).isoformat()  # type: ignore[attr-defined]


@pytest.fixture
async def browser(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no credentials of its own, keeping cookies like a browser."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def sign_in(browser: httpx.AsyncClient, token: str, next_page: str = "/dashboard") -> httpx.Response:
    return await browser.post(
        "/dashboard/login",
        content=f"token={token}&next={next_page}",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": BASE},
    )


async def test_a_page_without_credentials_redirects_to_the_login(browser: httpx.AsyncClient) -> None:
    answer = await browser.get("/dashboard/patients", params={"as_of": "2026-01-01"})
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        "/dashboard/login?next=%2Fdashboard%2Fpatients%3Fas_of%3D2026-01-01&reason=missing"
    )
    form = await browser.get(answer.headers["location"])
    assert form.status_code == 200
    assert '<label for="token">Access token</label>' in form.text
    assert 'value="/dashboard/patients?as_of=2026-01-01"' in form.text


async def test_signing_in_sets_a_strict_httponly_cookie_for_the_dashboard_only(
    browser: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    token = await token_for(scope="system/*.rs")
    answer = await sign_in(browser, token, "/dashboard/quality")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/quality"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"mrdhub_dashboard={token};")
    for attribute in ("HttpOnly", "Path=/dashboard", "SameSite=strict"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 250 < max_age <= 300  # the token's own lifetime
    page = await browser.get("/dashboard/quality")
    assert page.status_code == 200
    assert "Signed in as <strong>trial-office</strong>" in page.text


async def test_over_https_the_cookie_is_secure(app: object, token_for: TokenFactory) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://mrdhub.test") as c:
        answer = await c.post(
            "/dashboard/login",
            content=f"token={await token_for()}",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


def expired_token(app: Any) -> str:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    claims = {
        "iss": app.state.tokens.issuer,
        "aud": app.state.tokens.issuer,
        "sub": "trial-office",
        "iat": past,
        "exp": past + dt.timedelta(minutes=5),
        "scope": "system/*.rs",
        "site": None,
    }
    return jwt.encode(claims, app.state.tokens.key, algorithm="ES384")


@pytest.mark.parametrize(
    ("kind", "reason"), [("garbage", "invalid"), ("expired", "expired"), ("site", "insufficient")]
)
async def test_a_bad_expired_or_too_narrow_cookie_goes_back_to_the_login(
    app: object, browser: httpx.AsyncClient, token_for: TokenFactory, kind: str, reason: str
) -> None:
    token = {
        "garbage": "not-a-token",
        "expired": expired_token(app),
        "site": await token_for("lis-hefei-apch"),
    }[kind]
    browser.cookies.set("mrdhub_dashboard", token, domain="mrdhub.test", path="/dashboard")
    answer = await browser.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"].endswith(f"&reason={reason}")
    assert 'mrdhub_dashboard=""' in answer.headers["set-cookie"]  # the stale cookie is cleared


@pytest.mark.parametrize(
    ("client_id", "scope", "status"),
    [
        ("trial-office", "system/Observation.c system/Patient.c", 403),  # writes only
        ("trial-office", "system/Patient.rs system/Observation.rs", 403),  # no screening log (Basic)
        ("lis-hefei-apch", "system/*.cruds", 403),  # one site's client
    ],
)
async def test_a_token_that_cannot_read_every_site_is_refused_at_login(
    browser: httpx.AsyncClient, token_for: TokenFactory, client_id: str, scope: str, status: int
) -> None:
    answer = await sign_in(browser, await token_for(client_id, scope))
    assert answer.status_code == status
    assert "set-cookie" not in answer.headers
    assert "needs a trial-office client" in answer.text


async def test_a_garbage_or_empty_token_is_refused_at_login(browser: httpx.AsyncClient) -> None:
    assert (await sign_in(browser, "nonsense")).status_code == 401
    assert (await sign_in(browser, "")).status_code == 401


async def test_login_never_redirects_off_the_dashboard(
    browser: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    for target in (
        "https://evil.example/",
        "//evil.example/dashboard",
        "/api/v1/consort",
        "/dashboard/login",
    ):
        answer = await sign_in(browser, await token_for(), target)
        assert answer.headers["location"] == "/dashboard", target


async def test_a_login_posted_from_another_site_is_refused(
    browser: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    answer = await browser.post(
        "/dashboard/login",
        content=f"token={await token_for()}",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


async def test_a_bearer_header_opens_pages_without_a_cookie(
    browser: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    answer = await browser.get(
        "/dashboard/patients", headers={"Authorization": f"Bearer {await token_for()}"}
    )
    assert answer.status_code == 200


async def test_logging_out_clears_the_cookie(browser: httpx.AsyncClient, token_for: TokenFactory) -> None:
    await sign_in(browser, await token_for())
    answer = await browser.post("/dashboard/logout", headers={"origin": BASE})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/login?reason=logged-out"
    assert 'mrdhub_dashboard=""' in answer.headers["set-cookie"]
    assert (await browser.get("/dashboard")).status_code == 303


async def test_every_page_renders_the_demo_with_a_strict_content_security_policy(
    demo: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    patients = (await client.get("/fhir/Patient", params={"_count": "1"})).json()["entry"]
    patient_page = f"/dashboard/patients/{patients[0]['resource']['id']}"
    for path in (*PAGES, patient_page):
        answer = await browser.get(path, params={"as_of": demo} if path != patient_page else None)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert answer.headers["content-type"].startswith("text/html")
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["cache-control"] == "no-store"
        assert "<script" not in answer.text and " style=" not in answer.text
        assert '<a class="skip-link" href="#main">' in answer.text
        assert all('alt="' in tag for tag in re.findall(r"<img [^>]*>", answer.text))
        assert all("<caption" in table for table in re.findall(r"<table.*?</table>", answer.text, re.S))
    css = await browser.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and ":focus-visible" in css.text


async def test_the_overview_numbers_are_the_apis(
    demo: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    page = (await browser.get("/dashboard", params={"as_of": demo})).text
    for assay in ("flow", "ngs"):
        api = (await client.get("/api/v1/endpoints/primary", params={"assay": assay, "as_of": demo})).json()
        overall = api["overall"]
        low, high = overall["ci95"]
        table = page[page.index(f'<table id="primary-{assay}"') :]
        assert (
            f'data-row="overall" data-n="{overall["n"]}" data-n-negative="{overall["n_negative"]}" '
            f'data-ci-low="{low}" data-ci-high="{high}"'
        ) in table[: table.index("</table>")]
        for site, numbers in api["by_site"].items():
            assert (
                f'<th scope="row">Site: {site}</th>\n  <td class="num"><span class="count">'
                f"{numbers['n_negative']}/{numbers['n']}</span>" in table
            )
    consort = (await client.get("/api/v1/consort", params={"as_of": demo})).json()
    for step in consort["steps"]:
        label = step["step"].replace("-", " ")
        assert (
            f'<tr data-step="{step["step"]}"><th scope="row">{label}</th><td class="num">{step["n"]}</td>'
        ) in page
    enrolled = next(s["n"] for s in consort["steps"] if s["step"] == "enrolled")
    assert f'data-metric="enrolled">{enrolled} ' in page
    # The enrolment table ends at the same total.
    totals = re.findall(r'<td class="num">(\d+)</td></tr>', page[page.index('id="enrolment"') :])
    assert int(totals[-1]) == enrolled


async def test_the_patient_page_shows_every_result_of_the_api_timeline(
    demo: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    listing = (await browser.get("/dashboard/patients")).text
    ids = re.findall(r'href="/dashboard/patients/([0-9a-f]+)"', listing)
    assert len(set(ids)) == len((await client.get("/fhir/Patient")).json()["entry"])
    timeline = (await client.get(f"/api/v1/patients/{ids[0]}/timeline")).json()
    page = (await browser.get(f"/dashboard/patients/{ids[0]}")).text
    for result in timeline["results"]:
        assert f'title="{result["observation"]}"' in page
    eligibility = (
        await client.get(f"/api/v1/patients/{ids[0]}/eligibility", params={"as_of": "2025-06-01"})
    ).json()
    page = (await browser.get(f"/dashboard/patients/{ids[0]}", params={"eligible_on": "2025-06-01"})).text
    assert f'Eligibility on {eligibility["as_of"]}: <span class="badge {eligibility["overall"]}">' in page
    for criterion in eligibility["criteria"]:
        row = page[page.index(f'<tr data-criterion="{criterion["id"]}">') :]
        assert criterion["status"].replace("_", " ") + "</span>" in row[: row.index("</tr>")]
    bad_day = await browser.get(f"/dashboard/patients/{ids[0]}", params={"eligible_on": "soon"})
    assert bad_day.status_code == 422
    missing = await browser.get("/dashboard/patients/no-such-patient")
    assert missing.status_code == 404
    assert "Cannot show this page" in missing.text


async def test_figures_load_with_the_cookie_and_are_the_apis_bytes(
    demo: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    for name in ("km", "waterfall"):
        mine = await browser.get(f"/dashboard/plots/{name}.svg", params={"as_of": demo})
        assert mine.status_code == 200
        assert mine.headers["content-type"] == "image/svg+xml"
        api = await client.get(f"/api/v1/plots/{name}.svg", params={"as_of": demo})
        assert mine.content == api.content


async def test_the_screening_page_lists_the_api_screening_log(
    demo: str, browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    listing = (
        await browser.get("/dashboard/patients", headers={"Authorization": f"Bearer {await token_for()}"})
    ).text
    candidate = re.search(
        r'href="/dashboard/patients/([0-9a-f]+)">[^<]*</a></th><td>[^<]*</td><td>not enrolled', listing
    )
    assert candidate is not None
    decided = await client.post(
        "/api/v1/screening",
        json={
            "patient": candidate.group(1),
            "as_of": "2025-06-01",
            "decision": "not-enrol",
            "reason": "parents declined",
        },
    )
    assert decided.status_code == 200, decided.text
    await sign_in(browser, await token_for())
    page = (await browser.get("/dashboard/screening")).text
    log = (await client.get("/api/v1/screening-log")).json()["decisions"]
    assert len(log) == 1
    assert f'title="{log[0]["record"]}"' in page
    assert "parents declined" in page and f'<span class="badge {log[0]["overall"]}">' in page
    before = (await browser.get("/dashboard/screening", params={"as_of": "2025-05-31"})).text
    assert "No screening decisions recorded yet" in before


async def test_an_as_of_that_is_not_a_date_is_explained_on_the_page(
    browser: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    answer = await browser.get("/dashboard", params={"as_of": "last tuesday"})
    assert answer.status_code == 422
    assert "is not a date or an instant with a time zone" in answer.text


async def test_dashboard_reads_are_audited_with_the_client(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    await sign_in(browser, await token_for())
    assert (await browser.get("/dashboard/quality")).status_code == 200
    assert (await browser.get("/dashboard/static/dashboard.css")).status_code == 200
    answer = await client.get("/fhir/AuditEvent", params={"_count": "500"})
    events = [e["resource"] for e in answer.json()["entry"] if e["search"]["mode"] == "match"]
    described = {e["outcomeDesc"]: e for e in events}
    read = described["GET /dashboard/quality -> 200"]
    assert read["agent"][0]["who"]["identifier"]["value"] == "trial-office"
    assert not any("/dashboard/static" in d for d in described)


async def test_the_login_token_never_reaches_the_log(
    browser: httpx.AsyncClient, token_for: TokenFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    token = await token_for()
    capfd.readouterr()
    await sign_in(browser, token)
    await browser.get("/dashboard")
    out, err = capfd.readouterr()
    assert token not in out + err
    assert token.split(".")[2] not in out + err


async def test_with_authorisation_off_the_dashboard_opens_directly(settings: Settings) -> None:
    local = create_app(settings.model_copy(update={"auth_enabled": False, "environment": "development"}))
    transport = httpx.ASGITransport(app=local)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        for path in PAGES:  # an empty store renders too
            answer = await c.get(path)
            assert answer.status_code == 200, path
            assert "Authorisation is off" in answer.text
        login = await c.get("/dashboard/login")
        assert login.status_code == 303 and login.headers["location"] == "/dashboard"
    local.state.db.dispose()


def test_dashboard_routes_are_not_in_the_openapi_document(app: Any) -> None:
    assert not [path for path in app.openapi()["paths"] if path.startswith("/dashboard")]

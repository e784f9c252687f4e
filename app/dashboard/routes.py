"""`/dashboard`: the trial office's pages. Thin like the API's routes: parse, call the view, render."""

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from app.api.deps import DatabaseDep, ProtocolDep
from app.dashboard import auth, views
from app.dashboard.format import FILTERS
from app.domain.access import Principal
from app.plots import figures
from app.services import endpoints
from app.services.errors import InvalidInput, ServiceError

HERE = Path(__file__).parent
PREFIX = auth.PREFIX
# No inline script or style; images (the figures) from here only; forms post here only; never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# A figure opened on its own: matplotlib's SVG styles itself inline, and it has nothing else to load.
FIGURE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (
    ("overview", "", "Overview"),
    ("figures", "/figures", "Figures"),
    ("screening", "/screening", "Screening log"),
    ("quality", "/quality", "Data quality"),
    ("patients", "/patients", "Patients"),
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PrincipalDep = Annotated[Principal, Depends(auth.dashboard_principal)]
AsOfText = Annotated[str | None, Query(max_length=40)]
SetName = Annotated[str, Query(max_length=40)]


def install(app: FastAPI) -> None:
    app.state.dashboard_templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.state.dashboard_templates.filters.update(FILTERS)
    app.add_exception_handler(auth.LoginRequired, _login_required)  # type: ignore[arg-type]
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.include_router(router)


async def _login_required(request: Request, exc: auth.LoginRequired) -> Response:
    return auth.login_redirect(request, exc)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.dashboard_templates
    principal: Principal | None = getattr(request.state, "principal", None)
    base = request.scope.get("root_path", "") + PREFIX
    html = env.get_template(template).render(
        base=base,
        nav=NAV,
        auth_enabled=request.app.state.settings.auth_enabled,
        principal=principal.client_id if principal else None,
        protocol_version=request.app.state.protocol.version,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def view_page(
    request: Request,
    template: str,
    build: Callable[[endpoints.AsOf], dict[str, Any]],
    *,
    active: str,
    as_of: str | None,
    analysis_set: str = "full",
) -> HTMLResponse:
    """A page at a cut-off: a bad `as_of` or set is shown on the page with the service's own message."""
    as_of = (as_of or "").strip() or None
    query = {k: v for k, v in {"as_of": as_of, "analysis_set": analysis_set}.items() if v and v != "full"}
    context = {
        "active": active,
        "as_of_text": as_of or "",
        "analysis_set": analysis_set,
        "analysis_sets": request.app.state.protocol.analysis_sets,
        "query": f"?{urlencode(query)}" if query else "",
    }
    try:
        data = build(endpoints.parse_as_of(as_of))
    except ServiceError as exc:
        return render(request, "error.html", status=exc.status, error=exc.detail, **context)
    return render(request, template, **context, **data)


@router.get("", response_class=HTMLResponse)
def overview(
    request: Request,
    db: DatabaseDep,
    protocol: ProtocolDep,
    principal: PrincipalDep,
    as_of: AsOfText = None,
    analysis_set: SetName = "full",
) -> HTMLResponse:
    return view_page(
        request,
        "overview.html",
        lambda cut: views.overview(db, protocol, as_of=cut, analysis_set=analysis_set),
        active="overview",
        as_of=as_of,
        analysis_set=analysis_set,
    )


@router.get("/figures", response_class=HTMLResponse)
def figures_page(
    request: Request,
    db: DatabaseDep,
    protocol: ProtocolDep,
    principal: PrincipalDep,
    as_of: AsOfText = None,
    analysis_set: SetName = "full",
) -> HTMLResponse:
    return view_page(
        request,
        "figures.html",
        lambda cut: views.figures(db, protocol, as_of=cut, analysis_set=analysis_set),
        active="figures",
        as_of=as_of,
        analysis_set=analysis_set,
    )


@router.get("/screening", response_class=HTMLResponse)
def screening_page(
    request: Request, db: DatabaseDep, protocol: ProtocolDep, principal: PrincipalDep, as_of: AsOfText = None
) -> HTMLResponse:
    def build(cut: endpoints.AsOf) -> dict[str, Any]:
        until = endpoints.resolve_as_of(protocol, cut) if cut else None
        return {"decisions": views.screening_log(db, protocol, until=until)}

    return view_page(request, "screening.html", build, active="screening", as_of=as_of)


@router.get("/quality", response_class=HTMLResponse)
def quality_page(
    request: Request, db: DatabaseDep, protocol: ProtocolDep, principal: PrincipalDep, as_of: AsOfText = None
) -> HTMLResponse:
    return view_page(
        request,
        "quality.html",
        lambda cut: views.data_quality(db, protocol, as_of=cut),
        active="quality",
        as_of=as_of,
    )


@router.get("/patients", response_class=HTMLResponse)
def patients_page(
    request: Request, db: DatabaseDep, protocol: ProtocolDep, principal: PrincipalDep, as_of: AsOfText = None
) -> HTMLResponse:
    return view_page(
        request,
        "patients.html",
        lambda cut: {"patients": views.patients(db, protocol, as_of=cut)},
        active="patients",
        as_of=as_of,
    )


@router.get("/patients/{key}", response_class=HTMLResponse)
def patient_page(
    request: Request,
    key: str,
    db: DatabaseDep,
    protocol: ProtocolDep,
    principal: PrincipalDep,
    eligible_on: AsOfText = None,
) -> HTMLResponse:
    """The patient's current timeline (as GET /api/v1/patients/{key}/timeline) and eligibility on a day."""

    def build(_: endpoints.AsOf) -> dict[str, Any]:
        try:
            day = dt.date.fromisoformat(eligible_on) if eligible_on else None
        except ValueError:
            raise InvalidInput(
                f"{eligible_on!r} is not a date (YYYY-MM-DD)", parameter="eligible_on"
            ) from None
        return {**views.patient(db, protocol, key, eligible_on=day), "eligible_on": eligible_on or ""}

    return view_page(request, "patient.html", build, active="patients", as_of=None)


@router.get("/plots/{name}.{fmt}")
def plot(
    name: str,
    fmt: str,
    db: DatabaseDep,
    protocol: ProtocolDep,
    principal: PrincipalDep,
    as_of: AsOfText = None,
    assay: Annotated[str | None, Query(max_length=10)] = None,
    analysis_set: SetName = "full",
) -> Response:
    """The API's figures (`/api/v1/plots`), reachable with the dashboard's cookie."""
    image = figures.plot(
        db,
        protocol,
        name=name,
        fmt=fmt,
        as_of=endpoints.parse_as_of((as_of or "").strip() or None),
        assay=assay,
        analysis_set=analysis_set,
    )
    headers = {**HEADERS, "Content-Security-Policy": FIGURE_CSP}
    return Response(content=image, media_type=figures.FORMATS[fmt], headers=headers)


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    reason: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    if not request.app.state.settings.auth_enabled:
        return RedirectResponse(auth.safe_next(next), status_code=303)
    return render(request, "login.html", active="login", next=auth.safe_next(next), reason=reason, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    target = auth.safe_next(form.get("next"))
    if not auth.same_origin(request):
        return render(
            request, "login.html", 403, active="login", next=target, reason=None, error="cross-site"
        )
    token = form.get("token", "").strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    try:
        principal = await run_in_threadpool(auth.verify, request, token) if token else None
    except auth.LoginRequired as exc:
        status = 403 if exc.reason == "insufficient" else 401
        return render(
            request, "login.html", status, active="login", next=target, reason=None, error=exc.reason
        )
    if principal is None:
        return render(request, "login.html", 401, active="login", next=target, reason=None, error="missing")
    request.state.principal = principal  # the audit records who logged in
    response = RedirectResponse(target, status_code=303)
    auth.set_cookie(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    if not auth.same_origin(request):
        return Response(status_code=403)
    response = RedirectResponse(f"{PREFIX}/login?reason=logged-out", status_code=303)
    auth.clear_cookie(response)
    return response

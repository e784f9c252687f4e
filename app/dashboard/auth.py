"""Who may open the dashboard: the same access tokens as the API, carried by a cookie after a login.

A person pastes an access token from `POST /auth/token` into the login form; the token is verified by the
same TokenService as every API request and kept in an HttpOnly, SameSite=Strict cookie scoped to
/dashboard, which expires with the token (5 minutes). An `Authorization: Bearer` header works as well.
The dashboard shows the whole trial, so it needs a principal that reads the trial views at every site.
"""

import datetime as dt
from urllib.parse import urlencode, urlsplit

import jwt
from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from app.api.auth import DEMO
from app.db.sites import current_site
from app.domain.access import Permission, Principal
from app.services.auth import AuthError, TokenService

COOKIE = "mrdhub_dashboard"
PREFIX = "/dashboard"
# The trial views (README "Scopes") plus the screening log, which is stored as Basic resources.
TRIAL_VIEWS = (("Patient", Permission.READ), ("Observation", Permission.READ), ("Basic", Permission.READ))


class LoginRequired(Exception):
    """No usable credential on a dashboard request: answered by a redirect to the login page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refusal(principal: Principal) -> str | None:
    """Why this principal may not open the dashboard, or None when it may."""
    if not principal.all_sites:
        return "the dashboard shows every site: a site's client cannot open it"
    missing = [f"system/{t}.{p.value}" for t, p in TRIAL_VIEWS if not principal.may(t, p)]
    return f"the token lacks {', '.join(missing)}" if missing else None


def verify(request: Request, token: str) -> Principal:
    """The principal behind a token; LoginRequired when it is invalid, expired or not enough."""
    tokens: TokenService = request.app.state.tokens
    try:
        principal = tokens.verify(token)
    except AuthError as exc:
        raise LoginRequired("expired" if "expired" in exc.description.lower() else "invalid") from None
    if refusal(principal):
        raise LoginRequired("insufficient")
    return principal


async def dashboard_principal(request: Request) -> Principal:
    """A page's principal; async so that the site scope it sets reaches the route's thread."""
    if not request.app.state.settings.auth_enabled:
        principal = DEMO
    else:
        scheme, _, header_token = request.headers.get("authorization", "").partition(" ")
        token = header_token.strip() if scheme.lower() == "bearer" else ""
        token = token or request.cookies.get(COOKIE, "")
        if not token:
            raise LoginRequired("missing")
        principal = verify(request, token)
    request.state.principal = principal
    current_site.set(principal.site)
    return principal


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = urlencode({"next": target, "reason": exc.reason})
    response = RedirectResponse(f"{PREFIX}/login?{query}", status_code=303)
    if exc.reason != "missing":
        clear_cookie(response)
    return response


def safe_next(target: str | None) -> str:
    """Only a dashboard path: a login must not become an open redirect."""
    if not target or not target.startswith(f"{PREFIX}") or target.startswith("//") or "\\" in target:
        return PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith(f"{PREFIX}/login"):
        return PREFIX
    return target


def same_origin(request: Request) -> bool:
    """A form POST from another site is refused (the cookie is SameSite=Strict; this covers the login)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin in (None, "null") or urlsplit(origin).netloc == request.headers.get("host")


def set_cookie(request: Request, response: Response, token: str) -> None:
    expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    now = dt.datetime.now(dt.UTC).timestamp()
    max_age = max(int(expires - now), 0) if isinstance(expires, int | float) else 300
    public: str | None = request.app.state.settings.public_base_url
    secure = request.url.scheme == "https" or bool(public and public.startswith("https://"))
    response.set_cookie(
        COOKIE, token, max_age=max_age, path=PREFIX, secure=secure, httponly=True, samesite="strict"
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")

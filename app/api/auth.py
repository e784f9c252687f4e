"""Authorisation at the edge: SMART discovery, the token endpoint, the bearer-token check of each route."""

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.db.sites import current_site
from app.domain.access import Permission, Principal, parse_scopes
from app.services.auth import AuthError, TokenService
from app.services.errors import Forbidden, Unauthorized

router = APIRouter(tags=["Authorisation"])
DEMO = Principal("local-demo (authorisation off)", parse_scopes("system/*.cruds"), None)


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")


async def current_principal(request: Request) -> Principal:
    """The client behind the request; async so that the site scope it sets reaches the route's thread."""
    if not request.app.state.settings.auth_enabled:
        principal = DEMO
    else:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("A bearer access token is required (see /.well-known/smart-configuration)")
        tokens: TokenService = request.app.state.tokens
        try:
            principal = tokens.verify(token.strip())
        except AuthError as exc:
            raise Unauthorized(f"Invalid access token: {exc.description}") from None
    request.state.principal = principal
    current_site.set(principal.site)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(principal: Principal, resource_type: str, permission: Permission) -> None:
    if not principal.may(resource_type, permission):
        raise Forbidden(f"Scope system/{resource_type}.{permission.value} is required")


def requires(*needs: tuple[str, Permission]) -> Any:
    """A route dependency: the token must carry every listed permission."""

    async def check(principal: PrincipalDep) -> Principal:
        for resource_type, permission in needs:
            require(principal, resource_type, permission)
        return principal

    return Depends(check)


READ_PATIENT_DATA = requires(("Patient", Permission.READ), ("Observation", Permission.READ))


@router.get("/.well-known/smart-configuration", summary="SMART configuration (Backend Services)")
def smart_configuration(request: Request) -> dict[str, Any]:
    base = base_url(request)
    return {
        "issuer": base,
        "token_endpoint": f"{base}/auth/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/Observation.c", "system/Patient.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    }


TOKEN_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type", "client_assertion_type", "client_assertion"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_assertion_type": {"type": "string"},
                        "client_assertion": {"type": "string"},
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/auth/token",
    summary="Access token for a client_credentials grant with a private_key_jwt assertion",
    openapi_extra=TOKEN_FORM,
)
async def token(request: Request) -> JSONResponse:
    tokens: TokenService = request.app.state.tokens
    # The form is four fields (RFC 6749 4.4): parsed here rather than pulling in a multipart parser.
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    try:
        answer = await run_in_threadpool(
            tokens.issue, request.app.state.db, form=form, token_url=f"{base_url(request)}/auth/token"
        )
    except AuthError as exc:
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

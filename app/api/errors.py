"""Where typed errors become HTTP answers: OperationOutcome on /fhir, problem details on /api."""

import uuid

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.responses import fhir_response
from app.db.engine import DeadlineExceeded, is_unavailable
from app.fhir.outcome import FhirError, Issue, operation_outcome
from app.observability import request_id
from app.services.errors import ServiceError

log = structlog.stdlib.get_logger("mrdhub")


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
    app.add_exception_handler(DeadlineExceeded, _deadline_exceeded)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


def _is_fhir(request: Request) -> bool:
    return _is_fhir_path(request.url.path)


def _is_fhir_path(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


async def _fhir_error(request: Request, exc: FhirError) -> Response:
    return fhir_response(operation_outcome(exc.issues), status=exc.status, headers=exc.headers)


ISSUE_CODES = {401: "login", 403: "forbidden", 404: "not-found"}


async def _service_error(request: Request, exc: ServiceError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="mrdhub"'} if exc.status == 401 else {}
    if _is_fhir(request):
        code = ISSUE_CODES.get(exc.status, "invalid")
        where = (exc.parameter,) if exc.parameter else ()
        outcome = operation_outcome([Issue("error", code, exc.detail, where)])
        return fhir_response(outcome, status=exc.status, headers=headers)
    body_extra: dict[str, object] = {"parameter": exc.parameter} if exc.parameter else {}
    return problem(exc.status, exc.title, exc.detail, headers=headers, extra=body_extra)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    issues = [
        Issue("error", "invalid", str(e.get("msg")), (".".join(str(p) for p in e.get("loc", ())),))
        for e in exc.errors()
    ]
    if _is_fhir(request):
        return fhir_response(operation_outcome(issues), status=400)
    return problem(422, "Invalid request", "; ".join(f"{i.expression[0]}: {i.diagnostics}" for i in issues))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if _is_fhir(request):
        code = (
            "not-found"
            if exc.status_code == 404
            else "not-supported"
            if exc.status_code == 405
            else "processing"
        )
        message = (
            f"No such FHIR route: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return fhir_response(operation_outcome([Issue("error", code, message)]), status=exc.status_code)
    return problem(exc.status_code, str(exc.detail), None, headers=dict(exc.headers or {}))


async def _database_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, DataError):
        return _unstorable(request, exc)
    if not is_unavailable(exc):
        return await _unexpected(request, exc)
    log.warning("database_unavailable", route=_route(request), exc_info=exc)
    return refusal(
        request.url.path,
        "The database is unavailable; retry later.",
        code="transient",
        retry_after_s=request.app.state.settings.retry_after_s,
    )


def _unstorable(request: Request, exc: DataError) -> Response:
    """A value the database refused (SQLSTATE class 22: too long for its column, a NUL, out of range).

    A safety net: values are meant to be checked before they reach the database, naming their element;
    this one was not, so the log gets an incident id to find it by.
    """
    incident = uuid.uuid4().hex[:12]
    log.warning("unstorable_value", incident=incident, route=_route(request), exc_info=exc)
    message = (
        "A value cannot be used: too long, out of range, or holding characters the database cannot keep "
        f"(incident {incident})"
    )
    if _is_fhir(request):
        return fhir_response(operation_outcome([Issue("error", "value", message)]), status=400)
    return problem(400, "Value cannot be stored", message)


async def _deadline_exceeded(request: Request, exc: DeadlineExceeded) -> Response:
    # Usually RequestTimeout has answered already and this answer is dropped; the work hit the deadline first.
    return refusal(
        request.url.path,
        "The request did not complete in time; unfinished work was rolled back. Retry later.",
        code="timeout",
        retry_after_s=request.app.state.settings.retry_after_s,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    incident = uuid.uuid4().hex[:12]
    # The exception's type and frames go to the log under the incident id, never into the response body.
    log.error("unhandled_error", incident=incident, route=_route(request), exc_info=exc)
    message = f"Internal error; quote incident {incident} to the operators"
    rid = request_id(request)
    headers = {"X-Request-ID": rid} if rid else None
    if _is_fhir(request):
        outcome = operation_outcome([Issue("fatal", "exception", message)])
        return fhir_response(outcome, status=500, headers=headers)
    return problem(500, "Internal error", message, headers=headers)


def _route(request: Request) -> str:
    """The route's template (`/fhir/{resource_type}/{logical_id}`): a raw path may hold a client-chosen id."""
    return str(getattr(request.scope.get("route"), "path", "<unmatched>"))


TITLES = {408: "Request timeout", 413: "Content too large", 503: "Service unavailable"}


def refusal(
    path: str, diagnostics: str, *, code: str, status: int = 503, retry_after_s: int | None = None
) -> Response:
    """A request refused before or without its handler (a limit, a timeout, the database away): an
    OperationOutcome on /fhir, problem details elsewhere; Retry-After when a retry may succeed."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    if _is_fhir_path(path):
        outcome = operation_outcome([Issue("error", code, diagnostics)])
        return fhir_response(outcome, status=status, headers=headers)
    return problem(status, TITLES.get(status, "Request refused"), diagnostics, headers=headers)


def problem(
    status: int,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> Response:
    """RFC 9457 problem details."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)

"""Where typed errors become HTTP answers: OperationOutcome on /fhir, problem details on /api."""

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.responses import fhir_response
from app.fhir.outcome import FhirError, Issue, operation_outcome
from app.services.errors import ServiceError

log = logging.getLogger("mrdhub")


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


def _is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


async def _fhir_error(request: Request, exc: FhirError) -> Response:
    return fhir_response(operation_outcome(exc.issues), status=exc.status, headers=exc.headers)


async def _service_error(request: Request, exc: ServiceError) -> Response:
    if _is_fhir(request):
        code = "not-found" if exc.status == 404 else "invalid"
        where = (exc.parameter,) if exc.parameter else ()
        return fhir_response(operation_outcome([Issue("error", code, exc.detail, where)]), status=exc.status)
    body_extra: dict[str, object] = {"parameter": exc.parameter} if exc.parameter else {}
    return problem(exc.status, exc.title, exc.detail, extra=body_extra)


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


async def _unexpected(request: Request, exc: Exception) -> Response:
    incident = uuid.uuid4().hex[:12]
    # The traceback goes to the log under the incident id, never into the response body.
    log.error("unhandled error incident=%s path=%s", incident, request.url.path, exc_info=exc)
    message = f"Internal error; quote incident {incident} to the operators"
    if _is_fhir(request):
        return fhir_response(operation_outcome([Issue("fatal", "exception", message)]), status=500)
    return problem(500, "Internal error", message)


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

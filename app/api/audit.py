"""Audit middleware: every request that touches patient data leaves an AuditEvent, refused ones included.

Writes that succeed are audited inside their own transaction (app/services/ingest.py); this records the
rest: reads, searches, the trial views, and every failed or denied attempt, after the answer is known.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from app.services import audit
from app.services.ingest import in_transaction, now_ms

log = logging.getLogger("mrdhub.audit")
UNAUDITED = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/.well-known/",
    "/fhir/metadata",
    "/auth/",
    "/dashboard/static/",
)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path.startswith(UNAUDITED) or path.startswith("/docs"):
            return await call_next(request)
        marks: list[bool] = []
        audited = audit.audited_in_transaction.set(marks)
        origin = audit.request_origin.set(request.client.host if request.client else None)
        try:
            response = await call_next(request)
        finally:
            audit.audited_in_transaction.reset(audited)
        try:
            if not marks:
                await run_in_threadpool(_record, request, response.status_code)
        except Exception:  # an audit failure is logged loudly but does not turn an answer into an error
            log.exception("audit event could not be recorded")
        finally:
            audit.request_origin.reset(origin)
        return response


def _record(request: Request, status: int) -> None:
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    params: dict[str, Any] = request.path_params
    event = audit.audit_event(
        principal=getattr(request.state, "principal", None),
        subtype=_subtype(request.method, template, params),
        outcome="0" if status < 400 else "4" if status < 500 else "8",
        description=f"{request.method} {template} -> {status}",
        entities=_entities(params),
        recorded=now_ms(),
    )
    db = request.app.state.db
    in_transaction(
        db, lambda s: audit.store(s, now_ms(), event), retries=request.app.state.settings.write_retries
    )


def _subtype(method: str, template: str, params: dict[str, Any]) -> str:
    if method == "GET" and template.startswith("/fhir/"):
        if "version_id" in params:
            return "vread"
        if template.endswith("/_history"):
            return "history-instance" if "logical_id" in params else "history-type"
        return "read" if "logical_id" in params else "search-type"
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, "operation")


def _entities(params: dict[str, Any]) -> list[str]:
    if "resource_type" in params and "logical_id" in params:
        return [f"{params['resource_type']}/{params['logical_id']}"]
    key = params.get("key")
    if isinstance(key, str) and "|" not in key:
        return [f"Patient/{key}"]
    return []

"""Audit middleware: every request that touches patient data leaves an AuditEvent, refused ones included.

Writes that succeed are audited inside their own transaction (app/services/ingest.py); this records the
rest: reads, searches, the trial views, and every failed or denied attempt, after the answer is known.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    app.add_middleware(AuditMiddleware)


class AuditMiddleware:
    """Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware copies every
    response through a stream of its own, which cost about a tenth of the ingest's throughput
    (bench/README.md). The event is written before the last piece of the answer is sent, so no client
    holds an answer whose audit is not stored yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(UNAUDITED):
            await self.app(scope, receive, send)
            return
        marks: list[bool] = []
        status: list[int] = []
        done: list[bool] = []
        client = scope.get("client")
        origin = audit.request_origin.set(client[0] if client else None)

        async def finish() -> None:
            if done:
                return
            done.append(True)
            if marks:
                return
            try:
                await run_in_threadpool(_record, Request(scope), status[0] if status else 500)
            except Exception:  # an audit failure is logged loudly but does not turn an answer into an error
                log.exception("audit event could not be recorded")

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await finish()
            await send(message)

        audited = audit.audited_in_transaction.set(marks)
        try:
            await self.app(scope, receive, audited_send)
        finally:
            audit.audited_in_transaction.reset(audited)
            try:
                await finish()  # an app that failed before answering is audited too
            finally:
                audit.request_origin.reset(origin)


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

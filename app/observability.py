"""Logs: one JSON line per event (structlog), one line per request, a request id on both, and no PHI.

No PHI means no names, birth dates, identifiers or values, in any line from any library. So a request line
names the route template, never the raw path (a client may choose a resource id) or the query string
(`?identifier=...&birthdate=...`); bodies are never logged; and an exception is logged as its type, SQLSTATE
and frames, never its message, which can quote a value (psycopg's `Key (value)=(MRN-1)`, a pydantic error's
input, a KeyError's key).
"""

import logging
import re
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, TextIO

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parent.parent
REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept only if it looks like an id (a UUID, a hex string, `lis-2025-000123`): it is logged.
CALLER_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Logs from these libraries go through the same JSON handler, but at INFO/DEBUG SQLAlchemy writes SQL
# parameters and result rows, and uvicorn's access log and httpx (the CDS client's reads from an EHR) write
# URLs with their query strings (`Patient?identifier=...`): they are held at WARNING.
QUIET_LOGGERS = ("sqlalchemy", "uvicorn.access", "httpx", "httpcore")
PROBES = ("/healthz", "/readyz")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (so a test harness or a supervisor can capture it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str) -> None:
    """JSON lines on stderr for structlog and for the standard library's loggers (uvicorn, SQLAlchemy...)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        summarise_exception,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    # Ours from an earlier call, and a plain one from logging.basicConfig, which would print tracebacks
    # with their messages; other handlers (a test harness's, a supervisor's) stay.
    replaced = [h for h in root.handlers if isinstance(h, _StderrHandler) or type(h) is logging.StreamHandler]
    for old in replaced:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn configures its own plain-text handlers before it calls the app factory; route them here.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def summarise_exception(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replaces `exc_info` with the exception's type, SQLSTATE and frames: never its message."""
    event_dict.pop("stack_info", None)
    exc = _exception(event_dict.pop("exc_info", None))
    if exc is not None:
        event_dict["exception"] = describe_exception(exc)
    return event_dict


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def describe_exception(exc: BaseException) -> dict[str, Any]:
    chain: list[dict[str, Any]] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 5:
        chain.append(_one_exception(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    described = chain[0]
    if len(chain) > 1:
        described["causes"] = chain[1:]
    return described


def _one_exception(exc: BaseException) -> dict[str, Any]:
    kind = type(exc)
    described: dict[str, Any] = {
        "type": kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    }
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        described["sqlstate"] = sqlstate
    described["frames"] = [_frame(f) for f in traceback.extract_tb(exc.__traceback__)[-30:]]
    return described


def _frame(frame: traceback.FrameSummary) -> str:
    filename = frame.filename
    if "site-packages/" in filename:
        filename = filename.rsplit("site-packages/", 1)[1]
    elif filename.startswith(str(ROOT)):
        filename = filename[len(str(ROOT)) + 1 :]
    return f"{filename}:{frame.lineno} in {frame.name}"


def request_id(request: Request) -> str | None:
    """The id that RequestLog gave this request (also in the X-Request-ID response header)."""
    found = request.scope.get("state", {}).get("request_id")
    return found if isinstance(found, str) else None


class RequestLog:
    """ASGI middleware: a request id for every request, and one log line when its answer has been sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.stdlib.get_logger("mrdhub.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _caller_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        # Not reset on the way out: the handler of unexpected errors runs outside this middleware (in
        # Starlette's ServerErrorMiddleware) and logs under the same id. A server runs each request in a
        # context of its own.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        status = 500  # what the client gets if an exception leaves the app before an answer starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER.lower().encode(), rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, status, time.perf_counter() - started)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route or "<unmatched>",
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        resource_type = scope.get("path_params", {}).get("resource_type")
        if isinstance(resource_type, str) and re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
            fields["resource_type"] = resource_type
        if status >= 500:
            self.log.warning("request", **fields)
        elif scope["path"] in PROBES:
            self.log.debug("request", **fields)
        else:
            self.log.info("request", **fields)


def _caller_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if CALLER_REQUEST_ID.match(text) else None
    return None

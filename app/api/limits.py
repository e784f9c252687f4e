"""Limits that hold for every route: the body size, and the request time limit.

Body size: read_fhir_json enforces it on FHIR writes with its own message; BodyLimit holds every other body
(the trial API's JSON, CDS Hooks) to the same limit, as a 413.

Time: an answer by the deadline, and no write committed after it.

Past the limit the client is answered at once, without waiting for the work: 408 Request Timeout while its
body has not all arrived (RFC 9110 section 15.5.9: the server stopped waiting for the request), otherwise
503 Service Unavailable with Retry-After (section 15.6.4: the server could not finish in time and the client
may retry; FHIR writes here are idempotent, so a retry stores each result once). The work itself stops at its
next database statement and is rolled back, and the commit and the answer are exclusive (see Deadline).
"""

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import refusal
from app.db.engine import Deadline, current_deadline

BODY_METHODS = ("POST", "PUT", "PATCH")
log = structlog.stdlib.get_logger("mrdhub.limits")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` (declared, or as it streams in) is a 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt  # paths that stream their body and hold it to their own limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_tracked)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = refusal(
            scope["path"], f"Body exceeds the limit of {self.max_bytes} bytes", code="too-costly", status=413
        )
        await response(scope, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


class RequestTimeout:
    """ASGI middleware: each HTTP request gets `timeout_s` seconds, enforced as the module says."""

    def __init__(
        self, app: ASGIApp, *, timeout_s: float, retry_after_s: int, exempt: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.exempt = exempt  # paths whose own handler bounds its time (a streamed bulk upload)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        deadline = Deadline(self.timeout_s)
        body_pending = scope["method"] in BODY_METHODS
        answered = False  # by the app
        timed_out = False

        async def receive_tracked() -> Message:
            nonlocal body_pending
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_pending = False
            return message

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal answered
            if timed_out:
                return  # the client has its answer already
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        async def watch(cancel: anyio.CancelScope) -> None:
            nonlocal timed_out
            await anyio.sleep(deadline.remaining())
            while not answered:
                if deadline.expire():
                    timed_out = True
                    await self._answer(scope, send, body_pending=body_pending)
                    cancel.cancel()
                    return
                await anyio.sleep(0.01)  # a commit is under way and its own answer follows

        failure: Exception | None = None
        token = current_deadline.set(deadline)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch, group.cancel_scope)
                try:
                    await self.app(scope, receive_tracked, send_unless_timed_out)
                except Exception as exc:  # re-raised below, outside the task group
                    failure = exc
                if not timed_out:
                    group.cancel_scope.cancel()  # else the watcher is still sending its answer: let it finish
        finally:
            current_deadline.reset(token)
        if failure is not None and not timed_out:
            raise failure
        if failure is not None:
            log.warning("error_after_timeout", exc_info=failure)

    async def _answer(self, scope: Scope, send: Send, *, body_pending: bool) -> None:
        if body_pending:
            response = refusal(
                scope["path"],
                f"The request body did not arrive within {self.timeout_s:g} s",
                status=408,
                code="timeout",
            )
        else:
            response = refusal(
                scope["path"],
                f"The request did not complete within {self.timeout_s:g} s; unfinished work was rolled back. "
                "Retry later.",
                code="timeout",
                retry_after_s=self.retry_after_s,
            )
        log.warning("request_timeout", status=response.status_code, timeout_s=self.timeout_s)
        await response(scope, _disconnected, send)

"""The request time limit: an answer at the deadline (503 + Retry-After, or 408 for a body still arriving),
the work rolled back, and the client's retry stored exactly once."""

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import event

from app.db.engine import Deadline, DeadlineExceeded
from app.settings import Settings
from tests.builders import lab_report
from tests.conftest import FHIR_JSON
from tests.reliability.conftest import stored_rows

pytestmark = pytest.mark.anyio

TIMEOUT_S = 0.3
SLOW_S = 1.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.request_timeout_s = TIMEOUT_S
    settings.retry_after_s = 7
    return settings


def slow_check(resource: dict[str, Any]) -> list[object]:
    time.sleep(SLOW_S)  # a check stuck on something slow, in the worker thread, inside the transaction
    return []


async def test_a_request_over_the_time_limit_is_a_503_and_stores_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    checks = app.state.checks
    before = stored_rows(app.state.db.engine)
    app.state.checks = (slow_check,)
    answer = await client.post("/fhir", json=lab_report("MRN-SLOW", "ACC-SLOW"), headers=FHIR_JSON)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "7"
    issue = answer.json()["issue"][0]
    assert issue["code"] == "timeout"
    assert "0.3 s" in issue["diagnostics"]
    assert stored_rows(app.state.db.engine) == before

    app.state.checks = checks
    for _ in range(2):
        retry = await client.post("/fhir", json=lab_report("MRN-SLOW", "ACC-SLOW"), headers=FHIR_JSON)
        assert retry.status_code == 200, retry.text
    for resource_type in ("Patient", "Observation"):
        assert (await client.get(f"/fhir/{resource_type}")).json()["total"] == 1


async def test_the_answer_comes_at_the_deadline_not_when_the_work_ends(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Through raw ASGI, to see when the answer is sent (httpx's transport waits for the app to return)."""
    app.state.checks = (slow_check,)
    body = httpx.Request("POST", "http://x", json=lab_report("MRN-SLOW", "ACC-SLOW")).content
    sent: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append((time.monotonic() - started, message))

    headers = [
        (b"content-type", b"application/fhir+json"),
        (b"authorization", client.headers["Authorization"].encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/fhir",
        "raw_path": b"/fhir",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("mrdhub.test", 80),
    }
    await app(scope, receive, send)
    finished = time.monotonic() - started
    starts = [(at, m) for at, m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    answered_at, start = starts[0]
    assert start["status"] == 503
    assert TIMEOUT_S <= answered_at < SLOW_S
    assert finished >= SLOW_S  # the worker thread ran on; it rolled back at its next statement


async def test_a_body_that_does_not_arrive_in_time_is_a_408(app: Any, client: httpx.AsyncClient) -> None:
    before = stored_rows(app.state.db.engine)

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"resourceType": "Bundle", '
        await anyio.sleep(SLOW_S)
        yield b'"type": "transaction", "entry": []}'

    started = time.monotonic()
    answer = await client.post("/fhir", content=trickle(), headers=FHIR_JSON)
    assert answer.status_code == 408, answer.text
    assert time.monotonic() - started < SLOW_S
    assert answer.json()["issue"][0]["code"] == "timeout"
    assert stored_rows(app.state.db.engine) == before


async def test_a_slow_read_is_a_503_too(app: Any, client: httpx.AsyncClient) -> None:
    slept: list[bool] = []

    def slow_statement(*_args: Any) -> None:
        if not slept:  # the search's first statement only
            slept.append(True)
            time.sleep(SLOW_S)

    engine = app.state.db.engine
    event.listen(engine, "before_cursor_execute", slow_statement)
    try:
        answer = await client.get("/fhir/Patient", params={"_count": "1"})
    finally:
        event.remove(engine, "before_cursor_execute", slow_statement)
    assert answer.status_code == 503, answer.text
    assert answer.json()["issue"][0]["code"] == "timeout"


def test_a_commit_under_way_keeps_its_answer() -> None:
    deadline = Deadline(60)
    with deadline.committing():
        assert deadline.expire() is False  # the commit's own answer will be sent
    assert deadline.expire() is True
    with pytest.raises(DeadlineExceeded), deadline.committing():
        pass


def test_no_commit_starts_after_the_deadline() -> None:
    deadline = Deadline(0)
    with pytest.raises(DeadlineExceeded):
        deadline.check()
    with pytest.raises(DeadlineExceeded), deadline.committing():
        pass

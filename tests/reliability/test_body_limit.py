"""Every body is held to the size limit, FHIR or not (the trial API's JSON), declared or streamed."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.builders import lab_report
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio

LIMIT = 2000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.max_body_bytes = LIMIT
    return settings


def oversized() -> dict[str, Any]:
    return {"patient": {"resourceType": "Patient", "text": {"div": "x" * LIMIT}}}


async def test_a_declared_body_over_the_limit_is_a_413_problem(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/eligibility", json=oversized())
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert str(LIMIT) in answer.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_a_413_problem(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 1000
        yield b"{}"

    answer = await client.post(
        "/api/v1/eligibility", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["status"] == 413


async def test_a_fhir_body_over_the_limit_is_a_413_operation_outcome(client: httpx.AsyncClient) -> None:
    report = lab_report("MRN-1", "ACC-1")
    report["entry"][0]["resource"]["text"] = {"status": "generated", "div": "<div>" + "x" * LIMIT + "</div>"}
    answer = await client.post("/fhir", json=report, headers=FHIR_JSON)
    assert answer.status_code == 413
    assert answer.json()["issue"][0]["code"] == "too-costly"
    assert (await client.get("/fhir/Patient")).json()["total"] == 0


async def test_a_body_within_the_limit_passes(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir", json=lab_report("MRN-1", "ACC-1"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text

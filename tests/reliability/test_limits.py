"""Each input limit is a clear OperationOutcome naming what broke it, never a 500, and stores nothing."""

import json
from typing import Any

import httpx
import pytest

from app.fhir.resources import MAX_JSON_DEPTH
from tests.builders import bundle, mrd, patient, post, urn
from tests.conftest import FHIR_JSON
from tests.reliability.conftest import stored_rows

pytestmark = pytest.mark.anyio


def report(**patient_changes: Any) -> dict[str, Any]:
    p = urn()
    return bundle(post(patient("MRN-1") | patient_changes, p), post(mrd("ACC-1", p)))


async def rejected(client: httpx.AsyncClient, app: Any, body: bytes, status: int) -> dict[str, Any]:
    before = stored_rows(app.state.db.engine)
    answer = await client.post("/fhir", content=body, headers=FHIR_JSON)
    assert answer.status_code == status, answer.text
    outcome: dict[str, Any] = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert stored_rows(app.state.db.engine) == before
    issue: dict[str, Any] = outcome["issue"][0]
    return issue


async def test_a_string_over_the_limit_is_a_413_naming_its_element(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.state.settings.max_string_chars = 100
    body = json.dumps(report(name=[{"family": "x" * 101}])).encode()
    issue = await rejected(client, app, body, 413)
    assert issue["code"] == "too-long"
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].family"]


async def test_a_string_at_the_limit_is_accepted(app: Any, client: httpx.AsyncClient) -> None:
    app.state.settings.max_string_chars = 100
    answer = await client.post("/fhir", json=report(name=[{"family": "x" * 100}]), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text


async def test_the_default_limit_is_a_million_characters(app: Any, client: httpx.AsyncClient) -> None:
    body = json.dumps(report(name=[{"family": "x" * 1_000_001}])).encode()
    issue = await rejected(client, app, body, 413)
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].family"]


async def test_an_overlong_key_is_named_by_its_parent(app: Any, client: httpx.AsyncClient) -> None:
    app.state.settings.max_string_chars = 100
    body = json.dumps(report(name=[{"k" * 101: "x"}])).encode()
    issue = await rejected(client, app, body, 413)
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].<key>"]


@pytest.mark.parametrize(
    "number",
    ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000],
    ids=["nan", "infinity", "minus-infinity", "overflowing-float", "overflowing-negative", "5000-digits"],
)
async def test_numbers_json_cannot_hold_are_a_400(app: Any, client: httpx.AsyncClient, number: str) -> None:
    text = json.dumps(report()).replace('"value": 0.05', f'"value": {number}')
    assert number in text
    issue = await rejected(client, app, text.encode(), 400)
    assert issue["code"] == "structure"


@pytest.mark.parametrize("escape", ["\\u0000", "\\u001b", "\\ud800", "\\udfff"])
async def test_control_characters_and_lone_surrogates_are_a_400(
    app: Any, client: httpx.AsyncClient, escape: str
) -> None:
    text = json.dumps(report(name=[{"family": "Test"}])).replace(
        '"family": "Test"', f'"family": "Te{escape}st"'
    )
    issue = await rejected(client, app, text.encode(), 400)
    assert issue["expression"] == ["Bundle.entry[0].resource.name[0].family"]


async def test_escaped_pairs_tabs_and_newlines_are_fine(client: httpx.AsyncClient) -> None:
    text = json.dumps(report(name=[{"family": "Te\tst\n\U0001f600 \u5f20"}]), ensure_ascii=True)
    assert "\\ud83d\\ude00" in text
    answer = await client.post("/fhir", content=text.encode(), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text


async def test_nesting_one_level_past_the_limit_is_a_400(app: Any, client: httpx.AsyncClient) -> None:
    deep: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"extension": deep}
    body = json.dumps(report(extension=[deep])).encode()
    issue = await rejected(client, app, body, 400)
    assert "nested deeper" in issue["diagnostics"]

"""Inputs the fuzzers found that once answered 500: each is now a 4xx OperationOutcome (or stored)."""

from typing import Any

import httpx
import pytest

from tests.builders import bundle, lab_report, patient, post
from tests.conftest import FHIR_JSON
from tests.reliability.conftest import stored_rows

pytestmark = pytest.mark.anyio


async def answer(app: Any, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=str(client.base_url), headers=client.headers
    ) as c:
        return await c.post("/fhir", json=body, headers=FHIR_JSON)


async def test_a_request_method_that_is_a_list_is_a_400(app: Any, client: httpx.AsyncClient) -> None:
    report = lab_report("MRN-1", "ACC-1")
    report["entry"][1]["request"]["method"] = ["POST"]
    reply = await answer(app, client, report)
    assert reply.status_code == 400, reply.text
    assert reply.json()["issue"][0]["expression"] == ["Bundle.entry[1].request.method"]


@pytest.mark.parametrize(
    "identifier",
    [{"system": "urn:x", "value": "M" * 300}, {"system": "urn:" + "s" * 300, "value": "M-1"}],
    ids=["long-value", "long-system"],
)
async def test_an_identifier_longer_than_its_column_is_a_400_naming_it(
    app: Any, client: httpx.AsyncClient, identifier: dict[str, str]
) -> None:
    """The same answer on both databases (PostgreSQL's varchar(255) would refuse it, SQLite store it)."""
    before = stored_rows(app.state.db.engine)
    part = "value" if len(identifier["value"]) > 255 else "system"
    reply = await answer(app, client, bundle(post(patient("MRN-1") | {"identifier": [identifier]})))
    assert reply.status_code == 400, reply.text
    [issue] = reply.json()["issue"]
    assert issue["code"] == "too-long"
    assert issue["expression"] == [f"Bundle.entry[0].resource.identifier[0].{part}"]
    assert stored_rows(app.state.db.engine) == before


async def test_a_code_longer_than_the_index_is_stored_whole_and_found(client: httpx.AsyncClient) -> None:
    code = "C" * 300
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:long", "code": code}]},
    }
    created = await client.post("/fhir/Observation", json=observation, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    found = (await client.get("/fhir/Observation", params={"code": f"urn:long|{code}"})).json()
    assert [e["resource"]["code"]["coding"][0]["code"] for e in found.get("entry", [])] == [code]

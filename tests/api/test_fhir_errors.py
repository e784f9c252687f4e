"""Bad input gets a clear OperationOutcome with the right status, and writes nothing."""

import json

import httpx
import pytest

from tests.builders import bundle, mrd, patient, post, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


async def stored(client: httpx.AsyncClient, resource_type: str) -> int:
    count: int = (await client.get(f"/fhir/{resource_type}")).json()["total"]
    return count


def first_issue(answer: httpx.Response) -> dict[str, object]:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    issue: dict[str, object] = body["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    return issue


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir", content=b'{"resourceType": "Bundle",', headers=FHIR_JSON)
    assert answer.status_code == 400
    assert "Malformed JSON" in str(first_issue(answer)["diagnostics"])


async def test_a_resource_that_is_not_a_bundle_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir", json=patient("MRN-1"), headers=FHIR_JSON)
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Bundle.resourceType"]


async def test_a_bundle_of_the_wrong_type_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/fhir", json=bundle(post(patient("MRN-1")), kind="collection"), headers=FHIR_JSON
    )
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Bundle.type"]


async def test_unsupported_media_type_is_a_415(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/fhir", content=b"<Bundle/>", headers={"content-type": "application/fhir+xml"}
    )
    assert answer.status_code == 415
    first_issue(answer)


async def test_a_body_over_the_limit_is_a_413(app: object, client: httpx.AsyncClient) -> None:
    app.state.settings.max_body_bytes = 1000  # type: ignore[attr-defined]
    report = bundle(
        post(patient("MRN-1") | {"text": {"status": "generated", "div": "<div>" + "x" * 2000 + "</div>"}})
    )
    answer = await client.post("/fhir", json=report, headers=FHIR_JSON)
    assert answer.status_code == 413
    first_issue(answer)


async def test_more_entries_than_allowed_is_a_413(app: object, client: httpx.AsyncClient) -> None:
    app.state.settings.max_bundle_entries = 2  # type: ignore[attr-defined]
    report = bundle(*(post(patient(f"MRN-{i}")) for i in range(3)))
    answer = await client.post("/fhir", json=report, headers=FHIR_JSON)
    assert answer.status_code == 413
    assert await stored(client, "Patient") == 0


async def test_unknown_resource_type_is_a_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/Bogus/1")
    assert answer.status_code == 404
    first_issue(answer)


async def test_unknown_route_under_fhir_is_a_404_operation_outcome(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/Patient/1/_history/1/extra")
    assert answer.status_code == 404
    first_issue(answer)


async def test_unknown_resource_is_a_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/fhir/Patient/nobody")
    assert answer.status_code == 404
    assert first_issue(answer)["code"] == "not-found"


async def test_a_naive_datetime_is_invalid_fhir(client: httpx.AsyncClient) -> None:
    p = urn()
    report = bundle(post(patient("MRN-1"), p), post(mrd("ACC-1", p, effective="2025-03-19T09:30:00")))
    answer = await client.post("/fhir", json=report, headers=FHIR_JSON)
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert await stored(client, "Patient") == 0


async def test_an_unknown_element_is_named(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/fhir/Patient", json=patient("MRN-1") | {"favouriteColour": "blue"}, headers=FHIR_JSON
    )
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Patient.favouriteColour"]


async def test_a_missing_required_element_is_named(client: httpx.AsyncClient) -> None:
    observation = mrd("ACC-1", "Patient/1")
    del observation["code"]
    answer = await client.post("/fhir/Observation", json=observation, headers=FHIR_JSON)
    assert answer.status_code == 400
    issue = first_issue(answer)
    assert issue["code"] == "required"
    assert issue["expression"] == ["Observation.code"]


async def test_an_invalid_status_code_is_rejected(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/fhir/Observation", json=mrd("ACC-1", "Patient/1", status="done"), headers=FHIR_JSON
    )
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Observation.status"]


async def test_a_resource_posted_to_another_type_is_rejected(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir/Observation", json=patient("MRN-1"), headers=FHIR_JSON)
    assert answer.status_code == 400


async def test_json_that_is_not_an_object_is_rejected(client: httpx.AsyncClient) -> None:
    for body in (b"[]", b"42", b'"Bundle"', b"null"):
        answer = await client.post("/fhir", content=body, headers=FHIR_JSON)
        assert answer.status_code == 400, body


async def test_deeply_nested_json_is_rejected_not_crashed(client: httpx.AsyncClient) -> None:
    deep = "[" * 5000 + "]" * 5000
    answer = await client.post("/fhir", content=deep.encode(), headers=FHIR_JSON)
    assert answer.status_code == 400


async def test_entry_without_request_in_a_transaction_fails_the_bundle(client: httpx.AsyncClient) -> None:
    report = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [post(patient("MRN-1")), {"resource": patient("MRN-2")}],
    }
    answer = await client.post("/fhir", content=json.dumps(report).encode(), headers=FHIR_JSON)
    assert answer.status_code == 400
    assert first_issue(answer)["expression"] == ["Bundle.entry[1].request"]
    assert await stored(client, "Patient") == 0


async def test_an_unexpected_error_is_a_500_outcome_without_a_trace(
    app: object, client: httpx.AsyncClient
) -> None:
    def explode(resource: dict[str, object]) -> list[object]:
        raise RuntimeError("secret internals")

    app.state.checks = (explode,)  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mrdhub.test", headers=client.headers
    ) as c:
        answer = await c.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    assert answer.status_code == 500
    issue = first_issue(answer)
    assert "incident" in str(issue["diagnostics"])
    assert "secret internals" not in answer.text
    assert "Traceback" not in answer.text

"""The RESTful interactions outside bundles (FHIR R4 http.html), with the same semantics as in bundles."""

import httpx
import pytest

from app.fhir.resources import validate_resource
from tests.builders import LAB_SYSTEM, PATIENT_SYSTEM, mrd, patient
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


async def create_patient(client: httpx.AsyncClient, mrn: str = "MRN-1") -> str:
    answer = await client.post("/fhir/Patient", json=patient(mrn), headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text
    patient_id: str = answer.json()["id"]
    return patient_id


async def test_create_answers_201_with_location_etag_and_the_stored_resource(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    assert answer.status_code == 201
    body = answer.json()
    assert answer.headers["location"] == f"http://mrdhub.test/fhir/Patient/{body['id']}/_history/1"
    assert answer.headers["etag"] == 'W/"1"'
    assert "GMT" in answer.headers["last-modified"]
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert body["meta"]["versionId"] == "1"


async def test_plain_application_json_is_accepted(client: httpx.AsyncClient) -> None:
    answer = await client.post("/fhir/Patient", json=patient("MRN-1"))
    assert answer.status_code == 201


async def test_create_with_if_none_exist_returns_the_match(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    answer = await client.post(
        "/fhir/Patient",
        json=patient("MRN-1", birth_date="2010-01-01"),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={PATIENT_SYSTEM}|MRN-1"},
    )
    assert answer.status_code == 200
    assert answer.json()["id"] == patient_id
    assert answer.json()["birthDate"] == "2018-04-01"


async def test_read_vread_and_history(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    changed = patient("MRN-1", birth_date="2018-04-02") | {"id": patient_id}
    updated = await client.put(f"/fhir/Patient/{patient_id}", json=changed, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.headers["etag"] == 'W/"2"'
    assert (await client.get(f"/fhir/Patient/{patient_id}")).json()["birthDate"] == "2018-04-02"
    first = await client.get(f"/fhir/Patient/{patient_id}/_history/1")
    assert first.json()["birthDate"] == "2018-04-01"
    assert first.headers["etag"] == 'W/"1"'
    history = (await client.get(f"/fhir/Patient/{patient_id}/_history")).json()
    assert history["type"] == "history"
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    type_history = (await client.get("/fhir/Patient/_history")).json()
    assert type_history["total"] == 2


async def test_an_unchanged_update_creates_no_new_version(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    again = await client.put(
        f"/fhir/Patient/{patient_id}", json=patient("MRN-1") | {"id": patient_id}, headers=FHIR_JSON
    )
    assert again.status_code == 200
    assert again.headers["etag"] == 'W/"1"'


async def test_update_as_create_with_a_client_chosen_id(client: httpx.AsyncClient) -> None:
    answer = await client.put(
        "/fhir/Patient/scmc-123", json=patient("MRN-9") | {"id": "scmc-123"}, headers=FHIR_JSON
    )
    assert answer.status_code == 201
    assert (await client.get("/fhir/Patient/scmc-123")).status_code == 200


async def test_update_whose_body_id_differs_from_the_url_is_rejected(client: httpx.AsyncClient) -> None:
    answer = await client.put("/fhir/Patient/a", json=patient("MRN-9") | {"id": "b"}, headers=FHIR_JSON)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Patient.id"]


async def test_if_match_with_a_stale_version_is_a_412_and_changes_nothing(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    body = patient("MRN-1", birth_date="2011-11-11") | {"id": patient_id}
    stale = await client.put(
        f"/fhir/Patient/{patient_id}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/fhir/Patient/{patient_id}")).json()["birthDate"] == "2018-04-01"
    fresh = await client.put(
        f"/fhir/Patient/{patient_id}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200


async def test_conditional_update_by_identifier(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    url = f"/fhir/Observation?identifier={LAB_SYSTEM}|ACC-1"
    first = await client.put(url, json=mrd("ACC-1", f"Patient/{patient_id}"), headers=FHIR_JSON)
    assert first.status_code == 201
    second = await client.put(
        url, json=mrd("ACC-1", f"Patient/{patient_id}", value=0.5, status="amended"), headers=FHIR_JSON
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "2"


async def test_delete_is_logical_and_keeps_history(client: httpx.AsyncClient) -> None:
    patient_id = await create_patient(client)
    deleted = await client.delete(f"/fhir/Patient/{patient_id}")
    assert deleted.status_code == 204
    gone = await client.get(f"/fhir/Patient/{patient_id}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/fhir/Patient/{patient_id}/_history/1")).status_code == 200
    search = (await client.get("/fhir/Patient", params={"identifier": f"{PATIENT_SYSTEM}|MRN-1"})).json()
    assert search["total"] == 0


async def test_prefer_minimal_on_create_has_no_body(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/fhir/Patient", json=patient("MRN-1"), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert answer.status_code == 201
    assert answer.content == b""
    assert "location" in answer.headers


async def test_any_valid_r4_resource_type_is_stored(client: httpx.AsyncClient) -> None:
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Li"}]}
    answer = await client.post("/fhir/Practitioner", json=practitioner, headers=FHIR_JSON)
    assert answer.status_code == 201
    assert (await client.get(f"/fhir/Practitioner/{answer.json()['id']}")).json()["name"] == [
        {"family": "Li"}
    ]


async def test_capability_statement_lists_the_search_parameters(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    assert statement["fhirVersion"] == "4.0.1"
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    names = {p["name"] for p in observation["searchParam"]}
    assert {"subject", "patient", "code", "date", "status", "_lastUpdated", "_id", "identifier"} <= names


async def test_capability_statement_declares_bulk_export_and_is_valid_r4(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    validate_resource(statement)
    rest = statement["rest"][0]
    assert [o["definition"] for o in rest["operation"]] == [
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    ]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert patient["operation"][0]["definition"].endswith("/patient-export")
    assert statement["instantiates"] == ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]

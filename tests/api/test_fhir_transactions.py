"""Transaction and batch Bundles as a hospital LIS pushes them (FHIR R4 http.html#transaction)."""

import copy
from typing import Any

import httpx
import pytest

from tests.builders import LAB_SYSTEM, PATIENT_SYSTEM, bundle, lab_report, mrd, patient, post, put, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


async def send(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/fhir", json=body, headers={**FHIR_JSON, **headers})


async def total(client: httpx.AsyncClient, resource_type: str, **params: str) -> int:
    answer = await client.get(f"/fhir/{resource_type}", params=params)
    assert answer.status_code == 200, answer.text
    value: int = answer.json()["total"]
    return value


async def test_transaction_creates_every_entry_and_answers_with_locations(client: httpx.AsyncClient) -> None:
    answer = await send(client, lab_report("MRN-1", "ACC-1"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["type"] == "transaction-response"
    for entry in body["entry"]:
        response = entry["response"]
        assert response["status"] == "201 Created"
        assert response["location"].endswith("/_history/1")
        assert response["etag"] == 'W/"1"'
        assert response["lastModified"].endswith("Z")


async def test_urn_uuid_references_are_rewritten_to_the_server_ids(client: httpx.AsyncClient) -> None:
    answer = await send(client, lab_report("MRN-1", "ACC-1"))
    patient_location, observation_location = (e["response"]["location"] for e in answer.json()["entry"])
    patient_ref = patient_location.split("/_history")[0]
    observation = (await client.get(f"/fhir/{observation_location.split('/_history')[0]}")).json()
    assert observation["subject"]["reference"] == patient_ref
    assert not patient_ref.startswith("urn:")


async def test_the_same_bundle_sent_twice_stores_each_resource_once(client: httpx.AsyncClient) -> None:
    report = lab_report("MRN-1", "ACC-1")
    first = await send(client, report)
    second = await send(client, report)
    assert [e["response"]["status"] for e in second.json()["entry"]] == ["200 OK", "200 OK"]
    assert [e["response"]["location"] for e in second.json()["entry"]] == [
        e["response"]["location"] for e in first.json()["entry"]
    ]
    assert await total(client, "Patient") == 1
    assert await total(client, "Observation") == 1


async def test_a_changed_result_under_the_same_identifier_becomes_a_new_version(
    client: httpx.AsyncClient,
) -> None:
    await send(client, lab_report("MRN-1", "ACC-1", value=0.05))
    answer = await send(client, lab_report("MRN-1", "ACC-1", value=0.07, status="amended"))
    location = answer.json()["entry"][1]["response"]["location"]
    assert location.endswith("/_history/2")
    observation_id = location.split("/")[1]
    history = (await client.get(f"/fhir/Observation/{observation_id}/_history")).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in history["entry"]] == [0.07, 0.05]
    assert await total(client, "Observation") == 1


async def test_entered_in_error_is_a_new_version_and_history_keeps_the_result(
    client: httpx.AsyncClient,
) -> None:
    await send(client, lab_report("MRN-1", "ACC-1"))
    answer = await send(client, lab_report("MRN-1", "ACC-1", status="entered-in-error"))
    observation_id = answer.json()["entry"][1]["response"]["location"].split("/")[1]
    current = (await client.get(f"/fhir/Observation/{observation_id}")).json()
    assert current["status"] == "entered-in-error"
    first = (await client.get(f"/fhir/Observation/{observation_id}/_history/1")).json()
    assert first["status"] == "final"


async def test_a_transaction_failing_in_its_last_entry_leaves_nothing_behind(
    client: httpx.AsyncClient,
) -> None:
    p = urn()
    broken = mrd("ACC-2", p)
    broken["valueQuantity"]["value"] = "not a number"
    answer = await send(client, bundle(post(patient("MRN-1"), p), post(mrd("ACC-1", p)), post(broken)))
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.valueQuantity.value"]
    assert await total(client, "Patient") == 0
    assert await total(client, "Observation") == 0


async def test_a_failure_found_while_writing_rolls_back_the_earlier_writes(client: httpx.AsyncClient) -> None:
    # The last entry is valid FHIR but refers to a patient that exists nowhere: found only after the
    # first entries were written inside the transaction.
    p = urn()
    answer = await send(
        client,
        bundle(
            post(patient("MRN-1"), p),
            post(mrd("ACC-1", p)),
            post(mrd("ACC-2", "Patient/does-not-exist")),
        ),
    )
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.subject.reference"]
    assert await total(client, "Patient") == 0
    assert await total(client, "Observation") == 0


async def test_a_reference_to_an_unknown_bundle_entry_fails_naming_the_entry(
    client: httpx.AsyncClient,
) -> None:
    answer = await send(client, bundle(post(mrd("ACC-1", urn()))))
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject.reference"]


async def test_references_to_stored_resources_are_accepted(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    patient_id = created.json()["id"]
    answer = await send(client, bundle(post(mrd("ACC-1", f"Patient/{patient_id}"))))
    assert answer.status_code == 200, answer.text


async def test_conditional_create_with_no_match_creates(client: httpx.AsyncClient) -> None:
    answer = await send(
        client, bundle(post(patient("MRN-1"), if_none_exist=f"identifier={PATIENT_SYSTEM}|MRN-1"))
    )
    assert answer.json()["entry"][0]["response"]["status"] == "201 Created"


async def test_conditional_create_with_one_match_returns_the_existing_resource(
    client: httpx.AsyncClient,
) -> None:
    await send(client, bundle(post(patient("MRN-1"))))
    different = patient("MRN-1", birth_date="2017-01-01")
    answer = await send(
        client,
        bundle(post(different, if_none_exist=f"identifier={PATIENT_SYSTEM}|MRN-1")),
        prefer="return=representation",
    )
    entry = answer.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK"
    assert entry["resource"]["birthDate"] == "2018-04-01"  # the existing resource, untouched


async def test_conditional_create_with_several_matches_is_a_412(client: httpx.AsyncClient) -> None:
    await send(client, bundle(post(patient("MRN-1")), post(patient("MRN-2"))))
    answer = await send(client, bundle(post(patient("MRN-3"), if_none_exist="birthdate=2018-04-01")))
    assert answer.status_code == 412
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[0].request.ifNoneExist"]
    assert await total(client, "Patient") == 2


async def test_conditional_update_creates_then_versions(client: httpx.AsyncClient) -> None:
    url = f"Observation?identifier={LAB_SYSTEM}|ACC-1"
    created = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    subject = f"Patient/{created.json()['id']}"
    first = await send(client, bundle(put(mrd("ACC-1", subject), url)))
    assert first.json()["entry"][0]["response"]["status"] == "201 Created"
    second = await send(client, bundle(put(mrd("ACC-1", subject, value=0.2, status="corrected"), url)))
    assert second.json()["entry"][0]["response"]["status"] == "200 OK"
    assert second.json()["entry"][0]["response"]["location"].endswith("/_history/2")


async def test_transaction_processes_deletes_before_creates(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    patient_id = created.json()["id"]
    # POST listed first, DELETE second: the spec's order runs the DELETE first, freeing the identifier.
    answer = await send(
        client,
        bundle(
            post(patient("MRN-1", birth_date="2017-02-02")),
            {"request": {"method": "DELETE", "url": f"Patient/{patient_id}"}},
        ),
    )
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["201 Created", "204 No Content"]
    assert (await client.get(f"/fhir/Patient/{patient_id}")).status_code == 410


async def test_batch_entries_succeed_or_fail_on_their_own(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    subject = f"Patient/{created.json()['id']}"
    bad = mrd("ACC-2", subject)
    bad["status"] = "finished"
    answer = await send(
        client, bundle(post(mrd("ACC-1", subject)), post(bad), post(mrd("ACC-3", subject)), kind="batch")
    )
    assert answer.status_code == 200
    entries = answer.json()["entry"]
    assert answer.json()["type"] == "batch-response"
    assert [e["response"]["status"] for e in entries] == ["201 Created", "400 Bad Request", "201 Created"]
    issue = entries[1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert await total(client, "Observation") == 2


async def test_batch_entry_without_request_is_answered_and_others_proceed(client: httpx.AsyncClient) -> None:
    answer = await send(
        client,
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": patient("MRN-1")},
                post(patient("MRN-2")),
            ],
        },
    )
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["400 Bad Request", "201 Created"]


async def test_prefer_return_representation_includes_the_stored_resources(client: httpx.AsyncClient) -> None:
    answer = await send(client, lab_report("MRN-1", "ACC-1"), prefer="return=representation")
    entries = answer.json()["entry"]
    assert entries[1]["resource"]["meta"]["versionId"] == "1"
    assert entries[1]["resource"]["subject"]["reference"].startswith("Patient/")


async def test_prefer_return_minimal_omits_the_resources(client: httpx.AsyncClient) -> None:
    answer = await send(client, lab_report("MRN-1", "ACC-1"), prefer="return=minimal")
    assert all("resource" not in e for e in answer.json()["entry"])


async def test_prefer_return_operation_outcome_gives_an_outcome_per_entry(client: httpx.AsyncClient) -> None:
    answer = await send(client, lab_report("MRN-1", "ACC-1"), prefer="return=OperationOutcome")
    assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in answer.json()["entry"])


async def test_get_entries_read_after_the_writes(client: httpx.AsyncClient) -> None:
    report = lab_report("MRN-1", "ACC-1")
    report["entry"].append(
        {"request": {"method": "GET", "url": f"Patient?identifier={PATIENT_SYSTEM}|MRN-1"}}
    )
    answer = await send(client, report)
    search = answer.json()["entry"][2]["resource"]
    assert search["type"] == "searchset"
    assert search["total"] == 1


async def test_the_same_result_twice_in_one_bundle_is_stored_once(client: httpx.AsyncClient) -> None:
    p = urn()
    answer = await send(
        client, bundle(post(patient("MRN-1"), p), post(mrd("ACC-1", p)), post(mrd("ACC-1", p)))
    )
    assert answer.status_code == 200, answer.text
    assert await total(client, "Observation") == 1


async def test_a_real_world_bundle_round_trips_unchanged_but_for_server_meta(
    client: httpx.AsyncClient, data_dir: Any
) -> None:
    import json

    report = json.loads((data_dir / "lis_report.json").read_text())
    answer = await send(client, report, prefer="return=representation")
    assert answer.status_code == 200, answer.text
    for sent, stored in zip(report["entry"], answer.json()["entry"], strict=True):
        resource = copy.deepcopy(stored["resource"])
        fetched = (await client.get(f"/fhir/{resource['resourceType']}/{resource['id']}")).json()
        assert fetched == resource
        expected = copy.deepcopy(sent["resource"])
        meta = resource.pop("meta")
        assert set(meta) >= {"versionId", "lastUpdated"}
        for key, value in meta.items():
            if key not in ("versionId", "lastUpdated"):
                assert expected["meta"][key] == value
        expected.pop("meta", None)
        resource.pop("id")
        expected.pop("id", None)
        assert _without_references(resource) == _without_references(expected)


def _without_references(node: Any) -> Any:
    """Bundle-internal references are rewritten by design; everything else must be as sent."""
    if isinstance(node, dict):
        return {k: ("<ref>" if k == "reference" else _without_references(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_references(v) for v in node]
    return node


async def test_one_identifier_claimed_by_a_post_and_a_put_in_one_bundle_is_a_409(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/fhir/Patient", json=patient("MRN-1"), headers=FHIR_JSON)
    subject = f"Patient/{created.json()['id']}"
    answer = await send(
        client,
        bundle(
            post(mrd("ACC-1", subject)),
            put(mrd("ACC-1", subject, value=0.2) | {"id": "other-id"}, "Observation/other-id"),
        ),
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["issue"][0]["code"] == "conflict"
    assert await total(client, "Observation") == 0

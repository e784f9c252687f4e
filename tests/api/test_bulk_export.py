"""FHIR Bulk Data export: kick-off, status polling, manifest, NDJSON files, filters, scoping, round trip."""

import datetime as dt
import json
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import delete

from app.db.tables import IdentifierRow, ResourceRow, ResourceVersionRow, SearchIndexRow
from bench.cohort import generate
from tests.api.test_bulk_import import as_client, ndjson, organization, run_import, with_id
from tests.builders import mrd, patient
from tests.conftest import TokenFactory

pytestmark = pytest.mark.anyio
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


async def kickoff(client: httpx.AsyncClient, path: str = "/fhir/$export", **params: str) -> str:
    answer = await client.get(path, params=params, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    status_url: str = answer.headers["content-location"]
    assert status_url.startswith("http://mrdhub.test/fhir/$export-status/")
    return status_url


async def manifest(client: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            answer = await client.get(status_url)
            if answer.status_code == 200:
                assert answer.headers["content-type"].startswith("application/json")
                body: dict[str, Any] = answer.json()
                return body
            assert answer.status_code == 202, answer.text
            assert "x-progress" in answer.headers and answer.headers["retry-after"]
            await anyio.sleep(0.05)


async def files(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for output in body["output"]:
        answer = await client.get(output["url"])
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/fhir+ndjson"
        found[output["type"]] = [json.loads(line) for line in answer.text.splitlines()]
        assert len(found[output["type"]]) == output["count"]
    return found


async def export_all(client: httpx.AsyncClient, **params: str) -> dict[str, list[dict[str, Any]]]:
    return await files(client, await manifest(client, await kickoff(client, **params)))


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    copy = dict(resource)
    meta = {k: v for k, v in copy.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        copy["meta"] = meta
    return copy


@pytest.mark.parametrize(
    ("params", "headers", "where"),
    [
        ({}, {}, "Prefer"),
        ({"_outputFormat": "text/csv"}, ASYNC, "_outputFormat"),
        ({"_type": "Patient,Nonsense"}, ASYNC, "_type"),
        ({"_since": "yesterday"}, ASYNC, "_since"),
        ({"_since": "2025-01-01T00:00:00"}, ASYNC, "_since"),
        ({"_typeFilter": "Observation?status=final"}, ASYNC, "_typeFilter"),
    ],
)
async def test_kickoff_errors_are_400_operation_outcomes(
    client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str], where: str
) -> None:
    answer = await client.get("/fhir/$export", params=params, headers=headers)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


async def test_an_export_answers_a_manifest_and_ndjson_files(client: httpx.AsyncClient) -> None:
    resources = list(generate(patients=9, seed=5).resources())
    await run_import(client, ndjson(*resources))
    status_url = await kickoff(client, _outputFormat="application/fhir+ndjson")
    body = await manifest(client, status_url)
    assert body["requiresAccessToken"] is True
    assert body["request"].startswith("http://mrdhub.test/fhir/$export")
    assert body["error"] == []
    assert dt.datetime.fromisoformat(body["transactionTime"].replace("Z", "+00:00"))
    types = [o["type"] for o in body["output"]]
    assert types[:2] == ["Organization", "ResearchStudy"]  # what others refer to comes first
    assert "AuditEvent" not in types and "Provenance" not in types
    exported = await files(client, body)
    assert sum(len(v) for v in exported.values()) == len(resources)
    assert {r["id"] for r in exported["Patient"]} == {
        r["id"] for r in resources if r["resourceType"] == "Patient"
    }


async def test_type_and_since_filter_and_the_snapshot_holds_later_changes_out(
    client: httpx.AsyncClient,
) -> None:
    await run_import(client, ndjson(with_id(patient("M-1"), "p1"), with_id(mrd("A-1", "Patient/p1"), "o1")))
    await anyio.sleep(0.01)
    since = dt.datetime.now(dt.UTC).isoformat()
    await anyio.sleep(0.01)
    await run_import(
        client, ndjson(with_id(patient("M-2"), "p2"), with_id(mrd("A-1", "Patient/p1", value=0.2), "o1"))
    )

    only_patients = await export_all(client, _type="Patient")
    assert list(only_patients) == ["Patient"] and len(only_patients["Patient"]) == 2
    changed = await export_all(client, _since=since)
    assert {t: [r["id"] for r in rs] for t, rs in changed.items()} == {
        "Patient": ["p2"],
        "Observation": ["o1"],
    }

    status_url = await kickoff(client, _type="Observation")
    body = await manifest(client, status_url)
    await run_import(client, ndjson(with_id(mrd("A-1", "Patient/p1", value=0.3), "o1")))
    (observation,) = (await files(client, body))["Observation"]
    assert observation["valueQuantity"]["value"] == 0.2
    assert observation["meta"]["versionId"] == "2"


async def test_a_site_exports_its_own_patients_and_only_the_office_gets_the_audit_trail(
    app: object, token_for: TokenFactory
) -> None:
    office = await as_client(app, await token_for())
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    async with office, hefei:
        await run_import(
            office,
            ndjson(
                organization("HEFEI-APCH", "hf"),
                organization("SHANGHAI-SCMC", "sh"),
                with_id(patient("H-1", organization="Organization/hf"), "h1"),
                with_id(patient("S-1", organization="Organization/sh"), "s1"),
                with_id(mrd("H-R", "Patient/h1"), "ho"),
                with_id(mrd("S-R", "Patient/s1"), "so"),
            ),
        )
        mine = await export_all(hefei)
        assert [r["id"] for r in mine["Patient"]] == ["h1"]
        assert [r["id"] for r in mine["Observation"]] == ["ho"]
        assert len(mine["Organization"]) == 2  # about no patient: visible to every site, as in search

        refused = await hefei.get("/fhir/$export", params={"_type": "AuditEvent"}, headers=ASYNC)
        assert refused.status_code == 403
        trail = await export_all(office, _type="AuditEvent,Provenance")
        assert set(trail) == {"AuditEvent", "Provenance"}

        status_url = await kickoff(office, "/fhir/Patient/$export")
        by_patient = await files(office, await manifest(office, status_url))
        assert set(by_patient) == {"Patient", "Observation"}


async def test_status_and_files_belong_to_the_client_that_asked_and_delete_cancels(
    app: object, token_for: TokenFactory
) -> None:
    office = await as_client(app, await token_for())
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    shanghai = await as_client(app, await token_for("lis-shanghai-scmc"))
    async with office, hefei, shanghai:
        await run_import(office, ndjson(organization("HEFEI-APCH", "hf")))
        status_url = await kickoff(hefei)
        body = await manifest(hefei, status_url)
        assert (await shanghai.get(status_url)).status_code == 404
        assert (await shanghai.get(body["output"][0]["url"])).status_code == 404
        assert (await office.get(status_url)).status_code == 200
        assert (await hefei.get(status_url.replace("status/", "status/x"))).status_code == 404
        assert (await hefei.delete(status_url)).status_code == 202
        assert (await hefei.get(status_url)).status_code == 404
        assert (await hefei.get(body["output"][0]["url"])).status_code == 404


async def test_export_import_into_an_empty_store_and_export_again_gives_the_same_resources(
    client: httpx.AsyncClient, app: Any
) -> None:
    await run_import(client, ndjson(*generate(patients=9, seed=7).resources()))
    first = await export_all(client)

    with app.state.db.transaction() as session:
        for table in (SearchIndexRow, IdentifierRow, ResourceVersionRow, ResourceRow):
            session.execute(delete(table))
    # The files in manifest order, as one NDJSON body.
    body = ndjson(*(r for rs in first.values() for r in rs))
    job = await run_import(client, body)
    assert job["progress"]["resources_created"] == sum(len(v) for v in first.values())
    assert job["progress"]["resources_rejected"] == 0

    second = await export_all(client)
    assert list(second) == list(first)
    for resource_type, resources in first.items():
        # Sorted by id: a line put aside for a reference is stored after the lines that follow it.
        assert sorted(
            (without_server_meta(r) for r in second[resource_type]), key=lambda r: r["id"]
        ) == sorted((without_server_meta(r) for r in resources), key=lambda r: r["id"]), resource_type

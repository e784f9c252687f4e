"""Many senders at once: every result is stored exactly once and every sender is told it succeeded."""

import asyncio

import httpx
import pytest

from tests.builders import lab_report
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio

CLIENTS = 16


async def test_the_same_bundle_from_16_concurrent_clients_is_stored_once(client: httpx.AsyncClient) -> None:
    report = lab_report("MRN-RACE", "ACC-RACE")
    answers = await asyncio.gather(
        *(client.post("/fhir", json=report, headers=FHIR_JSON) for _ in range(CLIENTS))
    )
    assert [a.status_code for a in answers] == [200] * CLIENTS, [
        a.text for a in answers if a.status_code != 200
    ]
    created = [
        e["response"]["status"]
        for a in answers
        for e in a.json()["entry"]
        if e["response"]["status"] == "201 Created"
    ]
    assert len(created) == 2  # one Patient, one Observation, whoever won the race
    locations = {tuple(e["response"]["location"] for e in a.json()["entry"]) for a in answers}
    assert len(locations) == 1
    for resource_type in ("Patient", "Observation"):
        assert (await client.get(f"/fhir/{resource_type}")).json()["total"] == 1


async def test_first_bundles_for_a_new_patient_racing_create_one_patient(client: httpx.AsyncClient) -> None:
    reports = [lab_report("MRN-NEW", f"ACC-{i}") for i in range(CLIENTS)]
    answers = await asyncio.gather(*(client.post("/fhir", json=r, headers=FHIR_JSON) for r in reports))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert (await client.get("/fhir/Patient")).json()["total"] == 1
    assert (await client.get("/fhir/Observation")).json()["total"] == CLIENTS

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


async def test_32_clients_resending_shared_patients_bundles_in_shuffled_order(
    client: httpx.AsyncClient, is_postgres: bool
) -> None:
    """Issue 7's race: every client sends every bundle (shared patients across bundles), each in its own
    shuffled order. Exactly one copy of each resource; every entry answered 200/201; no 5xx.
    The full-size run (32 x 500) is bench/concurrency.py; CI runs 32 x 40 on PostgreSQL."""
    if not is_postgres:
        pytest.skip("concurrency races are a PostgreSQL matter (SQLite serialises writers)")
    import random

    reports = [lab_report(f"MRN-{i % 10}", f"ACC-{i}") for i in range(40)]  # 10 patients shared by 40 reports
    statuses: list[str] = []
    failures: list[int] = []

    async def sender(seed: int) -> None:
        order = list(range(len(reports)))
        random.Random(seed).shuffle(order)
        for i in order:
            answer = await client.post("/fhir", json=reports[i], headers=FHIR_JSON)
            if answer.status_code != 200:
                failures.append(answer.status_code)
                continue
            statuses.extend(e["response"]["status"] for e in answer.json()["entry"])

    await asyncio.gather(*(sender(seed) for seed in range(32)))
    assert failures == []
    assert set(statuses) <= {"200 OK", "201 Created"}
    assert statuses.count("201 Created") == 10 + 40
    assert (await client.get("/fhir/Patient")).json()["total"] == 10
    assert (await client.get("/fhir/Observation")).json()["total"] == 40

"""Search as integrators use it: by patient, code, date, status, identifier; paging and sorting."""

from typing import Any

import httpx
import pytest

from tests.builders import CONCEPT, LAB_SYSTEM, PATIENT_SYSTEM, bundle, mrd, patient, post, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cohort(client: httpx.AsyncClient) -> dict[str, str]:
    """Two patients at two organisations; patient A has three flow results and one NGS result."""
    org_a, org_b, pa, pb = urn(), urn(), urn(), urn()
    report = bundle(
        post({"resourceType": "Organization", "name": "A"}, org_a),
        post({"resourceType": "Organization", "name": "B"}, org_b),
        post(patient("A", birth_date="2015-06-01", organization=org_a), pa),
        post(patient("B", birth_date="2019-01-15", organization=org_b), pb),
        post(mrd("A-1", pa, effective="2025-03-19T09:00:00+08:00")),
        post(mrd("A-2", pa, effective="2025-04-15T09:00:00+08:00", status="preliminary")),
        post(mrd("A-3", pa, effective="2025-05-20T23:30:00+08:00")),
        post(mrd("A-4", pa, assay="mrd-ngs", effective="2025-05-20T10:00:00+08:00")),
        post(mrd("B-1", pb, effective="2025-03-01T09:00:00+08:00")),
    )
    answer = await client.post("/fhir", json=bundle_entries(report), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    ids = [e["response"]["location"].split("/_history")[0] for e in answer.json()["entry"]]
    return {"org_a": ids[0], "org_b": ids[1], "a": ids[2], "b": ids[3]}


def bundle_entries(report: dict[str, Any]) -> dict[str, Any]:
    return report


async def found(client: httpx.AsyncClient, resource_type: str, params: Any, **headers: str) -> list[str]:
    answer = await client.get(f"/fhir/{resource_type}", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["type"] == "searchset"
    return sorted(
        e["resource"]["identifier"][0]["value"] for e in body["entry"] if e["search"]["mode"] == "match"
    )


async def test_patient_by_identifier(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Patient", {"identifier": f"{PATIENT_SYSTEM}|A"}) == ["A"]
    assert await found(client, "Patient", {"identifier": "B"}) == ["B"]
    assert await found(client, "Patient", {"identifier": "urn:other|A"}) == []


async def test_patient_by_birthdate_with_prefixes(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Patient", {"birthdate": "2015-06-01"}) == ["A"]
    assert await found(client, "Patient", {"birthdate": "ge2016-01-01"}) == ["B"]
    assert await found(client, "Patient", {"birthdate": "lt2016"}) == ["A"]
    assert await found(client, "Patient", {"birthdate": "2019-01"}) == ["B"]


async def test_patient_by_organization(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Patient", {"organization": cohort["org_b"]}) == ["B"]


async def test_observation_by_subject_and_patient(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Observation", {"subject": cohort["b"]}) == ["B-1"]
    assert await found(client, "Observation", {"patient": cohort["a"]}) == ["A-1", "A-2", "A-3", "A-4"]
    assert await found(client, "Observation", {"patient": cohort["a"].split("/")[1]}) == [
        "A-1",
        "A-2",
        "A-3",
        "A-4",
    ]


async def test_observation_by_code(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Observation", {"code": f"{CONCEPT}|mrd-ngs"}) == ["A-4"]
    assert len(await found(client, "Observation", {"code": "mrd-flow"})) == 4
    assert len(await found(client, "Observation", {"code": f"{CONCEPT}|mrd-flow,{CONCEPT}|mrd-ngs"})) == 5


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-03-19", ["A-1"]),
        ("ge2025-05-01", ["A-3", "A-4"]),
        ("le2025-03-19", ["A-1", "B-1"]),
        ("gt2025-04-15", ["A-3", "A-4"]),
        ("lt2025-03-19", ["B-1"]),
        # 23:30 in Shanghai is 15:30 UTC on the same day.
        ("ge2025-05-20T15:30:00Z", ["A-3"]),
    ],
)
async def test_observation_by_date(
    client: httpx.AsyncClient, cohort: dict[str, str], date: str, expected: list[str]
) -> None:
    assert await found(client, "Observation", {"date": date}) == expected


async def test_observation_by_date_range_is_the_and_of_two_parameters(
    client: httpx.AsyncClient, cohort: dict[str, str]
) -> None:
    params = [("date", "ge2025-03-02"), ("date", "le2025-04-30")]
    assert await found(client, "Observation", params) == ["A-1", "A-2"]


async def test_observation_by_status(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert await found(client, "Observation", {"status": "preliminary"}) == ["A-2"]


async def test_by_last_updated_and_id(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    assert len(await found(client, "Observation", {"_lastUpdated": "ge2020-01-01"})) == 5
    assert await found(client, "Observation", {"_lastUpdated": "lt2020-01-01"}) == []
    assert await found(client, "Patient", {"_id": cohort["a"].split("/")[1]}) == ["A"]


async def test_paging_follows_next_links_to_every_result(
    client: httpx.AsyncClient, cohort: dict[str, str]
) -> None:
    seen: list[str] = []
    url: str | None = "/fhir/Observation?_count=2&_sort=date"
    pages = 0
    while url:
        body = (await client.get(url)).json()
        assert body["total"] == 5
        seen += [e["resource"]["identifier"][0]["value"] for e in body["entry"]]
        url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
        pages += 1
    assert pages == 3
    assert seen == ["B-1", "A-1", "A-2", "A-4", "A-3"]


async def test_sort_by_date_descending(client: httpx.AsyncClient, cohort: dict[str, str]) -> None:
    body = (await client.get("/fhir/Observation", params={"_sort": "-date", "patient": cohort["a"]})).json()
    assert [e["resource"]["identifier"][0]["value"] for e in body["entry"]] == ["A-3", "A-4", "A-2", "A-1"]


async def test_unknown_search_parameter_is_an_error(
    client: httpx.AsyncClient, cohort: dict[str, str]
) -> None:
    answer = await client.get("/fhir/Observation", params={"colour": "red"})
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_unknown_search_parameter_is_ignored_when_lenient(
    client: httpx.AsyncClient, cohort: dict[str, str]
) -> None:
    answer = await client.get(
        "/fhir/Observation", params={"colour": "red"}, headers={"Prefer": "handling=lenient"}
    )
    assert answer.status_code == 200
    outcome = [e for e in answer.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome[0]["resource"]["issue"][0]["severity"] == "warning"


async def test_invalid_date_and_count_are_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get("/fhir/Observation", params={"date": "yesterday"})).status_code == 400
    assert (await client.get("/fhir/Observation", params={"_count": "-1"})).status_code == 400
    assert (await client.get("/fhir/Observation", params={"_sort": "colour"})).status_code == 400


async def test_identifier_search_works_for_every_type(
    client: httpx.AsyncClient, cohort: dict[str, str]
) -> None:
    assert await found(client, "Observation", {"identifier": f"{LAB_SYSTEM}|A-3"}) == ["A-3"]


async def test_an_absurd_offset_is_a_400_not_a_crash(client: httpx.AsyncClient) -> None:
    huge = "1" + "0" * 30
    assert (await client.get("/fhir/Observation", params={"_offset": huge})).status_code == 400
    assert (await client.get("/fhir/Observation/_history", params={"_offset": huge})).status_code == 400

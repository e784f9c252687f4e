"""Issue 4 through the API: every MRD result placed on the trial's timepoints, classified, with evidence."""

from typing import Any

import httpx
import pytest

from tests.builders import CONCEPT, PATIENT_SYSTEM, UCUM, bundle, patient, post, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio
SNOMED = "http://snomed.info/sct"
SITE = "urn:mrdhub:site"


def organization(code: str = "SHANGHAI-SCMC") -> dict[str, Any]:
    return {"resourceType": "Organization", "identifier": [{"system": SITE, "value": code}], "name": code}


def window_phase(subject: str, start: str, days: int = 7, ident: str = "W1") -> dict[str, Any]:
    day = int(start[-2:])
    return {
        "resourceType": "MedicationAdministration",
        "identifier": [{"system": "urn:test:mar", "value": ident}],
        "status": "completed",
        "category": {"coding": [{"system": CONCEPT, "code": "window-phase"}]},
        "medicationCodeableConcept": {"text": "dexamethasone"},
        "subject": {"reference": subject},
        "effectivePeriod": {
            "start": f"{start}T08:00:00+08:00",
            "end": f"{start[:-2]}{day + days - 1:02d}T20:00:00+08:00",
        },
    }


def blinatumomab(subject: str, start: str, end: str, ident: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "identifier": [{"system": "urn:test:mar", "value": ident}],
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": CONCEPT, "code": "blinatumomab"}]},
        "subject": {"reference": subject},
        "effectivePeriod": {"start": start, "end": end},
    }


def specimen(subject: str, ident: str, kind: str = "396997002") -> dict[str, Any]:
    return {
        "resourceType": "Specimen",
        "identifier": [{"system": "urn:test:specimen", "value": ident}],
        "type": {"coding": [{"system": SNOMED, "code": kind}]},
        "subject": {"reference": subject},
    }


def mrd(
    subject: str,
    ident: str,
    when: str,
    value: float,
    *,
    unit: str = "%",
    assay: str = "mrd-flow",
    status: str = "final",
    specimen_ref: str | None = None,
    cells: int | None = None,
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:test:result", "value": ident}],
        "status": status,
        "code": {"coding": [{"system": CONCEPT, "code": assay}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if specimen_ref:
        observation["specimen"] = {"reference": specimen_ref}
    if cells is not None:
        observation["extension"] = [{"url": "urn:mrdhub:cells-analysed", "valueInteger": cells}]
    return observation


async def ingest(client: httpx.AsyncClient, *entries: dict[str, Any]) -> httpx.Response:
    answer = await client.post("/fhir", json=bundle(*entries), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return answer


async def enrol(client: httpx.AsyncClient, mrn: str = "T1") -> str:
    org, p = urn(), urn()
    answer = await ingest(
        client,
        post(organization(), org, if_none_exist=f"identifier={SITE}|SHANGHAI-SCMC"),
        post(patient(mrn, organization=org), p),
    )
    location: str = answer.json()["entry"][1]["response"]["location"]
    return location.split("/_history")[0]


async def timeline(client: httpx.AsyncClient, patient_ref: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/patients/{patient_ref.split('/')[1]}/timeline")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def at(body: dict[str, Any], timepoint: str, assay: str = "flow") -> dict[str, Any]:
    return next(t for t in body["timepoints"] if t["timepoint"] == timepoint and t["assay"] == assay)


async def test_d19_result_is_assigned_and_classified_with_its_evidence(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s = urn()
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(specimen(p, "S1"), s),
        post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=s)),
    )
    body = await timeline(client, p)
    assert body["anchors"]["induction-day1"]["date"] == "2025-03-01"
    d19 = at(body, "D19")
    assert d19["status"] == "assigned"
    assert d19["result"]["classification"] == "positive"
    assert d19["result"]["fraction"] == "0.0035"
    assert d19["result"]["value_as_sent"] == "0.35 %"
    assert d19["result"]["observation"].endswith("/_history/1")
    result = body["results"][0]
    assert result["trial_day"] == 19
    assert "D19" in result["timepoints"]


async def test_late_evening_sample_counts_on_the_local_calendar_day(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s = urn()
    # 22 March 23:30 in Shanghai is still day 22, the last day of the D19 window (15:30 UTC).
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(specimen(p, "S1"), s),
        post(mrd(p, "R1", "2025-03-22T23:30:00+08:00", 0.35, specimen_ref=s)),
    )
    body = await timeline(client, p)
    assert body["results"][0]["local_date"] == "2025-03-22"
    assert at(body, "D19")["status"] == "assigned"


async def test_a_result_one_day_outside_every_window_is_kept_unassigned(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s = urn()
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(specimen(p, "S1"), s),
        post(mrd(p, "R1", "2025-03-23T09:00:00+08:00", 0.35, specimen_ref=s)),
    )
    body = await timeline(client, p)
    result = body["results"][0]
    assert result["timepoints"] == []
    assert result["nearest"] == {"timepoint": "D19", "days_outside": 1}
    assert at(body, "D19")["status"] == "missing"


async def test_peripheral_blood_is_shown_but_not_assigned(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s = urn()
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(specimen(p, "S1", "122551003"), s),
        post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=s)),
    )
    body = await timeline(client, p)
    assert body["results"][0]["specimen"] == "specimen-peripheral-blood"
    assert body["results"][0]["timepoints"] == []
    assert at(body, "D19")["status"] == "missing"


async def test_a_result_before_its_anchor_is_placed_when_the_anchor_arrives(
    client: httpx.AsyncClient,
) -> None:
    p = await enrol(client)
    s = urn()
    await ingest(
        client,
        post(specimen(p, "S1"), s),
        post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=s)),
    )
    assert at(await timeline(client, p), "D19")["status"] == "awaiting-anchor"
    await ingest(client, post(window_phase(p, "2025-03-01")))
    assert at(await timeline(client, p), "D19")["status"] == "assigned"


async def test_preliminary_is_not_used_and_entered_in_error_withdraws(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    stored = await ingest(client, post(window_phase(p, "2025-03-01")), post(specimen(p, "S1")))
    specimen_ref = stored.json()["entry"][1]["response"]["location"].split("/_history")[0]
    result = mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=specimen_ref)
    await ingest(client, post(result | {"status": "preliminary"}))
    body = await timeline(client, p)
    assert at(body, "D19")["status"] == "missing"
    assert len(body["not_used"]) == 1
    await ingest(client, post(result))
    assert at(await timeline(client, p), "D19")["result"]["classification"] == "positive"
    await ingest(client, post(result | {"status": "entered-in-error"}))
    body = await timeline(client, p)
    assert at(body, "D19")["status"] == "missing"
    assert body["not_used"][0]["observation"].endswith("/_history/3")


async def test_an_amended_result_is_reclassified_at_once(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    stored = await ingest(client, post(window_phase(p, "2025-03-01")), post(specimen(p, "S1")))
    specimen_ref = stored.json()["entry"][1]["response"]["location"].split("/_history")[0]
    await ingest(client, post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=specimen_ref)))
    amended = mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.005, status="amended", specimen_ref=specimen_ref)
    await ingest(client, post(amended))
    d19 = at(await timeline(client, p), "D19")
    assert d19["result"]["classification"] == "negative"
    assert d19["result"]["observation"].endswith("/_history/2")


async def test_conflicting_window_phases_are_a_conflict_not_a_choice(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    await ingest(
        client,
        post(window_phase(p, "2025-03-01", ident="W1")),
        post(window_phase(p, "2025-03-10", ident="W2")),
    )
    body = await timeline(client, p)
    anchor = body["anchors"]["induction-day1"]
    assert anchor["conflict"] is True
    assert anchor["date"] is None
    assert len(anchor["sources"]) == 2
    assert at(body, "D19")["status"] == "awaiting-anchor"


async def test_the_trial_office_resolves_an_anchor_and_can_remove_it(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    pid = p.split("/")[1]
    await ingest(
        client,
        post(window_phase(p, "2025-03-01", ident="W1")),
        post(window_phase(p, "2025-03-10", ident="W2")),
    )
    put = await client.put(
        f"/api/v1/patients/{pid}/anchors/induction-day1",
        json={"date": "2025-03-01", "reason": "second record is a re-entry"},
    )
    assert put.status_code == 200, put.text
    anchor = (await timeline(client, p))["anchors"]["induction-day1"]
    assert anchor["date"] == "2025-03-01"
    assert anchor["conflict"] is False
    assert "trial office" in anchor["reason"]
    assert (await client.delete(f"/api/v1/patients/{pid}/anchors/induction-day1")).status_code == 204
    assert (await timeline(client, p))["anchors"]["induction-day1"]["conflict"] is True


async def test_post_blinatumomab_result_uses_the_end_of_the_course(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s1, s2 = urn(), urn()
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(blinatumomab(p, "2025-03-25T10:00:00+08:00", "2025-04-01T10:00:00+08:00", "B1")),
        post(blinatumomab(p, "2025-04-01T10:00:00+08:00", "2025-04-07T10:00:00+08:00", "B2")),
        post(specimen(p, "S1"), s1),
        post(specimen(p, "S2"), s2),
        post(mrd(p, "R-PRE", "2025-03-24T09:00:00+08:00", 0.2, specimen_ref=s1, cells=800_000)),
        post(mrd(p, "R-POST", "2025-04-09T09:00:00+08:00", 0.004, specimen_ref=s2, cells=800_000)),
        post(
            mrd(
                p,
                "R-POST-NGS",
                "2025-04-09T09:00:00+08:00",
                0.00005,
                assay="mrd-ngs",
                specimen_ref=s2,
                cells=2_000_000,
            )
        ),
    )
    body = await timeline(client, p)
    assert body["anchors"]["blinatumomab-end"]["date"] == "2025-04-07"
    assert body["courses"]["blinatumomab"]["infused_days"] == 14
    assert at(body, "PRE_BLINA")["result"]["classification"] == "positive"
    assert at(body, "POST_BLINA")["result"]["classification"] == "negative"
    assert at(body, "POST_BLINA", "ngs")["result"]["classification"] == "negative"


async def test_an_mrd_unit_that_cannot_be_converted_is_rejected_at_ingest(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    answer = await client.post(
        "/fhir", json=bundle(post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 3, unit="mg"))), headers=FHIR_JSON
    )
    assert answer.status_code == 400
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.valueQuantity.code"]
    assert (await client.get("/fhir/Observation")).json()["total"] == 0


async def test_an_unmapped_code_is_stored_with_a_warning_and_reported(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    local = mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.3)
    local["code"] = {"coding": [{"system": "urn:oid:some-lis", "code": "MRD-X"}]}
    answer = await ingest(client, post(local))
    outcome = answer.json()["entry"][0]["response"]["outcome"]["issue"][0]
    assert outcome["severity"] == "warning"
    assert outcome["expression"] == ["Bundle.entry[0].resource.code"]
    report = (await client.get("/api/v1/reports/unmapped-codes")).json()
    assert {
        "resource_type": "Observation",
        "element": "code",
        "system": "urn:oid:some-lis",
        "code": "MRD-X",
        "count": 1,
        "sites": ["SHANGHAI-SCMC"],
    } in report["codes"]


async def test_timeline_by_identifier_and_problem_details(client: httpx.AsyncClient) -> None:
    await enrol(client)
    by_identifier = await client.get(f"/api/v1/patients/{PATIENT_SYSTEM}|T1/timeline")
    assert by_identifier.status_code == 200
    missing = await client.get("/api/v1/patients/nobody/timeline")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/api/v1/timepoints/D99")).status_code == 404
    bad = await client.get("/api/v1/timepoints/D19", params={"assay": "pcr"})
    assert bad.status_code == 422
    assert bad.json()["parameter"] == "assay"


async def test_cohort_at_a_timepoint_as_json_and_csv(client: httpx.AsyncClient) -> None:
    p = await enrol(client)
    s = urn()
    await ingest(
        client,
        post(window_phase(p, "2025-03-01")),
        post(specimen(p, "S1"), s),
        post(mrd(p, "R1", "2025-03-19T09:00:00+08:00", 0.35, specimen_ref=s)),
    )
    await enrol(client, "T2")
    body = (await client.get("/api/v1/timepoints/D19", params={"assay": "flow"})).json()
    statuses = sorted(row["status"] for row in body["patients"])
    assert statuses == ["assigned", "awaiting-anchor"]
    csv = await client.get("/api/v1/timepoints/D19", headers={"Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("patient,site,timepoint,assay")
    assert len(lines) == 3


async def test_protocol_is_served_with_its_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/protocol")).json()
    assert body["version"].startswith("nct06607419@")
    assert body["protocol"]["assays"]["flow"]["threshold_fraction"] == "0.0001"

"""bench/cohort.py: seeded synthetic cohorts the real service ingests, idempotently, and reads as planned."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fhir.references import iter_references, local_target
from app.fhir.resources import validate_resource
from app.protocol import load_protocol
from app.settings import Settings
from bench.cohort import (
    LOCAL_MRD_CODES,
    SITES,
    Arm,
    Case,
    Event,
    Noise,
    Reading,
    Screening,
    generate,
)
from tests.conftest import FHIR_JSON

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "bundles"


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_the_same_seed_gives_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cohort = generate(patients=10, seed=seed)
        cohort.write_bundles(tmp_path / name / "bundles")
        cohort.write_ndjson(tmp_path / name / "ndjson")
    for kind in ("bundles", "ndjson"):
        first, again, other = (contents(tmp_path / name / kind) for name in "abc")
        assert first == again
        assert first != other


def test_committed_demo_bundles_are_the_generators_output() -> None:
    """demo/bundles is generate(patients=12, seed=2025): rerun demo/generate.py after changing the cohort."""
    expected = {
        f"{m.name}.json": json.dumps(m.bundle, indent=1, ensure_ascii=False) + "\n"
        for m in generate(patients=12, seed=2025).bundles()
    }
    assert {p.name: p.read_text(encoding="utf-8") for p in DEMO.glob("*.json")} == expected


def test_the_demo_holds_every_outcome_noise_and_event() -> None:
    cases = list(generate(patients=12, seed=2025).cases())
    assert {c.site for c in cases} == set(SITES)
    assert {(c.arm, c.screening) for c in cases} == {
        (Arm.STUDY, Screening.ENROLLED),
        (Arm.STUDY, Screening.INELIGIBLE),
        (Arm.STUDY, Screening.PENDING),
        (Arm.CONTROL, Screening.ENROLLED),
    }
    assert set().union(*(c.noise for c in cases)) == set(Noise)
    assert {event for c in cases for event, _ in c.events} == set(Event)


def is_flow_negative(reading: Reading) -> bool:
    """Below 0.01 % on enough cells (PROTOCOL.md section 3), for flow results as the generator writes them."""
    if reading.value is None or reading.comparator == "<":  # not detected at, or below, a bound
        bound = reading.sensitivity if reading.value is None else reading.value
        below = bound is not None and bound <= 0.01
    else:
        below = reading.value < 0.01
    return below and (reading.cells or 0) >= 500_000


def post_blina_flow_negative(case: Case) -> bool | None:
    """Whether the POST_BLINA flow result (the first marrow of completion .. +7 days) is negative."""
    end = case.course_end
    assert end is not None
    for sample in case.samples:
        if sample.bone_marrow and end <= sample.collected.date() <= end + timedelta(days=7):
            flow = next(r.reading for r in sample.results if r.concept == "mrd-flow" and not r.withdrawn)
            return not sample.inadequate and is_flow_negative(flow)
    return None


def test_ninety_patients_look_like_the_trial() -> None:
    cohort = generate(patients=90, seed=1)
    cases = list(cohort.cases())
    assert sum(c.arm is Arm.STUDY for c in cases) == 70
    assert sum(c.arm is Arm.CONTROL for c in cases) == 20
    enrolled = [c for c in cases if c.arm is Arm.STUDY and c.screening is Screening.ENROLLED]
    assert 60 <= len(enrolled) <= 66
    assert all(sum(c.site == site for c in cases) >= 15 for site in SITES)
    negative = [n for c in enrolled if (n := post_blina_flow_negative(c)) is not None]
    assert 0.5 <= sum(negative) / len(negative) <= 0.75
    assert all(not c.bags for c in cases if c.arm is Arm.CONTROL)
    assert 1 <= sum(not c.course_complete for c in enrolled) <= 10
    assert all(c.death is None or c.death.date() <= cohort.as_of for c in cases)


def test_the_local_codes_and_sites_are_those_the_protocol_file_maps() -> None:
    protocol = load_protocol(Settings().protocol_path)
    assert set(protocol.sites) == set(SITES)
    for codes in LOCAL_MRD_CODES.values():
        for concept, (system, code, _) in codes.items():
            assert protocol.codes.concept_for(system, code) == concept


async def post_all(client: httpx.AsyncClient, bundles: list[dict[str, Any]]) -> list[list[str]]:
    """POST each bundle; every one must be accepted without an issue. Returns the entry statuses."""
    statuses = []
    for bundle in bundles:
        answer = await client.post("/fhir", json=bundle, headers=FHIR_JSON | {"Prefer": "return=minimal"})
        assert answer.status_code == 200, answer.text
        entries = answer.json()["entry"]
        assert [e["response"].get("outcome") for e in entries] == [None] * len(entries)
        statuses.append([e["response"]["status"] for e in entries])
    return statuses


async def stored(client: httpx.AsyncClient, types: set[str]) -> dict[str, tuple[int, int]]:
    """(resources, versions) per type."""
    counts = {}
    for kind in sorted(types):
        current = (await client.get(f"/fhir/{kind}", params={"_count": "1"})).json()["total"]
        versions = (await client.get(f"/fhir/{kind}/_history", params={"_count": "1"})).json()["total"]
        counts[kind] = (current, versions)
    return counts


@pytest.mark.anyio
async def test_demo_bundles_are_accepted_and_resending_them_stores_nothing(client: httpx.AsyncClient) -> None:
    bundles = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(DEMO.glob("*.json"))]
    types = {e["resource"]["resourceType"] for b in bundles for e in b["entry"]}
    first = await post_all(client, bundles)
    assert all(s in ("200 OK", "201 Created") for statuses in first for s in statuses)
    before = await stored(client, types)
    assert before["Patient"][0] == 12
    again = await post_all(client, bundles)
    assert {s for statuses in again for s in statuses} == {"200 OK"}
    assert await stored(client, types) == before


@pytest.mark.anyio
async def test_a_generated_cohort_ingests_and_every_timeline_reads_as_planned(
    client: httpx.AsyncClient,
) -> None:
    cohort = generate(patients=30, seed=30)
    await post_all(client, [m.bundle for m in cohort.bundles()])
    study_assigned = []
    for case in cohort.cases():
        answer = await client.get(f"/api/v1/patients/{case.patient_system}|{case.mrn}/timeline")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["site"] == case.site
        assert body["anchors"]["induction-day1"]["date"] == case.day1.isoformat()
        outcomes = {(t["timepoint"], t["assay"]): t for t in body["timepoints"]}
        assert outcomes["D19", "flow"]["status"] == "assigned"
        post = outcomes["POST_BLINA", "flow"]
        assert (post["status"] == "assigned") == case.expects_post_blina_flow(), case.mrn
        if case.bags:
            course = body["courses"]["blinatumomab"]
            assert course["complete"] == case.course_complete
            assert bool(course["interruptions"]) == (Noise.INTERRUPTION in case.noise)
        if case.arm is Arm.STUDY and case.screening is Screening.ENROLLED:
            study_assigned.append(post["status"] == "assigned")
    assert len(study_assigned) >= 20
    assert sum(study_assigned) / len(study_assigned) >= 0.75


def test_ndjson_resources_are_valid_and_refer_only_to_each_other(tmp_path: Path) -> None:
    counts = generate(patients=12, seed=2025).write_ndjson(tmp_path)
    resources = [
        json.loads(line)
        for path in sorted(tmp_path.glob("*.ndjson"))
        for line in path.read_text().splitlines()
    ]
    assert len(resources) == sum(counts.values())
    for resource in resources:
        validate_resource(resource)
    ids = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(ids) == len(resources)
    for resource in resources:
        for path, reference in iter_references(resource):
            assert local_target(reference) is not None, (path, reference)
            assert reference in ids, (path, reference)
    assert {p.stem for p in tmp_path.glob("*.ndjson")} == set(counts)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert sum("deceasedDateTime" in p for p in patients) == 1

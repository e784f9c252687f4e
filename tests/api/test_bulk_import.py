"""Bulk NDJSON import as a job: POST /api/v1/import, then GET /api/v1/jobs/{id} until it is done."""

import datetime as dt
import json
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.db.tables import JobRow, PatientSummaryRow, ResourceRow, ResourceVersionRow
from app.services import jobs
from app.services.bulk_import import import_file
from app.services.ingest import TRUSTED
from app.settings import Settings
from bench.cohort import generate
from tests.builders import PATIENT_SYSTEM, mrd, patient
from tests.conftest import TokenFactory

pytestmark = pytest.mark.anyio
NDJSON = {"content-type": "application/fhir+ndjson"}
SITE = "urn:mrdhub:site"


def ndjson(*resources: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources).encode()


def organization(site: str, logical_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": logical_id,
        "identifier": [{"system": SITE, "value": site}],
        "name": site,
    }


def with_id(resource: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return {"resourceType": resource["resourceType"], "id": logical_id, **resource}


async def as_client(app: object, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://mrdhub.test",
        headers={"Authorization": f"Bearer {token}"},
    )


async def finished(client: httpx.AsyncClient, location: str, *, within_s: float = 60) -> dict[str, Any]:
    """Poll the job until it is completed or failed (bounded)."""
    with anyio.fail_after(within_s):
        while True:
            answer = await client.get(location)
            assert answer.status_code == 200, answer.text
            job: dict[str, Any] = answer.json()
            if job["status"] in ("completed", "failed"):
                return job
            await anyio.sleep(0.05)


async def run_import(client: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    answer = await client.post("/api/v1/import", content=body, headers=NDJSON)
    assert answer.status_code == 202, answer.text
    location = answer.headers["content-location"]
    assert location == f"/api/v1/jobs/{answer.json()['id']}"
    assert answer.json()["status"] == "queued"
    job = await finished(client, location)
    assert job["status"] == "completed", job
    return job


async def total(client: httpx.AsyncClient, resource_type: str) -> int:
    answer = await client.get(f"/fhir/{resource_type}", params={"_count": "0"})
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["total"]
    return count


def clinical_versions(app: Any) -> int:
    """Versions of everything but the audit trail (which every request adds to)."""
    query = (
        select(func.count())
        .select_from(ResourceVersionRow)
        .join(ResourceRow, ResourceRow.pk == ResourceVersionRow.resource_pk)
        .where(ResourceRow.resource_type.not_in(("AuditEvent", "Provenance")))
    )
    with app.state.db.read() as session:
        return int(session.scalar(query) or 0)


def rejected(job: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    return {r["line"]: r["outcome"]["issue"] for r in job["report"]["rejected"]}


async def test_a_cohort_imports_and_importing_it_again_stores_nothing_new(
    client: httpx.AsyncClient, app: Any
) -> None:
    resources = list(generate(patients=9, seed=3).resources())
    body = ndjson(*resources)
    job = await run_import(client, body)
    progress = job["progress"]
    assert progress["lines_read"] == len(resources)
    assert progress["bytes_read"] == progress["bytes_total"] == len(body)
    assert progress["resources_accepted"] == progress["resources_created"] == len(resources)
    assert progress["resources_rejected"] == 0
    assert job["report"] == {"rejected": [], "rejected_total": 0, "truncated": False}
    assert job["started_at"] and job["finished_at"]
    assert await total(client, "Patient") == 9

    versions_before = clinical_versions(app)
    again = await run_import(client, body)
    assert again["progress"]["resources_unchanged"] == len(resources)
    assert again["progress"]["resources_created"] == again["progress"]["resources_updated"] == 0
    assert clinical_versions(app) == versions_before
    assert await total(client, "Patient") == 9


async def test_each_bad_line_is_reported_with_its_number_and_path_and_the_others_are_stored(
    client: httpx.AsyncClient,
) -> None:
    bad_value = with_id(mrd("A-2", "Patient/p1"), "o2")
    bad_value["valueQuantity"]["value"] = "lots"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    body = ndjson(
        with_id(patient("M-1"), "p1"),
        '{"resourceType": "Observation", "status": ',
        bad_value,
        {"resourceType": "Nonsense", "id": "x"},
        with_id(mrd("A-5", "Patient/p1"), "o5"),
        bundle,
        with_id(mrd("A-7", "Patient/nobody"), "o7"),
        with_id(mrd("A-8", "Patient/p1", unit="mg"), "o8"),
    )
    job = await run_import(client, body)
    assert job["progress"]["resources_accepted"] == 2
    assert job["progress"]["resources_rejected"] == 6
    issues = rejected(job)
    assert sorted(issues) == [2, 3, 4, 6, 7, 8]
    assert issues[2][0]["code"] == "structure" and "Malformed JSON" in issues[2][0]["diagnostics"]
    assert issues[3][0]["expression"] == ["Observation.valueQuantity.value"]
    assert issues[4][0]["code"] == "not-supported"
    assert issues[4][0]["expression"] == ["resourceType"]
    assert issues[6][0]["expression"] == ["Bundle.resourceType"]
    assert issues[7][0]["code"] == "not-found"
    assert issues[7][0]["expression"] == ["Observation.subject.reference"]
    assert issues[8][0]["expression"] == ["Observation.valueQuantity.code"]
    assert await total(client, "Observation") == 1


async def test_lines_may_come_before_the_resources_they_refer_to(client: httpx.AsyncClient) -> None:
    body = ndjson(
        with_id(mrd("A-1", "Patient/p1"), "o1"),
        with_id(patient("M-1", organization="Organization/org"), "p1"),
        organization("HEFEI-APCH", "org"),
    )
    job = await run_import(client, body)
    assert job["progress"]["resources_created"] == 3, job
    assert (await client.get("/fhir/Observation/o1")).json()["subject"]["reference"] == "Patient/p1"


async def test_duplicate_lines_and_natural_keys_store_one_resource_and_changes_are_new_versions(
    client: httpx.AsyncClient,
) -> None:
    job = await run_import(client, ndjson(patient("M-1"), patient("M-1"), with_id(patient("M-2"), "p2")))
    assert job["progress"]["resources_created"] == 2
    assert job["progress"]["resources_unchanged"] == 1
    assert await total(client, "Patient") == 2

    # Without an id the line lands on the resource holding its identifier; with one, on that id.
    changed = patient("M-1", birth_date="2018-04-02")
    withdrawn = with_id(mrd("A-1", "Patient/p2", status="entered-in-error"), "o1")
    first = await run_import(client, ndjson(with_id(mrd("A-1", "Patient/p2"), "o1")))
    assert first["progress"]["resources_created"] == 1
    job = await run_import(client, ndjson(changed, withdrawn))
    assert job["progress"]["resources_updated"] == 2
    found = (await client.get("/fhir/Patient", params={"identifier": f"{PATIENT_SYSTEM}|M-1"})).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["birthDate"] == "2018-04-02"
    assert found["entry"][0]["resource"]["meta"]["versionId"] == "2"
    observation = (await client.get("/fhir/Observation/o1")).json()
    assert (observation["status"], observation["meta"]["versionId"]) == ("entered-in-error", "2")

    # An identifier already held by another id is a conflict for that line alone.
    clash = await run_import(client, ndjson(with_id(patient("M-2"), "p9")))
    assert rejected(clash)[1][0]["code"] == "conflict"
    assert await total(client, "Patient") == 2


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/import", content=ndjson(patient("M-1")), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 415
    assert answer.headers["content-type"] == "application/problem+json"


async def test_a_site_imports_only_its_own_patients_data(app: object, token_for: TokenFactory) -> None:
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    office = await as_client(app, await token_for())
    async with hefei, office:
        body = ndjson(
            organization("SHANGHAI-SCMC", "sh"),
            with_id(patient("S-1", organization="Organization/sh"), "s1"),
            with_id(mrd("S-R1", "Patient/s1"), "so1"),
            organization("HEFEI-APCH", "hf"),
            with_id(patient("H-1", organization="Organization/hf"), "h1"),
        )
        job = await run_import(hefei, body)
        issues = rejected(job)
        assert sorted(issues) == [2, 3]
        assert issues[2][0]["code"] == "not-found"
        assert issues[2][0]["expression"] == ["Patient"]
        assert await total(office, "Patient") == 1
        assert await total(office, "Observation") == 0


async def test_lines_need_create_and_update_scope_for_their_type(
    app: object, token_for: TokenFactory
) -> None:
    lis = await as_client(app, await token_for(scope="system/Patient.cu system/Observation.c"))
    async with lis:
        job = await run_import(lis, ndjson(patient("M-1"), with_id(mrd("A-1", "Patient/x"), "o1")))
    issues = rejected(job)
    assert list(issues) == [2]
    assert issues[2][0]["code"] == "forbidden"


async def test_only_the_owner_or_the_trial_office_reads_a_job(app: object, token_for: TokenFactory) -> None:
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    shanghai = await as_client(app, await token_for("lis-shanghai-scmc"))
    office = await as_client(app, await token_for())
    async with hefei, shanghai, office:
        answer = await hefei.post("/api/v1/import", content=ndjson(patient("M-1")), headers=NDJSON)
        location = answer.headers["content-location"]
        await finished(hefei, location)
        assert (await shanghai.get(location)).status_code == 404
        assert (await office.get(location)).json()["owner"] == "lis-hefei-apch"
        assert (await hefei.get("/api/v1/jobs/nosuchjob")).status_code == 404


async def test_an_import_writes_its_audit_trail_per_chunk(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/import", content=ndjson(patient("M-1"), patient("M-2")), headers=NDJSON
    )
    job = await finished(client, answer.headers["content-location"])
    provenance = (await client.get("/fhir/Provenance")).json()["entry"]
    assert len(provenance) == 1
    source = provenance[0]["resource"]["entity"][0]["what"]["identifier"]
    assert source == {"system": "urn:mrdhub:job", "value": job["id"]}
    assert len(provenance[0]["resource"]["target"]) == 2
    events = (await client.get("/fhir/AuditEvent", params={"subtype": "operation"})).json()["entry"]
    assert any(job["id"] in e["resource"]["outcomeDesc"] for e in events)


async def test_the_import_is_not_held_to_the_request_body_limit(
    app: object, settings: Settings, token_for: TokenFactory
) -> None:
    from app.main import create_app

    small = create_app(settings.model_copy(update={"max_body_bytes": 2000}))
    try:
        async with await as_client(small, await token_for()) as c:
            body = ndjson(*(patient(f"M-{i}") for i in range(40)))
            assert len(body) > 2000
            job = await run_import(c, body)
            assert job["progress"]["resources_created"] == 40
            refused = await c.post(
                "/fhir/Patient", content=b"x" * 3000, headers={"content-type": "application/fhir+json"}
            )
            assert refused.status_code == 413
    finally:
        small.state.db.dispose()  # type: ignore[attr-defined]


async def test_a_job_whose_server_stopped_is_reported_failed(app: Any) -> None:
    db = app.state.db
    job = jobs.create(db, kind="import", principal=TRUSTED, request={})
    jobs.start(db, job.id)
    with db.transaction() as session:
        long_ago = dt.datetime(2020, 1, 1)
        session.execute(update(JobRow).where(JobRow.id == job.id).values(heartbeat_at=long_ago))
    seen = jobs.read(db, job.id, principal=TRUSTED)
    assert seen.status == "failed"
    assert seen.error is not None and "interrupted" in seen.error


def test_validating_in_worker_processes_reports_the_same(app: Any, tmp_path: Any) -> None:
    from app.services.bulk_import import import_file

    bad = with_id(mrd("A-2", "Patient/p1"), "o2")
    bad["valueQuantity"]["value"] = "lots"
    path = tmp_path / "lines.ndjson"
    path.write_bytes(ndjson(with_id(patient("M-1"), "p1"), bad, "{", with_id(mrd("A-3", "Patient/p1"), "o3")))
    db, checks = app.state.db, app.state.checks
    report = import_file(db, path, principal=TRUSTED, checks=checks, retries=1, workers=1)
    assert (report.progress.created, report.progress.rejected) == (2, 2)
    assert [r["line"] for r in report.rejections] == [2, 3]
    assert report.rejections[0]["outcome"]["issue"][0]["expression"] == ["Observation.valueQuantity.value"]


async def test_a_slow_upload_outlasts_the_request_time_limit_but_a_stalled_one_is_408(
    app: object, settings: Settings, token_for: TokenFactory
) -> None:
    from collections.abc import AsyncIterator

    from app.main import create_app

    quick = create_app(settings.model_copy(update={"request_timeout_s": 1.0}))
    lines = [ndjson(patient(f"M-{i}")) for i in range(6)]

    async def trickle(pause_s: float, pieces: list[bytes]) -> AsyncIterator[bytes]:
        for piece in pieces:
            await anyio.sleep(pause_s)
            yield piece

    try:
        async with await as_client(quick, await token_for()) as c:
            job = await run_import_body(c, trickle(0.3, lines))  # 1.8 s in all, never 1 s idle
            assert job["progress"]["resources_created"] == 6
            stalled = await c.post("/api/v1/import", content=trickle(1.5, lines[:1]), headers=NDJSON)
            assert stalled.status_code == 408
            assert stalled.headers["content-type"] == "application/problem+json"
    finally:
        quick.state.db.dispose()  # type: ignore[attr-defined]


async def run_import_body(client: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    answer = await client.post("/api/v1/import", content=body, headers=NDJSON)
    assert answer.status_code == 202, answer.text
    return await finished(client, answer.headers["content-location"])


async def test_a_large_import_refreshes_the_planners_statistics(
    app: Any, is_postgres: bool, tmp_path: Any
) -> None:
    """PostgreSQL plans with the statistics of the tables before a bulk load until they are refreshed."""
    if not is_postgres:
        pytest.skip("planner statistics are PostgreSQL's (SQLite has no ANALYZE worth keeping here)")
    def analyzed() -> dict[str, int]:
        with app.state.db.engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            rows = connection.execute(
                text("SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname = ANY(:t)"),
                {"t": ["resources", "resource_versions", "resource_identifiers", "search_index"]},
            )
            return {name: int(count) for name, count in rows}

    before = analyzed()
    path = tmp_path / "cohort.ndjson"
    path.write_bytes(ndjson(*generate(patients=2, seed=5).resources()))
    report = import_file(app.state.db, path, principal=TRUSTED, checks=(), retries=5, analyze_after=1)
    assert report.progress.created > 0
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)  # the counters are flushed within a second
    while analyzed() == before and dt.datetime.now() < deadline:
        await anyio.sleep(0.2)
    after = analyzed()
    assert all(after[t] > before.get(t, 0) for t in after), (before, after)
    assert len(after) == 4


async def test_a_finished_import_has_rebuilt_the_derived_rows_of_its_patients(
    client: httpx.AsyncClient, app: Any
) -> None:
    await run_import(client, ndjson(*generate(patients=9, seed=4).resources()))
    with app.state.db.engine.connect() as connection:
        summarised = connection.execute(select(func.count(func.distinct(PatientSummaryRow.patient)))).scalar()
    assert summarised == await total(client, "Patient") == 9
    # The endpoint then answers from them.
    served = (await client.get("/api/v1/endpoints/primary", params={"assay": "flow"})).json()
    assert served["overall"]["n"] > 0

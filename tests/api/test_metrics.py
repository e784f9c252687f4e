"""GET /metrics: what Prometheus scrapes, behind its own token, with route templates and no PHI.

The counters belong to the process (every app a test builds shares them), so each test compares a value
before and after what it does.
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app import metrics
from app.main import create_app
from app.settings import Settings
from tests.builders import PATIENT_SYSTEM, bundle, lab_report, mrd, patient, post, urn
from tests.conftest import FHIR_JSON, TokenFactory

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "scrape-token-for-tests-0123456789abcdef"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})


async def scrape(client: httpx.AsyncClient) -> str:
    answer = await client.get("/metrics", headers=SCRAPER)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def value(text: str, sample: str, **labels: str) -> float:
    """The sample's value (0 if absent), e.g. value(text, "mrdhub_http_requests_total", status="200")."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


async def test_a_request_is_counted_under_its_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    labels = {"route": "/fhir/{resource_type}/{logical_id}", "method": "GET", "status": "404"}
    before = await scrape(client)
    answer = await client.get("/fhir/Patient/no-such-patient-42")
    assert answer.status_code == 404
    after = await scrape(client)
    assert value(after, "mrdhub_http_requests_total", **labels) == (
        value(before, "mrdhub_http_requests_total", **labels) + 1
    )
    timed = {"route": labels["route"], "method": "GET"}
    assert value(after, "mrdhub_http_request_duration_seconds_count", **timed) == (
        value(before, "mrdhub_http_request_duration_seconds_count", **timed) + 1
    )
    assert "no-such-patient-42" not in after


async def test_an_unmatched_path_is_one_series_whatever_the_path(client: httpx.AsyncClient) -> None:
    labels = {"route": "<unmatched>", "method": "GET", "status": "404"}
    before = value(await scrape(client), "mrdhub_http_requests_total", **labels)
    await client.get("/wp-admin/setup-config.php")
    await client.get("/nothing/here")
    after = await scrape(client)
    assert value(after, "mrdhub_http_requests_total", **labels) == before + 2
    assert "wp-admin" not in after


async def test_an_unknown_method_is_labelled_other(client: httpx.AsyncClient) -> None:
    await client.request("BREW", "/healthz")
    text = await scrape(client)
    assert "BREW" not in text
    assert value(text, "mrdhub_http_requests_total", route="/healthz", method="other") >= 1


async def test_an_ingested_bundle_counts_its_resources_by_type(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    answer = await client.post("/fhir", json=lab_report("MRN-1", "ACC-1"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    after = await scrape(client)
    for resource_type in ("Patient", "Observation"):
        assert value(after, "mrdhub_fhir_resources_ingested_total", resource_type=resource_type) == (
            value(before, "mrdhub_fhir_resources_ingested_total", resource_type=resource_type) + 1
        )


async def test_a_rejected_bundle_counts_its_resources_under_the_issue_code(
    client: httpx.AsyncClient,
) -> None:
    p = urn()
    invalid = bundle(post(patient("MRN-1"), p), post(mrd("ACC-1", p, status="done")))
    before = await scrape(client)
    answer = await client.post("/fhir", json=invalid, headers=FHIR_JSON)
    assert answer.status_code == 400
    code = answer.json()["issue"][0]["code"]
    after = await scrape(client)
    assert value(after, "mrdhub_fhir_resources_rejected_total", reason=code) == (
        value(before, "mrdhub_fhir_resources_rejected_total", reason=code) + 2
    )
    assert value(after, "mrdhub_fhir_resources_ingested_total", resource_type="Patient") == value(
        before, "mrdhub_fhir_resources_ingested_total", resource_type="Patient"
    )


async def test_a_refused_batch_entry_is_counted_and_its_neighbour_ingested(
    client: httpx.AsyncClient,
) -> None:
    mixed = bundle(post(patient("MRN-2")), post(mrd("ACC-2", "Patient/unknown-99")), kind="batch")
    before = await scrape(client)
    answer = await client.post("/fhir", json=mixed, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    refused = answer.json()["entry"][1]["response"]
    assert refused["status"].startswith("4")
    code = refused["outcome"]["issue"][0]["code"]
    after = await scrape(client)
    assert value(after, "mrdhub_fhir_resources_rejected_total", reason=code) == (
        value(before, "mrdhub_fhir_resources_rejected_total", reason=code) + 1
    )
    assert value(after, "mrdhub_fhir_resources_ingested_total", resource_type="Patient") == (
        value(before, "mrdhub_fhir_resources_ingested_total", resource_type="Patient") + 1
    )


async def test_no_patient_id_or_identifier_value_appears_in_the_metrics(client: httpx.AsyncClient) -> None:
    mrn, accession = "MRN-PHI-4711", "ACC-PHI-0815"
    answer = await client.post("/fhir", json=lab_report(mrn, accession), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    ids = [e["response"]["location"].split("/")[1] for e in answer.json()["entry"]]
    await client.get(f"/fhir/Patient/{ids[0]}")
    await client.get(f"/fhir/Observation/{ids[1]}/_history/1")
    await client.get("/fhir/Patient", params={"identifier": f"{PATIENT_SYSTEM}|{mrn}"})
    await client.get(f"/api/v1/patients/{ids[0]}/timeline")
    text = await scrape(client)
    for secret in (mrn, accession, *ids, PATIENT_SYSTEM):
        assert secret not in text
    assert value(text, "mrdhub_http_requests_total", route="/fhir/{resource_type}/{logical_id}") >= 1


async def test_metrics_need_the_metrics_token(client: httpx.AsyncClient, token_for: TokenFactory) -> None:
    anonymous = await client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    # A SMART access token, even the trial office's, is not the scrape token.
    smart = await client.get("/metrics", headers={"Authorization": f"Bearer {await token_for()}"})
    assert smart.status_code == 401
    assert "mrdhub_" not in anonymous.text + wrong.text + smart.text


async def test_metrics_are_off_without_a_token_when_authorisation_is_on(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_token": None}))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mrdhub.test") as c:
            answer = await c.get("/metrics", headers=SCRAPER)
        assert answer.status_code == 404
        assert "mrdhub_" not in answer.text
    finally:
        app.state.db.dispose()


async def test_a_scrape_writes_no_audit_event(client: httpx.AsyncClient) -> None:
    async def audit_total() -> int:
        answer = await client.get("/fhir/AuditEvent", params={"_count": "1"})
        assert answer.status_code == 200, answer.text
        found: int = answer.json()["total"]
        return found

    await scrape(client)
    before = await audit_total()
    await scrape(client)
    await scrape(client)
    assert await audit_total() == before + 1  # the AuditEvent search itself


async def test_a_job_has_its_progress_while_it_runs_and_is_counted_when_it_ends(
    client: httpx.AsyncClient,
) -> None:
    finished = {"kind": "import", "status": "completed"}
    before = value(await scrape(client), "mrdhub_jobs_finished_total", **finished)
    metrics.job_progress("import", "job-7f3a", 250, 1000)
    running = await scrape(client)
    assert value(running, "mrdhub_job_processed", kind="import", job_id="job-7f3a") == 250
    assert value(running, "mrdhub_job_total", kind="import", job_id="job-7f3a") == 1000
    assert value(running, "mrdhub_jobs_running", kind="import") >= 1
    metrics.job_progress("import", "job-7f3a", 1000, 1000)
    metrics.job_finished("import", "job-7f3a", "completed")
    done = await scrape(client)
    assert "job-7f3a" not in done
    assert value(done, "mrdhub_jobs_finished_total", **finished) == before + 1
    assert (
        value(done, "mrdhub_jobs_running", kind="import")
        == value(running, "mrdhub_jobs_running", kind="import") - 1
    )


def test_workers_in_multiprocess_mode_are_summed(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, each worker process writes its values there and a scrape sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = "from app import metrics; metrics.resources_ingested('Observation', 3)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, cwd=Path(__file__).parents[2])
    scrape_code = "import sys; from app import metrics; sys.stdout.write(metrics.exposition().decode())"
    text = subprocess.run(
        [sys.executable, "-c", scrape_code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    ).stdout
    assert value(text, "mrdhub_fhir_resources_ingested_total", resource_type="Observation") == 6

"""Prometheus metrics: requests by route template, latency, resources ingested and rejected, job progress.

The metrics live in one registry per process, built when this module is first imported, not one per app.
A Prometheus counter counts what one process did (that is what a scrape reads), and the ingest service and
the bulk jobs record into it without carrying an app around. Tests build many apps in one process: they
share these counters and compare values before and after.

No label carries PHI or an unbounded value: requests are labelled by route template
(`/fhir/{resource_type}/{logical_id}`, never the raw path with its id), a known HTTP method, and status;
ingest by resource type and OperationOutcome issue code; jobs by kind, and a job's own series are dropped
when it finishes. Label values that do not look like what they should are recorded as `other`.

Several worker processes (uvicorn --workers N) each have their own counters, and a scrape reaches one of
them. With PROMETHEUS_MULTIPROC_DIR set (an empty directory, before the workers start) prometheus-client
writes every process's values to files there and `/metrics` answers with their sum (client_python's
multiprocess mode); per-job gauges are then left out, because that mode cannot remove a series.
"""

import hmac
import os
import re
import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# IssueType codes (invalid, not-found, too-costly...), job kinds and statuses: short lower-case words.
WORD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# The default buckets plus a finer start: the ingest goal is a p99 under 100 ms (issue 8).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


REGISTRY = CollectorRegistry()
if not multiprocess_mode():
    # Per-process figures; in multiprocess mode they would describe only the worker that was scraped.
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "mrdhub_http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "mrdhub_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ("route", "method"),
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
INGESTED = Counter(
    "mrdhub_fhir_resources_ingested",
    "Resources accepted by a FHIR write (created, updated or found unchanged), by resource type",
    ("resource_type",),
    registry=REGISTRY,
)
REJECTED = Counter(
    "mrdhub_fhir_resources_rejected",
    "Resources refused by a FHIR write, by the OperationOutcome issue code (a refused transaction counts "
    "all its entries)",
    ("reason",),
    registry=REGISTRY,
)
JOB_PROCESSED = Gauge(
    "mrdhub_job_processed",
    "Items a running job has processed so far (the series goes when the job finishes)",
    ("kind", "job_id"),
    registry=REGISTRY,
)
JOB_TOTAL = Gauge(
    "mrdhub_job_total",
    "Items a running job has to process, when known (the series goes when the job finishes)",
    ("kind", "job_id"),
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge(
    "mrdhub_jobs_running",
    "Jobs running, by kind",
    ("kind",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "mrdhub_jobs_finished",
    "Jobs finished, by kind and final status",
    ("kind", "status"),
    registry=REGISTRY,
)
_running: set[tuple[str, str]] = set()
_running_lock = threading.Lock()


def _word(value: str) -> str:
    return value if WORD.match(value) else OTHER


def resources_ingested(resource_type: str, n: int = 1) -> None:
    if n > 0:
        INGESTED.labels(resource_type if RESOURCE_TYPE.match(resource_type) else OTHER).inc(n)


def resources_rejected(reason: str, n: int = 1) -> None:
    """`reason` is the OperationOutcome issue code (IssueType value set: invalid, not-found, ...)."""
    if n > 0:
        REJECTED.labels(_word(reason)).inc(n)


def job_progress(kind: str, job_id: str, processed: int, total: int | None) -> None:
    kind = _word(kind)
    with _running_lock:
        started = (kind, job_id) not in _running
        _running.add((kind, job_id))
    if started:
        JOBS_RUNNING.labels(kind).inc()
    if multiprocess_mode() or not JOB_ID.match(job_id):
        return
    JOB_PROCESSED.labels(kind, job_id).set(processed)
    if total is not None:
        JOB_TOTAL.labels(kind, job_id).set(total)


def job_finished(kind: str, job_id: str, status: str) -> None:
    """Counts the job by kind and status and drops its own series, so job ids do not pile up."""
    kind = _word(kind)
    with _running_lock:
        was_running = (kind, job_id) in _running
        _running.discard((kind, job_id))
    if was_running:
        JOBS_RUNNING.labels(kind).dec()
    JOBS_FINISHED.labels(kind, _word(status)).inc()
    if not multiprocess_mode():
        for gauge in (JOB_PROCESSED, JOB_TOTAL):
            gauge.remove_by_labels({"kind": kind, "job_id": job_id})


def exposition() -> bytes:
    """The Prometheus text format: this process's registry, or every worker's values in multiprocess mode."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class HttpMetrics:
    """ASGI middleware: counts each answer by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if an exception leaves the app before an answer starts

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router has put the matched route in the scope by now; an unmatched path (a 404, a probe
            # for /wp-admin) is one series, not one per path.
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope["method"] if scope["method"] in METHODS else OTHER
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)


router = APIRouter(tags=["Operations"])


@router.get(METRICS_PATH, include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint, behind its own bearer token (METRICS_TOKEN).

    A static token because that is what a Prometheus scrape job sends (`authorization.credentials_file`);
    it cannot obtain SMART tokens with a private_key_jwt assertion. Without METRICS_TOKEN the endpoint is
    off, unless authorisation is off altogether (the local demo).
    """
    settings = request.app.state.settings
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if expected is None:
        if settings.auth_enabled:
            return PlainTextResponse("Metrics are off: set METRICS_TOKEN to serve them\n", status_code=404)
    elif not _bearer_matches(request.headers.get("authorization"), expected):
        return PlainTextResponse(
            "A bearer token (METRICS_TOKEN) is required\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(header: str | None, expected: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())

"""Bulk jobs (NDJSON import, FHIR $export): created by a request, run in a thread of the serving process,
their state kept in the `jobs` table so that any worker can answer for them.

A job is `queued`, `running`, then `completed` or `failed` (or `cancelled`, for an export deleted while it
ran). While it runs it refreshes `heartbeat_at` at least every few seconds. If the process running it dies
(a restart, a crash, a deploy), nothing resumes it: the next read of the job, or the creation of any new
job, finds its heartbeat older than STALE_AFTER and marks it failed, saying so. The client starts it again
(an import is idempotent: resending the same file stores nothing twice).

Only the client that started a job, or the trial office (a client of every site), may see it; to anyone
else it does not exist (404), as another site's patient does not.
"""

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.db import jobs as repo
from app.db.engine import Database
from app.db.tables import JobRow
from app.domain.access import Principal
from app.services.errors import NotFound
from app.services.ingest import now_ms

# A running job beats at least every HEARTBEAT_S; one silent for STALE_AFTER lost its process.
HEARTBEAT_S = 5.0
STALE_AFTER = timedelta(minutes=2)
INTERRUPTED = "interrupted: the server running this job stopped (restart or crash); start it again"
log = logging.getLogger("mrdhub.jobs")


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    owner: str
    site: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]
    progress: dict[str, Any]
    result: Any
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status not in repo.UNFINISHED


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        status=row.status,
        owner=row.owner,
        site=row.site,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        request=json.loads(row.request),
        progress=json.loads(row.progress),
        result=json.loads(row.result) if row.result is not None else None,
        error=row.error,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def create(db: Database, *, kind: str, principal: Principal, request: dict[str, Any]) -> Job:
    """A new queued job owned by the principal (and a sweep of jobs whose process died)."""
    now = now_ms()
    row = JobRow(
        id=uuid.uuid4().hex,
        kind=kind,
        status="queued",
        owner=principal.client_id,
        site=principal.site,
        created_at=now,
        heartbeat_at=now,
        request=_dumps(request),
        progress=_dumps({}),
    )
    with db.transaction() as session:
        repo.fail_stale(session, heartbeat_before=now - STALE_AFTER, now=now, reason=INTERRUPTED)
        repo.add(session, row)
        return _job(row)


def may_see(principal: Principal, job: Job) -> bool:
    return principal.all_sites or job.owner == principal.client_id


def read(db: Database, job_id: str, *, principal: Principal, kind: str | None = None) -> Job:
    """The job as the principal may see it; a job whose process died is marked failed first."""
    now = now_ms()
    with db.transaction() as session:
        row = repo.get(session, job_id)
        if row is not None and row.status in repo.UNFINISHED and row.heartbeat_at < now - STALE_AFTER:
            repo.set_fields(
                session, job_id, only_unfinished=True, status="failed", finished_at=now, error=INTERRUPTED
            )
            session.refresh(row)
        job = _job(row) if row is not None else None
    if job is None or not may_see(principal, job) or (kind is not None and job.kind != kind):
        raise NotFound(f"No job {job_id}")
    return job


def start(db: Database, job_id: str) -> bool:
    now = now_ms()
    with db.transaction() as session:
        return repo.set_fields(
            session, job_id, only_unfinished=True, status="running", started_at=now, heartbeat_at=now
        )


def beat(db: Database, job_id: str, progress: dict[str, Any]) -> bool:
    """Record progress (and that the job is alive); False when it is no longer running (cancelled)."""
    with db.transaction() as session:
        return repo.set_fields(
            session, job_id, only_unfinished=True, heartbeat_at=now_ms(), progress=_dumps(progress)
        )


def finish(db: Database, job_id: str, *, progress: dict[str, Any], result: Any) -> bool:
    now = now_ms()
    with db.transaction() as session:
        return repo.set_fields(
            session,
            job_id,
            only_unfinished=True,
            status="completed",
            finished_at=now,
            heartbeat_at=now,
            progress=_dumps(progress),
            result=_dumps(result),
        )


def fail(db: Database, job_id: str, *, reason: str, progress: dict[str, Any] | None = None) -> None:
    now = now_ms()
    values: dict[str, Any] = {"status": "failed", "finished_at": now, "heartbeat_at": now, "error": reason}
    if progress is not None:
        values["progress"] = _dumps(progress)
    with db.transaction() as session:
        repo.set_fields(session, job_id, only_unfinished=True, **values)


def cancel(db: Database, job_id: str) -> None:
    """Stop a job (its thread notices at its next beat) and forget it."""
    with db.transaction() as session:
        repo.delete(session, job_id)


def run_in_background(db: Database, job_id: str, work: Callable[[], None]) -> threading.Thread:
    """Run `work` in a daemon thread; an exception it lets out fails the job (logged with its id)."""

    def target() -> None:
        try:
            work()
        except Exception as exc:
            log.exception("job %s failed", job_id)
            try:
                fail(db, job_id, reason=f"internal error ({type(exc).__name__}); see the server log")
            except Exception:
                log.exception("job %s: could not record its failure", job_id)

    thread = threading.Thread(target=target, name=f"job-{job_id[:8]}", daemon=True)
    thread.start()
    return thread

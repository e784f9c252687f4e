"""Bulk NDJSON import as a job (`POST /api/v1/import`, `GET /api/v1/jobs/{id}`), issue 8.

The body is streamed to a spool file as it arrives, never held in memory: the route is exempt from the
request time limit and the body size limit (app/main.py, app/api/limits.py), and holds the upload to its
own: no pause longer than the request time limit between two pieces of the body (else 408), at most
MAX_IMPORT_BYTES in all (else 413), and each line at most bulk_import.MAX_LINE_BYTES (that line is
rejected). Once the body is in, the job is created and answered `202 Accepted` with `Content-Location`;
a thread of this process imports the spool file and deletes it. What survives a restart is the job row,
not the work: an interrupted job is marked failed (app/services/jobs.py) and its spool file is gone with
the process's temporary directory or deleted when found; the client sends the file again (idempotent).
"""

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.api.deps import DatabaseDep, SettingsDep
from app.db.engine import Database
from app.domain.access import Principal
from app.domain.protocol import Protocol
from app.fhir.dates import instant
from app.services import bulk_import, endpoints, jobs
from app.services.bulk_import import Report
from app.services.errors import ServiceError
from app.services.writes import ResourceCheck

log = logging.getLogger("mrdhub.jobs")

IMPORT_PATH = "/api/v1/import"
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")
MAX_IMPORT_BYTES = 8 * 1024**3
router = APIRouter(prefix="/api/v1", tags=["Bulk data"])
PROBLEM = {"content": {"application/problem+json": {}}, "description": "Problem details (RFC 9457)"}


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported media type"


class ContentTooLarge(ServiceError):
    status = 413
    title = "Content too large"


class UploadTimeout(ServiceError):
    status = 408
    title = "Request timeout"


class JobView(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "5f0c8d1e2b7a4c3d9e8f7a6b5c4d3e2f",
                "kind": "import",
                "status": "completed",
                "owner": "lis-hefei-apch",
                "created_at": "2026-11-25T21:00:00.000Z",
                "started_at": "2026-11-25T21:00:00.020Z",
                "finished_at": "2026-11-25T21:00:04.512Z",
                "progress": {
                    "lines_read": 3,
                    "bytes_read": 1830,
                    "bytes_total": 1830,
                    "resources_accepted": 2,
                    "resources_created": 1,
                    "resources_updated": 0,
                    "resources_unchanged": 1,
                    "resources_rejected": 1,
                    "warnings": 0,
                    "waiting_for_references": 0,
                    "elapsed_s": 0.12,
                    "resources_per_s": 16.7,
                },
                "report": {
                    "rejected": [
                        {
                            "line": 2,
                            "outcome": {
                                "resourceType": "OperationOutcome",
                                "issue": [
                                    {
                                        "severity": "error",
                                        "code": "value",
                                        "diagnostics": "Input should be a valid decimal",
                                        "expression": ["Observation.valueQuantity.value"],
                                    }
                                ],
                            },
                        }
                    ],
                    "rejected_total": 1,
                    "truncated": False,
                },
                "error": None,
            }
        }
    )

    id: str
    kind: str = Field(description="import or export")
    status: str = Field(description="queued, running, completed or failed")
    owner: str = Field(description="The client that started the job")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, Any] = Field(description="Counters: lines and bytes read, resources accepted, ...")
    report: dict[str, Any] | None = Field(
        description="When finished: each rejected line (first 1000) with its line number and OperationOutcome"
    )
    error: str | None = Field(description="Why a failed job failed")


def _instant(moment: datetime | None) -> str | None:
    return instant(moment) if moment is not None else None


def job_view(job: jobs.Job) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        owner=job.owner,
        created_at=instant(job.created_at),
        started_at=_instant(job.started_at),
        finished_at=_instant(job.finished_at),
        progress=job.progress,
        report=job.result if job.kind == "import" else None,
        error=job.error,
    )


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "FHIR NDJSON: one resource per line (Bundle lines are refused)",
        "content": {
            "application/fhir+ndjson": {
                "schema": {"type": "string", "format": "binary"},
                "example": '{"resourceType":"Patient","id":"p1","identifier":[...]}\n',
            }
        },
    }
}


@router.post(
    "/import",
    status_code=202,
    summary="Import FHIR NDJSON as a job",
    description=(
        "Streams the body (`Content-Type: application/fhir+ndjson`, one resource per line) to disk and "
        "answers `202 Accepted` with `Content-Location: /api/v1/jobs/{id}` once it is in; the job then "
        "validates each line like the `/fhir` routes and writes them 500 to a transaction. A line with an "
        "`id` updates or creates `Type/id`; one without lands on the resource holding its business "
        "identifiers. Re-importing a file stores nothing new. Needs create and update scope for each "
        "line's type; a site's client imports only its own patients' data. Rejected lines are listed "
        "with their line number and an OperationOutcome."
    ),
    openapi_extra=IMPORT_BODY,
    responses={
        202: {"description": "Job accepted", "headers": {"Content-Location": {"schema": {"type": "string"}}}},
        408: PROBLEM,
        413: PROBLEM,
        415: PROBLEM,
    },
)
async def import_ndjson(request: Request, settings: SettingsDep, db: DatabaseDep) -> JSONResponse:
    principal: Principal = request.state.principal
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in NDJSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be application/fhir+ndjson, not '{media_type or 'none'}'"
        )
    path, size = await _spool(request, idle_s=settings.request_timeout_s)
    try:
        job = await run_in_threadpool(
            jobs.create,
            db,
            kind="import",
            principal=principal,
            request={"content_type": media_type, "bytes": size},
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    checks: tuple[ResourceCheck, ...] = request.app.state.checks
    protocol: Protocol = request.app.state.protocol
    jobs.run_in_background(
        db,
        job.id,
        lambda: _run_import(
            db,
            job.id,
            path,
            principal=principal,
            checks=checks,
            retries=settings.write_retries,
            protocol=protocol,
        ),
    )
    location = f"{IMPORT_PATH.removesuffix('/import')}/jobs/{job.id}"
    return JSONResponse(
        job_view(job).model_dump(mode="json"), status_code=202, headers={"Content-Location": location}
    )


async def _spool(request: Request, *, idle_s: float) -> tuple[Path, int]:
    """The body, piece by piece as it arrives, into a temporary file; its path and size."""
    handle, name = tempfile.mkstemp(prefix="mrdhub-import-", suffix=".ndjson")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(handle, "wb") as spool:
            pieces = request.stream().__aiter__()
            while True:
                try:
                    with anyio.fail_after(idle_s):
                        piece = await pieces.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UploadTimeout(f"No part of the body arrived for {idle_s:g} s") from None
                size += len(piece)
                if size > MAX_IMPORT_BYTES:
                    raise ContentTooLarge(f"An import is at most {MAX_IMPORT_BYTES} bytes; split the file")
                spool.write(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size


def _run_import(
    db: Database,
    job_id: str,
    path: Path,
    *,
    principal: Principal,
    checks: tuple[ResourceCheck, ...],
    retries: int,
    protocol: Protocol,
) -> None:
    """The job's thread: import the spool file, recording progress, then rebuild the derived rows it made
    stale (a job is completed when the trial's views are ready); the file is deleted in any case."""
    try:
        if not jobs.start(db, job_id):
            return

        def beat(report: Report) -> bool:
            metrics.job_progress("import", job_id, report.progress.bytes_read, report.progress.bytes_total)
            return jobs.beat(db, job_id, report.progress.as_json())

        try:
            report = bulk_import.import_file(
                db, path, principal=principal, checks=checks, retries=retries, job_id=job_id, on_progress=beat
            )
        except bulk_import.Cancelled:
            metrics.job_finished("import", job_id, "cancelled")
            return
        except Exception:
            metrics.job_finished("import", job_id, "failed")
            raise
        if report.progress.created or report.progress.updated:
            try:
                endpoints.warm_derived_rows(db, protocol)
            except Exception:  # the rows are rebuilt by the next request instead: slower, never wrong
                log.exception("derived rows could not be rebuilt after import job %s", job_id)
        jobs.finish(db, job_id, progress=report.progress.as_json(), result=report.as_json())
        metrics.job_finished("import", job_id, "completed")
    finally:
        path.unlink(missing_ok=True)


@router.get(
    "/jobs/{job_id}",
    summary="A bulk job's status, progress and report",
    description=(
        "Status (`queued`, `running`, `completed`, `failed`), counters, timings and, for a finished import, "
        "each rejected line with its OperationOutcome. Only the client that started the job, or the trial "
        "office, may read it (else 404). A job whose server stopped while it ran is reported `failed`."
    ),
    responses={404: PROBLEM},
)
async def job_status(job_id: str, request: Request, db: DatabaseDep) -> JobView:
    job = await run_in_threadpool(jobs.read, db, job_id, principal=request.state.principal)
    return job_view(job)

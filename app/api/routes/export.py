"""FHIR Bulk Data export (Bulk Data Access IG 2.0): kick-off, status, files, cancel.

    GET    /fhir/$export (or /fhir/Patient/$export)   Prefer: respond-async -> 202, Content-Location
    GET    /fhir/$export-status/{id}                   202 + X-Progress while running; 200 + manifest
    DELETE /fhir/$export-status/{id}                   202: cancelled, or its files forgotten
    GET    /fhir/$export-file/{id}/{Type}.ndjson       application/fhir+ndjson, streamed

The status and the files need the same kind of token as the kick-off (`requiresAccessToken: true`): the
client that asked for the export, or the trial office. What is exported, and how a consistent snapshot is
kept without copying data, is in app/services/bulk_export.py.
"""

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.api.deps import DatabaseDep, prefer
from app.api.responses import fhir_response
from app.db.engine import Database
from app.domain.access import Principal
from app.fhir.dates import instant
from app.fhir.outcome import Issue, error, operation_outcome
from app.services import bulk_export, jobs
from app.services.bulk_export import ExportRequest
from app.services.ingest import now_ms

router = APIRouter(prefix="/fhir", tags=["FHIR Bulk Data"])
OUTCOME = {"content": {"application/fhir+json": {}}, "description": "OperationOutcome"}
MANIFEST_EXAMPLE = {
    "transactionTime": "2026-11-25T21:00:00.000Z",
    "request": "https://mrdhub.example/fhir/$export?_type=Patient,Observation",
    "requiresAccessToken": True,
    "output": [
        {
            "type": "Patient",
            "url": "https://mrdhub.example/fhir/$export-file/5f0c8d1e2b7a4c3d9e8f7a6b5c4d3e2f/Patient.ndjson",
            "count": 90,
        }
    ],
    "error": [],
}
KICKOFF_DESCRIPTION = (
    "FHIR Bulk Data Access kick-off. Needs `Prefer: respond-async` (else 400). Parameters: `_outputFormat` "
    "(application/fhir+ndjson, the default; `application/ndjson`, `ndjson`), `_type` (comma-separated "
    "types; the audit trail only for the trial office and only when listed), `_since` (an instant: "
    "resources changed after it). Answers `202 Accepted` with `Content-Location`, the status URL. The "
    "export is what was current at its `transactionTime`; a site's client gets its own patients' data."
)


def _base(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/") + "/fhir"


async def _kickoff(request: Request, db: Database, *, patient_level: bool) -> Response:
    principal: Principal = request.state.principal
    preferences = prefer(request)
    if "respond-async" not in preferences:
        raise error(400, "required", "A bulk export needs the header Prefer: respond-async", "Prefer")
    export = bulk_export.parse_kickoff(
        list(request.query_params.multi_items()),
        principal=principal,
        patient_level=patient_level,
        lenient=preferences.get("handling") == "lenient",
    )
    at = now_ms()
    described = {**export.as_json(), "transaction_time": at.isoformat(), "request_url": str(request.url)}
    job = await run_in_threadpool(jobs.create, db, kind="export", principal=principal, request=described)
    jobs.run_in_background(db, job.id, lambda: _run_export(db, job.id, export, principal, at))
    outcome = operation_outcome(
        [Issue("information", "informational", "Export accepted; poll Content-Location")]
    )
    return fhir_response(
        outcome, status=202, headers={"Content-Location": f"{_base(request)}/$export-status/{job.id}"}
    )


def _run_export(db: Database, job_id: str, export: ExportRequest, principal: Principal, at: datetime) -> None:
    if not jobs.start(db, job_id):
        return

    def beat(done: int, total: int) -> bool:
        metrics.job_progress("export", job_id, done, total)
        return jobs.beat(db, job_id, {"types_counted": done, "types_total": total})

    try:
        outputs = bulk_export.plan(db, export, principal, at=at, on_progress=beat)
    except bulk_export.Cancelled:
        metrics.job_finished("export", job_id, "cancelled")
        return
    except Exception:
        metrics.job_finished("export", job_id, "failed")
        raise
    total = sum(o["count"] for o in outputs)
    jobs.finish(db, job_id, progress={"types": len(outputs), "resources": total}, result={"output": outputs})
    metrics.job_finished("export", job_id, "completed")


KICKOFF = {
    "status_code": 202,
    "description": KICKOFF_DESCRIPTION,
    "responses": {
        202: {"description": "Accepted", "headers": {"Content-Location": {"schema": {"type": "string"}}}},
        400: OUTCOME,
        403: OUTCOME,
    },
}


@router.get("/$export", summary="Bulk Data export of the whole system ($export)", **KICKOFF)  # type: ignore[arg-type]
async def export_system(request: Request, db: DatabaseDep) -> Response:
    return await _kickoff(request, db, patient_level=False)


@router.get("/Patient/$export", summary="Bulk Data export of all patients' data (Patient/$export)", **KICKOFF)  # type: ignore[arg-type]
async def export_patients(request: Request, db: DatabaseDep) -> Response:
    return await _kickoff(request, db, patient_level=True)


@router.get(
    "/$export-status/{job_id}",
    summary="Status of a bulk export; its manifest when complete",
    description=(
        "`202` with `X-Progress` and `Retry-After` while the export runs; `200` with the manifest "
        "(transactionTime, request, requiresAccessToken, output with type, url and count, error) when it "
        "is complete; `500` OperationOutcome if it failed; `404` for an unknown or cancelled export, or "
        "one of another client."
    ),
    responses={
        200: {"content": {"application/json": {"example": MANIFEST_EXAMPLE}}, "description": "Manifest"},
        202: {"description": "In progress", "headers": {"X-Progress": {"schema": {"type": "string"}}}},
        404: OUTCOME,
        500: OUTCOME,
    },
)
async def export_status(job_id: str, request: Request, db: DatabaseDep) -> Response:
    job = await run_in_threadpool(jobs.read, db, job_id, principal=request.state.principal, kind="export")
    if not job.finished:
        progress = job.progress
        done = f"{progress.get('types_counted', 0)} of {progress.get('types_total', '?')} types counted"
        return Response(status_code=202, headers={"X-Progress": done, "Retry-After": "1"})
    if job.status != "completed":
        outcome = operation_outcome([Issue("fatal", "exception", f"The export failed: {job.error}")])
        return fhir_response(outcome, status=500)
    return JSONResponse(_manifest(request, job))


def _manifest(request: Request, job: jobs.Job) -> dict[str, Any]:
    at = datetime.fromisoformat(job.request["transaction_time"])
    files = f"{_base(request)}/$export-file/{job.id}"
    return {
        "transactionTime": instant(at),
        "request": job.request["request_url"],
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": f"{files}/{o['type']}.ndjson", "count": o["count"]}
            for o in job.result["output"]
        ],
        "error": [],
    }


@router.delete(
    "/$export-status/{job_id}",
    status_code=202,
    summary="Cancel a bulk export, or forget a finished one",
    responses={202: {"description": "Cancelled"}, 404: OUTCOME},
)
async def export_cancel(job_id: str, request: Request, db: DatabaseDep) -> Response:
    await run_in_threadpool(jobs.read, db, job_id, principal=request.state.principal, kind="export")
    await run_in_threadpool(jobs.cancel, db, job_id)
    return Response(status_code=202)


@router.get(
    "/$export-file/{job_id}/{file_name}",
    summary="One NDJSON file of a complete bulk export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/fhir+ndjson": {}}, "description": "NDJSON"}, 404: OUTCOME},
)
async def export_file(job_id: str, file_name: str, request: Request, db: DatabaseDep) -> StreamingResponse:
    job = await run_in_threadpool(jobs.read, db, job_id, principal=request.state.principal, kind="export")
    resource_type = file_name.removesuffix(".ndjson")
    listed = job.status == "completed" and any(o["type"] == resource_type for o in job.result["output"])
    if not file_name.endswith(".ndjson") or not listed:
        raise error(404, "not-found", f"Export {job_id} has no file {file_name}")
    export = ExportRequest.from_json(job.request)
    at = datetime.fromisoformat(job.request["transaction_time"])
    pages = bulk_export.lines(db, export, resource_type, site=job.site, at=at)
    return StreamingResponse(pages, media_type=bulk_export.NDJSON)

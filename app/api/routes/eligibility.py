"""Eligibility for EHR integrations and research nurses (issue 5): per criterion, with evidence."""

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import READ_PATIENT_DATA, requires
from app.api.csv import csv_response, wants_csv
from app.api.deps import DatabaseDep, ProtocolDep, SettingsDep, read_fhir_json
from app.api.routes.trial import ERRORS, PatientKey
from app.api.schemas import Eligibility
from app.domain.access import Permission
from app.services import cds, eligibility, screening
from app.services.errors import NotFound

router = APIRouter(tags=["Eligibility"])
SCREEN = requires(
    ("Patient", Permission.READ),
    ("ResearchSubject", Permission.CREATE),
    ("ResearchSubject", Permission.UPDATE),
    ("Basic", Permission.CREATE),
)
READ_SCREENING = requires(("Basic", Permission.READ))
AsOf = Annotated[dt.date | None, Query(description="Reference date (default: today in the site's zone)")]
ANSWER_EXAMPLE = {"overall": "eligible", "as_of": "2025-04-02", "criteria": [], "missing": [], "pending": []}


class ScreeningIn(BaseModel):
    patient: str = Field(description="Patient server id or identifier=system|value")
    as_of: dt.date | None = None
    decision: Literal["enrol", "not-enrol"]
    reason: str = Field(min_length=3, max_length=1000)
    override_reason: str | None = Field(
        default=None, max_length=1000, description="Required to enrol a patient who is not eligible"
    )


@router.get(
    "/api/v1/patients/{key}/eligibility",
    dependencies=[READ_PATIENT_DATA],
    summary="Eligibility of a stored patient, per criterion",
    responses=ERRORS,
)
def patient_eligibility(
    key: PatientKey, db: DatabaseDep, protocol: ProtocolDep, as_of: AsOf = None
) -> Eligibility:
    return Eligibility.model_validate(eligibility.stored_patient_eligibility(db, protocol, key, as_of))


@router.post(
    "/api/v1/eligibility",
    dependencies=[READ_PATIENT_DATA],
    summary="Eligibility of an unstored patient given as a FHIR Bundle; nothing is stored",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/fhir+json": {"schema": {"type": "object"}}},
        }
    },
    responses={400: {"description": "OperationOutcome, as at ingest"}},
)
async def adhoc_eligibility(
    request: Request, settings: SettingsDep, protocol: ProtocolDep, as_of: AsOf = None
) -> Eligibility:
    data = await read_fhir_json(request, settings)
    return Eligibility.model_validate(
        await run_in_threadpool(eligibility.adhoc_eligibility, protocol, data, as_of)
    )


@router.post(
    "/api/v1/screening",
    dependencies=[SCREEN],
    summary="Record a screening decision; creates or updates the ResearchSubject",
    responses=ERRORS,
)
async def screen(
    body: ScreeningIn, db: DatabaseDep, protocol: ProtocolDep, settings: SettingsDep
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: screening.record_decision(
            db,
            protocol,
            patient=body.patient,
            as_of=body.as_of,
            decision=body.decision,
            reason=body.reason,
            override_reason=body.override_reason,
            retries=settings.write_retries,
        )
    )


@router.get(
    "/api/v1/screening-log",
    dependencies=[READ_SCREENING],
    summary="Screening decisions by site and date (JSON, or CSV)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def screening_log(
    request: Request,
    db: DatabaseDep,
    protocol: ProtocolDep,
    site: Annotated[str | None, Query()] = None,
    since: Annotated[dt.date | None, Query(alias="from")] = None,
    until: Annotated[dt.date | None, Query(alias="to")] = None,
) -> Response:
    rows = screening.screening_log(db, protocol, site=site, since=since, until=until)
    if wants_csv(request):
        return csv_response(rows, filename="screening-log.csv")
    return JSONResponse({"protocol_version": protocol.version, "decisions": rows})


@router.get(
    "/cds-services", dependencies=[READ_PATIENT_DATA], summary="CDS Hooks discovery", tags=["CDS Hooks"]
)
def cds_discovery(protocol: ProtocolDep) -> dict[str, Any]:
    return cds.discovery(protocol)


@router.post(
    "/cds-services/{service_id}",
    dependencies=[READ_PATIENT_DATA],
    summary="CDS Hooks patient-view: eligibility cards",
    tags=["CDS Hooks"],
    responses={404: {"description": "Unknown service"}, 422: {"description": "Invalid hook request"}},
)
async def cds_service(
    service_id: str, request: Request, protocol: ProtocolDep, settings: SettingsDep
) -> JSONResponse:
    if service_id != cds.service_id(protocol):
        raise NotFound(f"No CDS service '{service_id}'", parameter="service_id")
    try:
        body = await request.json()
    except ValueError:  # not JSON, or not UTF-8
        return JSONResponse({"error": "the hook request is not valid JSON"}, status_code=422)
    if not isinstance(body, dict) or body.get("hook") != "patient-view":
        return JSONResponse({"error": "expected a patient-view hook request"}, status_code=422)
    try:
        answer = await run_in_threadpool(
            cds.patient_view,
            protocol,
            body,
            timeout_s=settings.cds_timeout_s,
            show_ineligible=settings.cds_show_ineligible,
            fhir_servers=tuple(settings.cds_fhir_servers),
        )
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse(answer)

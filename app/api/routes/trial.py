"""The trial's JSON API (`/api/v1`): protocol, timelines, timepoints, data-quality reports, anchors."""

import datetime as dt
import tomllib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import READ_PATIENT_DATA, requires
from app.api.csv import csv_response, wants_csv
from app.api.deps import DatabaseDep, ProtocolDep, SettingsDep
from app.api.schemas import Timeline, TimepointCohort
from app.domain.access import Permission
from app.services import anchors, reports, timeline

router = APIRouter(prefix="/api/v1", tags=["Trial"])
SET_ANCHOR = requires(("Basic", Permission.CREATE), ("Basic", Permission.UPDATE))
REMOVE_ANCHOR = requires(("Basic", Permission.DELETE))
PROBLEM = {"content": {"application/problem+json": {}}, "description": "Problem details (RFC 9457)"}
ERRORS: dict[int | str, dict[str, Any]] = {404: PROBLEM, 422: PROBLEM}
PatientKey = Annotated[
    str, Path(description="Server id, or `identifier=system|value` (URL-encoded)", examples=["12"])
]


class AnchorIn(BaseModel):
    date: dt.date = Field(description="Local calendar date at the site", examples=["2025-03-01"])
    reason: str = Field(min_length=3, max_length=500, description="Why the trial office sets it")


@router.get("/protocol", summary="The loaded protocol file and its version")
def protocol(request: Request, protocol: ProtocolDep) -> dict[str, Any]:
    with open(request.app.state.settings.protocol_path, "rb") as handle:
        document = tomllib.load(handle)
    return {
        "version": protocol.version,
        "path": str(request.app.state.settings.protocol_path.name),
        "protocol": document,
    }


@router.get(
    dependencies=[READ_PATIENT_DATA],
    path="/patients/{key}/timeline",
    summary="A patient's anchors, timepoints and classified MRD results",
    responses=ERRORS,
)
def patient_timeline(key: PatientKey, db: DatabaseDep, protocol: ProtocolDep) -> Timeline:
    return Timeline.model_validate(timeline.patient_timeline(db, protocol, key))


@router.get(
    dependencies=[READ_PATIENT_DATA],
    path="/timepoints/{name}",
    summary="The cohort's chosen result per patient at a timepoint (JSON, or CSV with Accept: text/csv)",
    responses={**ERRORS, 200: {"model": TimepointCohort, "content": {"text/csv": {}}}},
)
def timepoint(
    request: Request,
    name: Annotated[str, Path(description="Timepoint name, e.g. D19, POST_BLINA")],
    db: DatabaseDep,
    protocol: ProtocolDep,
    assay: Annotated[str, Query(description="flow or ngs")] = "flow",
    site: Annotated[str | None, Query(description="Site code, e.g. SHANGHAI-SCMC")] = None,
) -> Response:
    answer = timeline.cohort_at_timepoint(db, protocol, name, assay=assay, site=site)
    if wants_csv(request):
        return csv_response(answer["patients"], filename=f"{name}-{assay}.csv")
    return JSONResponse(answer)


@router.get(
    dependencies=[READ_PATIENT_DATA],
    path="/reports/unmapped-codes",
    summary="Codes no trial concept maps: code, system, count, sites",
)
def unmapped_codes(db: DatabaseDep, protocol: ProtocolDep) -> dict[str, Any]:
    return reports.unmapped_code_report(db, protocol)


@router.put(
    "/patients/{key}/anchors/{name}",
    dependencies=[SET_ANCHOR],
    summary="Set an anchor date as the trial office (versioned)",
    responses=ERRORS,
)
async def set_anchor(
    key: PatientKey, name: str, body: AnchorIn, db: DatabaseDep, protocol: ProtocolDep, settings: SettingsDep
) -> dict[str, Any]:
    return await run_in_threadpool(
        anchors.set_anchor,
        db,
        protocol,
        key,
        name,
        date=body.date,
        reason=body.reason,
        retries=settings.write_retries,
    )


@router.delete(
    "/patients/{key}/anchors/{name}",
    dependencies=[REMOVE_ANCHOR],
    summary="Remove the trial office's anchor",
    status_code=204,
    responses=ERRORS,
)
async def remove_anchor(
    key: PatientKey, name: str, db: DatabaseDep, protocol: ProtocolDep, settings: SettingsDep
) -> Response:
    await run_in_threadpool(anchors.remove_anchor, db, protocol, key, name, retries=settings.write_retries)
    return Response(status_code=204)

"""Endpoint analyses for the trial's statisticians (issue 6); the primary endpoint as a MeasureReport."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.auth import READ_PATIENT_DATA
from app.api.deps import DatabaseDep, ProtocolDep
from app.api.responses import fhir_response
from app.api.routes.trial import ERRORS
from app.services import endpoints

router = APIRouter(prefix="/api/v1", tags=["Endpoints"], dependencies=[READ_PATIENT_DATA])
fhir_router = APIRouter(prefix="/fhir", tags=["FHIR"], dependencies=[READ_PATIENT_DATA])

AsOf = Annotated[
    str | None,
    Query(
        description="Data cut-off: a day in the trial's zone, or an instant with offset (default: now). Only "
        "versions recorded by then and clinical dates on or before it count.",
        examples=["2025-12-31", "2025-12-31T18:00:00+08:00"],
    ),
]
AnalysisSet = Annotated[str, Query(description="full or per-protocol (from the protocol file)")]
Explain = Annotated[bool, Query(description="List the patients and resource versions behind every number")]
OptionalAssay = Annotated[
    str | None, Query(description="Assay whose per-protocol evaluability defines the set (per-protocol only)")
]


@router.get(
    "/endpoints/primary", summary="MRD-negative rate with exact CI and test against p0", responses=ERRORS
)
def primary(
    db: DatabaseDep,
    protocol: ProtocolDep,
    assay: Annotated[str, Query(description="flow or ngs")] = "flow",
    analysis_set: AnalysisSet = "full",
    as_of: AsOf = None,
    explain: Explain = False,
) -> dict[str, Any]:
    return endpoints.primary(
        db,
        protocol,
        assay=assay,
        analysis_set=analysis_set,
        as_of=endpoints.parse_as_of(as_of),
        explain=explain,
    )


@router.get(
    "/endpoints/mrd-response", summary="PRE_BLINA vs POST_BLINA per patient (waterfall)", responses=ERRORS
)
def mrd_response(
    db: DatabaseDep,
    protocol: ProtocolDep,
    analysis_set: AnalysisSet = "full",
    as_of: AsOf = None,
    explain: Explain = False,
) -> dict[str, Any]:
    return endpoints.mrd_response(
        db, protocol, analysis_set=analysis_set, as_of=endpoints.parse_as_of(as_of), explain=explain
    )


@router.get(
    "/endpoints/efs", summary="Event-free survival: Kaplan-Meier study vs control, log-rank", responses=ERRORS
)
def efs(
    db: DatabaseDep,
    protocol: ProtocolDep,
    analysis_set: AnalysisSet = "full",
    assay: OptionalAssay = None,
    as_of: AsOf = None,
    explain: Explain = False,
) -> dict[str, Any]:
    return endpoints.secondary(
        db,
        protocol,
        "efs",
        analysis_set=analysis_set,
        assay=assay,
        as_of=endpoints.parse_as_of(as_of),
        explain=explain,
    )


@router.get(
    "/endpoints/adverse-events",
    summary="Adverse events from day 19 to the second HD-MTX course",
    responses=ERRORS,
)
def adverse_events(
    db: DatabaseDep,
    protocol: ProtocolDep,
    analysis_set: AnalysisSet = "full",
    assay: OptionalAssay = None,
    as_of: AsOf = None,
    explain: Explain = False,
) -> dict[str, Any]:
    return endpoints.secondary(
        db,
        protocol,
        "adverse-events",
        analysis_set=analysis_set,
        assay=assay,
        as_of=endpoints.parse_as_of(as_of),
        explain=explain,
    )


@router.get(
    "/endpoints/costs", summary="Healthcare costs in 6 months from induction day 1 (CNY)", responses=ERRORS
)
def costs(
    db: DatabaseDep,
    protocol: ProtocolDep,
    analysis_set: AnalysisSet = "full",
    assay: OptionalAssay = None,
    as_of: AsOf = None,
    explain: Explain = False,
) -> dict[str, Any]:
    return endpoints.secondary(
        db,
        protocol,
        "costs",
        analysis_set=analysis_set,
        assay=assay,
        as_of=endpoints.parse_as_of(as_of),
        explain=explain,
    )


@router.get("/consort", summary="CONSORT flow with counts per reason at each drop", responses=ERRORS)
def consort(
    db: DatabaseDep, protocol: ProtocolDep, as_of: AsOf = None, explain: Explain = False
) -> dict[str, Any]:
    return endpoints.consort(db, protocol, as_of=endpoints.parse_as_of(as_of), explain=explain)


@fhir_router.get(
    "/Measure/{measure}/$evaluate-measure",
    summary="The primary endpoint as a summary MeasureReport (measure: primary-flow or primary-ngs)",
    responses={200: {"content": {"application/fhir+json": {}}}},
)
def evaluate_measure(
    measure: str,
    db: DatabaseDep,
    protocol: ProtocolDep,
    analysis_set: AnalysisSet = "full",
    periodEnd: Annotated[str | None, Query(description="Data cut-off (FHIR parameter name)")] = None,
) -> Response:
    report = endpoints.measure_report(
        db, protocol, measure=measure, analysis_set=analysis_set, as_of=endpoints.parse_as_of(periodEnd)
    )
    return fhir_response(report)

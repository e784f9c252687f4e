"""Endpoint analyses for the trial's statisticians (issue 6); the primary endpoint as a MeasureReport."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
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


class SecondaryQuery:
    """What every secondary analysis is asked: the set, its assay, the cut-off, and whether to explain."""

    def __init__(
        self,
        analysis_set: AnalysisSet = "full",
        assay: OptionalAssay = None,
        as_of: AsOf = None,
        explain: Explain = False,
    ) -> None:
        self.analysis_set, self.assay, self.as_of, self.explain = analysis_set, assay, as_of, explain


def _secondary(name: str, function: str) -> Callable[..., dict[str, Any]]:
    def analysis(
        db: DatabaseDep, protocol: ProtocolDep, query: Annotated[SecondaryQuery, Depends()]
    ) -> dict[str, Any]:
        return endpoints.secondary(
            db,
            protocol,
            name,
            analysis_set=query.analysis_set,
            assay=query.assay,
            as_of=endpoints.parse_as_of(query.as_of),
            explain=query.explain,
        )

    analysis.__name__ = function  # the OpenAPI operationId, as clients know it
    return analysis


for _name, _function, _summary in (
    ("efs", "efs", "Event-free survival: Kaplan-Meier study vs control, log-rank"),
    ("adverse-events", "adverse_events", "Adverse events from day 19 to the second HD-MTX course"),
    ("costs", "costs", "Healthcare costs in 6 months from induction day 1 (CNY)"),
):
    router.get(f"/endpoints/{_name}", summary=_summary, responses=ERRORS)(_secondary(_name, _function))


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

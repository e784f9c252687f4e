"""The trial's endpoint analyses as pure functions of patient timelines, the protocol and a cut-off
(PROTOCOL.md section 5, issue 6).

Each analysis takes `timelines` (PatientTimeline, each with its PatientRecord), `protocol` and `as_of` (the
data cut-off, a local calendar day) and returns a frozen result; a `*_to_json(result, explain=...)`
function turns it into a JSON-ready dict whose `json.dumps(..., sort_keys=True)` is byte-identical for
equal inputs (rounding rules in reporting.py). Facts dated after `as_of` are ignored (cutoff.py).
"""

from app.domain.endpoints.adverse_events import AdverseEventAnalysis, adverse_events, adverse_events_to_json
from app.domain.endpoints.analysis_sets import Membership, PrimaryResult, ResultStatus, membership
from app.domain.endpoints.cohort import (
    CONTROL_ARM,
    STUDY_ARM,
    Cohort,
    CohortExclusion,
    CohortPatient,
    build_cohort,
)
from app.domain.endpoints.consort import (
    ConsortFlow,
    ScreeningOutcome,
    ScreeningVerdict,
    consort_flow,
    consort_to_json,
)
from app.domain.endpoints.costs import CostAnalysis, costs_to_json, healthcare_costs
from app.domain.endpoints.cutoff import last_contact, record_as_of
from app.domain.endpoints.efs import EfsAnalysis, efs_to_json, event_free_survival
from app.domain.endpoints.errors import (
    AnalysisSetNeedsAssay,
    CostDataError,
    EndpointError,
    ScreeningInputError,
    UnknownAnalysisSet,
)
from app.domain.endpoints.primary import PrimaryAnalysis, primary_endpoint, primary_to_json
from app.domain.endpoints.response import MrdResponse, mrd_response, response_to_json

__all__ = [
    "CONTROL_ARM",
    "STUDY_ARM",
    "AdverseEventAnalysis",
    "AnalysisSetNeedsAssay",
    "Cohort",
    "CohortExclusion",
    "CohortPatient",
    "ConsortFlow",
    "CostAnalysis",
    "CostDataError",
    "EfsAnalysis",
    "EndpointError",
    "Membership",
    "MrdResponse",
    "PrimaryAnalysis",
    "PrimaryResult",
    "ResultStatus",
    "ScreeningInputError",
    "ScreeningOutcome",
    "ScreeningVerdict",
    "UnknownAnalysisSet",
    "adverse_events",
    "adverse_events_to_json",
    "build_cohort",
    "consort_flow",
    "consort_to_json",
    "costs_to_json",
    "efs_to_json",
    "event_free_survival",
    "healthcare_costs",
    "last_contact",
    "membership",
    "mrd_response",
    "primary_endpoint",
    "primary_to_json",
    "record_as_of",
    "response_to_json",
]

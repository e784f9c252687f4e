"""Eligibility for the trial, per criterion and overall (PROTOCOL.md section 4; issue 5).

    answer = evaluate_eligibility(record=record, timeline=build_timeline(record=record, protocol=protocol),
                                  protocol=protocol, as_of=dt.date(2025, 4, 2))

Pure domain code: plain values in, frozen values out. How each kind of criterion part reads the record is
documented in the module that evaluates it: `parts` (age, diagnoses, coded observations, consent),
`lookbacks` (exposures and events within a span), `mrd_criteria` (MRD thresholds per stratum).
"""

from app.domain.eligibility.answer import (
    CriterionResult,
    CriterionStatus,
    EligibilityAnswer,
    EligibilityFlag,
    FlagKind,
    Overall,
)
from app.domain.eligibility.evaluate import NOT_ENROLLED_STATUSES, enrolled, evaluate_eligibility

__all__ = [
    "NOT_ENROLLED_STATUSES",
    "CriterionResult",
    "CriterionStatus",
    "EligibilityAnswer",
    "EligibilityFlag",
    "FlagKind",
    "Overall",
    "enrolled",
    "evaluate_eligibility",
]

"""The eligibility answer: per criterion met / not met / unknown with its reason and evidence, and the
overall answer (PROTOCOL.md section 4; issue 5, "Answer")."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from app.domain.protocol import CriterionKind


class Overall(StrEnum):
    ELIGIBLE = "eligible"  # every inclusion met, no exclusion met (criteria still pending aside)
    INELIGIBLE = "ineligible"  # an inclusion not met or an exclusion met: `ineligible_by` lists which
    INCOMPLETE = "incomplete"  # otherwise: `missing` lists what data would decide it


class CriterionStatus(StrEnum):
    """For an inclusion criterion MET is good; for an exclusion criterion MET excludes the patient."""

    MET = "met"
    NOT_MET = "not_met"
    UNKNOWN = "unknown"


class FlagKind(StrEnum):
    # A criterion assessed after enrolment (D46 MRD >= 1 %) now excludes an enrolled patient: a data query
    # for the trial office; the patient stays in the full analysis set (section 4, exclusion 11).
    INELIGIBLE_AFTER_ENROLMENT = "ineligible-after-enrolment"
    # A screening criterion fails for an enrolled patient: enrolled with an override, or the data changed.
    ENROLLED_WHILE_INELIGIBLE = "enrolled-while-ineligible"


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    kind: CriterionKind
    text: str  # the protocol file's wording
    status: CriterionStatus
    reason: str  # one human line
    evidence: tuple[str, ...]  # versioned references, "Observation/7/_history/1"
    missing: tuple[str, ...] = ()  # what data would decide an unknown criterion
    pending: bool = False  # unknown, but assessed after enrolment: does not hold the answer incomplete
    reading: str | None = None  # the protocol file's recorded reading of the criterion, to cite

    @property
    def excludes(self) -> bool:
        """This criterion alone makes the patient ineligible."""
        if self.kind is CriterionKind.INCLUSION:
            return self.status is CriterionStatus.NOT_MET
        return self.status is CriterionStatus.MET

    @property
    def satisfied(self) -> bool:
        """This criterion is as an eligible patient needs it."""
        wanted = CriterionStatus.MET if self.kind is CriterionKind.INCLUSION else CriterionStatus.NOT_MET
        return self.status is wanted


@dataclass(frozen=True, slots=True)
class EligibilityFlag:
    kind: FlagKind
    criterion: str
    message: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EligibilityAnswer:
    overall: Overall
    as_of: dt.date
    protocol_version: str
    criteria: tuple[CriterionResult, ...]  # in protocol file order
    missing: tuple[str, ...]  # "<criterion id>: <what data would decide it>", unknown criteria not pending
    pending: tuple[str, ...]  # "<criterion id>: <why not yet known>", assessed after enrolment
    flags: tuple[EligibilityFlag, ...] = ()

    @property
    def ineligible_by(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria if c.excludes)

    def criterion(self, criterion_id: str) -> CriterionResult:
        for result in self.criteria:
            if result.id == criterion_id:
                return result
        raise KeyError(criterion_id)

"""Analysis-set membership and each patient's primary MRD result (PROTOCOL.md section 5).

Study patients (arm "blinatumomab") follow the protocol file's [analysis_sets] literally: the full set is
enrolled + received any blinatumomab, the per-protocol set is enrolled + completed the course + an
evaluable POST_BLINA result for the assay.

Historical controls did not receive blinatumomab by design, so the course requirements (started-course,
completed-course) do not apply to them; their primary timepoint is the protocol's
[primary].control_timepoint (D46, end of standard induction). Hence the control's full set = every enrolled
control, with a missing or not-evaluable D46 result imputed as not negative exactly as for the study; the
control's per-protocol set = enrolled controls with an evaluable D46 result for the assay. The same sets
are used for the control in EFS, adverse events and costs.
"""

from dataclasses import dataclass
from enum import StrEnum

from app.domain.endpoints.cohort import Cohort, CohortPatient
from app.domain.endpoints.errors import AnalysisSetNeedsAssay, UnknownAnalysisSet
from app.domain.mrd import MrdClassification
from app.domain.protocol import AnalysisSet, AnalysisSetRequirement, Assay, Protocol
from app.domain.timepoints import TimepointStatus

_COURSE_REQUIREMENTS = {AnalysisSetRequirement.STARTED_COURSE, AnalysisSetRequirement.COMPLETED_COURSE}


class ResultStatus(StrEnum):
    NEGATIVE = "negative"
    POSITIVE = "positive"
    NOT_EVALUABLE = "not-evaluable"
    MISSING = "missing"  # no result in the window, or the window's anchor is missing / in conflict

    @property
    def evaluable(self) -> bool:
        return self in (ResultStatus.NEGATIVE, ResultStatus.POSITIVE)


@dataclass(frozen=True, slots=True)
class PrimaryResult:
    """A patient's result for one assay at their primary timepoint (POST_BLINA, or D46 for a control)."""

    assay: Assay
    timepoint: str
    status: ResultStatus
    observation: str | None  # versioned Observation reference of the chosen result
    classification: MrdClassification | None
    reason: str


@dataclass(frozen=True, slots=True)
class Membership:
    patient: CohortPatient
    included: bool
    reason: str | None  # why the patient is not in the set; None when included
    result: PrimaryResult | None  # for the assay asked about

    @property
    def resources(self) -> tuple[str, ...]:
        """The resource versions behind this patient's place in the analysis: enrolment, course, result."""
        course = self.patient.timeline.courses
        found = [self.patient.enrolment.reference]
        for concept in sorted(course):
            if (c := course[concept]) is not None:
                found.extend(c.references)
        if self.result is not None and self.result.observation is not None:
            found.append(self.result.observation)
        return tuple(dict.fromkeys(found))


def analysis_set_named(protocol: Protocol, name: str) -> AnalysisSet:
    try:
        return protocol.analysis_sets[name]
    except KeyError:
        raise UnknownAnalysisSet(name, protocol.analysis_sets) from None


def primary_timepoint(patient: CohortPatient, protocol: Protocol) -> str:
    return protocol.primary.timepoint if patient.is_study else protocol.primary.control


def primary_result(patient: CohortPatient, assay: Assay, protocol: Protocol) -> PrimaryResult:
    return result_at(patient, primary_timepoint(patient, protocol), assay)


def result_at(patient: CohortPatient, timepoint: str, assay: Assay) -> PrimaryResult:
    """The chosen result of the timepoint (timepoints.select) for the assay, with its classification."""
    outcome = patient.timeline.outcome(timepoint, assay)
    if outcome is None:
        reason = f"{timepoint} does not measure {assay.value}"
        return PrimaryResult(assay, timepoint, ResultStatus.MISSING, None, None, reason)
    if outcome.status is not TimepointStatus.ASSIGNED or outcome.selected is None:
        return PrimaryResult(assay, timepoint, ResultStatus.MISSING, None, None, outcome.reason)
    reference = outcome.selected.sample.reference
    found = patient.timeline.classifications[reference]
    status = ResultStatus(found.classification.value)
    return PrimaryResult(assay, timepoint, status, reference, found, found.reason)


def membership(
    *, patient: CohortPatient, analysis_set: AnalysisSet, assay: Assay | None, protocol: Protocol
) -> Membership:
    requires = set(analysis_set.requires)
    if not patient.is_study:
        requires -= _COURSE_REQUIREMENTS
    result = None if assay is None else primary_result(patient, assay, protocol)

    def out(reason: str) -> Membership:
        return Membership(patient, False, reason, result)

    course = patient.course(analysis_set.course)
    needs_course = requires & _COURSE_REQUIREMENTS
    if needs_course and course is None:
        withdrew = " (withdrew before it)" if patient.withdrawn else ""
        return out(f"did not receive {analysis_set.course}{withdrew}")
    if AnalysisSetRequirement.COMPLETED_COURSE in requires and course is not None:
        if course.end is None:
            return out(f"{analysis_set.course} still running at the cut-off")
        if not course.complete:
            return out(f"{analysis_set.course} course incomplete ({course.infused_days} days infused)")
    if AnalysisSetRequirement.EVALUABLE_PRIMARY_RESULT in requires:
        if result is None:
            raise AnalysisSetNeedsAssay(analysis_set.name)
        if not result.status.evaluable:
            return out(
                f"{result.timepoint} {result.assay.value} result {result.status.value}: {result.reason}"
            )
    return Membership(patient, True, None, result)


def members(
    *, cohort: Cohort, arm: str, analysis_set: AnalysisSet, assay: Assay | None, protocol: Protocol
) -> tuple[tuple[Membership, ...], tuple[Membership, ...]]:
    """(included, not included) patients of one arm, each sorted by patient reference."""
    found = [
        membership(patient=p, analysis_set=analysis_set, assay=assay, protocol=protocol)
        for p in cohort.arm(arm)
    ]
    return tuple(m for m in found if m.included), tuple(m for m in found if not m.included)

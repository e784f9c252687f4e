"""Who is in the trial's analyses: arm, enrolment, stratum and site of every enrolled patient (PROTOCOL.md
sections 5 and 7, issue 6 "Cohort").

* Enrolled = a ResearchSubject of the study (PatientRecord.enrolments holds only those) whose status says
  the patient was put on the study: FHIR R4 ResearchSubjectStatus on-study, on-study-intervention,
  on-study-observation, follow-up, off-study or withdrawn. Candidate, eligible, screening, pending-on-study,
  potential-candidate, ineligible and not-registered are not enrolments. A withdrawn patient stays
  enrolled (intention to treat); whether they count in an analysis set is decided by the set's rules
  (analysis_sets.py). Enrolments starting after the cut-off were removed by cutoff.record_as_of.
* Arm = ResearchSubject.assignedArm: "blinatumomab" is the study group, "historical-control" the
  patient-level control cohort (section 7). An enrolled patient with no arm, an arm the protocol does not
  list, or two different arms is *excluded* with that reason (a data query), not guessed.
* Stratum = the provisional-risk value (protocol [strata].concept); no value, or two different values, gives
  "unknown" and a flag.
* Site = the managing organisation's site code; none gives "unknown".

Patients who are not enrolled at the cut-off are not part of any endpoint; they appear only in CONSORT.
"""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.endpoints.cutoff import record_as_of
from app.domain.endpoints.errors import EndpointError
from app.domain.mrd import Comparator, percent_text
from app.domain.protocol import Protocol
from app.domain.record import EnrolmentFact
from app.domain.timeline import PatientTimeline, build_timeline
from app.domain.timepoints import Course, TimepointStatus

STUDY_ARM = "blinatumomab"  # section 7: ResearchSubject.assignedArm of the study group
CONTROL_ARM = "historical-control"  # section 7: the patient-level historical control
ARMS = (STUDY_ARM, CONTROL_ARM)
UNKNOWN = "unknown"

ENROLLED_STATUSES = frozenset(
    {"on-study", "on-study-intervention", "on-study-observation", "follow-up", "off-study", "withdrawn"}
)
WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class CohortPatient:
    reference: str  # versioned Patient reference
    timeline: PatientTimeline  # built from the record cut at the data cut-off
    arm: str  # STUDY_ARM or CONTROL_ARM
    enrolment: EnrolmentFact
    enrolment_date: dt.date | None  # local day of ResearchSubject.period.start; None if imprecise/missing
    withdrawn: bool
    withdrawal_date: dt.date | None
    stratum: str  # a provisional-risk value or UNKNOWN
    stratum_references: tuple[str, ...]
    site: str  # site code or UNKNOWN
    flags: tuple[str, ...]  # data queries and notes shown with every result

    @property
    def is_study(self) -> bool:
        return self.arm == STUDY_ARM

    def course(self, concept: str | None) -> Course | None:
        return None if concept is None else self.timeline.courses.get(concept)


@dataclass(frozen=True, slots=True)
class CohortExclusion:
    """An enrolled patient who cannot be analysed at all, with the resources behind the decision."""

    reference: str
    arm: str | None
    reason: str
    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Cohort:
    as_of: dt.date
    patients: tuple[CohortPatient, ...]  # sorted by reference
    excluded: tuple[CohortExclusion, ...]  # sorted by reference

    def arm(self, arm: str) -> tuple[CohortPatient, ...]:
        return tuple(p for p in self.patients if p.arm == arm)


def patient_key(reference: str) -> str:
    """ "Patient/12/_history/3" -> "Patient/12": the same patient whatever the version."""
    return reference.split("/_history/")[0]


def build_cohort(*, timelines: Iterable[PatientTimeline], protocol: Protocol, as_of: dt.date) -> Cohort:
    patients: list[CohortPatient] = []
    excluded: list[CohortExclusion] = []
    seen: set[str] = set()
    for given in timelines:
        key = patient_key(given.record.reference)
        if key in seen:
            raise EndpointError(f"{key} was given twice")
        seen.add(key)
        cut = record_as_of(given.record, as_of=as_of)
        timeline = given if cut == given.record else build_timeline(record=cut, protocol=protocol)
        outcome = _cohort_patient(timeline, protocol)
        if isinstance(outcome, CohortPatient):
            patients.append(outcome)
        elif outcome is not None:
            excluded.append(outcome)
    return Cohort(
        as_of,
        tuple(sorted(patients, key=lambda p: p.reference)),
        tuple(sorted(excluded, key=lambda e: e.reference)),
    )


def enrolments_of(timeline: PatientTimeline) -> tuple[EnrolmentFact, ...]:
    """The patient's enrolments (ResearchSubjects with an enrolled status), earliest first."""
    zone = timeline.record.zone

    def order(e: EnrolmentFact) -> tuple[dt.date, str]:
        day = e.start.day_in(zone) if e.start else None
        return (day or dt.date.max, e.reference)

    return tuple(sorted((e for e in timeline.record.enrolments if e.status in ENROLLED_STATUSES), key=order))


def _cohort_patient(timeline: PatientTimeline, protocol: Protocol) -> CohortPatient | CohortExclusion | None:
    record = timeline.record
    enrolments = enrolments_of(timeline)
    if not enrolments:
        return None
    references = tuple(e.reference for e in enrolments)
    arms = sorted({e.arm or "" for e in enrolments})
    if len(arms) > 1:
        listed = ", ".join(f"{e.arm or 'no arm'} ({e.reference})" for e in enrolments)
        return CohortExclusion(record.reference, None, f"enrolled in more than one arm: {listed}", references)
    arm = arms[0]
    if arm not in ARMS or arm not in protocol.study.arms:
        reason = f"assigned arm {arm!r} is not an arm of the study" if arm else "no assigned arm"
        return CohortExclusion(record.reference, arm or None, reason, references)
    enrolment = enrolments[0]
    withdrawals = [e for e in enrolments if e.status == WITHDRAWN]
    withdrawal_date = next((d for e in withdrawals if e.end and (d := e.end.day_in(record.zone))), None)
    stratum, stratum_refs, stratum_flags = _stratum(timeline, protocol)
    site = record.site or UNKNOWN
    flags = [*stratum_flags]
    if withdrawals:
        when = f"on {withdrawal_date}" if withdrawal_date else "(date not recorded)"
        flags.append(f"withdrew {when} ({withdrawals[0].reference}); kept by intention to treat")
    if record.site is None:
        flags.append("site not known (no managing organisation with a site identifier)")
    elif record.site not in protocol.sites:
        flags.append(f"site {record.site} is not a site of the protocol")
    if enrolment.start is None or enrolment.start.day_in(record.zone) is None:
        flags.append(f"enrolment date missing or imprecise ({enrolment.reference})")
    for anchor in sorted(timeline.anchors.values(), key=lambda a: a.name):
        if anchor.conflict:
            flags.append(f"anchor {anchor.name} in conflict: {anchor.reason}")
    if arm == CONTROL_ARM and any(c is not None for c in timeline.courses.values()):
        flags.append("historical control with blinatumomab administrations (data query)")
    flags.extend(_post_enrolment_flags(timeline, protocol, stratum))
    return CohortPatient(
        reference=record.reference,
        timeline=timeline,
        arm=arm,
        enrolment=enrolment,
        enrolment_date=enrolment.start.day_in(record.zone) if enrolment.start else None,
        withdrawn=bool(withdrawals),
        withdrawal_date=withdrawal_date,
        stratum=stratum,
        stratum_references=stratum_refs,
        site=site,
        flags=tuple(flags),
    )


def _stratum(timeline: PatientTimeline, protocol: Protocol) -> tuple[str, tuple[str, ...], list[str]]:
    facts = sorted(
        (o for o in timeline.record.observations if o.concept == protocol.strata.concept and o.value),
        key=lambda o: o.reference,
    )
    values = sorted({o.value for o in facts if o.value})
    references = tuple(o.reference for o in facts)
    if not values:
        return UNKNOWN, references, [f"no {protocol.strata.concept} value: stratum unknown"]
    if len(values) > 1:
        listed = ", ".join(f"{o.value} ({o.reference})" for o in facts)
        return UNKNOWN, references, [f"conflicting {protocol.strata.concept} values: {listed}"]
    flags = [] if values[0] in protocol.strata.values else [f"stratum {values[0]} is not a protocol stratum"]
    return values[0], references, flags


def _post_enrolment_flags(timeline: PatientTimeline, protocol: Protocol, stratum: str) -> list[str]:
    """Section 4.11: an MRD exclusion assessed after enrolment that now holds flags the patient, who stays
    in the full analysis set. Only the criterion's MRD parts are checked here."""
    flags = []
    for criterion in protocol.eligibility:
        if not criterion.assessed_after_enrolment:
            continue
        for rule in criterion.mrd:
            if rule.stratum is not None and rule.stratum != stratum:
                continue
            outcome = timeline.outcome(rule.timepoint, rule.assay)
            if outcome is None or outcome.status is not TimepointStatus.ASSIGNED or outcome.selected is None:
                continue
            found = timeline.classifications.get(outcome.selected.sample.reference)
            if found is None or found.fraction is None or found.comparator in (Comparator.LT, Comparator.LE):
                continue
            if found.fraction >= rule.at_least_fraction:
                sent = found.value_as_sent or percent_text(found.fraction)
                flags.append(
                    f"{criterion.id}: {rule.timepoint} {rule.assay.value} {sent}"
                    f" >= {percent_text(rule.at_least_fraction)} after enrolment ({found.reference});"
                    " data query, kept in the analysis sets"
                )
    return flags

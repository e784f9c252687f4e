"""CONSORT flow of the study arm (PROTOCOL.md section 5, "CONSORT flow").

screened -> eligible -> enrolled -> started blinatumomab -> completed the course -> evaluable flow / NGS,
with the number of patients and the count per reason at every drop.

* Screened: every patient with a screening outcome (the input, from the eligibility evaluation), except
  patients enrolled as historical controls, who are counted on their own.
* Eligible: overall "eligible". A drop reason is "<outcome>: <reason>" for each reason of the outcome; a
  patient with two reasons counts under both, so reason counts can add up to more than the drop.
* Enrolled: every study-arm patient enrolled at the cut-off (intention to treat), including patients whose
  screening outcome is not (or no longer) "eligible", e.g. a D46 result >= 1 % after enrolment (section
  4.11); those are listed under `enrolled_not_eligible_at_screening`, so eligible - not enrolled + that list
  = enrolled.
* Started / completed: the course of the full analysis set (protocol [analysis_sets] `course`).
* Evaluable: among patients who completed the course, a negative or positive POST_BLINA result per assay.
"""

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.domain.endpoints.analysis_sets import PrimaryResult, result_at
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, CohortPatient, build_cohort, patient_key
from app.domain.endpoints.errors import EndpointError, ScreeningInputError
from app.domain.endpoints.evidence import (
    Exclusion,
    Flag,
    cohort_exclusions,
    exclusions_json,
    flags_json,
    flags_of,
)
from app.domain.endpoints.reporting import Json, header
from app.domain.protocol import AnalysisSetRequirement, Protocol
from app.domain.timeline import PatientTimeline


class ScreeningVerdict(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class ScreeningOutcome:
    """The overall eligibility answer of section 4 for one patient, with its reasons."""

    overall: str  # "eligible", "ineligible" or "incomplete"
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.overall not in {v.value for v in ScreeningVerdict}:
            raise ScreeningInputError(
                f"screening outcome {self.overall!r} is not eligible/ineligible/incomplete"
            )


@dataclass(frozen=True, slots=True)
class ConsortStep:
    step: str
    patients: tuple[str, ...]  # sorted references


@dataclass(frozen=True, slots=True)
class ConsortDrop:
    from_step: str
    to_step: str
    patients: tuple[str, ...]
    reasons: tuple[tuple[str, int], ...]  # sorted by reason


@dataclass(frozen=True, slots=True)
class ConsortFlow:
    as_of: dt.date
    protocol_version: str
    steps: tuple[ConsortStep, ...]
    drops: tuple[ConsortDrop, ...]
    enrolled_not_eligible_at_screening: tuple[
        tuple[str, str, tuple[str, ...]], ...
    ]  # patient, outcome, reasons
    historical_controls_enrolled: int
    excluded: tuple[Exclusion, ...]
    flags: tuple[Flag, ...]


def consort_flow(
    *,
    timelines: Sequence[PatientTimeline],
    protocol: Protocol,
    as_of: dt.date,
    screening: Mapping[str, ScreeningOutcome],
) -> ConsortFlow:
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    shown = {patient_key(t.record.reference): t.record.reference for t in timelines}
    outcomes: dict[str, ScreeningOutcome] = {}
    for reference, outcome in screening.items():
        key = patient_key(reference)
        if key in outcomes:
            raise ScreeningInputError(f"{key} has two screening outcomes")
        outcomes[key] = outcome
        shown.setdefault(key, reference)
    controls = {patient_key(p.reference) for p in cohort.arm(CONTROL_ARM)}
    study = {patient_key(p.reference): p for p in cohort.arm(STUDY_ARM)}
    screened = sorted(shown[k] for k in outcomes if k not in controls)
    eligible = [r for r in screened if outcomes[patient_key(r)].overall == ScreeningVerdict.ELIGIBLE]
    enrolled = sorted(study.values(), key=lambda p: p.reference)
    course = _course_concept(protocol)
    started = [p for p in enrolled if p.course(course) is not None]
    completed = [p for p in started if (c := p.course(course)) is not None and c.complete]
    flow = _Flow()
    flow.step("screened", screened)
    flow.step("eligible", eligible, {r: _screening_reasons(outcomes[patient_key(r)]) for r in screened})
    flow.step(
        "enrolled",
        [p.reference for p in enrolled],
        {r: ["eligible, not enrolled"] for r in eligible if patient_key(r) not in study},
    )
    flow.step(
        f"started-{course}",
        [p.reference for p in started],
        {p.reference: [_not_started(p)] for p in enrolled},
    )
    flow.step(
        "completed-course",
        [p.reference for p in completed],
        {p.reference: [_not_completed(p, course)] for p in started},
    )
    for assay in protocol.primary.assays:
        results = {p.reference: result_at(p, protocol.primary.timepoint, assay) for p in completed}
        evaluable = [r for r, found in results.items() if found.status.evaluable]
        flow.step(
            f"evaluable-{assay.value}",
            evaluable,
            {r: [_not_evaluable(f)] for r, f in results.items()},
            "completed-course",
        )
    not_eligible = tuple(
        (p.reference, o.overall if o else "not recorded", o.reasons if o else ())
        for p in enrolled
        if (o := outcomes.get(patient_key(p.reference))) is None or o.overall != ScreeningVerdict.ELIGIBLE
    )
    return ConsortFlow(
        as_of=as_of,
        protocol_version=protocol.version,
        steps=tuple(flow.steps),
        drops=tuple(flow.drops),
        enrolled_not_eligible_at_screening=not_eligible,
        historical_controls_enrolled=len(controls),
        excluded=tuple(cohort_exclusions(cohort)),
        flags=flags_of(cohort.patients),
    )


class _Flow:
    """Steps in order; each drop is the patients of the previous (or named) step not in the next one."""

    def __init__(self) -> None:
        self.steps: list[ConsortStep] = []
        self.drops: list[ConsortDrop] = []

    def step(
        self,
        name: str,
        patients: Sequence[str],
        reasons: Mapping[str, Sequence[str]] | None = None,
        after: str | None = None,
    ) -> None:
        if self.steps and reasons is not None:
            before = next(s for s in self.steps if s.step == after) if after else self.steps[-1]
            lost = sorted(set(before.patients) - set(patients))
            counts = Counter(reason for r in lost for reason in reasons.get(r, ["reason not recorded"]))
            self.drops.append(ConsortDrop(before.step, name, tuple(lost), tuple(sorted(counts.items()))))
        self.steps.append(ConsortStep(name, tuple(sorted(patients))))


def _course_concept(protocol: Protocol) -> str:
    for name in sorted(protocol.analysis_sets):
        analysis_set = protocol.analysis_sets[name]
        if AnalysisSetRequirement.STARTED_COURSE in analysis_set.requires and analysis_set.course:
            return analysis_set.course
    raise EndpointError("no analysis set names the course that patients start (requires started-course)")


def _screening_reasons(outcome: ScreeningOutcome) -> list[str]:
    return [f"{outcome.overall}: {reason}" for reason in outcome.reasons] or [
        f"{outcome.overall}: no reason given"
    ]


def _not_started(patient: CohortPatient) -> str:
    return "withdrew before starting" if patient.withdrawn else "did not start"


def _not_completed(patient: CohortPatient, course: str) -> str:
    found = patient.course(course)
    if found is not None and found.end is None:
        return "still running at the cut-off"
    return "course incomplete, withdrew" if patient.withdrawn else "course incomplete"


def _not_evaluable(result: PrimaryResult) -> str:
    if result.classification is None:
        return f"{result.status.value}: no result in the {result.timepoint} window"
    return f"{result.status.value}: {result.classification.rule.value}"


# --- JSON ----------------------------------------------------------------------------------------------


def consort_to_json(result: ConsortFlow, *, explain: bool = False) -> Json:
    """Shape: header + {"steps": [{"step", "n"}], "drops": [{"from", "to", "n", "reasons": {reason: n}}],
    "enrolled_not_eligible_at_screening": [{"patient", "screening", "reasons"}],
    "historical_controls_enrolled", "excluded", "flags"} (+ "patients" per step and drop with explain=True).
    """

    def step(s: ConsortStep) -> Json:
        out: Json = {"step": s.step, "n": len(s.patients)}
        if explain:
            out["patients"] = list(s.patients)
        return out

    def drop(d: ConsortDrop) -> Json:
        out: Json = {"from": d.from_step, "to": d.to_step, "n": len(d.patients), "reasons": dict(d.reasons)}
        if explain:
            out["patients"] = list(d.patients)
        return out

    return {
        **header(endpoint="consort", protocol_version=result.protocol_version, as_of=result.as_of),
        "steps": [step(s) for s in result.steps],
        "drops": [drop(d) for d in result.drops],
        "enrolled_not_eligible_at_screening": [
            {"patient": p, "screening": o, "reasons": list(r)}
            for p, o, r in result.enrolled_not_eligible_at_screening
        ],
        "historical_controls_enrolled": result.historical_controls_enrolled,
        "excluded": exclusions_json(result.excluded),
        "flags": flags_json(result.flags),
    }

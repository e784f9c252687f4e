"""Evaluating the protocol's eligibility criteria for one patient on a reference date (PROTOCOL.md s. 4).

Every criterion comes from the protocol file. The evaluator looks only at which parts a criterion has
(age, conditions, observations, lookbacks, MRD, consent), never at its id, so a second trial's file with
other codes, thresholds and windows is evaluated by the same code.

A criterion holds if any of its parts holds (`EligibilityCriterion`). It fails only if every part fails;
for an *inclusion* criterion at least one failure must come from a recorded finding, because the absence of
a record ("no ALL diagnosis recorded") cannot show that a patient lacks what the criterion asks for, while
it does rule out an exclusion ("no Down syndrome recorded"). Anything else is unknown, with what data would
decide it.
"""

from __future__ import annotations

import datetime as dt

from app.domain.eligibility.answer import (
    CriterionResult,
    CriterionStatus,
    EligibilityAnswer,
    EligibilityFlag,
    FlagKind,
    Overall,
)
from app.domain.eligibility.facts import Context, Finding, PartResult, date_text, days_of, timeline_as_of
from app.domain.eligibility.lookbacks import lookback_part
from app.domain.eligibility.mrd_criteria import mrd_parts
from app.domain.eligibility.parts import age_part, conditions_part, consent_part, observation_part
from app.domain.protocol import CriterionKind, EligibilityCriterion, Protocol
from app.domain.record import EnrolmentFact, PatientRecord
from app.domain.timeline import PatientTimeline

# FHIR R4 ResearchSubject.status codes that mean "not (yet) on the study"
# (https://hl7.org/fhir/R4/valueset-research-subject-status.html); every other status, withdrawn included,
# is a patient who was enrolled and stays in the full analysis set.
NOT_ENROLLED_STATUSES = frozenset(
    {
        "candidate",
        "eligible",
        "ineligible",
        "not-registered",
        "pending-on-study",
        "potential-candidate",
        "screening",
    }
)


def evaluate_eligibility(
    *, record: PatientRecord, timeline: PatientTimeline, protocol: Protocol, as_of: dt.date
) -> EligibilityAnswer:
    """Each criterion of `protocol` for the patient on `as_of`, counting only data dated on or before it.

    `timeline` is `build_timeline(record=record, protocol=protocol)`; anchors and samples dated after
    `as_of` are left out here. `as_of` is a calendar day in the site's zone (`record.zone`).
    """
    context = Context(
        record, timeline_as_of(timeline=timeline, protocol=protocol, as_of=as_of), protocol, as_of
    )
    results = tuple(_evaluate(criterion, context) for criterion in protocol.eligibility)
    if any(r.excludes for r in results):
        overall = Overall.INELIGIBLE
    elif all(r.satisfied or r.pending for r in results):
        overall = Overall.ELIGIBLE
    else:
        overall = Overall.INCOMPLETE
    return EligibilityAnswer(
        overall=overall,
        as_of=as_of,
        protocol_version=protocol.version,
        criteria=results,
        missing=tuple(
            f"{r.id}: {m}"
            for r in results
            if r.status is CriterionStatus.UNKNOWN and not r.pending
            for m in r.missing
        ),
        pending=tuple(f"{r.id} (assessed after enrolment): {r.reason}" for r in results if r.pending),
        flags=_flags(results, protocol, record, as_of),
    )


def _evaluate(criterion: EligibilityCriterion, ctx: Context) -> CriterionResult:
    parts = _parts(criterion, ctx)
    holding = [p for p in parts if p.finding is Finding.HOLDS]
    failing = [p for p in parts if p.finding is Finding.FAILS]
    inclusion = criterion.kind is CriterionKind.INCLUSION
    if holding:
        status, shown = CriterionStatus.MET, holding
    elif len(failing) == len(parts) and (not inclusion or any(p.explicit for p in failing)):
        status, shown = CriterionStatus.NOT_MET, parts
    else:
        status, shown = CriterionStatus.UNKNOWN, parts
    missing: tuple[str, ...] = ()
    if status is CriterionStatus.UNKNOWN:
        # What would decide it: the unknown parts, and for an inclusion the parts that failed by absence.
        deciding = [p for p in parts if p.finding is Finding.UNKNOWN or (inclusion and not p.explicit)]
        missing = tuple(dict.fromkeys(m for p in deciding for m in p.missing)) or (
            f"data that decide: {criterion.text}",
        )
    return CriterionResult(
        id=criterion.id,
        kind=criterion.kind,
        text=criterion.text,
        status=status,
        reason="; ".join(dict.fromkeys(p.reason for p in shown if p.reason)),
        evidence=tuple(dict.fromkeys(e for p in shown for e in p.evidence)),
        missing=missing,
        pending=criterion.assessed_after_enrolment and status is CriterionStatus.UNKNOWN,
        reading=criterion.reading,
    )


def _parts(criterion: EligibilityCriterion, ctx: Context) -> list[PartResult]:
    parts: list[PartResult] = []
    if criterion.age is not None:
        parts.append(age_part(criterion.age, ctx))
    if criterion.conditions is not None:
        parts.append(conditions_part(criterion.conditions, ctx))
    parts.extend(observation_part(test, ctx) for test in criterion.observations)
    parts.extend(lookback_part(lookback, ctx) for lookback in criterion.lookbacks)
    if criterion.mrd:
        parts.extend(mrd_parts(criterion, ctx))
    if criterion.consent is not None:
        parts.append(consent_part(criterion.consent, ctx))
    return parts


def _flags(
    results: tuple[CriterionResult, ...], protocol: Protocol, record: PatientRecord, as_of: dt.date
) -> tuple[EligibilityFlag, ...]:
    enrolment = enrolled(record, as_of)
    if enrolment is None:
        return ()
    after = {c.id for c in protocol.eligibility if c.assessed_after_enrolment}
    assert enrolment.start is not None
    since = f"enrolled {date_text(enrolment.start)} ({enrolment.reference})"
    return tuple(
        EligibilityFlag(
            FlagKind.INELIGIBLE_AFTER_ENROLMENT if r.id in after else FlagKind.ENROLLED_WHILE_INELIGIBLE,
            r.id,
            f"{since}; {r.id} now {r.status.value}: {r.reason}",
            (enrolment.reference, *r.evidence),
        )
        for r in results
        if r.excludes
    )


def enrolled(record: PatientRecord, as_of: dt.date) -> EnrolmentFact | None:
    """The patient's first enrolment in the study dated on or before `as_of` (ResearchSubject with
    `period.start`, PROTOCOL.md section 7, in a status that means on the study), or None."""
    found: list[tuple[dt.date, str, EnrolmentFact]] = []
    for enrolment in record.enrolments:
        if enrolment.start is None or enrolment.status in NOT_ENROLLED_STATUSES:
            continue
        days = days_of(enrolment.start, record.zone)
        if days.last <= as_of:
            found.append((days.first, enrolment.reference, enrolment))
    return min(found)[2] if found else None

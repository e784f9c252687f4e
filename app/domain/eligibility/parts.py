"""Criterion parts read straight off the record: age, diagnoses, coded observations, consent.

How each part treats the reference date and missing data (PROTOCOL.md section 4, our reading):

* age: `birth_date` against the protocol's limits, both strict ("older than", "younger than"). Spans are
  added like every span in mrdhub (`timepoints.add_span`): a day the target month lacks becomes the
  month's last day, so someone born on 29 February is 18 on 28 February of a common year. That is the
  Civil Code of the PRC, art. 202 (all four sites are in China): a period counted in years ends on "the
  corresponding day of the final month; without one, on the month's last day". It is also the cautious
  side of the upper limit. A partial birth date decides when every day it could mean gives the same
  answer, and is unknown otherwise.
* diagnoses (`conditions`): a confirmed (or unverified-status) Condition dated on or before `as_of`, or
  undated (a diagnosis on the record is history, whatever its date), holds. Refuted and entered-in-error
  Conditions do not count; an unconfirmed one, or one whose partial date may be after `as_of`, makes the
  part unknown. With no matching Condition the part fails *by absence* ("no Down syndrome recorded") if the
  record holds any diagnosis at all, and is unknown if it holds none (no diagnosis list was sent).
* coded observations: any result dated on or before `as_of` (or undated) with one of the listed values
  holds, so a CNS3 at diagnosis is not hidden by a later CNS1; results with other values fail; no result
  at all is unknown: sIgM or CNS status is never assumed.
* consent: the latest consent with the concept, dated on or before `as_of`, decides: the required status
  holds, a refused status fails, anything else is unknown. An undated consent cannot show that consent
  was given by `as_of` and is unknown.
"""

from __future__ import annotations

import datetime as dt

from app.domain.eligibility.facts import (
    Context,
    Days,
    Finding,
    PartResult,
    Timing,
    date_text,
    days_of,
    span_text,
)
from app.domain.protocol import AgeLimits, ConditionMatch, ConditionSet, ConsentRequirement, ObservationTest
from app.domain.record import ConditionFact, ConsentFact, ObservationFact
from app.domain.timepoints import ClinicalDate, add_span

ONE_DAY = dt.timedelta(days=1)


# --- age ------------------------------------------------------------------------------------------------


def age_part(limits: AgeLimits, ctx: Context) -> PartResult:
    birth = ctx.record.birth_date
    evidence = (ctx.record.reference,)
    if birth is None:
        return PartResult(
            Finding.UNKNOWN, "no birth date recorded", evidence, missing=("the patient's birth date",)
        )
    born = days_of(birth, ctx.zone)
    older, younger = span_text(limits.older_than), span_text(limits.younger_than)
    # "Older than X" from the day after the X anniversary; "younger than Y" until the day before the Y one.
    older_from = Days(
        add_span(start=born.first, span=limits.older_than) + ONE_DAY,
        add_span(start=born.last, span=limits.older_than) + ONE_DAY,
    )
    reaches = Days(
        add_span(start=born.first, span=limits.younger_than),
        add_span(start=born.last, span=limits.younger_than),
    )
    who, on = _born(birth, born), f"on {ctx.as_of}"
    if ctx.as_of < older_from.first:
        return PartResult(
            Finding.FAILS,
            f"{who}: not older than {older} {on} (older than {older} from {older_from})",
            evidence,
        )
    if ctx.as_of >= reaches.last:
        reason = f"{who}: {younger} old from {reaches}, so not younger than {younger} {on}"
        return PartResult(Finding.FAILS, reason, evidence)
    if ctx.as_of >= older_from.last and ctx.as_of < reaches.first:
        until = reaches.first - ONE_DAY
        reason = f"{who}: older than {older} from {older_from} and younger than {younger} until {until}"
        return PartResult(Finding.HOLDS, reason, evidence)
    reason = f"{who}: whether older than {older} and younger than {younger} {on} depends on the day of birth"
    return PartResult(Finding.UNKNOWN, reason, evidence, missing=("the patient's full birth date",))


def _born(birth: ClinicalDate, days: Days) -> str:
    if days.first == days.last:
        return f"born {days.first}"
    shown = str(birth.year) if birth.month is None else f"{birth.year}-{birth.month:02d}"
    return f"born in {shown} (partial date)"


# --- diagnoses --------------------------------------------------------------------------------------------


def conditions_part(conditions: ConditionSet, ctx: Context) -> PartResult:
    found: dict[str, list[ConditionFact]] = {}
    doubtful: dict[str, list[tuple[ConditionFact, str]]] = {}
    for concept in conditions.concepts:
        for fact in ctx.record.conditions:
            if fact.concept != concept or fact.refuted:
                continue
            when = ctx.timing(fact.onset)
            if when is Timing.LATER:
                continue
            if when is Timing.UNCERTAIN:
                doubtful.setdefault(concept, []).append(
                    (fact, f"dated {date_text(fact.onset)}, maybe after {ctx.as_of}")
                )
            elif not fact.confirmed:
                doubtful.setdefault(concept, []).append((fact, "not confirmed"))
            else:
                found.setdefault(concept, []).append(fact)
    absent = [c for c in conditions.concepts if c not in found and c not in doubtful]
    labels = [ctx.label(c) for c in conditions.concepts]
    evidence = tuple(f.reference for facts in found.values() for f in facts)
    recorded = "; ".join(
        f"{ctx.label(c)} recorded ({', '.join(f.reference for f in fs)})" for c, fs in found.items()
    )
    any_of = conditions.match is ConditionMatch.ANY_OF
    if (any_of and found) or (not any_of and not absent and not doubtful):
        return PartResult(Finding.HOLDS, recorded, evidence)
    has_diagnoses = any(ctx.timing(f.onset) is not Timing.LATER for f in ctx.record.conditions)
    joined = " or ".join(labels) if any_of else " and ".join(labels)
    if not any_of and absent and has_diagnoses:
        missing_text = "; ".join(f"no {ctx.label(c)} recorded" for c in absent)
        return PartResult(
            Finding.FAILS,
            "; ".join(filter(None, [recorded, missing_text])),
            evidence,
            missing=tuple(f"a diagnosis of {ctx.label(c)}" for c in absent),
            explicit=False,
        )
    if doubtful:
        notes = "; ".join(
            f"{ctx.label(c)} {why} ({fact.reference})" for c, items in doubtful.items() for fact, why in items
        )
        doubt_refs = tuple(fact.reference for items in doubtful.values() for fact, _ in items)
        wanted = tuple(f"a confirmed or refuted diagnosis of {ctx.label(c)}" for c in doubtful)
        return PartResult(Finding.UNKNOWN, notes, evidence + doubt_refs, missing=wanted)
    if has_diagnoses:
        return PartResult(
            Finding.FAILS,
            f"no {joined} recorded",
            evidence,
            missing=(f"a diagnosis of {joined}",),
            explicit=False,
        )
    return PartResult(
        Finding.UNKNOWN,
        f"no diagnoses in the record, so {joined} cannot be ruled in or out",
        missing=(f"the patient's diagnoses (Condition), to show whether {joined} is recorded",),
    )


# --- coded observations -----------------------------------------------------------------------------------


def observation_part(test: ObservationTest, ctx: Context) -> PartResult:
    label = ctx.label(test.concept)
    wanted = " / ".join(sorted(test.values))
    counted: list[ObservationFact] = []
    uncertain: list[ObservationFact] = []
    for fact in ctx.record.observations:
        if fact.concept != test.concept:
            continue
        when = ctx.timing(fact.effective)
        if when in (Timing.COUNTS, Timing.UNDATED):
            counted.append(fact)
        elif when is Timing.UNCERTAIN:
            uncertain.append(fact)
    holding = [f for f in counted if f.value in test.values]
    if holding:
        return PartResult(Finding.HOLDS, _values(label, holding), tuple(f.reference for f in holding))
    unclear = [f for f in counted if f.value is None] + [
        f for f in uncertain if f.value in (None, *test.values)
    ]
    other = [f for f in counted if f.value is not None]
    all_values = " / ".join(_concept_values(ctx, test.concept)) or wanted
    if unclear:
        notes = "; ".join(
            f"{label} {f.value_as_sent!r} not mapped to a value ({f.reference})"
            if f.value is None
            else f"{label} {f.value} dated {date_text(f.effective)}, maybe after {ctx.as_of} ({f.reference})"
            for f in unclear
        )
        return PartResult(
            Finding.UNKNOWN,
            notes,
            tuple(f.reference for f in (*other, *unclear)),
            missing=(f"a {label} result ({all_values}) dated on or before {ctx.as_of}",),
        )
    if other:
        return PartResult(Finding.FAILS, _values(label, other), tuple(f.reference for f in other))
    return PartResult(
        Finding.UNKNOWN,
        f"no {label} result recorded",
        missing=(f"a {label} result ({all_values}) dated on or before {ctx.as_of}",),
    )


def _values(label: str, facts: list[ObservationFact]) -> str:
    return "; ".join(f"{label}: {f.value} ({f.reference})" for f in facts)


def _concept_values(ctx: Context, concept: str) -> tuple[str, ...]:
    found = ctx.protocol.concepts.get(concept)
    return () if found is None else found.values


# --- consent ----------------------------------------------------------------------------------------------


def consent_part(requirement: ConsentRequirement, ctx: Context) -> PartResult:
    label = ctx.label(requirement.concept)
    wanted = (f"a {label} with status {requirement.status}, dated on or before {ctx.as_of}",)
    dated: list[tuple[dt.date, ConsentFact]] = []
    unclear: list[str] = []
    for fact in ctx.record.consents:
        if requirement.concept not in fact.concepts:
            continue
        when = ctx.timing(fact.date)
        if when is Timing.COUNTS:
            assert fact.date is not None
            dated.append((days_of(fact.date, ctx.zone).last, fact))
        elif when is Timing.UNDATED:
            unclear.append(f"{fact.status} without a date ({fact.reference})")
        elif when is Timing.UNCERTAIN:
            unclear.append(
                f"{fact.status} dated {date_text(fact.date)}, maybe after {ctx.as_of} ({fact.reference})"
            )
    if not dated:
        reason = f"{label}: {'; '.join(unclear)}" if unclear else f"no {label} dated on or before {ctx.as_of}"
        return PartResult(Finding.UNKNOWN, reason, missing=wanted)
    latest_day = max(day for day, _ in dated)
    latest = [fact for day, fact in dated if day == latest_day]
    statuses = {fact.status for fact in latest}
    evidence = tuple(fact.reference for fact in latest)
    shown = f"{label} {' / '.join(sorted(statuses))} on {latest_day} ({', '.join(evidence)})"
    if statuses == {requirement.status}:
        return PartResult(Finding.HOLDS, shown, evidence)
    if statuses <= requirement.refused_statuses:
        return PartResult(Finding.FAILS, shown, evidence)
    return PartResult(Finding.UNKNOWN, f"{shown}: not {requirement.status}", evidence, missing=wanted)

"""Exposure or diagnosis within a span before an anchor or the reference date (PROTOCOL.md section 4,
exclusions 6 and 9): "glucocorticoids for >= 14 days within one month before induction day 1",
"convulsions within the last month".

Our reading, also recorded in the protocol file:

* The window before an anchor ends the day before it: [anchor - span, anchor - 1]. Whatever starts on
  induction day 1 or later is the trial's own CCCG-ALL-2020 induction and never counts (exclusion 9).
  The window before the reference date includes it: [as_of - span, as_of] (a convulsion today counts).
  Spans subtract like `timepoints.add_span` (1 month before 31 March is 28 or 29 February).
* When the anchor is unknown (not recorded, or sources in conflict) the window is counted back from the
  reference date instead and the reason says so. Nothing found there is still "not met"; an exposure
  found there is only "unknown", because it may be the induction itself.
* Durations are calendar days of exposure inside the window, each day once however many records cover
  it (two overlapping steroid prescriptions are not double counted). A MedicationAdministration with a
  period counts every day of the period; one still in progress counts up to `as_of`; one whose end is
  not recorded counts its first day for certain and up to `as_of` possibly, so a duration it could
  reach is "unknown", not "not met". Partial dates count their possible days the same way.
* A Condition (convulsion) is one day at its onset. An undated one cannot be placed in the window and
  makes the part unknown.
* An exposure also carrying one of `except_concepts` (emergency radiotherapy for airway compression)
  does not count.
* "Not recorded" rules the exposure out only if the record holds some medication/procedure history and
  some diagnoses at all; otherwise the part is unknown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.domain.eligibility.facts import (
    Context,
    Days,
    Finding,
    PartResult,
    Timing,
    back,
    count_days,
    days_of,
    span_text,
)
from app.domain.protocol import REFERENCE_DATE, DurationComparator, DurationRule, Lookback
from app.domain.record import ExposureFact

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class _Window:
    days: Days
    where: str  # "2025-02-01..2025-02-28, the 1 month before Induction day 1 (2025-03-01)"
    unknown_anchor: str | None  # why the window falls back to the reference date


@dataclass(frozen=True, slots=True)
class _Episode:
    """What is known about one exposure or event: the days it surely covers and the days it may cover."""

    reference: str
    certain: Days | None
    possible: Days
    confirmed: bool = True


def lookback_part(lookback: Lookback, ctx: Context) -> PartResult:
    window = _window(lookback, ctx)
    label = ctx.label(lookback.concept)
    episodes, excepted = _episodes(lookback, ctx)
    inside = [(e, e.possible.clip(window.days)) for e in episodes]
    seen = [(e, p) for e, p in inside if p is not None]
    certain = [c for e, _ in seen if e.certain is not None and (c := e.certain.clip(window.days))]
    surely = count_days(certain)
    if surely == 0 and any(e.confirmed and e.possible.within(window.days) for e, _ in seen):
        surely = 1  # it lies wholly inside the window, on a day the partial date does not name
    possibly = count_days(p for _, p in seen)
    evidence = tuple(e.reference for e, _ in seen)
    refs = f" ({', '.join(evidence)})" if evidence else ""
    need = _need_text(lookback.duration)
    note = "" if window.unknown_anchor is None else f"; {window.unknown_anchor}"
    note += "".join(f"; {ctx.label(c)} excepted ({', '.join(r)})" for c, r in excepted.items())
    amount = _amount(surely, possibly, lookback.duration) or _on(certain)
    if _enough(surely, lookback.duration):
        reason = f"{label}{amount} in {window.where}{refs}{_which(need)}{note}"
        if window.unknown_anchor is None:
            return PartResult(Finding.HOLDS, reason, evidence)
        anchor = ctx.protocol.anchors[lookback.before].label
        return PartResult(
            Finding.UNKNOWN,
            f"{reason}: it may be the treatment that starts at {anchor}",
            evidence,
            missing=(f"the date of {anchor}, to tell whether the {label} came before it",),
        )
    if not _enough(possibly, lookback.duration):
        if seen:  # seen but too short: only a duration rule can fail this way
            return PartResult(
                Finding.FAILS, f"{label}{amount} in {window.where}{refs}, not {need}{note}", evidence
            )
        if not _has_history(ctx):
            return PartResult(
                Finding.UNKNOWN,
                f"no medication, procedure or diagnosis history in the record to look for {label}",
                missing=(f"the patient's {label} history for {window.days}",),
            )
        return PartResult(
            Finding.FAILS,
            f"no {label} recorded in {window.where}{note}",
            explicit=False,
            missing=(f"a record of {label} in {window.days}",),
        )
    question = f"whether {need}" if need else "whether it falls in the window"
    return PartResult(
        Finding.UNKNOWN,
        f"{label}{amount or ' possibly'} in {window.where}{refs}: the dates cannot tell {question}{note}",
        evidence,
        missing=(f"the exact dates of {label}{refs}",),
    )


def _window(lookback: Lookback, ctx: Context) -> _Window:
    span = span_text(lookback.within)
    up_to_reference = _Window(
        Days(back(day=ctx.as_of, span=lookback.within), ctx.as_of),
        "",
        None,
    )
    if lookback.before == REFERENCE_DATE:
        days = up_to_reference.days
        return _Window(days, f"{days}, the {span} up to the reference date", None)
    definition = ctx.protocol.anchors.get(lookback.before)
    name = lookback.before if definition is None else definition.label
    anchor = ctx.timeline.anchors.get(lookback.before)
    if anchor is not None and anchor.date is not None:
        days = Days(back(day=anchor.date, span=lookback.within), anchor.date - ONE_DAY)
        return _Window(days, f"{days}, the {span} before {name} ({anchor.date})", None)
    state = "not recorded" if anchor is None else f"in conflict ({anchor.reason})"
    days = up_to_reference.days
    return _Window(
        days,
        f"{days}, the {span} up to the reference date",
        f"{name} {state}, so counted back from the reference date {ctx.as_of}",
    )


def _episodes(lookback: Lookback, ctx: Context) -> tuple[list[_Episode], dict[str, list[str]]]:
    """Exposures and Conditions carrying the concept, dated on or before as_of; and the excepted ones."""
    concepts: dict[str, set[str]] = {}
    for exposure in ctx.record.exposures:
        concepts.setdefault(exposure.reference, set()).update((exposure.concept, *exposure.concepts))
    episodes: list[_Episode] = []
    excepted: dict[str, list[str]] = {}
    seen: set[str] = set()
    for exposure in ctx.record.exposures:
        carried = concepts[exposure.reference]
        if lookback.concept not in carried or exposure.reference in seen:
            continue
        seen.add(exposure.reference)
        if ctx.timing(exposure.start) is Timing.LATER:
            continue
        exceptions = [c for c in lookback.except_concepts if c in carried]
        if exceptions:
            excepted.setdefault(exceptions[0], []).append(exposure.reference)
            continue
        episodes.append(_exposure_episode(exposure, ctx))
    for condition in ctx.record.conditions:
        if condition.concept != lookback.concept or condition.refuted:
            continue
        when = ctx.timing(condition.onset)
        if when is Timing.LATER:
            continue
        if condition.onset is None:
            possible = Days(dt.date.min, ctx.as_of)
        else:
            onset = days_of(condition.onset, ctx.zone)
            possible = Days(onset.first, min(onset.last, ctx.as_of))
        single = possible.first == possible.last and when is Timing.COUNTS
        certain = possible if single and condition.confirmed else None
        episodes.append(_Episode(condition.reference, certain, possible, condition.confirmed))
    return episodes, excepted


def _exposure_episode(exposure: ExposureFact, ctx: Context) -> _Episode:
    as_of = ctx.as_of
    start = None if exposure.start is None else days_of(exposure.start, ctx.zone)
    end = None if exposure.end is None else days_of(exposure.end, ctx.zone)
    start_low = dt.date.min if start is None else start.first
    if end is not None:
        end_low, end_high = end.first, end.last
    elif exposure.ongoing:
        end_low = end_high = as_of  # still running when the data were sent
    else:
        end_low, end_high = start_low, as_of  # end not recorded: at least the first day
    end_high = max(min(end_high, as_of), start_low)
    end_low = max(end_low, start_low)
    start_high = end_high if start is None else min(start.last, end_high)
    certain = Days(start_high, min(end_low, as_of)) if start_high <= min(end_low, as_of) else None
    return _Episode(exposure.reference, certain, Days(start_low, end_high))


def _enough(days: int, rule: DurationRule | None) -> bool:
    if rule is None:
        return days >= 1
    if rule.comparator is DurationComparator.AT_LEAST:
        return days >= rule.days
    return days > rule.days


def _need_text(rule: DurationRule | None) -> str:
    if rule is None:
        return ""
    words = "at least" if rule.comparator is DurationComparator.AT_LEAST else "more than"
    return f"{words} {rule.days} days"


def _which(need: str) -> str:
    return f", {need}" if need else ""


def _amount(surely: int, possibly: int, rule: DurationRule | None) -> str:
    if rule is None:
        return ""
    if surely == possibly:
        return f" on {surely} day{'' if surely == 1 else 's'}"
    return f" on {surely} to {possibly} days"


def _on(runs: list[Days]) -> str:
    return f" on {', '.join(str(r) for r in sorted(runs, key=lambda r: r.first))}" if runs else ""


def _has_history(ctx: Context) -> bool:
    exposures = any(ctx.timing(e.start) is not Timing.LATER for e in ctx.record.exposures)
    diagnoses = any(ctx.timing(c.onset) is not Timing.LATER for c in ctx.record.conditions)
    return exposures and diagnoses

"""What every criterion part shares: the reference date, how a fact's date relates to it, and the answer
of one part of a criterion (PROTOCOL.md section 4).

Only data dated on or before the reference date (`as_of`) count. A partial date ("2025", "2025-03")
covers every day it could mean; a fact whose date could fall on either side of `as_of` is *uncertain*,
not silently counted or dropped. Whether an undated fact counts is each part's decision (see parts.py).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from app.domain.protocol import CalendarSpan, Protocol
from app.domain.record import PatientRecord
from app.domain.timeline import PatientTimeline
from app.domain.timepoints import (
    ClinicalDate,
    DatePrecision,
    add_span,
    place_results,
    resolve_anchors,
    select,
)


@dataclass(frozen=True, slots=True)
class Days:
    """An inclusive run of local calendar days."""

    first: dt.date
    last: dt.date

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.first <= day <= self.last

    def within(self, other: Days) -> bool:
        return other.first <= self.first and self.last <= other.last

    def clip(self, other: Days) -> Days | None:
        first, last = max(self.first, other.first), min(self.last, other.last)
        return Days(first, last) if first <= last else None

    @property
    def count(self) -> int:
        return (self.last - self.first).days + 1


def days_of(date: ClinicalDate, zone: str) -> Days:
    """Every day a FHIR date could mean: a day or instant is one local day, "2025-03" all of March."""
    day = date.day_in(zone)
    if day is not None:
        return Days(day, day)
    if date.precision is DatePrecision.MONTH:
        assert date.month is not None
        last = calendar.monthrange(date.year, date.month)[1]
        return Days(dt.date(date.year, date.month, 1), dt.date(date.year, date.month, last))
    return Days(dt.date(date.year, 1, 1), dt.date(date.year, 12, 31))


def date_text(date: ClinicalDate | None) -> str:
    """A FHIR date as it was sent: "2025", "2025-03", "2025-03-19", or the instant with its offset."""
    if date is None:
        return "undated"
    if date.instant is not None:
        return date.instant.isoformat()
    if date.month is None:
        return str(date.year)
    if date.day is None:
        return f"{date.year}-{date.month:02d}"
    return f"{date.year}-{date.month:02d}-{date.day:02d}"


def count_days(runs: Iterable[Days]) -> int:
    """Calendar days covered by any of the runs; overlapping runs count each day once."""
    total, reach = 0, None
    for run in sorted(runs, key=lambda r: r.first):
        first = run.first if reach is None else max(run.first, reach + dt.timedelta(days=1))
        if run.last >= first:
            total += (run.last - first).days + 1
        reach = run.last if reach is None else max(reach, run.last)
    return total


def back(*, day: dt.date, span: CalendarSpan) -> dt.date:
    """`day` minus whole calendar years/months (clamped to the month's last day), then days."""
    return add_span(start=day, span=CalendarSpan(-span.years, -span.months, -span.days))


def span_text(span: CalendarSpan) -> str:
    parts = [(span.years, "year"), (span.months, "month"), (span.days, "day")]
    return " ".join(f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n)


class Timing(StrEnum):
    COUNTS = "counts"  # dated on or before as_of
    LATER = "later"  # dated after as_of: ignored
    UNCERTAIN = "uncertain"  # a partial date that may be either side of as_of
    UNDATED = "undated"


def timing(date: ClinicalDate | None, *, as_of: dt.date, zone: str) -> Timing:
    if date is None:
        return Timing.UNDATED
    days = days_of(date, zone)
    if days.last <= as_of:
        return Timing.COUNTS
    if days.first > as_of:
        return Timing.LATER
    return Timing.UNCERTAIN


class Finding(StrEnum):
    """What one part of a criterion found. A criterion holds if any of its parts holds."""

    HOLDS = "holds"
    FAILS = "fails"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PartResult:
    finding: Finding
    reason: str
    evidence: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # what data would decide an UNKNOWN part
    # FAILS from a recorded finding (sIgM negative, 13 days of steroids) rather than from the absence of
    # any record. Absence rules out an exclusion but cannot show that an inclusion fails (evaluate.py).
    explicit: bool = True


@dataclass(frozen=True, slots=True)
class Context:
    record: PatientRecord
    timeline: PatientTimeline  # as of the reference date (timeline_as_of)
    protocol: Protocol
    as_of: dt.date

    @property
    def zone(self) -> str:
        return self.record.zone

    def timing(self, date: ClinicalDate | None) -> Timing:
        return timing(date, as_of=self.as_of, zone=self.record.zone)

    def label(self, concept: str) -> str:
        found = self.protocol.concepts.get(concept)
        return concept if found is None else found.label


def timeline_as_of(*, timeline: PatientTimeline, protocol: Protocol, as_of: dt.date) -> PatientTimeline:
    """The timeline as it stood on `as_of`: anchors and MRD samples dated later are left out.

    A later anchor date or sample could otherwise decide a timepoint (PROTOCOL.md section 4: only data dated
    on or before the reference date count). When nothing is later, the timeline is returned unchanged.
    """
    zone = timeline.record.zone
    candidates = [c for anchor in timeline.anchors.values() for c in anchor.candidates]

    def later(date: ClinicalDate) -> bool:
        return timing(date, as_of=as_of, zone=zone) is Timing.LATER

    if all(c.date <= as_of for c in candidates) and not any(
        later(p.sample.collected) for p in timeline.placements
    ):
        return timeline
    anchors = resolve_anchors(candidates=[c for c in candidates if c.date <= as_of])
    placements = tuple(
        place_results(
            results=[p.sample for p in timeline.placements if not later(p.sample.collected)],
            anchors=anchors,
            timepoints=protocol.timepoints,
            zone=zone,
            timepoint_specimens=protocol.results.timepoint_specimens,
        )
    )
    outcomes = tuple(select(placements=placements, anchors=anchors, timepoints=protocol.timepoints))
    return PatientTimeline(
        timeline.record, anchors, timeline.courses, placements, outcomes, timeline.classifications
    )

"""Trial days, anchors, infusion courses and the placement of MRD samples on timepoints (PROTOCOL.md s. 2).

Days are calendar days in the site's time zone. Two ways of counting from an anchor exist, because the
protocol uses both (OffsetUnit): induction timepoints speak in *trial days* (the anchor day is day 1, so
day 19 is day 1 + 18), blinatumomab timepoints in *days from the anchor* (the anchor day is 0, the
POST_BLINA window is 0..+7).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from app.domain.protocol import (
    Assay,
    CalendarSpan,
    CourseRule,
    OffsetUnit,
    SelectionRule,
    TimepointDefinition,
)


class ClinicalTimeError(ValueError):
    """A date, instant or period that cannot be read (naive instant, end before start, bad text)."""


# --- dates ---------------------------------------------------------------------------------------------


class DatePrecision(StrEnum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    INSTANT = "instant"


@dataclass(frozen=True, slots=True)
class ClinicalDate:
    """A FHIR date/dateTime as sent: partial dates stay partial, instants keep their original offset."""

    precision: DatePrecision
    year: int
    month: int | None = None
    day: int | None = None
    instant: dt.datetime | None = None

    def __post_init__(self) -> None:
        expected = {
            DatePrecision.YEAR: (False, False, False),
            DatePrecision.MONTH: (True, False, False),
            DatePrecision.DAY: (True, True, False),
            DatePrecision.INSTANT: (True, True, True),
        }[self.precision]
        if (self.month is not None, self.day is not None, self.instant is not None) != expected:
            raise ClinicalTimeError(f"fields do not match precision {self.precision}")
        try:
            dt.date(self.year, self.month or 1, self.day or 1)
        except ValueError as exc:
            raise ClinicalTimeError(str(exc)) from None
        if self.instant is not None and self.instant.utcoffset() is None:
            raise ClinicalTimeError("an instant needs a time zone offset (FHIR R4 dateTime)")

    @classmethod
    def of_year(cls, year: int) -> ClinicalDate:
        return cls(DatePrecision.YEAR, year)

    @classmethod
    def of_month(cls, year: int, month: int) -> ClinicalDate:
        return cls(DatePrecision.MONTH, year, month)

    @classmethod
    def of_day(cls, day: dt.date) -> ClinicalDate:
        return cls(DatePrecision.DAY, day.year, day.month, day.day)

    @classmethod
    def of_instant(cls, instant: dt.datetime) -> ClinicalDate:
        return cls(DatePrecision.INSTANT, instant.year, instant.month, instant.day, instant)

    @classmethod
    def parse(cls, text: str) -> ClinicalDate:
        """A FHIR R4 date or dateTime string: "2025", "2025-03", "2025-03-19", "2025-03-19T23:30:00+08:00"."""
        try:
            if len(text) == 4:
                return cls.of_year(int(text))
            if len(text) == 7:
                return cls.of_month(int(text[:4]), int(text[5:7]))
            if len(text) == 10:
                return cls.of_day(dt.date.fromisoformat(text))
            return cls.of_instant(dt.datetime.fromisoformat(text))
        except ValueError as exc:
            raise ClinicalTimeError(f"{text!r} is not a FHIR date or dateTime: {exc}") from None

    @property
    def is_precise(self) -> bool:
        return self.precision in (DatePrecision.DAY, DatePrecision.INSTANT)

    def day_in(self, zone: str) -> dt.date | None:
        """The calendar day in `zone`; None for a year or year-month, which cannot be placed on a day."""
        if self.instant is not None:
            return local_date(instant=self.instant, zone=zone)
        if self.month is not None and self.day is not None:
            return dt.date(self.year, self.month, self.day)
        return None


def local_date(*, instant: dt.datetime, zone: str) -> dt.date:
    """The calendar day of an aware instant in an IANA zone (section 2: days count in the site's zone)."""
    if instant.utcoffset() is None:
        raise ClinicalTimeError("an instant needs a time zone offset")
    return instant.astimezone(ZoneInfo(zone)).date()


# --- day arithmetic ------------------------------------------------------------------------------------


def trial_day(*, date: dt.date, day1: dt.date) -> int:
    """Section 2: day N = day 1 + (N - 1) calendar days, so the day before day 1 is day 0."""
    return (date - day1).days + 1


def day_for(*, anchor_date: dt.date, offset: int, unit: OffsetUnit) -> dt.date:
    """The calendar day `offset` counted in `unit` from the anchor."""
    shift = offset - 1 if unit is OffsetUnit.TRIAL_DAY else offset
    return anchor_date + dt.timedelta(days=shift)


def add_span(*, start: dt.date, span: CalendarSpan) -> dt.date:
    """`start` plus whole calendar years/months (clamped to the month's last day), then days."""
    months = start.year * 12 + (start.month - 1) + span.years * 12 + span.months
    year, month = divmod(months, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return dt.date(year, month + 1, day) + dt.timedelta(days=span.days)


# --- anchors -------------------------------------------------------------------------------------------


class AnchorSourceKind(StrEnum):
    DATA = "data"  # a MedicationAdministration / MedicationRequest / CarePlan / Procedure
    TRIAL_OFFICE = "trial-office"  # an explicit, audited API call


@dataclass(frozen=True, slots=True)
class AnchorCandidate:
    anchor: str  # anchor name, e.g. "induction-day1"
    date: dt.date  # local calendar day at the site
    kind: AnchorSourceKind
    reference: str  # "MedicationAdministration/12/_history/1", or the trial office's audit entry


@dataclass(frozen=True, slots=True)
class Anchor:
    name: str
    date: dt.date | None  # None while in conflict: unusable until the data query is answered
    candidates: tuple[AnchorCandidate, ...]
    conflict: bool
    reason: str


def resolve_anchors(*, candidates: Iterable[AnchorCandidate]) -> dict[str, Anchor]:
    """One Anchor per name; conflicting sources are kept and leave the anchor unusable.

    Section 2: "an anchor with two conflicting sources is a data query, not a silent choice". Our reading:
    a trial-office entry is itself the answer to such a query, so it wins over data sources (which stay
    listed as candidates); data sources that disagree, or trial-office entries that disagree, give a
    conflict. Pass only the trial office's current entry for an anchor, not its superseded ones.
    """
    by_name: dict[str, list[AnchorCandidate]] = {}
    for candidate in candidates:
        by_name.setdefault(candidate.anchor, []).append(candidate)
    anchors: dict[str, Anchor] = {}
    for name in sorted(by_name):
        group = tuple(
            sorted(
                by_name[name], key=lambda c: (c.kind != AnchorSourceKind.TRIAL_OFFICE, c.date, c.reference)
            )
        )
        office = [c for c in group if c.kind is AnchorSourceKind.TRIAL_OFFICE]
        deciding = office or list(group)
        dates = sorted({c.date for c in deciding})
        if len(dates) > 1:
            listed = "; ".join(f"{c.date} ({c.reference})" for c in deciding)
            anchors[name] = Anchor(name, None, group, True, f"sources disagree: {listed}")
            continue
        overridden = [c for c in group if c.kind is AnchorSourceKind.DATA and c.date != dates[0]]
        if office:
            reason = f"set by the trial office ({office[0].reference})"
            if overridden:
                reason += "; overrides " + ", ".join(f"{c.date} ({c.reference})" for c in overridden)
        else:
            reason = "from " + ", ".join(c.reference for c in group)
        anchors[name] = Anchor(name, dates[0], group, False, reason)
    return anchors


# --- infusion courses ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Administration:
    """One bag / administration period as local calendar days, both inclusive; end None while running."""

    start: dt.date
    end: dt.date | None
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Interruption:
    first_day: dt.date
    last_day: dt.date

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1


@dataclass(frozen=True, slots=True)
class Course:
    start: dt.date
    end: dt.date | None  # last infused day; None while an administration is still running
    infused_days: int  # calendar days with any infusion
    interruptions: tuple[Interruption, ...]
    complete: bool
    references: tuple[str, ...]


def infusion_courses(*, administrations: Iterable[Administration], rule: CourseRule) -> tuple[Course, ...]:
    """Administrations grouped into courses: a gap of more than rule.max_interruption_days days without
    infusion ends a course, a shorter one is an interruption inside it (protocol file, [courses])."""
    ordered = sorted(administrations, key=lambda a: (a.start, a.end or dt.date.max, a.reference))
    for administration in ordered:
        if administration.end is not None and administration.end < administration.start:
            raise ClinicalTimeError(f"{administration.reference or 'administration'} ends before it starts")
    groups: list[list[Administration]] = []
    last_day: dt.date | None = None
    for administration in ordered:
        gap = None if last_day is None else (administration.start - last_day).days - 1
        if gap is None or gap > rule.max_interruption_days:
            groups.append([])
        groups[-1].append(administration)
        covered_to = administration.end or administration.start
        last_day = covered_to if last_day is None else max(last_day, covered_to)
    return tuple(_course(group, rule) for group in groups)


def blinatumomab_course(*, administrations: Iterable[Administration], rule: CourseRule) -> Course | None:
    """The first course (section 1: 14 days of full-dose blinatumomab); None if nothing was given."""
    courses = infusion_courses(administrations=administrations, rule=rule)
    return courses[0] if courses else None


def _course(group: Sequence[Administration], rule: CourseRule) -> Course:
    interruptions: list[Interruption] = []
    infused = 0
    segment_start, segment_end = group[0].start, group[0].end or group[0].start
    for administration in group[1:]:
        end = administration.end or administration.start
        if (administration.start - segment_end).days > 1:
            infused += (segment_end - segment_start).days + 1
            gap = Interruption(
                segment_end + dt.timedelta(days=1), administration.start - dt.timedelta(days=1)
            )
            interruptions.append(gap)
            segment_start, segment_end = administration.start, end
        else:
            segment_end = max(segment_end, end)
    infused += (segment_end - segment_start).days + 1
    running = any(a.end is None for a in group)
    return Course(
        start=group[0].start,
        end=None if running else segment_end,
        infused_days=infused,
        interruptions=tuple(interruptions),
        complete=not running and infused >= rule.required_days - rule.tolerance_days,
        references=tuple(a.reference for a in group),
    )


def course_anchor_candidates(*, course: Course, start_anchor: str, end_anchor: str) -> list[AnchorCandidate]:
    """Anchor candidates from a course: its first day, and its last day once the course has ended."""
    first, last = course.references[0], course.references[-1]
    candidates = [AnchorCandidate(start_anchor, course.start, AnchorSourceKind.DATA, first)]
    if course.end is not None:
        candidates.append(AnchorCandidate(end_anchor, course.end, AnchorSourceKind.DATA, last))
    return candidates


# --- placing samples on timepoints ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MrdSample:
    """An MRD result as far as placement needs it; usable statuses only (see mrd.is_usable_status)."""

    reference: str  # "Observation/<id>/_history/<version>"
    assay: Assay
    collected: ClinicalDate
    specimen: str | None  # specimen concept, e.g. "specimen-bone-marrow"; None if not known


class UnassignedReason(StrEnum):
    IMPRECISE_DATE = "imprecise-date"
    NOT_TIMEPOINT_SPECIMEN = "not-timepoint-specimen"
    UNKNOWN_SPECIMEN = "unknown-specimen"
    OUTSIDE_WINDOWS = "outside-windows"
    AWAITING_ANCHOR = "awaiting-anchor"


@dataclass(frozen=True, slots=True)
class Window:
    """A timepoint's window as calendar days, once its anchor is known."""

    timepoint: str
    target: dt.date
    start: dt.date
    end: dt.date


@dataclass(frozen=True, slots=True)
class Placement:
    sample: MrdSample
    local_date: dt.date | None
    timepoints: tuple[str, ...]  # every window that contains the sample (windows may overlap)
    unassigned: UnassignedReason | None
    reason: str
    nearest_timepoint: str | None = None
    days_outside: int | None = None  # calendar days between the sample and the nearest window
    awaiting_anchor: tuple[str, ...] = ()  # timepoints for this assay that could not be checked yet


def window_of(*, timepoint: TimepointDefinition, anchors: Mapping[str, Anchor]) -> Window | None:
    anchor = anchors.get(timepoint.anchor)
    anchor_date = None if anchor is None else anchor.date
    if anchor_date is None:
        return None

    def day(offset: int) -> dt.date:
        return day_for(anchor_date=anchor_date, offset=offset, unit=timepoint.unit)

    return Window(
        timepoint.name, day(timepoint.target), day(timepoint.window_start), day(timepoint.window_end)
    )


def place_results(
    *,
    results: Iterable[MrdSample],
    anchors: Mapping[str, Anchor],
    timepoints: Sequence[TimepointDefinition],
    zone: str,
    timepoint_specimens: frozenset[str],
) -> list[Placement]:
    """Each sample with the timepoints whose window holds it; never drops one (section 2)."""
    windows = {t.name: window_of(timepoint=t, anchors=anchors) for t in timepoints}
    placements = []
    for sample in results:
        for_assay = [t for t in timepoints if sample.assay in t.assays]
        awaiting = tuple(t.name for t in for_assay if windows[t.name] is None)
        known = [w for t in for_assay if (w := windows[t.name]) is not None]
        placements.append(_place(sample, known, awaiting, zone, timepoint_specimens))
    return placements


def _place(
    sample: MrdSample, windows: list[Window], awaiting: tuple[str, ...], zone: str, specimens: frozenset[str]
) -> Placement:
    day = sample.collected.day_in(zone)
    if sample.specimen is None:
        return Placement(sample, day, (), UnassignedReason.UNKNOWN_SPECIMEN, "specimen type not known")
    if sample.specimen not in specimens:
        reason = f"{sample.specimen} does not count for timepoints (only {', '.join(sorted(specimens))})"
        return Placement(sample, day, (), UnassignedReason.NOT_TIMEPOINT_SPECIMEN, reason)
    if day is None:
        reason = f"imprecise date ({sample.collected.precision} only)"
        return Placement(sample, None, (), UnassignedReason.IMPRECISE_DATE, reason)
    inside = tuple(w.timepoint for w in windows if w.start <= day <= w.end)
    if inside:
        return Placement(sample, day, inside, None, f"{day} in {', '.join(inside)}", awaiting_anchor=awaiting)
    if not windows and awaiting:
        reason = f"no {sample.assay} timepoint has its anchor yet ({', '.join(awaiting)})"
        return Placement(sample, day, (), UnassignedReason.AWAITING_ANCHOR, reason, awaiting_anchor=awaiting)
    if not windows:
        return Placement(
            sample, day, (), UnassignedReason.OUTSIDE_WINDOWS, f"no timepoint measures {sample.assay}"
        )
    # Nearest window; ties go to the timepoint listed first in the protocol.
    distance, nearest = min(((_outside(day, w), w) for w in windows), key=lambda pair: pair[0])
    side = "before" if day < nearest.start else "after"
    reason = (
        f"{day} is {distance} day(s) {side} the {nearest.timepoint} window ({nearest.start}..{nearest.end})"
    )
    return Placement(
        sample, day, (), UnassignedReason.OUTSIDE_WINDOWS, reason, nearest.timepoint, distance, awaiting
    )


def _outside(day: dt.date, window: Window) -> int:
    if day < window.start:
        return (window.start - day).days
    return (day - window.end).days


# --- choosing one sample per timepoint and assay -------------------------------------------------------


class TimepointStatus(StrEnum):
    ASSIGNED = "assigned"
    MISSING = "missing"
    AWAITING_ANCHOR = "awaiting-anchor"


@dataclass(frozen=True, slots=True)
class TimepointOutcome:
    timepoint: str
    assay: Assay
    required: bool  # False for an assay the protocol lists as optional at this timepoint
    status: TimepointStatus
    selection: SelectionRule
    window: Window | None
    selected: Placement | None
    alternatives: tuple[Placement, ...]  # the other samples in the window, in date order
    reason: str


def select(
    *,
    placements: Iterable[Placement],
    anchors: Mapping[str, Anchor],
    timepoints: Sequence[TimepointDefinition],
) -> list[TimepointOutcome]:
    """One outcome per timepoint and assay, in protocol order, chosen by the timepoint's rule (section 2)."""
    placed = list(placements)
    outcomes = []
    for timepoint in timepoints:
        window = window_of(timepoint=timepoint, anchors=anchors)
        for assay in timepoint.assays:
            candidates = sorted(
                (p for p in placed if p.sample.assay is assay and timepoint.name in p.timepoints),
                key=_chronological,
            )
            outcomes.append(_outcome(timepoint, assay, window, candidates, anchors))
    return outcomes


def _outcome(
    timepoint: TimepointDefinition,
    assay: Assay,
    window: Window | None,
    candidates: list[Placement],
    anchors: Mapping[str, Anchor],
) -> TimepointOutcome:
    def outcome(status: TimepointStatus, selected: Placement | None, reason: str) -> TimepointOutcome:
        others = tuple(p for p in candidates if p is not selected)
        required = timepoint.is_required(assay)
        return TimepointOutcome(
            timepoint.name, assay, required, status, timepoint.selection, window, selected, others, reason
        )

    if window is None:
        anchor = anchors.get(timepoint.anchor)
        state = "missing" if anchor is None else f"in conflict ({anchor.reason})"
        return outcome(TimepointStatus.AWAITING_ANCHOR, None, f"anchor {timepoint.anchor} {state}")
    if not candidates:
        span = f"{window.start}..{window.end}"
        return outcome(TimepointStatus.MISSING, None, f"no bone marrow {assay} result in {span}")
    if timepoint.selection is SelectionRule.FIRST:
        chosen = candidates[0]
    elif timepoint.selection is SelectionRule.LAST:
        chosen = candidates[-1]
    else:
        # Nearest to the target day; candidates are in date order and min() keeps the first, so ties go
        # to the earlier sample (section 2).
        chosen = min(candidates, key=lambda p: abs((_day(p) - window.target).days))
    span = f"{window.start}..{window.end}"
    reason = f"{timepoint.selection} of {len(candidates)} in {span}: {chosen.sample.reference}"
    return outcome(TimepointStatus.ASSIGNED, chosen, reason)


def _day(placement: Placement) -> dt.date:
    assert placement.local_date is not None  # only placed samples reach selection
    return placement.local_date


def _chronological(placement: Placement) -> tuple[dt.date, int, dt.datetime, str]:
    """Date, then time where known (a day-only date sorts first), then reference: a stable order."""
    instant = placement.sample.collected.instant
    moment = dt.datetime.min.replace(tzinfo=dt.UTC) if instant is None else instant.astimezone(dt.UTC)
    return (_day(placement), 0 if instant is None else 1, moment, placement.sample.reference)

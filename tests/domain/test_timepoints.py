"""Trial days, anchors, blinatumomab courses and timepoint windows (PROTOCOL.md section 2).

The patient below starts induction (window phase) on 2025-03-01 at a site in Asia/Shanghai, so
induction day 19 is 2025-03-19 and the D19 window (days 17..22) is 2025-03-17..2025-03-22.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from app.domain.protocol import (
    Assay,
    CalendarSpan,
    CourseRule,
    OffsetUnit,
    SelectionRule,
    TimepointDefinition,
)
from app.domain.timepoints import (
    Administration,
    Anchor,
    AnchorCandidate,
    AnchorSourceKind,
    ClinicalDate,
    ClinicalTimeError,
    Interruption,
    MrdSample,
    Placement,
    TimepointOutcome,
    TimepointStatus,
    UnassignedReason,
    add_span,
    blinatumomab_course,
    course_anchor_candidates,
    day_for,
    infusion_courses,
    local_date,
    place_results,
    resolve_anchors,
    select,
    trial_day,
)

FLOW, NGS = Assay.FLOW, Assay.NGS
TRIAL, FROM_ANCHOR = OffsetUnit.TRIAL_DAY, OffsetUnit.DAYS_FROM_ANCHOR
ZONE = "Asia/Shanghai"
BONE_MARROW, PERIPHERAL_BLOOD = "specimen-bone-marrow", "specimen-peripheral-blood"

# PROTOCOL.md section 2, default timepoints.
D19 = TimepointDefinition("D19", "induction-day1", TRIAL, 19, 17, 22, (FLOW,))
D46 = TimepointDefinition(
    "D46", "induction-day1", TRIAL, 46, 43, 53, (FLOW, NGS), optional_assays=frozenset({NGS})
)
PRE_BLINA = TimepointDefinition("PRE_BLINA", "blinatumomab-start", FROM_ANCHOR, -1, -14, 0, (FLOW, NGS))
POST_BLINA = TimepointDefinition("POST_BLINA", "blinatumomab-end", FROM_ANCHOR, 0, 0, 7, (FLOW, NGS))
TIMEPOINTS = (D19, D46, PRE_BLINA, POST_BLINA)

BLINATUMOMAB = CourseRule(
    "blinatumomab", "Blinatumomab", required_days=14, max_interruption_days=7, tolerance_days=0
)
DAY1 = dt.date(2025, 3, 1)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def anchors(**dates: str) -> dict[str, Anchor]:
    """anchors(induction_day1="2025-03-01") -> resolved anchors from one data source each."""
    return resolve_anchors(
        candidates=[
            AnchorCandidate(
                name.replace("_", "-"), day(date), AnchorSourceKind.DATA, f"MedicationAdministration/{name}"
            )
            for name, date in dates.items()
        ]
    )


INDUCTION_ONLY = anchors(induction_day1="2025-03-01")
ALL_ANCHORS = anchors(
    induction_day1="2025-03-01", blinatumomab_start="2025-03-26", blinatumomab_end="2025-04-08"
)


def sample(
    reference: str, collected: str, assay: Assay = FLOW, specimen: str | None = BONE_MARROW
) -> MrdSample:
    return MrdSample(f"Observation/{reference}", assay, ClinicalDate.parse(collected), specimen)


def place(*samples: MrdSample, known: dict[str, Anchor] = ALL_ANCHORS) -> list[Placement]:
    return place_results(
        results=samples,
        anchors=known,
        timepoints=TIMEPOINTS,
        zone=ZONE,
        timepoint_specimens=frozenset({BONE_MARROW}),
    )


def outcome(
    name: str,
    assay: Assay,
    *samples: MrdSample,
    known: dict[str, Anchor] = ALL_ANCHORS,
    timepoints: tuple[TimepointDefinition, ...] = TIMEPOINTS,
) -> TimepointOutcome:
    placements = place_results(
        results=samples,
        anchors=known,
        timepoints=timepoints,
        zone=ZONE,
        timepoint_specimens=frozenset({BONE_MARROW}),
    )
    outcomes = select(placements=placements, anchors=known, timepoints=timepoints)
    return next(o for o in outcomes if o.timepoint == name and o.assay is assay)


def chosen(o: TimepointOutcome) -> str | None:
    return None if o.selected is None else o.selected.sample.reference


# --- days ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "site_day"),
    [
        ("2025-03-19T23:30:00+08:00", "2025-03-19"),  # late evening in Shanghai
        ("2025-03-19T15:30:00Z", "2025-03-19"),  # the same instant sent in UTC
        ("2025-03-19T17:30:00+00:00", "2025-03-20"),  # 01:30 next morning in Shanghai
        ("2025-03-19T15:59:59Z", "2025-03-19"),  # one second before midnight in Shanghai
        ("2025-03-19T16:00:00Z", "2025-03-20"),  # midnight in Shanghai
        ("2025-03-19T23:30:00-05:00", "2025-03-20"),  # an offset far from the site's
    ],
)
def test_an_instant_falls_on_the_calendar_day_of_the_sites_time_zone(instant: str, site_day: str) -> None:
    assert local_date(instant=dt.datetime.fromisoformat(instant), zone=ZONE) == day(site_day)


def test_an_instant_without_offset_is_refused() -> None:
    with pytest.raises(ClinicalTimeError):
        local_date(instant=dt.datetime(2025, 3, 19, 23, 30), zone=ZONE)
    with pytest.raises(ClinicalTimeError):
        ClinicalDate.parse("2025-03-19T23:30:00")


@pytest.mark.parametrize(
    ("date", "day_number"),
    [("2025-03-01", 1), ("2025-02-28", 0), ("2025-02-27", -1), ("2025-03-19", 19), ("2025-04-15", 46)],
)
def test_day_n_is_day_1_plus_n_minus_1_calendar_days(date: str, day_number: int) -> None:
    assert trial_day(date=day(date), day1=DAY1) == day_number
    assert day_for(anchor_date=DAY1, offset=day_number, unit=TRIAL) == day(date)


@pytest.mark.parametrize(
    ("offset", "date"), [(-14, "2025-03-12"), (-1, "2025-03-25"), (0, "2025-03-26"), (7, "2025-04-02")]
)
def test_days_from_an_anchor_count_the_anchor_day_as_zero(offset: int, date: str) -> None:
    assert day_for(anchor_date=day("2025-03-26"), offset=offset, unit=FROM_ANCHOR) == day(date)


@pytest.mark.parametrize(
    ("start", "span", "end"),
    [
        ("2025-03-01", CalendarSpan(months=6), "2025-09-01"),
        ("2025-08-31", CalendarSpan(months=6), "2026-02-28"),  # clamped to the month's last day
        ("2024-02-29", CalendarSpan(years=1), "2025-02-28"),
        ("2025-03-01", CalendarSpan(months=1, days=-1), "2025-03-31"),
    ],
)
def test_calendar_months_are_added_as_calendar_months(start: str, span: CalendarSpan, end: str) -> None:
    assert add_span(start=day(start), span=span) == day(end)


# --- placing samples -----------------------------------------------------------------------------------


def test_a_sample_just_after_midnight_in_shanghai_counts_on_the_shanghai_day() -> None:
    # 2025-03-16T17:30Z is 01:30 on 2025-03-17 in Shanghai: day 17, the first day of the D19 window.
    [placement] = place(sample("1", "2025-03-16T17:30:00Z"), known=INDUCTION_ONLY)

    assert placement.local_date == day("2025-03-17")
    assert placement.timepoints == ("D19",)


@pytest.mark.parametrize("collected", ["2025-03", "2025"])
def test_a_partial_date_is_kept_but_unassigned_as_imprecise(collected: str) -> None:
    [placement] = place(sample("1", collected))

    assert placement.unassigned is UnassignedReason.IMPRECISE_DATE
    assert placement.timepoints == ()
    assert placement.local_date is None


@pytest.mark.parametrize(
    ("specimen", "reason"),
    [(PERIPHERAL_BLOOD, UnassignedReason.NOT_TIMEPOINT_SPECIMEN), (None, UnassignedReason.UNKNOWN_SPECIMEN)],
)
def test_only_bone_marrow_counts_for_timepoints(specimen: str | None, reason: UnassignedReason) -> None:
    [placement] = place(sample("1", "2025-03-19", specimen=specimen))

    assert placement.unassigned is reason
    assert placement.timepoints == ()
    assert placement.local_date == day("2025-03-19")  # kept and dated, just not assigned


@pytest.mark.parametrize(
    ("collected", "nearest", "days_outside"),
    [
        ("2025-03-23", "D19", 1),  # day 23, one day after the D19 window (days 17..22)
        ("2025-03-16", "D19", 1),  # day 16, one day before it
        ("2025-04-23", "D46", 1),  # day 54, one day after the D46 window (days 43..53)
        ("2025-03-31", "D19", 9),  # day 31: 9 days after D19, 12 days before D46
    ],
)
def test_a_result_outside_every_window_shows_its_nearest_timepoint(
    collected: str, nearest: str, days_outside: int
) -> None:
    [placement] = place(sample("1", collected), known=INDUCTION_ONLY)

    assert placement.unassigned is UnassignedReason.OUTSIDE_WINDOWS
    assert (placement.nearest_timepoint, placement.days_outside) == (nearest, days_outside)
    assert placement.awaiting_anchor == ("PRE_BLINA", "POST_BLINA")


def test_a_sample_can_belong_to_two_overlapping_windows() -> None:
    # Blinatumomab starts on day 26, so PRE_BLINA (day 12..26) also holds the day-19 marrow.
    [placement] = place(sample("1", "2025-03-19"))

    assert placement.timepoints == ("D19", "PRE_BLINA")


def test_the_end_of_blinatumomab_opens_the_primary_window_for_seven_days() -> None:
    blinatumomab_only = anchors(blinatumomab_start="2025-03-26", blinatumomab_end="2025-04-08")

    inside, outside = place(
        sample("1", "2025-04-15", NGS), sample("2", "2025-04-16", NGS), known=blinatumomab_only
    )

    assert inside.timepoints == ("POST_BLINA",)
    assert (outside.nearest_timepoint, outside.days_outside) == ("POST_BLINA", 1)


def test_without_any_anchor_a_result_waits_for_one() -> None:
    [placement] = place(sample("1", "2025-03-19"), known={})

    assert placement.unassigned is UnassignedReason.AWAITING_ANCHOR
    assert placement.awaiting_anchor == ("D19", "D46", "PRE_BLINA", "POST_BLINA")


# --- choosing one sample per timepoint ------------------------------------------------------------------


def test_nearest_to_target_is_chosen_and_the_others_become_alternatives() -> None:
    o = outcome("D19", FLOW, sample("far", "2025-03-21"), sample("near", "2025-03-18"), known=INDUCTION_ONLY)

    assert o.status is TimepointStatus.ASSIGNED
    assert chosen(o) == "Observation/near"
    assert [p.sample.reference for p in o.alternatives] == ["Observation/far"]


def test_two_samples_equally_near_the_target_go_to_the_earlier() -> None:
    o = outcome(
        "D19", FLOW, sample("later", "2025-03-20"), sample("earlier", "2025-03-18"), known=INDUCTION_ONLY
    )

    assert chosen(o) == "Observation/earlier"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (SelectionRule.FIRST, "Observation/day17"),
        (SelectionRule.LAST, "Observation/day22-late"),
        (SelectionRule.NEAREST, "Observation/day19"),
    ],
)
def test_the_timepoints_selection_rule_decides(rule: SelectionRule, expected: str) -> None:
    samples = (
        sample("day22-early", "2025-03-22T08:00:00+08:00"),
        sample("day19", "2025-03-19"),
        sample("day22-late", "2025-03-22T15:00:00+08:00"),
        sample("day17", "2025-03-17"),
    )
    o = outcome("D19", FLOW, *samples, known=INDUCTION_ONLY, timepoints=(replace(D19, selection=rule),))

    assert chosen(o) == expected
    assert len(o.alternatives) == 3


def test_a_timepoint_without_a_result_is_missing() -> None:
    o = outcome("D46", FLOW, sample("1", "2025-03-19"))

    assert o.status is TimepointStatus.MISSING
    assert o.window is not None and (o.window.start, o.window.end) == (day("2025-04-12"), day("2025-04-22"))


def test_an_optional_assay_is_reported_but_not_required() -> None:
    o = outcome("D46", NGS)

    assert (o.status, o.required) == (TimepointStatus.MISSING, False)


def test_a_timepoint_whose_anchor_is_missing_is_awaiting_its_anchor() -> None:
    o = outcome("POST_BLINA", FLOW, sample("1", "2025-04-10"), known=INDUCTION_ONLY)

    assert o.status is TimepointStatus.AWAITING_ANCHOR
    assert o.reason == "anchor blinatumomab-end missing"


def test_a_result_of_another_assay_does_not_fill_the_timepoint() -> None:
    o = outcome("D19", FLOW, sample("ngs", "2025-03-19", NGS), known=INDUCTION_ONLY)

    assert o.status is TimepointStatus.MISSING


# --- anchors ---------------------------------------------------------------------------------------------


def candidate(date: str, reference: str, kind: AnchorSourceKind = AnchorSourceKind.DATA) -> AnchorCandidate:
    return AnchorCandidate("induction-day1", day(date), kind, reference)


def test_sources_that_agree_give_the_anchor() -> None:
    [anchor] = resolve_anchors(
        candidates=[
            candidate("2025-03-01", "MedicationAdministration/1"),
            candidate("2025-03-01", "CarePlan/2"),
        ]
    ).values()

    assert (anchor.date, anchor.conflict, len(anchor.candidates)) == (day("2025-03-01"), False, 2)


def test_two_data_sources_that_disagree_leave_the_anchor_in_conflict() -> None:
    known = resolve_anchors(
        candidates=[
            candidate("2025-03-01", "MedicationAdministration/1"),
            candidate("2025-03-02", "CarePlan/2"),
        ]
    )
    anchor = known["induction-day1"]

    assert anchor.conflict
    assert anchor.date is None  # no silent choice
    assert {c.reference for c in anchor.candidates} == {"MedicationAdministration/1", "CarePlan/2"}
    o = outcome("D19", FLOW, sample("1", "2025-03-19"), known=known)
    assert o.status is TimepointStatus.AWAITING_ANCHOR
    assert "in conflict" in o.reason


def test_the_trial_office_settles_a_conflict_and_the_data_sources_stay_listed() -> None:
    [anchor] = resolve_anchors(
        candidates=[
            candidate("2025-03-01", "MedicationAdministration/1"),
            candidate("2025-03-02", "CarePlan/2"),
            candidate("2025-03-02", "AuditEvent/9", AnchorSourceKind.TRIAL_OFFICE),
        ]
    ).values()

    assert (anchor.date, anchor.conflict) == (day("2025-03-02"), False)
    assert len(anchor.candidates) == 3
    assert "overrides 2025-03-01 (MedicationAdministration/1)" in anchor.reason


def test_two_trial_office_entries_that_disagree_are_a_conflict_too() -> None:
    office = AnchorSourceKind.TRIAL_OFFICE
    [anchor] = resolve_anchors(
        candidates=[
            candidate("2025-03-01", "AuditEvent/1", office),
            candidate("2025-03-02", "AuditEvent/2", office),
        ]
    ).values()

    assert anchor.conflict and anchor.date is None


# --- blinatumomab course ---------------------------------------------------------------------------------


def bag(start: str, end: str | None, reference: str = "") -> Administration:
    return Administration(
        day(start), None if end is None else day(end), reference or f"MedicationAdministration/{start}"
    )


def test_bags_changed_without_a_gap_form_one_complete_course() -> None:
    bags = [bag("2025-03-26", "2025-03-29"), bag("2025-03-29", "2025-04-02"), bag("2025-04-02", "2025-04-08")]

    course = blinatumomab_course(administrations=bags, rule=BLINATUMOMAB)

    assert course is not None
    assert (course.start, course.end, course.infused_days) == (day("2025-03-26"), day("2025-04-08"), 14)
    assert course.interruptions == ()
    assert course.complete


def test_a_short_interruption_stays_in_the_course_and_is_not_counted_as_infused() -> None:
    bags = [bag("2025-04-03", "2025-04-10"), bag("2025-03-26", "2025-03-31")]  # in any order

    course = blinatumomab_course(administrations=bags, rule=BLINATUMOMAB)

    assert course is not None
    assert course.interruptions == (Interruption(day("2025-04-01"), day("2025-04-02")),)
    assert course.interruptions[0].days == 2
    assert (course.start, course.end) == (day("2025-03-26"), day("2025-04-10"))
    assert (course.infused_days, course.complete) == (14, True)


def test_a_gap_longer_than_allowed_starts_a_new_course() -> None:
    bags = [bag("2025-03-26", "2025-03-30"), bag("2025-04-08", "2025-04-21")]  # 8 days without infusion

    first, second = infusion_courses(
        administrations=bags, rule=replace(BLINATUMOMAB, max_interruption_days=7)
    )

    assert (first.start, first.end, first.infused_days, first.complete) == (
        day("2025-03-26"),
        day("2025-03-30"),
        5,
        False,
    )
    assert (second.start, second.infused_days, second.complete) == (day("2025-04-08"), 14, True)


def test_a_running_infusion_gives_a_start_anchor_but_no_end_anchor_yet() -> None:
    course = blinatumomab_course(
        administrations=[bag("2025-03-26", None, "MedicationAdministration/7")], rule=BLINATUMOMAB
    )

    assert course is not None and course.end is None and not course.complete
    found = course_anchor_candidates(
        course=course, start_anchor="blinatumomab-start", end_anchor="blinatumomab-end"
    )
    assert [(c.anchor, c.date) for c in found] == [("blinatumomab-start", day("2025-03-26"))]


def test_no_administration_means_no_course() -> None:
    assert blinatumomab_course(administrations=[], rule=BLINATUMOMAB) is None


def test_an_administration_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ClinicalTimeError):
        blinatumomab_course(administrations=[bag("2025-03-26", "2025-03-20")], rule=BLINATUMOMAB)


def test_a_result_of_an_assay_no_timepoint_measures_is_kept_unassigned() -> None:
    flow_only = (D19,)
    [placement] = place_results(
        results=[sample("1", "2025-03-19", NGS)],
        anchors=INDUCTION_ONLY,
        timepoints=flow_only,
        zone=ZONE,
        timepoint_specimens=frozenset({BONE_MARROW}),
    )

    assert placement.unassigned is UnassignedReason.OUTSIDE_WINDOWS
    assert placement.nearest_timepoint is None
    assert placement.reason == "no timepoint measures ngs"


@pytest.mark.parametrize("text", ["2025-13", "2025-02-30", "March 2025", "2025-03-19T25:00:00+08:00"])
def test_a_date_that_does_not_exist_is_refused(text: str) -> None:
    with pytest.raises(ClinicalTimeError):
        ClinicalDate.parse(text)

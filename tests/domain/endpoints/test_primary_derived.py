"""The primary endpoint in two phases (issue 8, derived per-patient rows): each patient's item, then the
aggregation; an item computed from the whole record answers every cut-off on or after its settled day."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from dataclasses import replace

import pytest

from app.domain.endpoints import primary_endpoint, primary_to_json, record_as_of
from app.domain.endpoints.contributions import cohort_entries, cohort_entry, fact_days, same_cut, settled_day
from app.domain.endpoints.errors import EndpointError
from app.domain.endpoints.primary import CountedGroup, PrimaryItem, primary_from_items, primary_item
from app.domain.protocol import Assay
from app.domain.record import PatientRecord
from app.domain.timeline import PatientTimeline, build_timeline
from app.domain.timepoints import AnchorCandidate, AnchorSourceKind, ClinicalDate

from .trial_cohort import LATE, PROTOCOL, RECORDS, S1, S5, condition, timelines

COMBOS = [(name, assay) for name in sorted(PROTOCOL.analysis_sets) for assay in Assay]
# Before the first enrolment, during the treatment of the cohort, after it, and past every fact.
CUT_OFFS = [dt.date(2024, 12, 31), dt.date(2025, 1, 20), dt.date(2025, 2, 5), dt.date(2025, 7, 19)]
CUT_OFFS += [dt.date(2026, 6, 30), dt.date(2026, 7, 2), dt.date(2027, 1, 1)]
ALL = (*RECORDS, LATE)


def dumped(items: list[PrimaryItem], as_of: dt.date, name: str, assay: Assay, explain: bool) -> str:
    chosen = PROTOCOL.analysis_sets[name]
    result = primary_from_items(items=items, protocol=PROTOCOL, as_of=as_of, assay=assay, analysis_set=chosen)
    return json.dumps(primary_to_json(result, explain=explain), sort_keys=True)


def direct(as_of: dt.date, name: str, assay: Assay, explain: bool) -> str:
    result = primary_endpoint(
        timelines=timelines(*ALL), protocol=PROTOCOL, as_of=as_of, assay=assay, analysis_set=name
    )
    return json.dumps(primary_to_json(result, explain=explain), sort_keys=True)


def live_items(
    records: tuple[PatientRecord, ...], as_of: dt.date, name: str, assay: Assay
) -> list[PrimaryItem]:
    chosen = PROTOCOL.analysis_sets[name]
    return [
        primary_item(entry=e, analysis_set=chosen, assay=assay, protocol=PROTOCOL)
        for e in cohort_entries(timelines=timelines(*records), protocol=PROTOCOL, as_of=as_of)
    ]


def whole_record_item(timeline: PatientTimeline, name: str, assay: Assay) -> PrimaryItem | None:
    """What the service stores: the item of the record as it is, computed at its settled day."""
    day = settled_day(timeline.record) or dt.date.max
    found = cohort_entry(timeline=timeline, protocol=PROTOCOL, as_of=day)
    chosen = PROTOCOL.analysis_sets[name]
    return (
        None
        if found is None
        else primary_item(entry=found, analysis_set=chosen, assay=assay, protocol=PROTOCOL)
    )


@pytest.mark.parametrize("as_of", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_the_aggregation_of_per_patient_items_is_the_primary_endpoint_byte_for_byte(
    as_of: dt.date, name: str, assay: Assay
) -> None:
    items = live_items(ALL, as_of, name, assay)
    random.Random(8).shuffle(items)
    for explain in (True, False):
        assert dumped(items, as_of, name, assay, explain) == direct(as_of, name, assay, explain)


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.reference)
def test_from_the_settled_day_on_the_cut_off_leaves_the_record_whole(record: PatientRecord) -> None:
    settled = settled_day(record)
    assert settled is not None
    for later in (settled, settled + dt.timedelta(days=1), dt.date(2030, 1, 1)):
        assert record_as_of(record, as_of=later) == record
    assert record_as_of(record, as_of=settled - dt.timedelta(days=1)) != record


def test_a_partial_date_settles_from_the_first_day_of_its_period() -> None:
    relapse = replace(condition("S1-relapse", "relapse", "2025-07-19"), onset=ClinicalDate.parse("2027-03"))
    record = replace(S1, conditions=(*S1.conditions, relapse))
    assert settled_day(record) == dt.date(2027, 3, 1)
    assert record_as_of(record, as_of=dt.date(2027, 2, 28)) != record


def test_a_trial_office_anchor_counts_towards_the_settled_day() -> None:
    anchor = AnchorCandidate(
        "induction-day1", dt.date(2028, 5, 1), AnchorSourceKind.TRIAL_OFFICE, "Basic/a/_history/1"
    )
    assert settled_day(replace(S5, manual_anchors=(anchor,))) == dt.date(2028, 5, 1)


def test_a_record_without_any_date_is_settled_at_every_cut_off() -> None:
    bare = PatientRecord("Patient/X/_history/1", None, "Asia/Shanghai", None, None)
    assert settled_day(bare) is None


@pytest.mark.parametrize("as_of", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_whole_record_items_where_settled_and_live_items_elsewhere_give_the_same_answer(
    as_of: dt.date, name: str, assay: Assay
) -> None:
    items: list[PrimaryItem] = []
    for timeline in timelines(*ALL):
        settled = settled_day(timeline.record)
        if settled is None or settled <= as_of:
            stored = whole_record_item(timeline, name, assay)
            items.extend([stored] if stored is not None else [])
        else:
            items.extend(live_items((timeline.record,), as_of, name, assay))
    for explain in (True, False):
        assert dumped(items, as_of, name, assay, explain) == direct(as_of, name, assay, explain)


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.reference)
def test_every_cut_off_between_two_fact_days_sees_the_same_record(record: PatientRecord) -> None:
    days = sorted(set(fact_days(record)))
    probes = {d + dt.timedelta(days=k) for d in days for k in (-1, 0, 1)} | set(CUT_OFFS)
    for as_of in sorted(probes):
        cut = record_as_of(record, as_of=as_of)
        first, last = same_cut(record, as_of)
        for day in (first, last, as_of):
            if day is not None:
                assert record_as_of(record, as_of=day) == cut, (as_of, day)
        if first is not None:  # the bounds are tight: one day beyond, a fact changes side
            assert record_as_of(record, as_of=first - dt.timedelta(days=1)) != cut
        if last is not None:
            assert record_as_of(record, as_of=last + dt.timedelta(days=1)) != cut


@pytest.mark.parametrize("stored_at", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_items_computed_at_one_cut_off_answer_every_cut_off_of_the_same_span(
    stored_at: dt.date, name: str, assay: Assay
) -> None:
    """What the service does: an item stored at one cut-off serves another in the same span."""
    chosen = PROTOCOL.analysis_sets[name]
    for as_of in CUT_OFFS:
        items: list[PrimaryItem] = []
        for timeline in timelines(*ALL):
            first, last = same_cut(timeline.record, stored_at)
            if (first is None or first <= as_of) and (last is None or as_of <= last):
                found = cohort_entry(timeline=timeline, protocol=PROTOCOL, as_of=stored_at)
                if found is not None:
                    items.append(
                        primary_item(entry=found, analysis_set=chosen, assay=assay, protocol=PROTOCOL)
                    )
            else:
                items.extend(live_items((timeline.record,), as_of, name, assay))
        for explain in (True, False):
            assert dumped(items, as_of, name, assay, explain) == direct(as_of, name, assay, explain)


def test_without_explain_counted_patients_need_not_carry_their_resources() -> None:
    as_of = dt.date(2026, 6, 30)
    items = live_items(ALL, as_of, "full", Assay.FLOW)
    bare = [replace(i, resources=()) if i.counted else i for i in items]
    assert dumped(bare, as_of, "full", Assay.FLOW, False) == direct(as_of, "full", Assay.FLOW, False)


@pytest.mark.parametrize("as_of", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_patients_counted_by_number_only_give_the_same_figures(
    as_of: dt.date, name: str, assay: Assay
) -> None:
    items = live_items(ALL, as_of, name, assay)
    anonymous = Counter(
        (i.arm or "", i.stratum, i.site, i.status) for i in items if i.counted and not i.flags
    )
    groups = [CountedGroup(*key, n) for key, n in sorted(anonymous.items())]
    kept = [i for i in items if not i.counted or i.flags]
    chosen = PROTOCOL.analysis_sets[name]
    result = primary_from_items(
        items=kept, groups=groups, protocol=PROTOCOL, as_of=as_of, assay=assay, analysis_set=chosen
    )
    answer = json.dumps(primary_to_json(result, explain=False), sort_keys=True)
    assert answer == direct(as_of, name, assay, False)
    if groups:
        with pytest.raises(ValueError, match="cannot be explained"):
            primary_to_json(result, explain=True)


def test_a_patient_given_twice_is_still_an_error() -> None:
    with pytest.raises(EndpointError, match="given twice"):
        list(
            cohort_entries(
                timelines=[*timelines(S1), build_timeline(record=S1, protocol=PROTOCOL)],
                protocol=PROTOCOL,
                as_of=dt.date(2026, 6, 30),
            )
        )

"""EFS in two phases (issue 8, derived per-patient rows): each patient's item, then the aggregation; an item
computed at one cut-off answers every cut-off of the same span, and timed patients known by number only
give the same figures."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter

import pytest

from app.domain.endpoints import efs_to_json, event_free_survival
from app.domain.endpoints.contributions import cohort_entries, cohort_entry, same_cut
from app.domain.endpoints.efs import (
    CENSORED,
    EVENT,
    NEEDS_ASSAY,
    EfsItem,
    TimedGroup,
    efs_from_items,
    efs_item,
)
from app.domain.endpoints.errors import AnalysisSetNeedsAssay
from app.domain.protocol import Assay
from app.domain.record import PatientRecord

from .trial_cohort import LATE, PROTOCOL, RECORDS, timelines

COMBOS: list[tuple[str, Assay | None]] = [
    (name, assay) for name in sorted(PROTOCOL.analysis_sets) for assay in (None, *Assay)
]
# Before the first enrolment, during treatment, between the events, after them, and past every fact.
CUT_OFFS = [dt.date(2024, 12, 31), dt.date(2025, 1, 20), dt.date(2025, 2, 5), dt.date(2025, 4, 30)]
CUT_OFFS += [dt.date(2025, 7, 19), dt.date(2025, 10, 17), dt.date(2026, 6, 30), dt.date(2027, 1, 1)]
ALL = (*RECORDS, LATE)


def direct(as_of: dt.date, name: str, assay: Assay | None, explain: bool) -> str:
    """The full computation, or the error it raises."""
    try:
        result = event_free_survival(
            timelines=timelines(*ALL), protocol=PROTOCOL, as_of=as_of, analysis_set=name, assay=assay
        )
    except AnalysisSetNeedsAssay as exc:
        return repr(exc)
    return json.dumps(efs_to_json(result, explain=explain), sort_keys=True)


def dumped(
    items: list[EfsItem],
    as_of: dt.date,
    name: str,
    explain: bool,
    groups: list[TimedGroup] | None = None,
) -> str:
    chosen = PROTOCOL.analysis_sets[name]
    try:
        result = efs_from_items(
            items=items, groups=groups or [], protocol=PROTOCOL, as_of=as_of, analysis_set=chosen
        )
    except AnalysisSetNeedsAssay as exc:
        return repr(exc)
    return json.dumps(efs_to_json(result, explain=explain), sort_keys=True)


def live_items(
    records: tuple[PatientRecord, ...], as_of: dt.date, name: str, assay: Assay | None
) -> list[EfsItem]:
    chosen = PROTOCOL.analysis_sets[name]
    return [
        efs_item(entry=e, analysis_set=chosen, assay=assay, protocol=PROTOCOL)
        for e in cohort_entries(timelines=timelines(*records), protocol=PROTOCOL, as_of=as_of)
    ]


@pytest.mark.parametrize("as_of", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_the_aggregation_of_per_patient_items_is_efs_byte_for_byte(
    as_of: dt.date, name: str, assay: Assay | None
) -> None:
    items = live_items(ALL, as_of, name, assay)
    random.Random(8).shuffle(items)
    for explain in (True, False):
        assert dumped(items, as_of, name, explain) == direct(as_of, name, assay, explain)


def test_the_cohort_has_events_censored_patients_and_exclusions_to_compare() -> None:
    statuses = Counter(i.status for i in live_items(ALL, dt.date(2026, 6, 30), "full", None))
    assert statuses[EVENT] >= 4 and statuses[CENSORED] >= 2 and len(statuses) >= 3


def test_a_set_that_needs_an_assay_is_refused_from_items_as_by_the_full_computation() -> None:
    items = live_items(ALL, dt.date(2026, 6, 30), "per-protocol", None)
    assert any(i.status == NEEDS_ASSAY for i in items)
    assert dumped(items, dt.date(2026, 6, 30), "per-protocol", False).startswith("AnalysisSetNeedsAssay(")
    assert direct(dt.date(2026, 6, 30), "per-protocol", None, False).startswith("AnalysisSetNeedsAssay(")


@pytest.mark.parametrize("stored_at", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_items_computed_at_one_cut_off_answer_every_cut_off_of_the_same_span(
    stored_at: dt.date, name: str, assay: Assay | None
) -> None:
    """What the service does: an item stored at one cut-off serves another in the same span."""
    chosen = PROTOCOL.analysis_sets[name]
    for as_of in CUT_OFFS:
        items: list[EfsItem] = []
        for timeline in timelines(*ALL):
            first, last = same_cut(timeline.record, stored_at)
            if (first is None or first <= as_of) and (last is None or as_of <= last):
                found = cohort_entry(timeline=timeline, protocol=PROTOCOL, as_of=stored_at)
                if found is not None:
                    items.append(efs_item(entry=found, analysis_set=chosen, assay=assay, protocol=PROTOCOL))
            else:
                items.extend(live_items((timeline.record,), as_of, name, assay))
        for explain in (True, False):
            assert dumped(items, as_of, name, explain) == direct(as_of, name, assay, explain)


@pytest.mark.parametrize("as_of", CUT_OFFS)
@pytest.mark.parametrize(("name", "assay"), COMBOS)
def test_timed_patients_known_by_number_only_give_the_same_figures(
    as_of: dt.date, name: str, assay: Assay | None
) -> None:
    items = live_items(ALL, as_of, name, assay)
    anonymous = Counter((i.arm or "", i.days, i.status == EVENT) for i in items if i.timed and not i.flags)
    groups = [TimedGroup(arm, days or 0, event, n) for (arm, days, event), n in sorted(anonymous.items())]
    kept = [i for i in items if not i.timed or i.flags]
    assert dumped(kept, as_of, name, False, groups) == direct(as_of, name, assay, False)
    if groups and not any(i.status == NEEDS_ASSAY for i in items):
        chosen = PROTOCOL.analysis_sets[name]
        result = efs_from_items(
            items=kept, groups=groups, protocol=PROTOCOL, as_of=as_of, analysis_set=chosen
        )
        with pytest.raises(ValueError, match="cannot be explained"):
            efs_to_json(result, explain=True)

"""Adverse events from induction day 19 to the start of HD-MTX 2 (exclusive) on the hand-computable cohort.

Study window (day 1 2025-01-01): 2025-01-19 .. 2025-03-14. S5 (withdrew) and S8 (late) have no second
HD-MTX course: counted up to the cut-off and flagged.
"""

from __future__ import annotations

from typing import Any

from app.domain.endpoints import adverse_events, adverse_events_to_json

from .trial_cohort import AS_OF, PROTOCOL, ref, timelines

NO_GRADES = {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "unknown": 0}


def ae() -> dict[str, Any]:
    result = adverse_events(timelines=timelines(), protocol=PROTOCOL, as_of=AS_OF)
    return adverse_events_to_json(result, explain=True)


def count(out: dict[str, Any]) -> tuple[int, int, int]:
    return out["n_patients"], out["with_event"], out["grade_3_or_more"]


def test_any_adverse_event_per_arm_with_fisher() -> None:
    row = ae()["any"]
    # S1 (CRS 2), S2 (FN 3, CRS 1), S4 (neurotoxicity 3), S7 (FN, no grade), S8 (FN 2) of 7; C1 (FN 3) of 4.
    assert count(row["study"]) == (7, 5, 2)
    assert row["study"]["worst_grade"] == NO_GRADES | {"2": 2, "3": 2, "unknown": 1}
    assert count(row["control"]) == (4, 1, 1)
    # [[5, 2], [1, 3]]: tables with 2..6 study patients with events weigh 21, 140, 210, 84, 7 of 462;
    # p = (21 + 84 + 7) / 462.
    assert row["fisher_any"] == {"odds_ratio": 7.5, "p_value": round(112 / 462, 6), "reason": None}
    assert row["fisher_grade_3_or_more"]["p_value"] == 1.0


def test_events_outside_the_window_are_not_counted() -> None:
    out = ae()
    s1 = next(w for w in out["windows"] if w["patient"] == ref("S1"))
    assert (s1["first_day"], s1["last_day"], s1["open_to_cutoff"]) == ("2025-01-19", "2025-03-14", False)
    assert s1["counted"] == ["AdverseEvent/S1-crs/_history/1"]
    # Day 10 is before induction day 19; 2025-03-15 is the day HD-MTX 2 starts (end exclusive).
    assert s1["outside_window"] == [
        "AdverseEvent/S1-fn-early/_history/1",
        "AdverseEvent/S1-fn-mtx2/_history/1",
    ]
    fn = out["by_term"]["febrile neutropenia"]
    assert count(fn["study"]) == (7, 3, 1)  # S2 (3), S7 (no grade), S8 (2); not S1
    assert fn["study"]["worst_grade"] == NO_GRADES | {"2": 1, "3": 1, "unknown": 1}
    assert count(fn["control"]) == (4, 1, 1)


def test_terms_are_matched_case_insensitively_and_special_interest_is_reported() -> None:
    out = ae()
    assert sorted(out["by_term"]) == ["cytokine release syndrome", "febrile neutropenia", "neurotoxicity"]
    crs = out["special_interest"]["cytokine release syndrome"]
    assert count(crs["study"]) == (
        7,
        2,
        0,
    )  # "Cytokine release syndrome" (S1) and "cytokine release  syndrome"
    assert crs["study"]["worst_grade"] == NO_GRADES | {"1": 1, "2": 1}
    # [[2, 5], [0, 4]]: weights 6, 28, 21 of 55 for 0, 1, 2 study patients; p = (6 + 21) / 55.
    assert crs["fisher_any"]["p_value"] == round(27 / 55, 6)
    assert crs["fisher_any"]["odds_ratio"] is None
    neuro = out["special_interest"]["neurotoxicity"]
    assert count(neuro["study"]) == (7, 1, 1)
    assert [e["patient"] for e in neuro["study"]["explain"]] == [ref("S4")]


def test_patients_without_the_second_hd_mtx_course_are_counted_to_the_cut_off_and_flagged() -> None:
    out = ae()
    assert out["open_windows"] == [ref("S5"), ref("S8")]
    s8 = next(w for w in out["windows"] if w["patient"] == ref("S8"))
    assert (s8["first_day"], s8["last_day"]) == ("2026-06-12", "2026-06-30")
    assert {
        "patient": ref("S8"),
        "flag": "no usable hd-mtx-2 anchor: adverse events counted to the cut-off",
    } in out["flags"]
    assert [e["patient"] for e in out["excluded"]] == [ref("S6")]  # never received blinatumomab

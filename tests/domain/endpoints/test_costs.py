"""Healthcare costs in [induction day 1, + 6 calendar months) on the hand-computable cohort.

Day 1 2025-01-01: the window is 2025-01-01 .. 2025-06-30; 2025-07-03 is day 184 and outside.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from app.domain.endpoints import CostDataError, costs_to_json, healthcare_costs

from .trial_cohort import AS_OF, PROTOCOL, RECORDS, S2, cost, ref, timelines


def costs(*records: Any) -> dict[str, Any]:
    return costs_to_json(
        healthcare_costs(timelines=timelines(*records), protocol=PROTOCOL, as_of=AS_OF), explain=True
    )


def test_per_patient_totals_count_only_the_six_month_window() -> None:
    study = {p["patient"].split("/")[1]: p["total"] for p in costs()["study"]["patients"]}
    # S1: 1000.00 (day 5) + 500.50 (day 181); not 9999 (day 184) nor the 2026 follow-up visit.
    assert study == {"S1": "1500.50", "S2": "2000", "S3": "3000", "S4": "4000", "S5": "500"}
    s1 = costs()["study"]["patients"][0]
    assert (s1["first_day"], s1["last_day"]) == ("2025-01-01", "2025-06-30")
    assert s1["resources"] == ["ChargeItem/S1-a/_history/1", "ChargeItem/S1-b/_history/1"]


def test_summaries_per_arm() -> None:
    out = costs()
    summary = {k: out["study"][k] for k in ("n", "median", "q1", "q3", "mean")}
    # 500, 1500.5, 2000, 3000, 4000: quartiles at positions 1 and 3 of 0..4; mean 11000.5 / 5.
    assert summary == {"n": 5, "median": 2000.0, "q1": 1500.5, "q3": 3000.0, "mean": 2200.1}
    control = {k: out["control"][k] for k in ("n", "median", "q1", "q3", "mean")}
    # 600, 700, 1000, 2500: positions 0.75, 1.5, 2.25 (numpy linear / R type 7).
    assert control == {"n": 4, "median": 850.0, "q1": 675.0, "q3": 1375.0, "mean": 1200.0}


def test_mann_whitney_by_enumerating_every_split() -> None:
    study, control = [500, 1500.5, 2000, 3000, 4000], [600, 700, 1000, 2500]

    def u(xs: Any, ys: Any) -> int:
        return sum(x > y for x in xs for y in ys)

    observed = u(study, control)
    pooled = study + control
    splits = [
        u([pooled[i] for i in chosen], [pooled[i] for i in range(9) if i not in chosen])
        for chosen in itertools.combinations(range(9), 5)
    ]
    extreme = sum(abs(s - 10) >= abs(observed - 10) for s in splits)  # E[U] = 5 * 4 / 2
    mw = costs()["mann_whitney"]
    assert (mw["u_statistic"], mw["method"]) == (14.0, "exact")
    assert mw["p_value"] == round(extreme / len(splits), 6)


def test_patients_without_costs_or_with_an_open_window_are_excluded() -> None:
    excluded = {e["patient"].split("/")[1]: e["reason"] for e in costs()["excluded"]}
    assert excluded == {
        "S6": "did not receive blinatumomab (withdrew before it)",
        "S7": "no cost records in the cost window 2025-01-01..2025-06-30",
        "S8": "cost window 2026-05-25..2026-11-24 has not closed by the cut-off: the total would be partial",
    }


def test_missing_or_other_currency_is_an_error_naming_the_resources() -> None:
    bad = (cost("S2-usd", "2025-02-02", "10", "USD"), cost("S2-none", "2025-02-03", "10", None))
    outside = cost("S2-late-usd", "2025-08-01", "10", "USD")  # outside the window: never summed
    records = [replace(S2, costs=(*S2.costs, *bad, outside)) if r is S2 else r for r in RECORDS]
    with pytest.raises(CostDataError) as raised:
        costs(*records)
    assert raised.value.references == ("ChargeItem/S2-none/_history/1", "ChargeItem/S2-usd/_history/1")
    assert "currency USD, not CNY" in str(raised.value)
    assert "no currency" in str(raised.value)


def test_a_cost_outside_the_window_with_another_currency_is_not_an_error() -> None:
    outside = cost("S2-late-usd", "2025-08-01", "10", "USD")
    records = [replace(S2, costs=(*S2.costs, outside)) if r is S2 else r for r in RECORDS]
    assert costs(*records)["study"]["patients"][1] == {
        "patient": ref("S2"),
        "first_day": "2025-01-01",
        "last_day": "2025-06-30",
        "total": "2000",
        "resources": ["ChargeItem/S2-a/_history/1"],
    }

"""Event-free survival on the hand-computable cohort (PROTOCOL.md section 5).

Origin = enrolment (2025-01-20; S8 2026-06-13). Study times in days: S1, S3, S4 censored at 405 (last
contact 2026-03-01), S2 relapse 180, S5 censored 7 (withdrawal), S7 death 270, S8 censored 15 (last
infusion day 2026-06-28). Control: C1 censored 405, C2 relapse 100, C3 death 180, C4 induction failure 40.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from app.domain.endpoints import efs_to_json, event_free_survival
from app.domain.record import ConditionFact

from .trial_cohort import AS_OF, PROTOCOL, RECORDS, S1, on, timelines

Z = 1.959963984540054


def efs(*records: Any) -> dict[str, Any]:
    return efs_to_json(
        event_free_survival(timelines=timelines(*records), protocol=PROTOCOL, as_of=AS_OF), explain=True
    )


def log_log_ci(survival: float, greenwood: float) -> list[float]:
    se = math.sqrt(greenwood) / -math.log(survival)
    return [round(survival ** math.exp(Z * se), 6), round(survival ** math.exp(-Z * se), 6)]


def test_times_events_and_censoring_per_patient() -> None:
    study = {p["patient"].split("/")[1]: (p["days"], p["event"]) for p in efs()["study"]["patients"]}
    assert study == {
        "S1": (405, None),
        "S2": (180, "relapse"),
        "S3": (405, None),
        "S4": (405, None),
        "S5": (7, None),
        "S7": (270, "death"),
        "S8": (15, None),
    }
    control = {p["patient"].split("/")[1]: (p["days"], p["event"]) for p in efs()["control"]["patients"]}
    assert control == {
        "C1": (405, None),
        "C2": (100, "relapse"),
        "C3": (180, "death"),
        "C4": (40, "induction-failure"),
    }
    s1 = efs()["study"]["patients"][0]
    assert s1["resources"] == ["ResearchSubject/S1/_history/1", "ChargeItem/S1-visit/_history/1"]


def test_kaplan_meier_step_table_by_hand() -> None:
    table = efs()["study"]["table"]
    assert [(r["time_days"], r["at_risk"], r["events"], r["censored"], r["survival"]) for r in table] == [
        (7, 7, 0, 1, 1.0),
        (15, 6, 0, 1, 1.0),
        (180, 5, 1, 0, 0.8),  # 1 - 1/5
        (270, 4, 1, 0, 0.6),  # 0.8 (1 - 1/4)
        (405, 3, 0, 3, 0.6),
    ]
    # Greenwood: sum d / (n (n - d)) = 1/20, then + 1/12.
    assert table[2]["ci95"] == log_log_ci(0.8, 1 / 20)
    assert table[3]["ci95"] == log_log_ci(0.6, 1 / 20 + 1 / 12)
    assert table[3]["std_error"] == round(0.6 * math.sqrt(1 / 20 + 1 / 12), 6)
    assert table[2]["time_years"] == round(180 / 365.25, 6)


def test_number_at_risk_by_year_5_year_estimate_and_median() -> None:
    out = efs()
    assert [r["at_risk"] for r in out["study"]["at_risk_by_year"]] == [7, 3, 0, 0, 0, 0]  # 405 >= 365.25
    assert [r["at_risk"] for r in out["control"]["at_risk_by_year"]] == [4, 1, 0, 0, 0, 0]
    horizon = out["study"]["survival_at_horizon"]
    assert (horizon["years"], horizon["survival"], horizon["ci95"]) == (5, None, None)
    assert horizon["reason"] == "after the last follow-up time (405); the curve is not estimable there"
    assert out["study"]["median"]["days"] is None  # the curve stops at 0.6
    control = out["control"]
    assert [r["survival"] for r in control["table"]] == [0.75, 0.5, 0.25, 0.25]
    assert control["median"]["days"] == 100.0  # first time S <= 0.5


def test_log_rank_by_hand() -> None:
    # Event times (n study, n control, deaths): 40 (5, 4, 1), 100 (5, 3, 1), 180 (5, 2, 2), 270 (4, 1, 1).
    risk_sets = [(5, 4, 1), (5, 3, 1), (5, 2, 2), (4, 1, 1)]
    expected = sum(d * s / (s + c) for s, c, d in risk_sets)
    variance = sum(s * c * d * (s + c - d) / ((s + c) ** 2 * (s + c - 1)) for s, c, d in risk_sets)
    chi_square = (2 - expected) ** 2 / variance
    log_rank = efs()["log_rank"]
    assert (log_rank["observed_study"], log_rank["observed_control"]) == (2, 3)
    assert log_rank["expected_study"] == round(expected, 6)
    assert log_rank["variance"] == round(variance, 6)
    assert log_rank["chi_square"] == float(f"{chi_square:.6g}")
    assert log_rank["p_value"] == float(f"{math.erfc(math.sqrt(chi_square / 2)):.6g}")  # chi-square, 1 df


def test_an_event_after_the_cut_off_does_not_count() -> None:
    late_relapse = ConditionFact("relapse", on("2026-07-01"), True, False, "Condition/S1-late/_history/1")
    records = [replace(S1, conditions=(late_relapse,)) if r is S1 else r for r in RECORDS]
    assert efs(*records) == efs()


def test_unconfirmed_and_refuted_conditions_are_not_events() -> None:
    unconfirmed = ConditionFact("relapse", on("2025-06-01"), False, False, "Condition/S1-maybe/_history/1")
    refuted = ConditionFact("relapse", on("2025-06-02"), True, True, "Condition/S1-no/_history/1")
    records = [replace(S1, conditions=(unconfirmed, refuted)) if r is S1 else r for r in RECORDS]
    out = efs(*records)
    assert out["study"]["patients"][0]["event"] is None
    assert {"flag": "unconfirmed relapse (Condition/S1-maybe/_history/1) not counted as an event",
            "patient": "Patient/S1/_history/1"} in out["flags"]  # fmt: skip


def test_an_event_without_a_date_excludes_the_patient() -> None:
    undated = ConditionFact("relapse", None, True, False, "Condition/S1-undated/_history/1")
    records = [replace(S1, conditions=(undated,)) if r is S1 else r for r in RECORDS]
    out = efs(*records)
    assert out["study"]["n"] == 6
    assert [e["reason"] for e in out["excluded"] if e["patient"] == "Patient/S1/_history/1"] == [
        "relapse (Condition/S1-undated/_history/1) has no date: time to event unknown"
    ]


def test_an_event_dated_to_a_month_is_placed_on_its_first_day_and_flagged() -> None:
    relapse = ConditionFact("relapse", on("2025-06"), True, False, "Condition/S1-june/_history/1")
    records = [replace(S1, conditions=(relapse,)) if r is S1 else r for r in RECORDS]
    out = efs(*records)
    assert (out["study"]["patients"][0]["days"], out["study"]["patients"][0]["event"]) == (132, "relapse")
    assert {
        "patient": "Patient/S1/_history/1",
        "flag": "relapse (Condition/S1-june/_history/1) dated month only: placed on 2025-06-01",
    } in out["flags"]


def test_an_event_before_the_origin_counts_at_day_0_and_is_flagged() -> None:
    failure = ConditionFact(
        "induction-failure", on("2025-01-10"), True, False, "Condition/S1-early/_history/1"
    )
    records = [replace(S1, conditions=(failure,)) if r is S1 else r for r in RECORDS]
    out = efs(*records)
    assert (out["study"]["patients"][0]["days"], out["study"]["patients"][0]["event"]) == (
        0,
        "induction-failure",
    )
    assert any("is before the origin 2025-01-20: counted at day 0" in f["flag"] for f in out["flags"])

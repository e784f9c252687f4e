"""The figures' data read off the endpoint JSON: what is drawn is what the analyses say."""

import math
from typing import Any

import pytest

from app.plots.data import STATUS_COLOURS, consort_figure, forest_figure, km_figure, waterfall_panel

SET = {"name": "full", "label": "Full analysis set"}


def km_row(days: int, at_risk: int, events: int, censored: int, survival: float, ci: Any) -> dict[str, Any]:
    return {
        "time_days": days,
        "time_years": round(days / 365.25, 6),
        "at_risk": at_risk,
        "events": events,
        "censored": censored,
        "survival": survival,
        "ci95": ci,
    }


EFS: dict[str, Any] = {
    "as_of": "2026-12-31",
    "analysis_set": SET,
    "horizon_years": 5,
    "study": {
        "n": 3,
        "events": 1,
        "table": [
            km_row(100, 3, 1, 0, 0.666667, [0.05, 0.95]),
            km_row(400, 2, 0, 1, 0.666667, [0.05, 0.95]),
            km_row(800, 1, 0, 1, 0.666667, [0.05, 0.95]),
        ],
        "at_risk_by_year": [{"year": 0, "at_risk": 3}, {"year": 1, "at_risk": 2}, {"year": 2, "at_risk": 1}],
        "survival_at_horizon": {"years": 5, "survival": None, "ci95": None, "reason": "beyond follow-up"},
    },
    "control": {
        "n": 1,
        "events": 1,
        "table": [km_row(50, 1, 1, 0, 0.0, None)],
        "at_risk_by_year": [{"year": 0, "at_risk": 1}],
        "survival_at_horizon": {"years": 5, "survival": 0.0, "ci95": None, "reason": None},
    },
    "log_rank": {"p_value": 0.0421, "reason": None},
}


def test_km_steps_are_the_endpoint_table_starting_at_one() -> None:
    figure = km_figure(EFS)
    study = figure.curves[0]
    table = EFS["study"]["table"]
    assert study.x_years == (0.0, *(r["time_years"] for r in table))
    assert study.y == (1.0, *(r["survival"] for r in table))
    assert study.lower == (1.0, 0.05, 0.05, 0.05)
    assert study.upper == (1.0, 0.95, 0.95, 0.95)


def test_km_censor_ticks_sit_at_the_censored_times() -> None:
    study = km_figure(EFS).curves[0]
    assert study.censored_x_years == (round(400 / 365.25, 6), round(800 / 365.25, 6))
    assert study.censored_y == (0.666667, 0.666667)


def test_km_band_is_missing_where_the_endpoint_gives_none() -> None:
    control = km_figure(EFS).curves[1]
    assert control.y == (1.0, 0.0)
    assert math.isnan(control.lower[1])
    assert math.isnan(control.upper[1])


def test_km_legend_texts_carry_the_log_rank_p_and_five_year_estimates() -> None:
    figure = km_figure(EFS)
    assert figure.log_rank == "log-rank p = 0.042"
    assert figure.curves[0].horizon == "5-yr EFS not estimable"
    assert figure.curves[1].horizon == "5-yr EFS 0.00"
    assert figure.curves[0].at_risk_by_year == ((0, 3), (1, 2), (2, 1))


def patient(name: str, reduction: float | None, status: str, pre: str | None = "0.01") -> dict[str, Any]:
    return {
        "patient": f"Patient/{name}/_history/1",
        "site": "HEFEI-APCH",
        "pre": {"fraction": pre} if pre else None,
        "post": {"status": status},
        "log10_reduction": reduction,
        "reduction_bound": "exact",
    }


RESPONSE = {
    "by_assay": {
        "flow": {
            "patients": [
                patient("a", -0.5, "positive"),
                patient("b", 2.0, "negative"),
                patient("c", None, "missing"),
                patient("d", 1.0, "not-evaluable"),
                patient("e", 2.0, "negative"),
            ]
        }
    }
}


def test_waterfall_bars_run_from_the_largest_reduction_down() -> None:
    panel = waterfall_panel(RESPONSE, assay="flow", threshold_fraction=0.0001)
    assert [b.log10_reduction for b in panel.bars] == [2.0, 2.0, 1.0, -0.5]
    assert [b.patient for b in panel.bars] == ["Patient/b", "Patient/e", "Patient/d", "Patient/a"]
    assert panel.not_shown == 1


def test_waterfall_bars_are_coloured_by_the_post_blina_classification() -> None:
    panel = waterfall_panel(RESPONSE, assay="flow", threshold_fraction=0.0001)
    assert [b.colour for b in panel.bars] == [
        STATUS_COLOURS["negative"],
        STATUS_COLOURS["negative"],
        STATUS_COLOURS["not-evaluable"],
        STATUS_COLOURS["positive"],
    ]


def test_waterfall_marks_the_reduction_that_reaches_the_threshold() -> None:
    # PRE_BLINA 1 % needs a 2-log fall to go below the flow threshold 0.01 %.
    panel = waterfall_panel(RESPONSE, assay="flow", threshold_fraction=0.0001)
    assert panel.bars[0].needed_for_threshold == pytest.approx(2.0)


def rate(neg: int, n: int, low: float, high: float, p0: float | None = 0.5) -> dict[str, Any]:
    return {
        "n_negative": neg,
        "n": n,
        "rate": neg / n if n else None,
        "ci95": [low, high] if n else None,
        "p0": p0,
        "p0_source": "illustrative, not a published rate",
        "reason": None if n else "no patients",
    }


PRIMARY = {
    "as_of": "2026-12-31",
    "assay": "flow",
    "timepoint": "POST_BLINA",
    "analysis_set": SET,
    "overall": rate(6, 8, 0.35, 0.97),
    "by_stratum": {"low": rate(3, 3, 0.29, 1.0), "intermediate": rate(3, 5, 0.15, 0.95)},
    "by_site": {"NINGBO-NWCH": rate(0, 0, 0, 0), "HEFEI-APCH": rate(1, 1, 0.025, 1.0)},
    "control": {"timepoint": "D46", "overall": rate(0, 2, 0.0, 0.84, None)},
}


def test_forest_rows_are_overall_strata_sites_then_control() -> None:
    rows = forest_figure(PRIMARY).rows
    assert [(r.group, r.label) for r in rows] == [
        ("Overall", "Overall"),
        ("Stratum", "low"),
        ("Stratum", "intermediate"),
        ("Site", "HEFEI-APCH"),
        ("Site", "NINGBO-NWCH"),
        ("Control", "Control (D46)"),
    ]
    overall = rows[0]
    assert (overall.rate, overall.low, overall.high, overall.note) == (0.75, 0.35, 0.97, "6/8")


def test_forest_names_the_p0_source_and_explains_an_empty_site() -> None:
    figure = forest_figure(PRIMARY)
    assert (figure.p0, figure.p0_source) == (0.5, "illustrative, not a published rate")
    ningbo = next(r for r in figure.rows if r.label == "NINGBO-NWCH")
    assert (ningbo.rate, ningbo.note) == (None, "no patients")


CONSORT = {
    "as_of": "2026-12-31",
    "steps": [
        {"step": "screened", "n": 10},
        {"step": "eligible", "n": 8},
        {"step": "evaluable-flow", "n": 7},
        {"step": "evaluable-ngs", "n": 6},
    ],
    "drops": [
        {"from": "screened", "to": "eligible", "n": 2, "reasons": {"consent missing": 1, "d19 MRD low": 1}},
        {"from": "eligible", "to": "evaluable-flow", "n": 1, "reasons": {"too few cells": 1}},
        {"from": "eligible", "to": "evaluable-ngs", "n": 2, "reasons": {"no sample": 2}},
    ],
    "historical_controls_enrolled": 2,
}


def test_consort_boxes_carry_counts_levels_and_reasons() -> None:
    figure = consort_figure(CONSORT)
    assert [(b.step, b.n, b.level, b.lost) for b in figure.boxes] == [
        ("screened", 10, 0, 0),
        ("eligible", 8, 1, 2),
        ("evaluable-flow", 7, 2, 1),
        ("evaluable-ngs", 6, 2, 2),
    ]
    assert figure.boxes[1].reasons == ("1 x consent missing", "1 x d19 MRD low")
    assert figure.boxes[3].reasons == ("2 x no sample",)
    assert figure.boxes[3].parent == "eligible"
    assert figure.side_note == "Historical controls enrolled: 2"

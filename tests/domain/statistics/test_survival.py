"""Kaplan-Meier and log-rank against published values and hand-worked edge cases (PROTOCOL.md s. 5, 6)."""

import math
from collections.abc import Iterator

import numpy as np
import pytest

from app.domain.statistics import (
    KaplanMeierRow,
    StatisticsError,
    kaplan_meier,
    log_rank_test,
    median_survival,
    number_at_risk,
    survival_at,
)

Z95 = 1.959963984540054


@pytest.fixture(autouse=True)
def _floating_point_problems_raise() -> Iterator[None]:
    with np.errstate(all="raise"):
        yield


def _parse(weeks: str) -> tuple[list[float], list[bool]]:
    # "6*" is a censored time, as in Freireich et al. (1963) and Gehan (1965).
    fields = weeks.split(",")
    return [float(f.rstrip("*")) for f in fields], [not f.endswith("*") for f in fields]


# Freireich EJ et al. (1963) Blood 21:699-716, remission durations in weeks, via Gehan (1965) Biometrika
# 52:203-223 and R's MASS::gehan.
SIX_MP = _parse("6,6,6,6*,7,9*,10,10*,11*,13,16,17*,19*,20*,22,23,25*,32*,32*,34*,35*")
PLACEBO = _parse("1,1,2,2,3,4,4,5,5,8,8,8,8,11,11,12,12,15,17,22,23")


@pytest.mark.parametrize(
    ("week", "survival"),
    [(6, 0.857), (7, 0.807), (10, 0.753), (13, 0.690), (16, 0.627), (22, 0.538), (23, 0.448)],
)
def test_kaplan_meier_reproduces_the_freireich_6mp_arm(week: float, survival: float) -> None:
    table = kaplan_meier(durations=SIX_MP[0], events=SIX_MP[1])
    estimate = survival_at(table=table, time=week)
    assert estimate.survival is not None
    assert round(estimate.survival, 3) == survival


def test_freireich_6mp_median_is_23_weeks_with_ci_from_13_weeks_to_not_reached() -> None:
    # R: survfit(Surv(time, cens) ~ 1, data = gehan[gehan$treat == "6-MP", ], conf.type = "log-log")
    # prints median 23, 0.95LCL 13, 0.95UCL NA.
    median = median_survival(table=kaplan_meier(durations=SIX_MP[0], events=SIX_MP[1]))
    assert (median.median, median.ci_lower, median.ci_upper) == (23.0, 13.0, None)
    assert median.reason is not None and "upper limit" in median.reason


def test_freireich_6mp_versus_placebo_log_rank_chi_square_is_16_79() -> None:
    result = log_rank_test(
        study_durations=SIX_MP[0],
        study_events=SIX_MP[1],
        control_durations=PLACEBO[0],
        control_events=PLACEBO[1],
    )
    assert result.chi_square is not None and result.p_value is not None
    assert round(result.chi_square, 2) == 16.79
    # R survdiff: Observed 9 / 21, Expected 19.25 / 10.75, p = 4.17e-05.
    assert (result.observed_study, result.observed_control) == (9, 21)
    assert round(result.expected_study, 2) == 19.25
    assert round(result.expected_control, 2) == 10.75
    assert result.p_value == pytest.approx(4.17e-5, rel=1e-3)


def test_freireich_6mp_number_at_risk_counts_those_censored_at_the_time() -> None:
    table = kaplan_meier(durations=SIX_MP[0], events=SIX_MP[1])
    assert number_at_risk(table=table, times=[0, 6, 6.5, 10, 35, 36]) == (21, 21, 17, 15, 1, 0)


def _log_log_ci(survival: float, greenwood_sum: float) -> tuple[float, float]:
    se = math.sqrt(greenwood_sum) / abs(math.log(survival))
    return (
        math.exp(-math.exp(math.log(-math.log(survival)) + Z95 * se)),
        math.exp(-math.exp(math.log(-math.log(survival)) - Z95 * se)),
    )


def test_events_come_before_censorings_at_the_same_time() -> None:
    # Two events and one censoring at t = 2: all three are at risk, S = 1 - 2/3 (not 1 - 2/2 = 0).
    table = kaplan_meier(durations=[2, 2, 2], events=[True, True, False])
    (row,) = table.rows
    assert (row.time, row.n_at_risk, row.n_events, row.n_censored) == (2.0, 3, 2, 1)
    assert row.survival == pytest.approx(1 / 3, rel=1e-15)
    # Greenwood: d / (n (n - d)) = 2 / (3 * 1).
    assert row.std_error == pytest.approx(1 / 3 * math.sqrt(2 / 3), rel=1e-15)
    assert (row.ci_lower, row.ci_upper) == pytest.approx(_log_log_ci(1 / 3, 2 / 3), rel=1e-12)


def test_greenwood_ci_on_a_small_hand_worked_curve() -> None:
    # t=1: n=4, d=1 -> S=3/4, sum 1/12; t=2 censored; t=3: n=2, d=1 -> S=3/8, sum 1/12 + 1/2.
    table = kaplan_meier(durations=[1, 2, 3, 4], events=[True, False, True, False])
    assert [(r.time, r.n_at_risk, r.n_events, r.n_censored) for r in table.rows] == [
        (1.0, 4, 1, 0),
        (2.0, 3, 0, 1),
        (3.0, 2, 1, 0),
        (4.0, 1, 0, 1),
    ]
    third = table.rows[2]
    assert third.survival == pytest.approx(3 / 8, rel=1e-15)
    assert (third.ci_lower, third.ci_upper) == pytest.approx(_log_log_ci(3 / 8, 1 / 12 + 1 / 2), rel=1e-12)
    assert third.std_error == pytest.approx(3 / 8 * math.sqrt(1 / 12 + 1 / 2), rel=1e-12)


def test_no_patients_give_an_empty_table_and_undefined_estimates() -> None:
    table = kaplan_meier(durations=[], events=[])
    assert (table.rows, table.n_patients, table.n_events) == ((), 0, 0)
    estimate = survival_at(table=table, time=365.0)
    assert (estimate.survival, estimate.ci_lower, estimate.ci_upper) == (None, None, None)
    assert estimate.n_at_risk == 0
    assert estimate.reason == "no patients"
    assert median_survival(table=table).median is None
    assert number_at_risk(table=table, times=[0.0, 10.0]) == (0, 0)


def test_one_patient_with_an_event_drops_the_curve_to_zero_with_no_ci() -> None:
    table = kaplan_meier(durations=[5.0], events=[True])
    assert table.rows == (
        KaplanMeierRow(
            time=5.0, n_at_risk=1, n_events=1, n_censored=0, survival=0.0, std_error=None, ci_lower=None,
            ci_upper=None,
        ),
    )
    before = survival_at(table=table, time=4.0)
    assert (before.survival, before.ci_lower, before.ci_upper, before.n_at_risk) == (1.0, 1.0, 1.0, 1)
    after = survival_at(table=table, time=100.0)
    assert (after.survival, after.ci_lower, after.ci_upper) == (0.0, None, None)
    median = median_survival(table=table)
    assert (median.median, median.ci_lower, median.ci_upper) == (5.0, 5.0, 5.0)


def test_one_censored_patient_keeps_survival_at_one_and_the_median_unreached() -> None:
    table = kaplan_meier(durations=[5.0], events=[False])
    row = table.rows[0]
    assert (row.survival, row.std_error, row.ci_lower, row.ci_upper) == (1.0, 0.0, 1.0, 1.0)
    median = median_survival(table=table)
    assert (median.median, median.ci_lower, median.ci_upper) == (None, None, None)


def test_all_censored_keeps_survival_at_one_with_a_degenerate_ci() -> None:
    # Convention (R survfit.km): no event means Greenwood variance 0 and CI (1, 1).
    table = kaplan_meier(durations=[3, 1, 2, 2], events=[False, False, False, False])
    assert table.n_events == 0
    assert [(r.time, r.survival, r.std_error, r.ci_lower, r.ci_upper) for r in table.rows] == [
        (1.0, 1.0, 0.0, 1.0, 1.0),
        (2.0, 1.0, 0.0, 1.0, 1.0),
        (3.0, 1.0, 0.0, 1.0, 1.0),
    ]


def test_estimate_past_the_last_follow_up_is_undefined_unless_the_curve_reached_zero() -> None:
    table = kaplan_meier(durations=[1, 2, 3], events=[True, False, False])
    at_last = survival_at(table=table, time=3.0)
    assert at_last.survival == pytest.approx(2 / 3)
    past = survival_at(table=table, time=1826.0)
    assert past.survival is None
    assert past.reason is not None and "last follow-up" in past.reason


def test_all_events_at_one_time_send_the_curve_straight_to_zero() -> None:
    table = kaplan_meier(durations=[7, 7, 7, 7], events=[True] * 4)
    assert [(r.time, r.n_at_risk, r.n_events, r.survival, r.ci_lower) for r in table.rows] == [
        (7.0, 4, 4, 0.0, None)
    ]
    assert median_survival(table=table).median == 7.0


def test_survival_reaching_zero_has_no_ci_at_zero_but_a_median_ci_from_the_band() -> None:
    table = kaplan_meier(durations=[1, 2, 3], events=[True, True, True])
    assert [r.survival for r in table.rows] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert table.rows[-1].ci_lower is None and table.rows[-1].ci_upper is None
    estimate = survival_at(table=table, time=3.0)
    assert estimate.reason is not None and "survival is 0" in estimate.reason
    # Same answer as lifelines: median 2, CI (1, 3), the band at S = 0 taken as 0.
    median = median_survival(table=table)
    assert (median.median, median.ci_lower, median.ci_upper) == (2.0, 1.0, 3.0)


@pytest.mark.parametrize("n", [4, 6, 24, 30, 36, 44, 58])
def test_median_is_the_first_time_the_curve_reaches_exactly_one_half(n: int) -> None:
    # n patients with one event each at t = 1..n: S(n/2) = 1/2 exactly, but the floating-point product
    # lands on either side of 0.5 depending on n (0.5000000000000001 for n = 24). R would report the
    # midpoint n/2 + 1/2; lifelines 0.30 reports n/2 + 1 when the rounding goes up. We report n/2.
    table = kaplan_meier(durations=list(range(1, n + 1)), events=[True] * n)
    assert median_survival(table=table).median == n / 2


def test_log_rank_with_an_empty_group_is_undefined_with_a_reason() -> None:
    result = log_rank_test(
        study_durations=[], study_events=[], control_durations=[1, 2], control_events=[True, False]
    )
    assert (result.chi_square, result.p_value) == (None, None)
    assert result.reason == "the study group has no patients"


def test_log_rank_without_events_is_undefined_with_a_reason() -> None:
    result = log_rank_test(
        study_durations=[1, 2], study_events=[False, False], control_durations=[3], control_events=[False]
    )
    assert (result.chi_square, result.p_value, result.variance) == (None, None, 0.0)
    assert result.reason == "no events in either group"


def test_log_rank_when_the_only_event_time_empties_the_risk_set_is_undefined() -> None:
    # Both patients have the event at t = 1: n = d = 2, so the hypergeometric variance is 0.
    result = log_rank_test(
        study_durations=[1.0], study_events=[True], control_durations=[1.0], control_events=[True]
    )
    assert (result.chi_square, result.p_value, result.variance) == (None, None, 0.0)
    assert result.reason is not None and "zero variance" in result.reason


def test_log_rank_of_identical_groups_is_zero() -> None:
    durations, events = [1.0, 2.0, 3.0, 4.0], [True, False, True, True]
    result = log_rank_test(
        study_durations=durations, study_events=events, control_durations=durations, control_events=events
    )
    assert result.chi_square == 0.0
    assert result.p_value == 1.0


@pytest.mark.parametrize(
    ("durations", "events"),
    [
        ([1.0, 2.0], [True]),
        ([-1.0], [True]),
        ([math.nan], [True]),
        ([math.inf], [False]),
        ([1.0, 2.0], [1, 0]),
    ],
    ids=["lengths differ", "negative duration", "duration not a number", "infinite duration",
         "events coded as integers"],
)
def test_invalid_survival_data_are_rejected(durations: list[float], events: list[bool]) -> None:
    with pytest.raises(StatisticsError):
        kaplan_meier(durations=durations, events=events)
    with pytest.raises(StatisticsError):
        log_rank_test(
            study_durations=durations, study_events=events, control_durations=[1.0], control_events=[True]
        )


@pytest.mark.parametrize("confidence", [0.0, 1.0, math.nan])
def test_kaplan_meier_confidence_must_lie_strictly_between_zero_and_one(confidence: float) -> None:
    with pytest.raises(StatisticsError):
        kaplan_meier(durations=[1.0], events=[True], confidence=confidence)


def test_survival_is_read_at_non_finite_times_only_as_an_error() -> None:
    table = kaplan_meier(durations=[1.0], events=[True])
    with pytest.raises(StatisticsError):
        survival_at(table=table, time=math.inf)
    with pytest.raises(StatisticsError):
        number_at_risk(table=table, times=[math.nan])

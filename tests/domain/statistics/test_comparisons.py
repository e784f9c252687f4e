"""Fisher's exact test, Mann-Whitney U and sample summaries against hand-worked and published values."""

import math
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest

from app.domain.statistics import (
    SampleSummary,
    StatisticsError,
    fisher_exact_2x2,
    mann_whitney_u,
    summarise_sample,
)


@pytest.fixture(autouse=True)
def _floating_point_problems_raise() -> Iterator[None]:
    with np.errstate(all="raise"):
        yield


# (study successes, study n, control successes, control n, two-sided p, sample odds ratio)
@pytest.mark.parametrize(
    ("study_successes", "study_n", "control_successes", "control_n", "p_value", "odds_ratio"),
    [
        # Fisher's lady tasting tea (The Design of Experiments, 1935, ch. II): [[3, 1], [1, 3]];
        # P(a = 0..4) = 1, 16, 36, 16, 1 / 70; two-sided p = (1 + 16 + 16 + 1) / 70 = 0.4857.
        (3, 4, 1, 4, 34 / 70, 9.0),
        # [[3, 0], [1, 3]]: hypergeometric P(a = 0..3) = 1, 12, 18, 4 / 35; two-sided p = (4 + 1) / 35.
        (3, 3, 1, 4, 5 / 35, None),
        # A table that agrees with its own margins: every arrangement is at least as likely, p = 1.
        (2, 4, 2, 4, 1.0, 1.0),
        # Everyone a success in both arms: nothing to compare, p = 1, odds ratio 0/0.
        (5, 5, 3, 3, 1.0, None),
    ],
    ids=["tea tasting", "a zero cell", "identical arms", "no failures at all"],
)
def test_fisher_exact_test_matches_hand_computed_hypergeometric_probabilities(
    study_successes: int,
    study_n: int,
    control_successes: int,
    control_n: int,
    p_value: float,
    odds_ratio: float | None,
) -> None:
    result = fisher_exact_2x2(
        study_successes=study_successes,
        study_n=study_n,
        control_successes=control_successes,
        control_n=control_n,
    )
    assert result.p_value == pytest.approx(p_value, rel=1e-12)
    assert result.odds_ratio == odds_ratio
    assert (result.reason is None) == (odds_ratio is not None)


def test_fisher_tea_tasting_p_value_to_four_decimals() -> None:
    result = fisher_exact_2x2(study_successes=3, study_n=4, control_successes=1, control_n=4)
    assert result.p_value is not None and round(result.p_value, 4) == 0.4857


@pytest.mark.parametrize(("study_n", "control_n", "empty"), [(0, 4, "study"), (4, 0, "control")])
def test_fisher_with_an_empty_group_is_undefined_with_a_reason(
    study_n: int, control_n: int, empty: str
) -> None:
    result = fisher_exact_2x2(study_successes=0, study_n=study_n, control_successes=0, control_n=control_n)
    assert (result.p_value, result.odds_ratio) == (None, None)
    assert result.reason == f"the {empty} group has no patients"


@pytest.mark.parametrize(
    ("study_successes", "study_n", "control_successes", "control_n"),
    [(5, 4, 0, 4), (-1, 4, 0, 4), (0, 4, 1, -1), (True, 4, 0, 4)],
)
def test_fisher_rejects_impossible_counts(
    study_successes: int, study_n: int, control_successes: int, control_n: int
) -> None:
    with pytest.raises(StatisticsError):
        fisher_exact_2x2(
            study_successes=study_successes,
            study_n=study_n,
            control_successes=control_successes,
            control_n=control_n,
        )


# Exact null distribution of U for two samples of 3 (20 equally likely rank splits): the number of splits
# giving U = 0..9 is 1, 1, 2, 3, 3, 3, 3, 2, 1, 1 (Mann & Whitney 1947, Ann. Math. Statist. 18:50-60).
@pytest.mark.parametrize(
    ("study", "control", "u", "p_value"),
    [
        ([1, 2, 3], [4, 5, 6], 0.0, 2 * 1 / 20),
        ([4, 5, 6], [1, 2, 3], 9.0, 2 * 1 / 20),
        ([1, 3, 5], [2, 4, 6], 3.0, 2 * 7 / 20),
        ([1, 2, 4], [3, 5, 6], 1.0, 2 * 2 / 20),
        ([2, 4, 6], [1, 3, 5], 6.0, 2 * 7 / 20),
    ],
)
def test_mann_whitney_exact_p_value_matches_the_enumerated_null_distribution(
    study: list[float], control: list[float], u: float, p_value: float
) -> None:
    result = mann_whitney_u(study=study, control=control)
    assert result.method == "exact"
    assert result.u_statistic == u
    assert result.p_value == pytest.approx(p_value, rel=1e-12)


def test_mann_whitney_accepts_decimal_amounts() -> None:
    result = mann_whitney_u(
        study=[Decimal("1200.50"), Decimal("3400.00"), Decimal("560.25")],
        control=[Decimal("4100.00"), Decimal("5000.10"), 6000.0],
    )
    assert result.u_statistic == 0.0
    assert result.p_value == pytest.approx(0.1, rel=1e-12)


def _normal_approximation_by_hand(study: list[float], control: list[float]) -> tuple[float, float]:
    # Textbook large-sample test with tie and continuity corrections (e.g. Hollander, Wolfe & Chicken,
    # Nonparametric Statistical Methods, 3rd ed., 4.1), written without scipy.
    u = sum((x > y) + 0.5 * (x == y) for x in study for y in control)
    n1, n2 = len(study), len(control)
    n = n1 + n2
    pooled = study + control
    tie_sum = sum(t**3 - t for t in (pooled.count(v) for v in set(pooled)))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_sum / (n * (n - 1))))
    z = (abs(u - n1 * n2 / 2) - 0.5) / sigma
    return u, math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize(
    ("study", "control"),
    [
        ([1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 3.0, 3.0, 4.0, 6.0, 7.0, 7.0]),
        ([10.0] * 3 + [20.0] * 4 + [30.0] * 5, [20.0] * 6 + [40.0] * 6),
        ([float(v) for v in range(20)], [float(v) + 7.5 for v in range(15)]),
    ],
    ids=["small with ties", "heavily tied", "no ties but both groups larger than 8"],
)
def test_mann_whitney_normal_approximation_matches_a_hand_computation(
    study: list[float], control: list[float]
) -> None:
    u, p_value = _normal_approximation_by_hand(study, control)
    result = mann_whitney_u(study=study, control=control)
    assert result.method == "asymptotic"
    assert result.u_statistic == u
    assert result.p_value == pytest.approx(p_value, rel=1e-12)


@pytest.mark.parametrize(
    ("study", "control", "reason"),
    [
        ([], [1.0, 2.0], "the study group has no values"),
        ([1.0, 2.0], [], "the control group has no values"),
        ([], [], "the study group has no values"),
        ([5.0, 5.0], [5.0], "all values are identical; the rank test is undefined"),
    ],
)
def test_mann_whitney_without_a_comparison_is_undefined_with_a_reason(
    study: list[float], control: list[float], reason: str
) -> None:
    result = mann_whitney_u(study=study, control=control)
    assert (result.u_statistic, result.p_value, result.method) == (None, None, None)
    assert result.reason == reason
    assert (result.n_study, result.n_control) == (len(study), len(control))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # numpy "linear" = R type 7: Q1 of 1..4 sits a quarter of the way from 1 to 4 along the ranks.
        ([1, 2, 3, 4], SampleSummary(n=4, median=2.5, q1=1.75, q3=3.25, mean=2.5, reason=None)),
        ([7.0], SampleSummary(n=1, median=7.0, q1=7.0, q3=7.0, mean=7.0, reason=None)),
        (
            [Decimal("100.10"), Decimal("0.00"), Decimal("300.30"), Decimal("200.20"), Decimal("1000.00")],
            SampleSummary(n=5, median=200.2, q1=100.1, q3=300.3, mean=320.12, reason=None),
        ),
        ([], SampleSummary(n=0, median=None, q1=None, q3=None, mean=None, reason="no values (n = 0)")),
    ],
    ids=["four values", "one value", "decimal amounts in CNY", "no values"],
)
def test_sample_summary_reports_median_quartiles_and_mean(
    values: list[Decimal | float], expected: SampleSummary
) -> None:
    got = summarise_sample(values=values)
    assert got.n == expected.n
    assert got.reason == expected.reason
    for field in ("median", "q1", "q3", "mean"):
        want = getattr(expected, field)
        assert getattr(got, field) == (None if want is None else pytest.approx(want, rel=1e-12)), field


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), "12.5", True, None],
    ids=["nan", "infinity", "decimal NaN", "decimal signalling NaN", "decimal infinity", "a string",
         "a boolean", "None"],
)
def test_non_numeric_or_non_finite_amounts_are_rejected(bad: object) -> None:
    with pytest.raises(StatisticsError):
        summarise_sample(values=[1.0, bad])  # type: ignore[list-item]
    with pytest.raises(StatisticsError):
        mann_whitney_u(study=[1.0], control=[bad])  # type: ignore[list-item]

"""Exact binomial interval and test for the primary endpoint (PROTOCOL.md sections 5 and 6)."""

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint  # type: ignore[import-untyped]

from app.domain.statistics import (
    RateSummary,
    StatisticsError,
    clopper_pearson,
    one_sided_binomial_p,
    summarise_rate,
)


@pytest.fixture(autouse=True)
def _floating_point_problems_raise() -> Iterator[None]:
    # Any divide-by-zero or invalid operation inside the code under test fails the test, even if an
    # earlier import switched numpy's global error state to "ignore".
    with np.errstate(all="raise"):
        yield


# R 4.x binom.test(x, n)$conf.int, as quoted in PROTOCOL.md section 6.
@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        (7, 20, 0.1539, 0.5922),
        (0, 10, 0.0, 0.3085),
        (682, 925, 0.7077, 0.7654),
    ],
    ids=["7 of 20", "0 of 10", "682 of 925"],
)
def test_clopper_pearson_matches_r_binom_test_to_four_decimals(
    successes: int, n: int, lower: float, upper: float
) -> None:
    got_lower, got_upper = clopper_pearson(successes=successes, n=n)
    assert round(got_lower, 4) == lower
    assert round(got_upper, 4) == upper


_GRID = [(x, n) for n in (1, 2, 3, 5, 10, 20, 37, 100) for x in range(n + 1)] + [(0, 925), (925, 925)]


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_clopper_pearson_agrees_with_statsmodels_beta_method_on_a_grid_including_zero_and_n(
    confidence: float,
) -> None:
    for x, n in _GRID:
        expected = proportion_confint(x, n, alpha=1 - confidence, method="beta")
        got = clopper_pearson(successes=x, n=n, confidence=confidence)
        assert got == pytest.approx(expected, abs=1e-9), (x, n)


@pytest.mark.parametrize("n", [1, 4, 30])
def test_clopper_pearson_bounds_are_exactly_zero_and_one_at_the_extremes(n: int) -> None:
    assert clopper_pearson(successes=0, n=n)[0] == 0.0
    assert clopper_pearson(successes=n, n=n)[1] == 1.0


def _upper_tail_by_hand(successes: int, n: int, p0: Fraction) -> float:
    # P(X >= x) for X ~ Binomial(n, p0), summed exactly in rationals: independent of scipy.
    return float(sum(math.comb(n, k) * p0**k * (1 - p0) ** (n - k) for k in range(successes, n + 1)))


@pytest.mark.parametrize(
    ("successes", "n", "p0"),
    [
        (7, 20, Fraction(1, 5)),
        (15, 20, Fraction(1, 2)),
        (0, 10, Fraction(3, 10)),
        (10, 10, Fraction(9, 10)),
        (682, 925, Fraction(7, 10)),
        (3, 12, Fraction(0)),
        (0, 12, Fraction(0)),
        (5, 12, Fraction(1)),
    ],
)
def test_one_sided_binomial_p_is_the_exact_upper_tail_probability(
    successes: int, n: int, p0: Fraction
) -> None:
    got = one_sided_binomial_p(successes=successes, n=n, p0=float(p0))
    assert got == pytest.approx(_upper_tail_by_hand(successes, n, p0), rel=1e-10, abs=1e-300)


def test_one_sided_binomial_p_for_a_textbook_coin_example() -> None:
    # 9 heads in 10 tosses of a fair coin: P(X >= 9) = (10 + 1) / 2**10 = 11/1024.
    assert one_sided_binomial_p(successes=9, n=10, p0=0.5) == pytest.approx(11 / 1024, rel=1e-12)


def test_rate_summary_carries_rate_interval_and_one_sided_p() -> None:
    summary = summarise_rate(successes=7, n=20, p0=0.2)
    assert summary == RateSummary(
        n_negative=7,
        n=20,
        rate=0.35,
        ci95=clopper_pearson(successes=7, n=20),
        p0=0.2,
        p_value_one_sided=one_sided_binomial_p(successes=7, n=20, p0=0.2),
        reason=None,
    )


def test_rate_summary_without_a_control_rate_has_no_p_value() -> None:
    summary = summarise_rate(successes=7, n=20, p0=None)
    assert summary.p_value_one_sided is None
    assert summary.ci95 is not None


def test_rate_summary_of_an_empty_group_is_undefined_with_a_reason() -> None:
    summary = summarise_rate(successes=0, n=0, p0=0.3)
    assert (summary.rate, summary.ci95, summary.p_value_one_sided) == (None, None, None)
    assert summary.p0 == 0.3
    assert summary.reason is not None and "n = 0" in summary.reason


@pytest.mark.parametrize(
    ("successes", "n", "p0"),
    [
        (-1, 10, 0.5),
        (11, 10, 0.5),
        (0, -1, 0.5),
        (3, 10, -0.01),
        (3, 10, 1.01),
        (3, 10, math.nan),
        (True, 10, 0.5),
    ],
    ids=["negative count", "more successes than patients", "negative n", "p0 below 0", "p0 above 1",
         "p0 not a number", "boolean count"],
)
def test_invalid_counts_or_control_rates_are_rejected(successes: int, n: int, p0: float) -> None:
    with pytest.raises(StatisticsError):
        summarise_rate(successes=successes, n=n, p0=p0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0, math.nan])
def test_confidence_must_lie_strictly_between_zero_and_one(confidence: float) -> None:
    with pytest.raises(StatisticsError):
        clopper_pearson(successes=1, n=2, confidence=confidence)


def test_an_interval_or_test_on_no_patients_is_an_error_not_a_number() -> None:
    with pytest.raises(StatisticsError):
        clopper_pearson(successes=0, n=0)
    with pytest.raises(StatisticsError):
        one_sided_binomial_p(successes=0, n=0, p0=0.5)

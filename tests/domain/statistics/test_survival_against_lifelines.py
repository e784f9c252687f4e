"""Our numpy Kaplan-Meier and log-rank against lifelines on seeded random cohorts.

lifelines' KaplanMeierFitter uses the same Greenwood sum and the same log-log ("exponential Greenwood")
interval, and lifelines.statistics.logrank_test the same hypergeometric variance, so agreement is expected
to rounding error. The one place the conventions differ on purpose: where S = 0 lifelines reports the CI as
(0, 0) and we report None (R: NA), so those rows are compared on S only.
"""

from collections.abc import Iterator

import numpy as np
import pytest
from lifelines import KaplanMeierFitter  # type: ignore[import-untyped]
from lifelines.statistics import logrank_test  # type: ignore[import-untyped]
from lifelines.utils import median_survival_times  # type: ignore[import-untyped]

from app.domain.statistics import (
    KaplanMeierTable,
    LogRankResult,
    MedianSurvival,
    kaplan_meier,
    log_rank_test,
    median_survival,
)

TOLERANCE = 1e-9


@pytest.fixture(autouse=True)
def _restore_numpy_error_state() -> Iterator[None]:
    # Undo lifelines' global np.seterr so that it cannot leak into other test modules.
    with np.errstate():
        yield


def _cohort(seed: int, *, n: int, event_probability: float) -> tuple[list[float], list[bool]]:
    # Whole days on a short range, so that events and censorings share times.
    rng = np.random.default_rng(seed)
    durations = rng.integers(0, 40, size=n).astype(float)
    events = rng.random(n) < event_probability
    return durations.tolist(), [bool(e) for e in events]


COHORTS = [
    pytest.param(seed, n, p, id=f"seed {seed}, n={n}, P(event)={p}")
    for seed, n, p in [
        (1, 60, 0.6),
        (2, 25, 0.4),
        (3, 80, 0.8),
        (4, 12, 1.0),  # every patient has an event: the curve reaches 0
        (5, 40, 0.2),  # heavy censoring: median not reached
        (6, 200, 0.5),
        (7, 7, 0.7),
    ]
]


def _ours(durations: list[float], events: list[bool]) -> tuple[KaplanMeierTable, MedianSurvival]:
    # Computed under errstate(raise) *before* lifelines runs: lifelines calls np.seterr(...="ignore")
    # globally, which would otherwise hide a divide-by-zero in our code.
    with np.errstate(all="raise"):
        table = kaplan_meier(durations=durations, events=events)
        return table, median_survival(table=table)


def _none_if_infinite(value: float) -> float | None:
    return None if np.isinf(value) else float(value)


@pytest.mark.parametrize(("seed", "n", "event_probability"), COHORTS)
def test_kaplan_meier_table_matches_lifelines(seed: int, n: int, event_probability: float) -> None:
    durations, events = _cohort(seed, n=n, event_probability=event_probability)
    table, _ = _ours(durations, events)

    fitter = KaplanMeierFitter().fit(durations, events)
    survival = fitter.survival_function_.iloc[:, 0]
    lower = fitter.confidence_interval_.iloc[:, 0]
    upper = fitter.confidence_interval_.iloc[:, 1]
    event_table = fitter.event_table

    observed_times = [t for t in event_table.index if event_table.at[t, "removed"] > 0]
    assert [row.time for row in table.rows] == observed_times
    for row in table.rows:
        assert row.n_at_risk == event_table.at[row.time, "at_risk"]
        assert row.n_events == event_table.at[row.time, "observed"]
        assert row.n_censored == event_table.at[row.time, "censored"]
        assert row.survival == pytest.approx(survival[row.time], abs=TOLERANCE)
        if row.survival == 0.0:
            assert (row.ci_lower, row.ci_upper) == (None, None)
            assert (lower[row.time], upper[row.time]) == (0.0, 0.0)
        else:
            assert row.ci_lower == pytest.approx(lower[row.time], abs=TOLERANCE)
            assert row.ci_upper == pytest.approx(upper[row.time], abs=TOLERANCE)


@pytest.mark.parametrize(("seed", "n", "event_probability"), COHORTS)
def test_median_and_its_ci_match_lifelines(seed: int, n: int, event_probability: float) -> None:
    durations, events = _cohort(seed, n=n, event_probability=event_probability)
    _, median = _ours(durations, events)

    fitter = KaplanMeierFitter().fit(durations, events)
    band = median_survival_times(fitter.confidence_interval_)
    assert median.median == _none_if_infinite(fitter.median_survival_time_)
    assert median.ci_lower == _none_if_infinite(band.iloc[0, 0])
    assert median.ci_upper == _none_if_infinite(band.iloc[0, 1])


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_log_rank_matches_lifelines(seed: int) -> None:
    study = _cohort(seed, n=50, event_probability=0.5)
    control = _cohort(seed + 100, n=35, event_probability=0.7)
    with np.errstate(all="raise"):
        ours: LogRankResult = log_rank_test(
            study_durations=study[0],
            study_events=study[1],
            control_durations=control[0],
            control_events=control[1],
        )
    theirs = logrank_test(study[0], control[0], event_observed_A=study[1], event_observed_B=control[1])
    assert ours.chi_square == pytest.approx(theirs.test_statistic, abs=TOLERANCE)
    assert ours.p_value == pytest.approx(theirs.p_value, abs=TOLERANCE)

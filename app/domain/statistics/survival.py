"""Kaplan-Meier estimation and the log-rank test for event-free survival.

PROTOCOL.md section 5, "5-year EFS".

Written on numpy rather than taken from lifelines so that the domain has no pandas dependency and every
convention below is ours, stated, and tested. The conventions follow R's survival package (Therneau), with
lifelines as the executable cross-check in the tests:

- Durations are >= 0 in any unit (days for the trial); `events` is True for an event, False for censoring.
- At a time with both events and censorings, the events happen first: censored patients are still in the
  risk set at their own censoring time (Kaplan & Meier 1958, JASA 53:457-481; R survfit; lifelines).
- Greenwood's variance: Var(S(t)) = S(t)^2 * sum_{t_i <= t} d_i / (n_i (n_i - d_i)) (Greenwood 1926).
- 95 % CI on the log-log scale, R survfit(conf.type = "log-log"), the "exponential Greenwood" interval of
  Kalbfleisch & Prentice (2002) 4.3 and lifelines' default:
      se = sqrt(sum d_i / (n_i (n_i - d_i))) / |log S(t)|
      lower = exp(-exp(log(-log S) + z se)) = S^exp(+z se)
      upper = exp(-exp(log(-log S) - z se)) = S^exp(-z se)
  The transform is undefined at S = 1 and S = 0. Where S = 1 (no event yet) the Greenwood variance is 0
  and the CI is reported as (1, 1), as R's survfit.km does; where S = 0 the CI is None (R reports NA).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]  # no scipy-stubs pinned

from app.domain.statistics.errors import StatisticsError

# Products of (1 - d/n) that equal 1/2 in exact arithmetic can land an ulp or two above 0.5 in floating
# point, which would move the median to the next event time. R's quantile.survfit uses a tolerance for the
# same reason (sqrt(.Machine$double.eps)); ours is far smaller than any real step of a KM curve (>= 1/n^2).
_MEDIAN_TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class KaplanMeierRow:
    """The curve at one distinct observed time (an event, a censoring, or both).

    `n_at_risk` counts patients with duration >= time (those censored at `time` included). `std_error`
    is Greenwood's standard error of S; it and the CI are None where S = 0.
    """

    time: float
    n_at_risk: int
    n_events: int
    n_censored: int
    survival: float
    std_error: float | None
    ci_lower: float | None
    ci_upper: float | None


@dataclass(frozen=True, slots=True)
class KaplanMeierTable:
    """The whole step table; `rows` is empty when there are no patients."""

    rows: tuple[KaplanMeierRow, ...]
    n_patients: int
    n_events: int
    confidence: float


@dataclass(frozen=True, slots=True)
class SurvivalEstimate:
    """S(t) read off the step function, e.g. EFS at 5 years, with its CI and number at risk."""

    time: float
    survival: float | None
    ci_lower: float | None
    ci_upper: float | None
    n_at_risk: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class MedianSurvival:
    """Median survival time and its CI; each is None where the curve or the band never reaches 0.5."""

    median: float | None
    ci_lower: float | None
    ci_upper: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class LogRankResult:
    """Two-group log-rank test (Mantel 1966; Peto & Peto 1972), as R survdiff(rho = 0)."""

    n_study: int
    n_control: int
    observed_study: int
    expected_study: float
    observed_control: int
    expected_control: float
    variance: float
    chi_square: float | None
    p_value: float | None
    reason: str | None


def kaplan_meier(
    *, durations: Sequence[float], events: Sequence[bool], confidence: float = 0.95
) -> KaplanMeierTable:
    """The Kaplan-Meier step table with Greenwood standard errors and log-log confidence intervals."""
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise StatisticsError(f"confidence must be in (0, 1), got {confidence}")
    time, event = _survival_arrays(durations, events, name="")
    if time.size == 0:
        return KaplanMeierTable(rows=(), n_patients=0, n_events=0, confidence=confidence)

    distinct, index = np.unique(time, return_inverse=True)
    n_obs = np.bincount(index, minlength=distinct.size)
    n_events = np.bincount(index[event], minlength=distinct.size)
    n_censored = n_obs - n_events
    # Reverse cumulative count: everyone whose duration is >= this time.
    n_at_risk = np.cumsum(n_obs[::-1])[::-1]

    # Every distinct time has at least one observation, so n_at_risk >= 1 and the division is safe.
    survival = np.cumprod(1.0 - n_events / n_at_risk)

    # Greenwood's term d / (n (n - d)) is infinite where everyone at risk has the event (n = d); S is 0
    # from there on and its CI is reported as None, so the term is left at 0 rather than computed.
    greenwood_terms = np.zeros(distinct.size, dtype=np.float64)
    survivors = n_at_risk > n_events
    greenwood_terms[survivors] = n_events[survivors] / (
        n_at_risk[survivors] * (n_at_risk[survivors] - n_events[survivors])
    )
    greenwood_sum = np.cumsum(greenwood_terms)

    z = float(stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    rows = tuple(
        _row(
            time=float(distinct[i]),
            n_at_risk=int(n_at_risk[i]),
            n_events=int(n_events[i]),
            n_censored=int(n_censored[i]),
            survival=float(survival[i]),
            greenwood_sum=float(greenwood_sum[i]),
            z=z,
        )
        for i in range(distinct.size)
    )
    return KaplanMeierTable(
        rows=rows, n_patients=int(time.size), n_events=int(event.sum()), confidence=confidence
    )


def survival_at(*, table: KaplanMeierTable, time: float) -> SurvivalEstimate:
    """S(time) as a right-continuous step function: the row at the largest observed time <= `time`.

    Before the first observed time S = 1 with CI (1, 1). After the last observed time the curve is only
    known if it has already reached 0; otherwise the estimate is None with a reason, because carrying the
    last value forward would report, say, 5-year EFS from a cohort followed for 4 years. (R's
    summary.survfit likewise drops such times unless extend = TRUE.)
    """
    if not math.isfinite(time):
        raise StatisticsError(f"time must be finite, got {time}")
    at_risk = _n_at_risk(table, time)
    if not table.rows:
        return SurvivalEstimate(
            time=time, survival=None, ci_lower=None, ci_upper=None, n_at_risk=0, reason="no patients"
        )
    last = table.rows[-1]
    if time > last.time and last.survival > 0.0:
        return SurvivalEstimate(
            time=time,
            survival=None,
            ci_lower=None,
            ci_upper=None,
            n_at_risk=0,
            reason=f"after the last follow-up time ({last.time:g}); the curve is not estimable there",
        )
    times = [row.time for row in table.rows]
    position = int(np.searchsorted(times, time, side="right")) - 1
    if position < 0:
        return SurvivalEstimate(
            time=time, survival=1.0, ci_lower=1.0, ci_upper=1.0, n_at_risk=at_risk, reason=None
        )
    row = table.rows[position]
    return SurvivalEstimate(
        time=time,
        survival=row.survival,
        ci_lower=row.ci_lower,
        ci_upper=row.ci_upper,
        n_at_risk=at_risk,
        reason="confidence interval undefined where survival is 0" if row.survival == 0.0 else None,
    )


def number_at_risk(*, table: KaplanMeierTable, times: Sequence[float]) -> tuple[int, ...]:
    """Patients still at risk at each time (duration >= t), the "number at risk" row under a KM plot."""
    for t in times:
        if not math.isfinite(t):
            raise StatisticsError(f"times must be finite, got {t}")
    return tuple(_n_at_risk(table, t) for t in times)


def median_survival(*, table: KaplanMeierTable) -> MedianSurvival:
    """Median survival: the first time S(t) <= 0.5, with its CI from the pointwise log-log band.

    The CI inverts the band (Brookmeyer & Crowley 1982, Biometrics 38:29-41, in the form R's
    quantile.survfit and lifelines use). The lower band lies below the curve and so falls to 0.5 first:
    lower limit = first time the lower band is <= 0.5, upper limit = first time the upper band is <= 0.5.
    (For the Freireich 6-MP arm this gives median 23 weeks, CI 13 to not reached, as R prints.) Where
    S = 0 the band is undefined; there it is taken to have reached 0 with the curve, as lifelines does.
    A limit that is never reached is None.

    Unlike R, an S exactly 0.5 over an interval gives its left end, not the midpoint (lifelines' rule).
    """
    if not table.rows:
        return MedianSurvival(median=None, ci_lower=None, ci_upper=None, reason="no patients")
    survival = [row.survival for row in table.rows]
    # Only S = 0 rows lack a CI (see _row), so None here means "the band has reached 0 with the curve".
    lower_band = [0.0 if row.ci_lower is None else row.ci_lower for row in table.rows]
    upper_band = [0.0 if row.ci_upper is None else row.ci_upper for row in table.rows]
    times = [row.time for row in table.rows]

    median = _first_time_at_or_below_half(times, survival)
    ci_lower = _first_time_at_or_below_half(times, lower_band)
    ci_upper = _first_time_at_or_below_half(times, upper_band)
    missing = [
        label
        for label, value in (("median", median), ("lower limit", ci_lower), ("upper limit", ci_upper))
        if value is None
    ]
    reason = f"not reached (the curve or its band stays above 0.5): {', '.join(missing)}" if missing else None
    return MedianSurvival(median=median, ci_lower=ci_lower, ci_upper=ci_upper, reason=reason)


def log_rank_test(
    *,
    study_durations: Sequence[float],
    study_events: Sequence[bool],
    control_durations: Sequence[float],
    control_events: Sequence[bool],
) -> LogRankResult:
    """Two-sided log-rank test, chi-square with 1 degree of freedom.

    At each distinct event time in the pooled sample with n at risk (n_s study) and d events, the study
    arm's expected events are d n_s / n and the hypergeometric variance is
    n_s n_c d (n - d) / (n^2 (n - 1)); chi-square = (O_s - E_s)^2 / sum V (R survdiff, rho = 0).
    """
    study_time, study_event = _survival_arrays(study_durations, study_events, name="study_")
    control_time, control_event = _survival_arrays(control_durations, control_events, name="control_")

    event_times = np.unique(np.concatenate([study_time[study_event], control_time[control_event]]))
    at_risk_s = _count_at_or_after(np.sort(study_time), event_times)
    at_risk_c = _count_at_or_after(np.sort(control_time), event_times)
    deaths_s = _count_equal(np.sort(study_time[study_event]), event_times)
    deaths_c = _count_equal(np.sort(control_time[control_event]), event_times)
    at_risk = at_risk_s + at_risk_c
    deaths = deaths_s + deaths_c

    # Each event time has at least the patient who had the event at risk, so at_risk >= 1; the variance
    # term needs n > 1 and is 0 for a lone patient anyway (n - d = 0). Floats keep the four-way product
    # clear of integer overflow.
    n_s, n_c, n, d = (a.astype(np.float64) for a in (at_risk_s, at_risk_c, at_risk, deaths))
    expected_s = float(np.sum(d * n_s / n))
    several = n > 1
    variance_terms = np.zeros(event_times.size, dtype=np.float64)
    variance_terms[several] = (
        n_s[several]
        * n_c[several]
        * d[several]
        * (n[several] - d[several])
        / (n[several] ** 2 * (n[several] - 1))
    )
    variance = float(np.sum(variance_terms))
    observed_s = int(study_event.sum())
    observed_c = int(control_event.sum())
    total_events = observed_s + observed_c

    chi_square: float | None = None
    p_value: float | None = None
    reason: str | None = None
    if study_time.size == 0 or control_time.size == 0:
        reason = f"the {'study' if study_time.size == 0 else 'control'} group has no patients"
    elif total_events == 0:
        reason = "no events in either group"
    elif variance == 0.0:
        reason = "zero variance: the groups never share a risk set at an event time"
    else:
        chi_square = (observed_s - expected_s) ** 2 / variance
        p_value = float(stats.chi2.sf(chi_square, df=1))
    return LogRankResult(
        n_study=int(study_time.size),
        n_control=int(control_time.size),
        observed_study=observed_s,
        expected_study=expected_s,
        observed_control=observed_c,
        expected_control=float(total_events) - expected_s,
        variance=variance,
        chi_square=chi_square,
        p_value=p_value,
        reason=reason,
    )


def _row(
    *,
    time: float,
    n_at_risk: int,
    n_events: int,
    n_censored: int,
    survival: float,
    greenwood_sum: float,
    z: float,
) -> KaplanMeierRow:
    std_error: float | None
    ci_lower: float | None
    ci_upper: float | None
    if survival == 0.0:
        std_error, ci_lower, ci_upper = None, None, None
    elif survival == 1.0:
        # No event yet: Greenwood's sum is 0 and the interval collapses to the point (R survfit.km).
        std_error, ci_lower, ci_upper = 0.0, 1.0, 1.0
    else:
        std_error = survival * math.sqrt(greenwood_sum)
        se_log_log = math.sqrt(greenwood_sum) / -math.log(survival)
        ci_lower = survival ** math.exp(z * se_log_log)
        ci_upper = survival ** math.exp(-z * se_log_log)
    return KaplanMeierRow(
        time=time,
        n_at_risk=n_at_risk,
        n_events=n_events,
        n_censored=n_censored,
        survival=survival,
        std_error=std_error,
        ci_lower=ci_lower,
        ci_upper=ci_upper,
    )


def _first_time_at_or_below_half(times: Sequence[float], curve: Sequence[float]) -> float | None:
    for t, value in zip(times, curve, strict=True):
        if value <= 0.5 + _MEDIAN_TOLERANCE:
            return t
    return None


def _n_at_risk(table: KaplanMeierTable, time: float) -> int:
    # The first row at or after `time` carries the risk set just before it; past the last row nobody is left.
    for row in table.rows:
        if row.time >= time:
            return row.n_at_risk
    return 0


def _count_at_or_after(
    sorted_values: npt.NDArray[np.float64], at: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    return (sorted_values.size - np.searchsorted(sorted_values, at, side="left")).astype(np.int64)


def _count_equal(
    sorted_values: npt.NDArray[np.float64], at: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    right = np.searchsorted(sorted_values, at, side="right")
    left = np.searchsorted(sorted_values, at, side="left")
    return (right - left).astype(np.int64)


def _survival_arrays(
    durations: Sequence[float], events: Sequence[bool], *, name: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    if len(durations) != len(events):
        raise StatisticsError(
            f"{name}durations and {name}events differ in length ({len(durations)} vs {len(events)})"
        )
    for i, flag in enumerate(events):
        # Only real booleans: an integer status column coded 1/2 (R's Surv convention) would otherwise
        # silently count every patient as an event.
        if not isinstance(flag, (bool, np.bool_)):
            raise StatisticsError(f"{name}events[{i}] must be a bool, got {type(flag).__name__}")
    time = np.asarray(durations, dtype=np.float64).reshape(-1)
    if time.size and not (np.all(np.isfinite(time)) and np.all(time >= 0.0)):
        raise StatisticsError(f"{name}durations must be finite and >= 0")
    return time, np.asarray(events, dtype=np.bool_).reshape(-1)

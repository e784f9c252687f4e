"""Two-group comparisons and descriptive summaries (PROTOCOL.md section 5).

- Fisher's exact test: study vs control MRD-negative rate when patient-level control data are loaded.
- Mann-Whitney U: per-patient healthcare costs, study vs control.
- A descriptive summary (n, median, IQR, mean) of a numeric sample such as per-patient costs.

Undefined answers (an empty group, a degenerate sample) are None with a `reason`, never NaN or inf, so
that results serialise to JSON and render the same way every time.
"""

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]  # no scipy-stubs pinned

from app.domain.statistics.errors import StatisticsError

# scipy.stats.mannwhitneyu(method="auto") switches to the exact null distribution when either sample has
# at most 8 values and there are no ties (scipy/stats/_mannwhitneyu.py, _mwu_choose_method). We apply the
# same rule ourselves so that the result can say which method produced its p-value.
_MWU_EXACT_MAX_N = 8


@dataclass(frozen=True, slots=True)
class FisherResult:
    """Two-sided Fisher's exact test on the 2x2 table [[study_successes, study_failures],
    [control_successes, control_failures]].

    `odds_ratio` is the sample odds ratio (a*d)/(b*c), the statistic scipy.stats.fisher_exact reports; it
    is not R fisher.test's conditional maximum-likelihood estimate, which is generally closer to 1.
    """

    study_successes: int
    study_n: int
    control_successes: int
    control_n: int
    odds_ratio: float | None
    p_value: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class MannWhitneyResult:
    """Two-sided Mann-Whitney U test of study vs control.

    `u_statistic` is U for the study sample: the number of (study, control) pairs in which the study value
    is larger, ties counting one half (scipy's convention, equal to R wilcox.test's W).
    """

    n_study: int
    n_control: int
    u_statistic: float | None
    p_value: float | None
    method: Literal["exact", "asymptotic"] | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """n, median, quartiles and mean of a numeric sample.

    Quartiles use numpy's default "linear" method (Hyndman & Fan 1996 type 7, also R's quantile()
    default), so Q1/Q3 match R's summary() on the same numbers.
    """

    n: int
    median: float | None
    q1: float | None
    q3: float | None
    mean: float | None
    reason: str | None


def fisher_exact_2x2(
    *, study_successes: int, study_n: int, control_successes: int, control_n: int
) -> FisherResult:
    """Compare two proportions with Fisher's exact test (two-sided)."""
    for name, successes, n in (
        ("study", study_successes, study_n),
        ("control", control_successes, control_n),
    ):
        if isinstance(successes, bool) or isinstance(n, bool):
            raise StatisticsError(f"{name} counts must be integers, not booleans")
        if n < 0 or not 0 <= successes <= n:
            raise StatisticsError(f"{name} counts need 0 <= successes <= n, got {successes} of {n}")

    def result(odds_ratio: float | None, p_value: float | None, reason: str | None) -> FisherResult:
        return FisherResult(
            study_successes=study_successes,
            study_n=study_n,
            control_successes=control_successes,
            control_n=control_n,
            odds_ratio=odds_ratio,
            p_value=p_value,
            reason=reason,
        )

    # With an empty arm scipy still returns p = 1, but that "no evidence" is really "no comparison".
    if study_n == 0 or control_n == 0:
        empty = "study" if study_n == 0 else "control"
        return result(None, None, f"the {empty} group has no patients")

    a, b = study_successes, study_n - study_successes
    c, d = control_successes, control_n - control_successes
    p_value = float(stats.fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue)
    # The odds ratio is computed here rather than taken from scipy, which returns nan or inf for a zero
    # cell; the p-value stays well defined in those tables.
    if b * c == 0:
        why = "0/0" if a * d == 0 else "a zero cell in the denominator"
        return result(None, p_value, f"odds ratio undefined ({why})")
    return result((a * d) / (b * c), p_value, None)


def mann_whitney_u(
    *, study: Sequence[Decimal | float], control: Sequence[Decimal | float]
) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U (Wilcoxon rank-sum) test, e.g. of per-patient costs."""
    x = _as_finite_array(study, name="study")
    y = _as_finite_array(control, name="control")

    def result(
        u: float | None,
        p: float | None,
        method: Literal["exact", "asymptotic"] | None,
        reason: str | None,
    ) -> MannWhitneyResult:
        return MannWhitneyResult(
            n_study=x.size, n_control=y.size, u_statistic=u, p_value=p, method=method, reason=reason
        )

    if x.size == 0 or y.size == 0:
        empty = "study" if x.size == 0 else "control"
        return result(None, None, None, f"the {empty} group has no values")
    pooled = np.concatenate([x, y])
    if np.all(pooled == pooled[0]):
        # Every rank is tied: the tie-corrected variance is zero and the normal approximation divides by
        # it. The two groups are indistinguishable, but a p-value would be a convention, not a test.
        return result(None, None, None, "all values are identical; the rank test is undefined")

    has_ties = np.unique(pooled).size < pooled.size
    method: Literal["exact", "asymptotic"] = (
        "exact" if min(x.size, y.size) <= _MWU_EXACT_MAX_N and not has_ties else "asymptotic"
    )
    # use_continuity=True (scipy's default) matches R wilcox.test(correct=TRUE) in the asymptotic case.
    test = stats.mannwhitneyu(x, y, alternative="two-sided", method=method, use_continuity=True)
    return result(float(test.statistic), float(test.pvalue), method, None)


def summarise_sample(*, values: Sequence[Decimal | float]) -> SampleSummary:
    """n, median, Q1, Q3 (numpy "linear" quantiles) and mean; all None with a reason when n = 0."""
    array = _as_finite_array(values, name="values")
    if array.size == 0:
        return SampleSummary(n=0, median=None, q1=None, q3=None, mean=None, reason="no values (n = 0)")
    q1, median, q3 = np.quantile(array, [0.25, 0.5, 0.75], method="linear")
    return SampleSummary(
        n=array.size,
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        mean=float(np.mean(array)),
        reason=None,
    )


def _as_finite_array(values: Sequence[Decimal | float], *, name: str) -> npt.NDArray[np.float64]:
    # Money arrives as Decimal (FHIR Money.value is a decimal). A double carries ~15-16 significant digits,
    # far more than any per-patient total in CNY needs, and rank tests and quantiles need floats anyway.
    converted: list[float] = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (Decimal, numbers.Real)):
            raise StatisticsError(f"{name}[{i}] must be a number, got {type(value).__name__}")
        # Decimal("sNaN") refuses float(); it is as unusable as any other NaN.
        as_float = math.nan if isinstance(value, Decimal) and value.is_snan() else float(value)
        if not math.isfinite(as_float):
            raise StatisticsError(f"{name}[{i}] must be finite, got {value}")
        converted.append(as_float)
    return np.asarray(converted, dtype=np.float64)

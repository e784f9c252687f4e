"""Binomial proportions for the primary endpoint (PROTOCOL.md section 5, "Primary (flow, NGS)").

The primary endpoint is n MRD-negative / N with an exact two-sided 95 % Clopper-Pearson interval and the
one-sided exact binomial test of H0: p <= p0 against the historical control rate p0. p0 has no published
value for this population (PROTOCOL.md section 6), so it is always passed in by the caller, never defaulted.
"""

import math
from dataclasses import dataclass

from scipy import special, stats  # type: ignore[import-untyped]  # no scipy-stubs pinned

from app.domain.statistics.errors import StatisticsError


@dataclass(frozen=True, slots=True)
class RateSummary:
    """n negative / N with its exact interval and, if a control rate is configured, the one-sided test.

    `rate`, `ci95` and `p_value_one_sided` are None when they are undefined; `reason` then says why, so a
    report never shows an empty cell without an explanation.
    """

    n_negative: int
    n: int
    rate: float | None
    ci95: tuple[float, float] | None
    p0: float | None
    p_value_one_sided: float | None
    reason: str | None


def clopper_pearson(*, successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion.

    Clopper & Pearson (1934), Biometrika 26:404-413, written as beta quantiles as in R's binom.test:
    lower = qbeta(alpha/2, x, n-x+1), upper = qbeta(1-alpha/2, x+1, n-x). The beta distribution is
    undefined for a zero shape parameter, which is exactly the x = 0 and x = n cases; there the bound is
    the end of the parameter space (0 or 1), as in binom.test.
    """
    _check_count(successes=successes, n=n)
    if n == 0:
        raise StatisticsError("a confidence interval needs at least one patient (n = 0)")
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    lower = 0.0 if successes == 0 else float(special.betaincinv(successes, n - successes + 1, alpha / 2))
    upper = 1.0 if successes == n else float(special.betaincinv(successes + 1, n - successes, 1 - alpha / 2))
    return (lower, upper)


def one_sided_binomial_p(*, successes: int, n: int, p0: float) -> float:
    """Exact p-value of H0: p <= p0 against H1: p > p0, i.e. P(X >= successes | Binomial(n, p0)).

    The protocol's primary hypothesis is one-sided (the study arm is expected to beat the historical
    control), so only the upper tail counts.
    """
    _check_count(successes=successes, n=n)
    if n == 0:
        raise StatisticsError("a binomial test needs at least one patient (n = 0)")
    _check_p0(p0)
    return float(stats.binomtest(successes, n, p0, alternative="greater").pvalue)


def summarise_rate(*, successes: int, n: int, p0: float | None) -> RateSummary:
    """The primary-endpoint line for one assay and one analysis set, stratum or site.

    An empty subgroup (a site with no evaluable patients, say) is a normal part of a stratified report,
    so n = 0 gives a summary with a reason rather than an error.
    """
    _check_count(successes=successes, n=n)
    if p0 is not None:
        _check_p0(p0)
    if n == 0:
        return RateSummary(
            n_negative=0,
            n=0,
            rate=None,
            ci95=None,
            p0=p0,
            p_value_one_sided=None,
            reason="no patients in this group (n = 0)",
        )
    return RateSummary(
        n_negative=successes,
        n=n,
        rate=successes / n,
        ci95=clopper_pearson(successes=successes, n=n, confidence=0.95),
        p0=p0,
        p_value_one_sided=None if p0 is None else one_sided_binomial_p(successes=successes, n=n, p0=p0),
        reason=None,
    )


def _check_count(*, successes: int, n: int) -> None:
    # bool is an int subclass; True / 1 as a patient count is almost certainly a bug upstream.
    if isinstance(successes, bool) or isinstance(n, bool):
        raise StatisticsError("counts must be integers, not booleans")
    if n < 0:
        raise StatisticsError(f"n must be >= 0, got {n}")
    if not 0 <= successes <= n:
        raise StatisticsError(f"successes must be between 0 and n = {n}, got {successes}")


def _check_p0(p0: float) -> None:
    if not (math.isfinite(p0) and 0.0 <= p0 <= 1.0):
        raise StatisticsError(f"p0 must be a probability in [0, 1], got {p0}")


def _check_confidence(confidence: float) -> None:
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise StatisticsError(f"confidence must be in (0, 1), got {confidence}")

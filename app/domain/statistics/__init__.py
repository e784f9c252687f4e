"""The trial's endpoint statistics as pure functions on plain values (PROTOCOL.md section 5).

numpy and scipy only: no web, database or FHIR imports, so every number in a report can be reproduced from
the values passed in.
"""

from app.domain.statistics.comparisons import (
    FisherResult,
    MannWhitneyResult,
    SampleSummary,
    fisher_exact_2x2,
    mann_whitney_u,
    summarise_sample,
)
from app.domain.statistics.errors import StatisticsError
from app.domain.statistics.proportions import (
    RateSummary,
    clopper_pearson,
    one_sided_binomial_p,
    summarise_rate,
)
from app.domain.statistics.survival import (
    KaplanMeierRow,
    KaplanMeierTable,
    LogRankResult,
    MedianSurvival,
    SurvivalEstimate,
    kaplan_meier,
    log_rank_test,
    median_survival,
    number_at_risk,
    survival_at,
)

__all__ = [
    "FisherResult",
    "KaplanMeierRow",
    "KaplanMeierTable",
    "LogRankResult",
    "MannWhitneyResult",
    "MedianSurvival",
    "RateSummary",
    "SampleSummary",
    "StatisticsError",
    "SurvivalEstimate",
    "clopper_pearson",
    "fisher_exact_2x2",
    "kaplan_meier",
    "log_rank_test",
    "mann_whitney_u",
    "median_survival",
    "number_at_risk",
    "one_sided_binomial_p",
    "summarise_rate",
    "summarise_sample",
    "survival_at",
]

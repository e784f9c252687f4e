"""How endpoint results become JSON: rounding, ordering and the header every summary carries.

Rounding (documented once, used everywhere, so equal inputs give byte-identical `json.dumps(..., sort_keys=
True)` output):

* proportions, confidence limits, survival probabilities, standard errors, odds ratios, log10 reductions:
  floats rounded half-even to 6 decimal places (`round(x, 6)`);
* p-values and test statistics (chi-square, U): floats rounded to 6 significant digits, so a very small
  p-value is not shown as 0;
* money: per-patient totals are exact decimal strings as summed ("1500.50"); median, quartiles and mean are
  floats rounded to 2 decimal places (fen);
* MRD fractions: the exact normalised decimal as a string ("0.00005");
* times: whole days as integers; years = days / 365.25 (Julian year), rounded to 6 decimal places;
* dates: ISO 8601 strings (`YYYY-MM-DD`).

No NaN or infinity is ever emitted (undefined values are null with a reason) and -0.0 is written as 0.0.
Lists of patients are sorted by patient reference; mappings are keyed by strings.
"""

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from app.domain.protocol import AnalysisSet

Json = dict[str, Any]

YEAR_DAYS = 365.25  # Julian year: EFS "5 years" = 1826.25 days


def rounded(value: float | None, places: int = 6) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"a non-finite value {value} cannot be reported")
    return round(value, places) + 0.0  # + 0.0 turns -0.0 into 0.0


def significant(value: float | None, digits: int = 6) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"a non-finite value {value} cannot be reported")
    return float(f"{value:.{digits}g}") + 0.0


def interval(bounds: tuple[float, float] | None) -> list[float | None] | None:
    return None if bounds is None else [rounded(bounds[0]), rounded(bounds[1])]


def decimal_text(value: Decimal | None) -> str | None:
    """An exact decimal without exponent: Decimal("5E-7") -> "0.0000005"."""
    return None if value is None else f"{value:f}"


def iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def header(*, endpoint: str, protocol_version: str, as_of: dt.date) -> Json:
    """What every summary states (PROTOCOL.md section 5): the cut-off and the protocol file's version."""
    return {"endpoint": endpoint, "as_of": as_of.isoformat(), "protocol_version": protocol_version}


def analysis_set_json(analysis_set: AnalysisSet) -> Json:
    return {
        "name": analysis_set.name,
        "label": analysis_set.label,
        "definition": analysis_set.definition,
        "missing_primary_counts_as_not_negative": analysis_set.missing_primary_counts_as_not_negative,
    }

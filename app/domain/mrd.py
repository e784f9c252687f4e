"""MRD values: normalisation to a fraction and classification against the assay threshold (PROTOCOL.md s. 3).

Every value is turned into one internal unit, a fraction of cells (0.01 % == 0.0001), with exact decimal
arithmetic; the text as sent is kept beside it. Classification follows section 3:

* an exact value >= threshold is POSITIVE (equality is positive: the inclusion criteria read ">= 0.01 %"),
  an exact value < threshold is NEGATIVE;
* "<x" proves the value is below the threshold when x <= threshold, "<=x" only when x < threshold;
  otherwise the assay's sensitivity is worse than the threshold and the result is NOT_EVALUABLE;
* ">x" and ">=x" prove POSITIVE when x >= threshold, otherwise they cannot decide;
* "not detected" is NEGATIVE only with a known sensitivity (limit of detection) that proves the value is
  below the threshold. Not detected at a limit of detection L means the level is < L, so L == threshold
  is enough. Without a known sensitivity it is NOT_EVALUABLE. An exact value of 0 is read as "not
  detected": a zero says nothing about how hard the laboratory looked;
* too few cells analysed (cells_analysed < AssayRule.min_cells) makes a *negative* NOT_EVALUABLE: a
  small sample cannot show that the level is below the threshold. A value at or above the threshold
  was seen, so it stays POSITIVE whatever the cell count. An unreported cell count does not block a
  negative; the reason says it was not reported;
* a specimen flagged inadequate (e.g. haemodiluted) and a unit that cannot be converted are NOT_EVALUABLE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum
from types import MappingProxyType

from app.domain.protocol import Assay, AssayRule

# UCUM unit code (case-sensitive, as sent in valueQuantity.code) -> factor to a fraction. The protocol file's
# [units] table overrides this per deployment; this is the default of PROTOCOL.md section 3.
UCUM_FRACTION_FACTORS: Mapping[str, Decimal] = MappingProxyType(
    {
        "%": Decimal("0.01"),
        "1": Decimal("1"),
        "/10*6": Decimal("0.000001"),  # cells per million
        "{cells}/10*6{cells}": Decimal("0.000001"),
        "10*-6": Decimal("0.000001"),  # a count of millionths
    }
)

# Section 3: only these Observation statuses are used; preliminary is stored but not used, and
# entered-in-error withdraws a result. The protocol file's [results] table can change the set.
USABLE_RESULT_STATUSES = frozenset({"final", "amended", "corrected"})

_PRECISION = 60  # far above any value a laboratory sends, so multiplication never rounds


class MrdValueError(ValueError):
    """A value that cannot be read as an MRD fraction."""


class UnconvertibleUnit(MrdValueError):
    def __init__(self, unit: str | None) -> None:
        self.unit = unit
        super().__init__(f"unit {unit!r} cannot be converted to a fraction" if unit else "value without unit")


class ImplausibleValue(MrdValueError):
    pass


class Comparator(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class Classification(StrEnum):
    NEGATIVE = "negative"
    POSITIVE = "positive"
    NOT_EVALUABLE = "not-evaluable"


class ClassificationRule(StrEnum):
    """Machine id of the rule that decided, stored with every classification as evidence (section 3)."""

    VALUE_AT_OR_ABOVE_THRESHOLD = "value-at-or-above-threshold"
    VALUE_BELOW_THRESHOLD = "value-below-threshold"
    UPPER_BOUND_BELOW_THRESHOLD = "upper-bound-below-threshold"
    UPPER_BOUND_NOT_BELOW_THRESHOLD = "upper-bound-not-below-threshold"
    LOWER_BOUND_AT_OR_ABOVE_THRESHOLD = "lower-bound-at-or-above-threshold"
    LOWER_BOUND_BELOW_THRESHOLD = "lower-bound-below-threshold"
    NOT_DETECTED_BELOW_THRESHOLD = "not-detected-below-threshold"
    NOT_DETECTED_SENSITIVITY_UNKNOWN = "not-detected-sensitivity-unknown"
    NOT_DETECTED_SENSITIVITY_INSUFFICIENT = "not-detected-sensitivity-insufficient"
    TOO_FEW_CELLS = "too-few-cells"
    SPECIMEN_INADEQUATE = "specimen-inadequate"
    UNCONVERTIBLE_UNIT = "unconvertible-unit"
    IMPLAUSIBLE_VALUE = "implausible-value"
    CONTRADICTORY_RESULT = "contradictory-result"
    NO_VALUE = "no-value"


@dataclass(frozen=True, slots=True)
class MrdMeasurement:
    """One MRD result as the FHIR layer extracted it; numbers as sent, not yet normalised.

    Sensitivity is either `sensitivity_fraction` (already a fraction) or `sensitivity_value` with
    `sensitivity_unit`; the fraction wins when both are given.
    """

    assay: Assay
    value: Decimal | None = None
    unit: str | None = None
    comparator: Comparator | None = None
    not_detected: bool = False
    sensitivity_fraction: Decimal | None = None
    sensitivity_value: Decimal | None = None
    sensitivity_unit: str | None = None
    cells_analysed: int | None = None
    specimen_inadequate: bool = False
    value_as_sent: str = ""
    reference: str = ""  # "Observation/<id>/_history/<version>"


@dataclass(frozen=True, slots=True)
class MrdClassification:
    """The decision and its evidence (section 3: Observation version, value as sent, normalised value,
    threshold, rule applied)."""

    classification: Classification
    rule: ClassificationRule
    reason: str
    assay: Assay
    threshold_fraction: Decimal
    fraction: Decimal | None  # the normalised value (or bound, with `comparator`)
    comparator: Comparator | None
    sensitivity_fraction: Decimal | None
    cells_analysed: int | None
    min_cells: int
    value_as_sent: str
    reference: str


def normalise_to_fraction(
    *, value: Decimal, unit: str | None, factors: Mapping[str, Decimal] = UCUM_FRACTION_FACTORS
) -> Decimal:
    """`value` in UCUM `unit` as a fraction, exactly; UnconvertibleUnit for a unit not in `factors`."""
    if unit is None or unit not in factors:
        raise UnconvertibleUnit(unit)
    with localcontext() as context:
        context.prec = _PRECISION
        return value * factors[unit]


def is_usable_status(status: str, *, usable: frozenset[str] = USABLE_RESULT_STATUSES) -> bool:
    return status in usable


def percent_text(fraction: Decimal) -> str:
    """A fraction as the percentage clinicians read: Decimal("0.0001") -> "0.01 %"."""
    with localcontext() as context:
        context.prec = _PRECISION
        percent = (fraction * 100).normalize()
    return f"{percent:f} %"


def classify(*, measurement: MrdMeasurement, rule: AssayRule) -> MrdClassification:
    if measurement.assay is not rule.assay:
        raise ValueError(f"a {measurement.assay} measurement cannot be classified with the {rule.assay} rule")
    fraction: Decimal | None = None
    sensitivity: Decimal | None = None
    if measurement.specimen_inadequate:
        verdict = _Verdict(_NE, ClassificationRule.SPECIMEN_INADEQUATE, "specimen flagged inadequate")
    else:
        try:
            fraction = _fraction(measurement.value, measurement.unit, rule.unit_factors)
            sensitivity = _sensitivity(measurement, rule.unit_factors)
        except UnconvertibleUnit as exc:
            verdict = _Verdict(_NE, ClassificationRule.UNCONVERTIBLE_UNIT, str(exc))
        except ImplausibleValue as exc:
            verdict = _Verdict(_NE, ClassificationRule.IMPLAUSIBLE_VALUE, str(exc))
        else:
            verdict = _decide(measurement, fraction=fraction, sensitivity=sensitivity, rule=rule)
    return MrdClassification(
        classification=verdict.classification,
        rule=verdict.rule,
        reason=verdict.reason,
        assay=rule.assay,
        threshold_fraction=rule.threshold_fraction,
        fraction=fraction,
        comparator=measurement.comparator,
        sensitivity_fraction=sensitivity,
        cells_analysed=measurement.cells_analysed,
        min_cells=rule.min_cells,
        value_as_sent=measurement.value_as_sent,
        reference=measurement.reference,
    )


_NE = Classification.NOT_EVALUABLE


@dataclass(frozen=True, slots=True)
class _Verdict:
    classification: Classification
    rule: ClassificationRule
    reason: str


def _decide(
    m: MrdMeasurement, *, fraction: Decimal | None, sensitivity: Decimal | None, rule: AssayRule
) -> _Verdict:
    threshold = rule.threshold_fraction
    at = f"the {rule.assay.value} threshold {percent_text(threshold)}"
    if m.not_detected or (fraction == 0 and m.comparator is None):
        return _not_detected(m, fraction=fraction, sensitivity=sensitivity, rule=rule)
    if fraction is None:
        return _Verdict(_NE, ClassificationRule.NO_VALUE, "no value and not reported as not detected")
    shown = f"{m.comparator or ''}{percent_text(fraction)}"
    if m.comparator in (Comparator.LT, Comparator.LE):
        # "<x" proves value < threshold when x <= threshold; "<=x" allows value == x, so needs x < threshold.
        below = fraction <= threshold if m.comparator is Comparator.LT else fraction < threshold
        if below:
            return _negative(
                m, ClassificationRule.UPPER_BOUND_BELOW_THRESHOLD, f"{shown} is below {at}", rule
            )
        return _Verdict(
            _NE, ClassificationRule.UPPER_BOUND_NOT_BELOW_THRESHOLD, f"{shown} cannot show a value below {at}"
        )
    if m.comparator in (Comparator.GT, Comparator.GE):
        if fraction >= threshold:
            return _Verdict(
                Classification.POSITIVE,
                ClassificationRule.LOWER_BOUND_AT_OR_ABOVE_THRESHOLD,
                f"{shown} is at or above {at}",
            )
        return _Verdict(
            _NE, ClassificationRule.LOWER_BOUND_BELOW_THRESHOLD, f"{shown} cannot decide against {at}"
        )
    if fraction >= threshold:
        # Equality is positive (section 3). A value that was seen needs no minimum cell count.
        return _Verdict(
            Classification.POSITIVE,
            ClassificationRule.VALUE_AT_OR_ABOVE_THRESHOLD,
            f"{shown} is at or above {at}",
        )
    return _negative(m, ClassificationRule.VALUE_BELOW_THRESHOLD, f"{shown} is below {at}", rule)


def _not_detected(
    m: MrdMeasurement, *, fraction: Decimal | None, sensitivity: Decimal | None, rule: AssayRule
) -> _Verdict:
    threshold = rule.threshold_fraction
    at = f"the {rule.assay.value} threshold {percent_text(threshold)}"
    if m.comparator in (Comparator.GT, Comparator.GE) or (fraction not in (None, 0) and m.comparator is None):
        return _Verdict(
            _NE,
            ClassificationRule.CONTRADICTORY_RESULT,
            f"reported as not detected but with a detected value {m.value_as_sent!r}",
        )
    # Not detected at limit of detection L means the level is < L, so L <= threshold proves negative.
    # A "<x" sent with it is a strict bound as well, "<=x" a non-strict one.
    bounds: list[tuple[str, bool]] = []
    if sensitivity is not None:
        bounds.append((f"sensitivity {percent_text(sensitivity)}", sensitivity <= threshold))
    if fraction is not None and m.comparator is Comparator.LT:
        bounds.append((f"<{percent_text(fraction)}", fraction <= threshold))
    if fraction is not None and m.comparator is Comparator.LE:
        bounds.append((f"<={percent_text(fraction)}", fraction < threshold))
    if not bounds:
        return _Verdict(
            _NE,
            ClassificationRule.NOT_DETECTED_SENSITIVITY_UNKNOWN,
            "not detected, but the sensitivity (limit of detection) is not known",
        )
    deciding = [text for text, proves_below in bounds if proves_below]
    if deciding:
        return _negative(
            m, ClassificationRule.NOT_DETECTED_BELOW_THRESHOLD, f"not detected with {deciding[0]}, {at}", rule
        )
    return _Verdict(
        _NE,
        ClassificationRule.NOT_DETECTED_SENSITIVITY_INSUFFICIENT,
        f"not detected with {bounds[0][0]}, which cannot show a value below {at}",
    )


def _negative(m: MrdMeasurement, rule_id: ClassificationRule, reason: str, rule: AssayRule) -> _Verdict:
    """A negative needs enough cells to see the threshold (section 3, "too few cells analysed")."""
    if m.cells_analysed is None:
        return _Verdict(Classification.NEGATIVE, rule_id, f"{reason}; cells analysed not reported")
    if m.cells_analysed < rule.min_cells:
        return _Verdict(
            _NE,
            ClassificationRule.TOO_FEW_CELLS,
            f"{m.cells_analysed} cells analysed; {rule.assay.value} needs {rule.min_cells} "
            f"to show a value below {percent_text(rule.threshold_fraction)}",
        )
    return _Verdict(Classification.NEGATIVE, rule_id, reason)


def _fraction(value: Decimal | None, unit: str | None, factors: Mapping[str, Decimal]) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite():
        raise ImplausibleValue(f"value {value} is not a number")
    fraction = normalise_to_fraction(value=value, unit=unit, factors=factors)
    if not 0 <= fraction <= 1:
        raise ImplausibleValue(f"value {value} {unit} is not between 0 % and 100 %")
    return fraction


def _sensitivity(m: MrdMeasurement, factors: Mapping[str, Decimal]) -> Decimal | None:
    if m.sensitivity_fraction is not None:
        if not m.sensitivity_fraction.is_finite() or not 0 < m.sensitivity_fraction <= 1:
            raise ImplausibleValue(f"sensitivity {m.sensitivity_fraction} is not a fraction in (0, 1]")
        return m.sensitivity_fraction
    sensitivity = _fraction(m.sensitivity_value, m.sensitivity_unit, factors)
    if sensitivity == 0:
        raise ImplausibleValue("a sensitivity of 0 is not a limit of detection")
    return sensitivity

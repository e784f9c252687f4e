"""MRD normalisation and classification, as tables a haematologist can check (PROTOCOL.md section 3).

Flow: negative < 0.01 % (1e-4), positive >= 0.01 %, 500,000 cells needed for a negative.
NGS:  negative < 0.0001 % (1e-6), positive >= 0.0001 %, 1,000,000 cells needed for a negative.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.mrd import (
    UCUM_FRACTION_FACTORS,
    Classification,
    ClassificationRule,
    Comparator,
    MrdMeasurement,
    UnconvertibleUnit,
    classify,
    is_usable_status,
    normalise_to_fraction,
    percent_text,
)
from app.domain.protocol import Assay, AssayRule

FLOW = AssayRule(
    assay=Assay.FLOW,
    concept="mrd-flow",
    label="Flow cytometry",
    threshold_fraction=Decimal("0.0001"),
    min_cells=500_000,
    unit_factors=UCUM_FRACTION_FACTORS,
)
NGS = AssayRule(
    assay=Assay.NGS,
    concept="mrd-ngs",
    label="NGS",
    threshold_fraction=Decimal("0.000001"),
    min_cells=1_000_000,
    unit_factors=UCUM_FRACTION_FACTORS,
)
RULES = {Assay.FLOW: FLOW, Assay.NGS: NGS}

POS, NEG, NE = Classification.POSITIVE, Classification.NEGATIVE, Classification.NOT_EVALUABLE
R = ClassificationRule
AT_OR_ABOVE, BELOW = R.VALUE_AT_OR_ABOVE_THRESHOLD, R.VALUE_BELOW_THRESHOLD
UPPER_BELOW, UPPER_NOT_BELOW = R.UPPER_BOUND_BELOW_THRESHOLD, R.UPPER_BOUND_NOT_BELOW_THRESHOLD
LOWER_AT_OR_ABOVE, LOWER_BELOW = R.LOWER_BOUND_AT_OR_ABOVE_THRESHOLD, R.LOWER_BOUND_BELOW_THRESHOLD
ND_BELOW, ND_UNKNOWN = R.NOT_DETECTED_BELOW_THRESHOLD, R.NOT_DETECTED_SENSITIVITY_UNKNOWN
ND_INSUFFICIENT, FEW_CELLS = R.NOT_DETECTED_SENSITIVITY_INSUFFICIENT, R.TOO_FEW_CELLS
INADEQUATE, BAD_UNIT, IMPLAUSIBLE = R.SPECIMEN_INADEQUATE, R.UNCONVERTIBLE_UNIT, R.IMPLAUSIBLE_VALUE
CONTRADICTORY = R.CONTRADICTORY_RESULT


def measurement(assay: Assay, sent: str, **extra: Any) -> MrdMeasurement:
    """'<0.01 %' -> comparator '<', value 0.01, unit '%'; 'not detected' -> not_detected."""
    if sent == "not detected":
        return MrdMeasurement(assay=assay, not_detected=True, value_as_sent=sent, **extra)
    number, unit = sent.split(" ")
    comparator = next((c for c in ("<=", ">=", "<", ">") if number.startswith(c)), None)
    return MrdMeasurement(
        assay=assay,
        value=Decimal(number.removeprefix(comparator or "")),
        unit=unit,
        comparator=None if comparator is None else Comparator(comparator),
        value_as_sent=sent,
        **extra,
    )


def lod(sent: str) -> dict[str, Any]:
    """A stated sensitivity (limit of detection), e.g. lod("0.001 %")."""
    number, unit = sent.split(" ")
    return {"sensitivity_value": Decimal(number), "sensitivity_unit": unit}


ND = {"not_detected": True}
HAEMODILUTED = {"specimen_inadequate": True}
MANY = 2_000_000  # more cells than either assay needs


Row = tuple[str, int | None, dict[str, Any], Classification, ClassificationRule]

FLOW_CASES: list[Row] = [
    # sent                     cells    extra           result
    ("0.01 %",                 MANY,    {},             POS, AT_OR_ABOVE),        # equality is positive
    ("0.0099 %",               MANY,    {},             NEG, BELOW),
    ("0.5 %",                  MANY,    {},             POS, AT_OR_ABOVE),
    ("0.0001 1",               MANY,    {},             POS, AT_OR_ABOVE),        # as a fraction
    ("0.00009 1",              MANY,    {},             NEG, BELOW),
    ("100 /10*6",              MANY,    {},             POS, AT_OR_ABOVE),        # cells per million
    ("99 {cells}/10*6{cells}", MANY,    {},             NEG, BELOW),
    ("99 10*-6",               MANY,    {},             NEG, BELOW),              # millionths
    ("<0.01 %",                MANY,    {},             NEG, UPPER_BELOW),        # below the threshold
    ("<0.005 %",               MANY,    {},             NEG, UPPER_BELOW),
    ("<0.05 %",                MANY,    {},             NE,  UPPER_NOT_BELOW),    # sensitivity too low
    ("<=0.01 %",               MANY,    {},             NE,  UPPER_NOT_BELOW),    # could equal the threshold
    ("<=0.009 %",              MANY,    {},             NEG, UPPER_BELOW),
    (">0.5 %",                 None,    {},             POS, LOWER_AT_OR_ABOVE),
    (">=0.01 %",               None,    {},             POS, LOWER_AT_OR_ABOVE),
    (">0.005 %",               None,    {},             NE,  LOWER_BELOW),        # could be either side
    ("not detected",           MANY,    lod("0.001 %"), NEG, ND_BELOW),
    ("not detected",           MANY,    lod("0.01 %"),  NEG, ND_BELOW),           # level < limit == threshold
    ("not detected",           MANY,    lod("0.05 %"),  NE,  ND_INSUFFICIENT),
    ("not detected",           MANY,    {},             NE,  ND_UNKNOWN),         # no stated sensitivity
    ("<0.01 %",                MANY,    ND,             NEG, ND_BELOW),           # 'not detected (<0.01 %)'
    ("0 %",                    MANY,    {},             NE,  ND_UNKNOWN),         # zero = not detected
    ("0.02 %",                 MANY,    ND,             NE,  CONTRADICTORY),      # detected?
    ("0.005 %",                100_000, {},             NE,  FEW_CELLS),          # too few cells
    ("not detected",           100_000, lod("0.001 %"), NE,  FEW_CELLS),
    ("0.5 %",                  100_000, {},             POS, AT_OR_ABOVE),        # seen: positive
    ("0.005 %",                None,    {},             NEG, BELOW),              # cell count not sent
    ("0.5 %",                  MANY,    HAEMODILUTED,   NE,  INADEQUATE),
    ("0.01 mg/dL",             MANY,    {},             NE,  BAD_UNIT),
    ("150 %",                  MANY,    {},             NE,  IMPLAUSIBLE),
]  # fmt: skip

NGS_CASES: list[Row] = [
    # sent           cells    extra           result
    ("0.0001 %",     MANY,    {},             POS, AT_OR_ABOVE),      # equality is positive
    ("0.000099 %",   MANY,    {},             NEG, BELOW),
    ("1 /10*6",      MANY,    {},             POS, AT_OR_ABOVE),
    ("<1 /10*6",     MANY,    {},             NEG, UPPER_BELOW),
    ("0.01 %",       MANY,    {},             POS, AT_OR_ABOVE),      # flow-positive level
    ("<0.001 %",     MANY,    {},             NE,  UPPER_NOT_BELOW),  # flow-level sensitivity
    ("not detected", MANY,    lod("1 /10*6"), NEG, ND_BELOW),
    ("not detected", MANY,    lod("0.001 %"), NE,  ND_INSUFFICIENT),
    ("0.00005 %",    500_000, {},             NE,  FEW_CELLS),        # NGS needs 1,000,000 cells
]  # fmt: skip


def sentence(assay: Assay, row: Row) -> str:
    sent, cells, extra, expected, _ = row
    said = [f"{assay} {sent}"]
    if "sensitivity_value" in extra:
        said.append(f"sensitivity {extra['sensitivity_value']} {extra['sensitivity_unit']}")
    said += [f"{key.replace('_', ' ')}" for key, value in extra.items() if value is True]
    said.append("cells not reported" if cells is None else f"{cells:,} cells")
    return f"{', '.join(said)} is {expected}"


@pytest.mark.parametrize(
    ("assay", "row"),
    [pytest.param(Assay.FLOW, row, id=sentence(Assay.FLOW, row)) for row in FLOW_CASES]
    + [pytest.param(Assay.NGS, row, id=sentence(Assay.NGS, row)) for row in NGS_CASES],
)
def test_mrd_results_are_classified_as_the_protocol_says(assay: Assay, row: Row) -> None:
    sent, cells, extra, expected, rule = row

    result = classify(measurement=measurement(assay, sent, cells_analysed=cells, **extra), rule=RULES[assay])

    assert (result.classification, result.rule) == (expected, rule), result.reason


@pytest.mark.parametrize(
    ("value", "unit", "fraction"),
    [
        ("0.01", "%", "0.0001"),
        ("0.0001", "1", "0.0001"),
        ("100", "/10*6", "0.0001"),
        ("100", "{cells}/10*6{cells}", "0.0001"),
        ("100", "10*-6", "0.0001"),
        ("0.0001", "%", "0.000001"),
    ],
)
def test_each_accepted_unit_normalises_to_the_same_fraction(value: str, unit: str, fraction: str) -> None:
    assert normalise_to_fraction(value=Decimal(value), unit=unit) == Decimal(fraction)


@pytest.mark.parametrize("unit", ["mg/dL", "percent", "ppm", "", None])
def test_a_unit_that_cannot_be_converted_raises(unit: str | None) -> None:
    with pytest.raises(UnconvertibleUnit):
        normalise_to_fraction(value=Decimal("1"), unit=unit)


def test_normalisation_is_exact_decimal_arithmetic() -> None:
    assert normalise_to_fraction(value=Decimal("0.0099"), unit="%") == Decimal("0.000099")
    assert percent_text(Decimal("0.000099")) == "0.0099 %"


def test_a_classification_carries_its_evidence() -> None:
    sent = measurement(Assay.FLOW, "0.0099 %", cells_analysed=MANY, reference="Observation/7/_history/2")

    result = classify(measurement=sent, rule=FLOW)

    assert result.reference == "Observation/7/_history/2"
    assert result.value_as_sent == "0.0099 %"
    assert result.fraction == Decimal("0.000099")
    assert result.threshold_fraction == Decimal("0.0001")
    assert result.rule is ClassificationRule.VALUE_BELOW_THRESHOLD
    assert result.reason == "0.0099 % is below the flow threshold 0.01 %"


def test_a_measurement_of_one_assay_cannot_use_the_other_assays_rule() -> None:
    with pytest.raises(ValueError, match="ngs measurement"):
        classify(measurement=measurement(Assay.NGS, "0.01 %"), rule=FLOW)


@pytest.mark.parametrize(
    ("status", "usable"),
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("entered-in-error", False),
    ],
)
def test_only_final_amended_and_corrected_results_are_used(status: str, usable: bool) -> None:
    assert is_usable_status(status) is usable


# Each unit as the power of ten that turns a fraction into a value in that unit.
_SHIFT = {"1": 0, "%": 2, "/10*6": 6, "{cells}/10*6{cells}": 6, "10*-6": 6}
_special = st.sampled_from(
    [Decimal(0), Decimal("0.0001"), Decimal("0.000001"), Decimal("0.000099"), Decimal(1)]
)
_fractions = st.one_of(_special, st.decimals(min_value=0, max_value=1, places=10))
_sensitivities = st.one_of(st.none(), _fractions.filter(lambda d: d > 0))


@given(
    fraction=_fractions,
    comparator=st.sampled_from([None, *Comparator]),
    not_detected=st.booleans(),
    sensitivity=_sensitivities,
    cells=st.one_of(st.none(), st.integers(min_value=0, max_value=3_000_000)),
    assay=st.sampled_from(list(Assay)),
)
def test_the_unit_a_value_is_sent_in_never_changes_its_classification(
    fraction: Decimal,
    comparator: Comparator | None,
    not_detected: bool,
    sensitivity: Decimal | None,
    cells: int | None,
    assay: Assay,
) -> None:
    outcomes = set()
    for unit, shift in _SHIFT.items():
        sent = MrdMeasurement(
            assay=assay,
            value=fraction.scaleb(shift),
            unit=unit,
            comparator=comparator,
            not_detected=not_detected,
            sensitivity_value=None if sensitivity is None else sensitivity.scaleb(shift),
            sensitivity_unit=unit,
            cells_analysed=cells,
        )
        result = classify(measurement=sent, rule=RULES[assay])
        assert result.fraction == fraction
        outcomes.add((result.classification, result.rule))
    assert len(outcomes) == 1


def test_the_mrd_timepoint_and_protocol_values_import_no_web_database_or_fhir_library() -> None:
    # STYLE.md habit 1. A fresh interpreter, because this test session may already have imported pydantic.
    probe = (
        "import sys, app.domain.mrd, app.domain.timepoints, app.domain.protocol; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    root = Path(__file__).resolve().parents[2]
    output = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=root
    )
    loaded = set(ast.literal_eval(output.stdout))
    assert not loaded & {"fastapi", "sqlalchemy", "pydantic", "fhir", "httpx"}

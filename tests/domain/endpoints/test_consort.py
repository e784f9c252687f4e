"""CONSORT flow of the study arm on the hand-computable cohort."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.endpoints import ScreeningInputError, ScreeningOutcome, consort_flow, consort_to_json

from .trial_cohort import AS_OF, PROTOCOL, ref, timelines

ELIGIBLE = ScreeningOutcome("eligible")
SCREENING = {
    **{ref(name): ELIGIBLE for name in ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "N4")},
    ref("N1"): ScreeningOutcome("ineligible", ("d19-mrd",)),
    "Patient/N2": ScreeningOutcome("ineligible", ("sigm-positive", "cns-involvement")),
    "Patient/N3": ScreeningOutcome("incomplete", ("consent",)),
    "Patient/C1": ScreeningOutcome("ineligible", ("not a candidate",)),  # a historical control: not screened
}


def consort(screening: dict[str, ScreeningOutcome] = SCREENING) -> dict[str, Any]:
    flow = consort_flow(timelines=timelines(), protocol=PROTOCOL, as_of=AS_OF, screening=screening)
    return consort_to_json(flow, explain=True)


def test_counts_at_every_step() -> None:
    assert [(s["step"], s["n"]) for s in consort()["steps"]] == [
        ("screened", 12),  # S1-S8, N1-N4
        ("eligible", 9),  # S1-S8, N4
        ("enrolled", 8),  # S1-S8
        ("started-blinatumomab", 7),  # not S6
        ("completed-course", 6),  # not S5
        ("evaluable-flow", 4),  # S1, S2, S3, S7
        ("evaluable-ngs", 4),  # S1, S2, S4, S7
    ]


def test_reasons_at_every_drop() -> None:
    assert [(d["from"], d["to"], d["n"], d["reasons"]) for d in consort()["drops"]] == [
        (
            "screened",
            "eligible",
            3,
            {
                "incomplete: consent": 1,
                "ineligible: cns-involvement": 1,  # N2 has two reasons
                "ineligible: d19-mrd": 1,
                "ineligible: sigm-positive": 1,
            },
        ),
        ("eligible", "enrolled", 1, {"eligible, not enrolled": 1}),
        ("enrolled", "started-blinatumomab", 1, {"withdrew before starting": 1}),
        ("started-blinatumomab", "completed-course", 1, {"course incomplete, withdrew": 1}),
        (
            "completed-course",
            "evaluable-flow",
            2,
            {
                "missing: no result in the POST_BLINA window": 1,  # S8: collected after the cut-off
                "not-evaluable: upper-bound-not-below-threshold": 1,  # S4: <0.05 %
            },
        ),
        ("completed-course", "evaluable-ngs", 2, {"missing: no result in the POST_BLINA window": 2}),
    ]
    assert consort()["drops"][1]["patients"] == [ref("N4")]
    assert consort()["historical_controls_enrolled"] == 4


def test_an_enrolled_patient_not_eligible_at_screening_is_shown_and_stays_enrolled() -> None:
    flagged = {**SCREENING, ref("S4"): ScreeningOutcome("ineligible", ("d46-mrd-1pct",))}
    flagged.pop(ref("S7"))
    out = consort(flagged)
    assert out["enrolled_not_eligible_at_screening"] == [
        {"patient": ref("S4"), "screening": "ineligible", "reasons": ["d46-mrd-1pct"]},
        {"patient": ref("S7"), "screening": "not recorded", "reasons": []},
    ]
    assert [s["n"] for s in out["steps"]][:3] == [11, 7, 8]


def test_screening_outcomes_are_checked() -> None:
    with pytest.raises(ScreeningInputError):
        ScreeningOutcome("maybe")
    with pytest.raises(ScreeningInputError, match="two screening outcomes"):
        consort({ref("S1"): ELIGIBLE, "Patient/S1": ELIGIBLE})

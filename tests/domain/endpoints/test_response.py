"""MRD response (waterfall) on the hand-computable cohort: log10(pre) - log10(post) per patient."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.domain.endpoints import mrd_response, response_to_json
from app.domain.endpoints.errors import NoBaselineTimepoint
from app.protocol import load_protocol

from .trial_cohort import AS_OF, FLOW, POST, PRE, PROTOCOL, S1, mrd, timelines


def by_assay() -> dict[str, Any]:
    out = response_to_json(mrd_response(timelines=timelines(), protocol=PROTOCOL, as_of=AS_OF))
    found: dict[str, Any] = out["by_assay"]
    return found


def rows(assay: str) -> list[tuple[str, float | None, str | None]]:
    return [
        (p["patient"].split("/")[1], p["log10_reduction"], p["reduction_bound"])
        for p in by_assay()[assay]["patients"]
    ]


def test_flow_waterfall_uses_bounds_and_marks_them() -> None:
    assert rows("flow") == [
        ("S3", 2.477121, "at-least"),  # 0.3 % -> not detected at 0.001 %: log10(300), post is only a bound
        ("S1", 2.0, "exact"),  # 0.5 % -> 0.005 %: log10(100)
        ("S2", 1.69897, "exact"),  # 1 % -> 0.02 %: log10(50)
        ("S4", 0.60206, "at-least"),  # 0.2 % -> <0.05 %: log10(4)
        ("S5", None, None),  # no POST result
        ("S7", None, None),  # no PRE result
        ("S8", None, None),  # POST collected after the cut-off
    ]


def test_levels_show_the_value_as_sent_and_the_exact_fraction() -> None:
    s3 = by_assay()["flow"]["patients"][0]
    assert s3["pre"] == {
        "status": "positive",
        "observation": "Observation/S3-pre-flow/_history/1",
        "value_as_sent": "0.3 %",
        "fraction": "0.003",
        "bound": "exact",
        "reason": "0.3 % is at or above the flow threshold 0.01 %",
    }
    assert (s3["post"]["fraction"], s3["post"]["bound"], s3["post"]["status"]) == (
        "0.00001",
        "at-most",
        "negative",
    )
    s5 = by_assay()["flow"]["patients"][4]
    assert s5["reason"] == "POST_BLINA: no bone marrow flow result in 2025-01-26..2025-02-02"


def test_ngs_waterfall() -> None:
    assert rows("ngs")[:2] == [
        ("S4", 4.0, "exact"),
        ("S1", 3.90309, "exact"),
    ]  # log10(1e-3/1e-7), log10(8000)
    assert [r[1] for r in rows("ngs")[2:]] == [None] * 5


def test_transitions_count_patients_converting_positive_to_negative() -> None:
    flow = by_assay()["flow"]
    assert flow["converted_positive_to_negative"] == 2  # S1, S3
    assert {k: v for k, v in flow["transitions"].items() if v} == {
        "positive->negative": 2,
        "positive->positive": 1,  # S2
        "positive->not-evaluable": 1,  # S4
        "positive->missing": 2,  # S5, S8
        "missing->negative": 1,  # S7
    }
    assert len(flow["transitions"]) == 16  # every pair is listed, zero or not
    ngs = by_assay()["ngs"]
    assert ngs["converted_positive_to_negative"] == 2  # S1, S4
    assert {k: v for k, v in ngs["transitions"].items() if v} == {
        "positive->negative": 2,
        "missing->positive": 2,  # S2, S7
        "missing->missing": 3,  # S3, S5, S8
    }
    assert [e["patient"].split("/")[1] for e in flow["excluded"]] == ["S6"]


@pytest.mark.parametrize(
    ("pre", "post", "reduction", "bound"),
    [
        # pre sent   post sent        log10 reduction   what it is
        ("1 %",      "0.001 %",       3.0,              "exact"),
        (">1 %",     "0.001 %",       3.0,              "at-least"),   # the pre level may be higher
        ("1 %",      "<0.001 %",      3.0,              "at-least"),   # the post level may be lower
        ("1 %",      "nd <0.001 %",   3.0,              "at-least"),   # not detected at the sensitivity
        ("<1 %",     "0.001 %",       3.0,              "at-most"),
        ("1 %",      ">0.001 %",      3.0,              "at-most"),
        ("<1 %",     "<0.001 %",      None,             None),         # bounds in the same direction
        ("0.8 %",    "0.8 %",         0.0,              "exact"),      # no change: 0.0, never -0.0
        ("0.01 %",   "1 %",           -2.0,             "exact"),      # an increase is negative
    ],
)  # fmt: skip
def test_log_reduction_with_bounds(pre: str, post: str, reduction: float | None, bound: str | None) -> None:
    results = (mrd("X-pre", FLOW, PRE, pre), mrd("X-post", FLOW, POST, post, cells=600_000))
    record = replace(S1, mrd_results=results)
    out = response_to_json(mrd_response(timelines=timelines(record), protocol=PROTOCOL, as_of=AS_OF))
    (row,) = out["by_assay"]["flow"]["patients"]
    assert (row["log10_reduction"], row["reduction_bound"]) == (reduction, bound)
    assert json.dumps(row["log10_reduction"]) != "-0.0"


def test_a_protocol_without_a_baseline_timepoint_has_no_mrd_response() -> None:
    other = load_protocol(Path(__file__).parents[2] / "protocol" / "fixtures" / "other_trial.toml")
    with pytest.raises(NoBaselineTimepoint, match=r"names no \[primary\].baseline_timepoint"):
        mrd_response(timelines=[], protocol=other, as_of=AS_OF, analysis_set="full")

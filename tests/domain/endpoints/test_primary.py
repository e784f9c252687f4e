"""Primary endpoint on the hand-computable cohort (trial_cohort.py; PROTOCOL.md section 5).

p-values are exact binomial tails, written as the fractions they are: P(X >= 3 | n = 7, p0 = 1/2) =
(C(7,3) + C(7,4) + C(7,5) + C(7,6) + C(7,7)) / 2^7 = 99/128. Confidence intervals are R binom.test values,
or closed forms where one exists: x = 0 gives (0, 1 - 0.025^(1/n)), x = n gives (0.025^(1/n), 1), x = 1 of 2
gives (1 - 0.975^(1/2), 0.975^(1/2)).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from app.domain.endpoints import UnknownAnalysisSet, primary_endpoint, primary_to_json
from app.domain.protocol import HistoricalControl

from .trial_cohort import (
    AS_OF,
    C1,
    C2,
    C3,
    C4,
    FLOW,
    NGS,
    PROTOCOL,
    RECORDS,
    S7,
    ref,
    timelines,
    without_result,
)

ILLUSTRATIVE = "illustrative, not a published rate"


def primary(assay: Any = FLOW, analysis_set: str = "full", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("timelines", timelines())
    kwargs.setdefault("protocol", PROTOCOL)
    kwargs.setdefault("as_of", AS_OF)
    result = primary_endpoint(assay=assay, analysis_set=analysis_set, **kwargs)
    return primary_to_json(result, explain=True)


def line(out: dict[str, Any]) -> tuple[int, int, int, float | None, float | None]:
    """(n negative, n, imputed, rate, one-sided p)."""
    return out["n_negative"], out["n"], out["imputed_not_negative"], out["rate"], out["p_value_one_sided"]


def patients(entries: list[dict[str, Any]]) -> list[str]:
    return [e["patient"].split("/")[1] for e in entries]


def test_full_set_counts_missing_and_not_evaluable_post_blina_as_not_negative() -> None:
    out = primary()
    # S1, S3, S7 negative; S2 positive; S4 not evaluable (<0.05 %), S5 (withdrew after 5 days) and S8 (result
    # after the cut-off) missing: 3 / 7, three imputed. S6 never received blinatumomab: not in the set.
    assert line(out["overall"]) == (3, 7, 3, round(3 / 7, 6), round(99 / 128, 6))
    assert out["overall"]["ci95"] == [0.098988, 0.815948]  # R binom.test(3, 7)
    assert out["overall"]["p0"] == 0.5
    assert out["overall"]["p0_source"] == ILLUSTRATIVE
    assert patients(out["overall"]["explain"]["numerator"]) == ["S1", "S3", "S7"]
    assert patients(out["overall"]["explain"]["denominator"]) == ["S1", "S2", "S3", "S4", "S5", "S7", "S8"]
    assert patients(out["overall"]["explain"]["imputed"]) == ["S4", "S5", "S8"]
    assert [(e["patient"], e["reason"]) for e in out["excluded"]] == [
        (ref("S6"), "did not receive blinatumomab (withdrew before it)")
    ]
    assert out["analysis_set"]["name"] == "full"
    assert out["as_of"] == "2026-06-30"
    assert out["protocol_version"] == PROTOCOL.version


def test_per_protocol_set_needs_a_completed_course_and_an_evaluable_result() -> None:
    out = primary(analysis_set="per-protocol")
    assert line(out["overall"]) == (3, 4, 0, 0.75, round(5 / 16, 6))  # S1, S2, S3, S7
    assert out["overall"]["ci95"] == [0.19412, 0.993691]  # R binom.test(3, 4); upper = 0.975^(1/4)
    assert {e["patient"].split("/")[1]: e["reason"] for e in out["excluded"]} == {
        "S4": "POST_BLINA flow result not-evaluable: "
        "<0.05 % cannot show a value below the flow threshold 0.01 %",
        "S5": "blinatumomab course incomplete (5 days infused)",
        "S6": "did not receive blinatumomab (withdrew before it)",
        "S8": "POST_BLINA flow result missing: no bone marrow flow result in 2026-06-28..2026-07-05",
    }


def test_ngs_uses_its_own_threshold_and_p0() -> None:
    full = primary(NGS)
    # S1, S4 negative; S2, S7 positive (0.001 %, 0.0002 % >= 0.0001 %); S3, S5, S8 without NGS: imputed.
    # P(X >= 2 | 7, 0.3) = 1 - 0.7^7 - 7 * 0.3 * 0.7^6
    assert line(full["overall"]) == (2, 7, 3, round(2 / 7, 6), round(1 - 0.7**7 - 7 * 0.3 * 0.7**6, 6))
    assert full["overall"]["p0"] == 0.3
    per_protocol = primary(NGS, "per-protocol")
    assert line(per_protocol["overall"]) == (2, 4, 0, 0.5, round(1 - 0.7**4 - 4 * 0.3 * 0.7**3, 6))


def test_by_stratum_and_by_site_add_up_to_the_overall_line() -> None:
    out = primary()
    assert {k: line(v) for k, v in out["by_stratum"].items()} == {
        "low": (2, 4, 2, 0.5, round(11 / 16, 6)),  # S1, S3 negative; S5, S8 imputed
        "intermediate": (1, 3, 1, round(1 / 3, 6), round(7 / 8, 6)),  # S7 negative; S2 positive; S4 imputed
    }
    assert {k: line(v) for k, v in out["by_site"].items()} == {
        "HEFEI-APCH": (2, 3, 1, round(2 / 3, 6), 0.5),  # S1, S7 negative; S4 imputed
        "FUZHOU-FCH": (0, 2, 1, 0.0, 1.0),  # S2 positive; S5 imputed
        "SHANGHAI-SCMC": (1, 2, 1, 0.5, 0.75),  # S3 negative; S8 imputed
        "NINGBO-NWCH": (0, 0, 0, None, None),
    }
    assert out["by_site"]["FUZHOU-FCH"]["ci95"] == [0.0, round(1 - 0.025**0.5, 6)]
    assert out["by_site"]["SHANGHAI-SCMC"]["ci95"] == [round(1 - 0.975**0.5, 6), round(0.975**0.5, 6)]
    ningbo = out["by_site"]["NINGBO-NWCH"]
    assert ningbo["ci95"] is None
    assert ningbo["reason"] == "no patients in this group (n = 0)"


def test_the_patient_level_control_has_its_own_rate_and_fisher_test() -> None:
    control = primary()["control"]
    assert control["timepoint"] == "D46"
    overall = control["overall"]
    assert (overall["n_negative"], overall["n"], overall["rate"]) == (2, 4, 0.5)  # C1, C4 negative
    assert overall["ci95"] == [0.067586, 0.932414]  # R binom.test(2, 4)
    # Fisher [[3, 4], [2, 2]]: the observed table is the most likely of C(7,a)C(4,5-a)/C(11,5), so p = 1.
    fisher = overall["fisher_vs_study"]
    assert (fisher["odds_ratio"], fisher["p_value_two_sided"]) == (0.75, 1.0)
    low = control["by_stratum"]["low"]
    assert (low["n_negative"], low["n"], low["ci95"]) == (2, 2, [round(0.025**0.5, 6), 1.0])
    # [[2, 2], [2, 0]]: tables with 2, 3, 4 study negatives have weights 6, 8, 1 of 15; p = (6 + 1) / 15.
    assert low["fisher_vs_study"]["p_value_two_sided"] == round(7 / 15, 6)
    assert low["fisher_vs_study"]["odds_ratio"] == 0.0
    intermediate = control["by_stratum"]["intermediate"]["fisher_vs_study"]
    assert intermediate["odds_ratio"] is None
    assert intermediate["reason"] == "odds ratio undefined (a zero cell in the denominator)"


def test_control_ngs_missing_at_d46_is_imputed_in_the_full_set_only() -> None:
    def counts(out: dict[str, Any]) -> tuple[int, int, int]:
        return out["n_negative"], out["n"], out["imputed_not_negative"]

    assert counts(primary(NGS)["control"]["overall"]) == (1, 4, 2)  # C2 negative; C3, C4 without NGS
    assert counts(primary(NGS, "per-protocol")["control"]["overall"]) == (1, 2, 0)


def test_without_control_patients_the_control_block_says_why() -> None:
    study_only = [r for r in RECORDS if r not in (C1, C2, C3, C4)]
    control = primary(timelines=timelines(*study_only))["control"]
    assert control["overall"] is None
    assert control["reason"] == "no historical-control patients enrolled at the cut-off"


def test_an_entered_in_error_result_absent_from_the_record_changes_the_rate() -> None:
    records = [without_result(r, "S7-post-flow") if r is S7 else r for r in RECORDS]
    out = primary(timelines=timelines(*records))
    # S7 is now missing, so imputed not negative: 2 / 7; P(X >= 2 | 7, 1/2) = 1 - 8/128.
    assert line(out["overall"]) == (2, 7, 4, round(2 / 7, 6), round(120 / 128, 6))


def test_a_result_collected_after_the_cut_off_is_not_counted_until_the_cut_off_moves() -> None:
    assert line(primary()["overall"])[:3] == (3, 7, 3)  # S8's 2026-07-02 result is after 2026-06-30
    later = primary(as_of=dt.date(2026, 7, 2))
    assert line(later["overall"])[:3] == (4, 7, 2)
    assert "S8" in patients(later["overall"]["explain"]["numerator"])


def test_a_course_still_running_at_the_cut_off_is_in_the_full_set_but_not_per_protocol() -> None:
    as_of = dt.date(2026, 6, 20)  # S8 started on 2026-06-15; its bag ends on 2026-06-28
    full = primary(as_of=as_of)
    assert "S8" in patients(full["overall"]["explain"]["imputed"])
    excluded = {
        e["patient"]: e["reason"] for e in primary(analysis_set="per-protocol", as_of=as_of)["excluded"]
    }
    assert excluded[ref("S8")] == "blinatumomab still running at the cut-off"


def test_a_stratum_specific_p0_is_used_for_that_stratum_only() -> None:
    low = HistoricalControl(FLOW, "low", Decimal("0.25"), ILLUSTRATIVE)
    protocol = replace(PROTOCOL, historical_controls=(*PROTOCOL.historical_controls, low))
    out = primary(protocol=protocol)
    # P(X >= 2 | 4, 1/4) = 1 - (3/4)^4 - 4 (1/4)(3/4)^3
    assert out["by_stratum"]["low"]["p0"] == 0.25
    assert out["by_stratum"]["low"]["p_value_one_sided"] == round(1 - 0.75**4 - 0.75**3, 6)
    assert out["by_stratum"]["intermediate"]["p0"] == 0.5
    assert out["overall"]["p0"] == 0.5


def test_without_a_configured_p0_there_is_no_test_and_a_reason() -> None:
    protocol = replace(PROTOCOL, historical_controls=())
    overall = primary(protocol=protocol)["overall"]
    assert (overall["p0"], overall["p0_source"], overall["p_value_one_sided"]) == (None, None, None)
    assert overall["reason"] == "no historical control rate p0 is configured for this assay"
    assert overall["rate"] == round(3 / 7, 6)


def test_an_unknown_analysis_set_is_a_domain_error() -> None:
    with pytest.raises(UnknownAnalysisSet, match="'as-treated'"):
        primary(analysis_set="as-treated")


def test_explain_names_the_resource_versions_behind_each_patient() -> None:
    numerator = primary()["overall"]["explain"]["numerator"]
    assert numerator[0] == {
        "patient": ref("S1"),
        "status": "negative",
        "resources": [
            "ResearchSubject/S1/_history/1",
            "MedicationAdministration/S1-blina/_history/1",
            "Observation/S1-post-flow/_history/1",
        ],
    }
    imputed = primary()["overall"]["explain"]["imputed"]
    assert imputed[1]["status"] == "imputed-not-negative"
    assert imputed[1]["resources"] == [
        "ResearchSubject/S5/_history/1",
        "MedicationAdministration/S5-blina/_history/1",
    ]


def test_a_patient_without_a_provisional_risk_is_shown_in_an_unknown_stratum() -> None:
    records = [replace(r, observations=()) if r is S7 else r for r in RECORDS]
    out = primary(timelines=timelines(*records))
    assert list(out["by_stratum"]) == ["low", "intermediate", "unknown"]
    assert line(out["by_stratum"]["unknown"]) == (1, 1, 0, 1.0, 0.5)  # P(X >= 1 | 1, 1/2)
    assert {"patient": ref("S7"), "flag": "no provisional-risk value: stratum unknown"} in out["flags"]

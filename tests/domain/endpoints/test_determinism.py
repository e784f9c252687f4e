"""The same cut-off on the same data gives byte-identical JSON, even after later data arrive (issue 6)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app.domain.endpoints import (
    ScreeningOutcome,
    adverse_events,
    adverse_events_to_json,
    consort_flow,
    consort_to_json,
    costs_to_json,
    efs_to_json,
    event_free_survival,
    healthcare_costs,
    mrd_response,
    primary_endpoint,
    primary_to_json,
    response_to_json,
)
from app.domain.timeline import PatientTimeline

from .trial_cohort import AS_OF, FLOW, LATE, NGS, PROTOCOL, RECORDS, ref, timelines

Analysis = Callable[[Sequence[PatientTimeline]], dict[str, Any]]
SCREENING = {ref(n): ScreeningOutcome("eligible") for n in ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")}
COMMON: dict[str, Any] = {"protocol": PROTOCOL, "as_of": AS_OF}

ANALYSES: dict[str, Analysis] = {
    "primary-flow-full": lambda t: primary_to_json(
        primary_endpoint(timelines=t, assay=FLOW, analysis_set="full", **COMMON), explain=True
    ),
    "primary-ngs-per-protocol": lambda t: primary_to_json(
        primary_endpoint(timelines=t, assay=NGS, analysis_set="per-protocol", **COMMON), explain=True
    ),
    "mrd-response": lambda t: response_to_json(mrd_response(timelines=t, **COMMON), explain=True),
    "efs": lambda t: efs_to_json(event_free_survival(timelines=t, **COMMON), explain=True),
    "adverse-events": lambda t: adverse_events_to_json(adverse_events(timelines=t, **COMMON), explain=True),
    "costs": lambda t: costs_to_json(healthcare_costs(timelines=t, **COMMON), explain=True),
    "consort": lambda t: consort_to_json(
        consort_flow(timelines=t, screening=SCREENING, **COMMON), explain=True
    ),
}


def dumped(analysis: Analysis, given: Sequence[PatientTimeline]) -> str:
    return json.dumps(analysis(given), sort_keys=True, allow_nan=False)


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_the_same_inputs_give_byte_identical_json(name: str) -> None:
    analysis = ANALYSES[name]
    assert dumped(analysis, timelines()) == dumped(analysis, timelines())


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_the_order_of_the_patients_does_not_matter(name: str) -> None:
    shuffled = list(timelines())
    random.Random(6).shuffle(shuffled)
    assert dumped(ANALYSES[name], shuffled) == dumped(ANALYSES[name], timelines())


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_a_patient_whose_data_are_all_after_the_cut_off_changes_nothing(name: str) -> None:
    assert dumped(ANALYSES[name], timelines(*RECORDS, LATE)) == dumped(ANALYSES[name], timelines())

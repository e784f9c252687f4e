"""Response schemas of the trial API, so that the OpenAPI document says what each answer holds.

They describe the dicts the services build (and FastAPI checks every answer against them); the services
stay free of HTTP concerns.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnchorSource(Schema):
    date: str
    kind: Literal["data", "trial-office"]
    reference: str


class AnchorView(Schema):
    date: str | None
    conflict: bool
    reason: str
    sources: list[AnchorSource]


class Interruption(Schema):
    first_day: str
    last_day: str


class CourseView(Schema):
    start: str
    end: str | None
    infused_days: int
    complete: bool
    interruptions: list[Interruption]
    administrations: list[str]


class Classified(Schema):
    value_as_sent: str
    fraction: str | None
    comparator: str | None
    threshold_fraction: str
    classification: Literal["negative", "positive", "not-evaluable"]
    rule: str
    reason: str


class ChosenResult(Classified):
    observation: str
    local_date: str | None


class Window(Schema):
    target: str
    start: str
    end: str


class TimepointView(Schema):
    timepoint: str
    assay: Literal["flow", "ngs"]
    required: bool
    status: Literal["assigned", "missing", "awaiting-anchor"]
    selection: str
    window: Window | None
    reason: str
    result: ChosenResult | None
    alternatives: list[ChosenResult]


class Nearest(Schema):
    timepoint: str
    days_outside: int | None


class ResultView(Classified):
    observation: str
    assay: Literal["flow", "ngs"]
    specimen: str | None
    collected: str | None
    local_date: str | None
    trial_day: int | None
    timepoints: list[str]
    unassigned_reason: str | None
    placement: str
    nearest: Nearest | None


class NotUsed(Schema):
    observation: str
    reason: str


class Timeline(Schema):
    patient: str
    site: str | None
    zone: str
    protocol_version: str
    anchors: dict[str, AnchorView]
    courses: dict[str, CourseView | None]
    timepoints: list[TimepointView]
    results: list[ResultView]
    not_used: list[NotUsed]


class CohortRow(TimepointView):
    patient: str
    site: str | None


class TimepointCohort(Schema):
    timepoint: str
    assay: str
    site: str | None
    protocol_version: str
    patients: list[CohortRow]


class Criterion(Schema):
    id: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    status: Literal["met", "not_met", "unknown"]
    reason: str
    evidence: list[str]


class Flag(Schema):
    kind: str
    criterion: str
    message: str
    evidence: list[str]


class Eligibility(Schema):
    patient: str
    site: str | None
    overall: Literal["eligible", "ineligible", "incomplete"]
    as_of: str
    protocol_version: str
    criteria: list[Criterion]
    missing: list[str]
    pending: list[str]
    flags: list[Flag]

"""The shape of a protocol file (protocols/*.toml), checked key by key before anything uses it.

These models check types, ranges and each table on its own; references between tables (a timepoint's
anchor, an eligibility criterion's concepts) are checked by the loader, which knows the whole file.
Unknown keys are errors (extra="forbid"): a misspelt key must not silently fall back to a default.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.domain.protocol import (
    AnalysisSetRequirement,
    AnchorEvent,
    Assay,
    CriterionKind,
    OffsetUnit,
    SelectionRule,
)


def _exact_decimal(value: object) -> object:
    """Strings are read exactly; TOML floats through their shortest repr (1e-4 -> Decimal("0.0001"))."""
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, not a boolean")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    return value


def _known_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {zone!r}") from None
    return zone


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(allow_inf_nan=False)]
OpenFraction = Annotated[ExactDecimal, Field(gt=0, lt=1)]  # thresholds: strictly between 0 and 1
Probability = Annotated[ExactDecimal, Field(ge=0, le=1)]
Text = Annotated[str, Field(strict=True, min_length=1)]
Name = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Count = Annotated[int, Field(strict=True, gt=0)]
Days = Annotated[int, Field(strict=True, ge=0)]
Offset = Annotated[int, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Zone = Annotated[str, Field(strict=True), AfterValidator(_known_zone)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierTable(_Table):
    system: Text
    value: Text


class StudyTable(_Table):
    identifier: IdentifierTable
    title: Text
    target_enrolment: Count
    arms: list[Name] = Field(min_length=1)
    site_identifier_system: Text


class SiteTable(_Table):
    name: Text
    city: Text
    zone: Zone


class VocabularyTable(_Table):
    concept_system: Text
    value_system: Text


class CodeEntry(_Table):
    system: Text
    code: Text | None = None
    range: tuple[Text, Text] | None = None
    descendants: Flag = False
    display: Text | None = None
    demo: Flag = False

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.code is None) == (self.range is None):
            raise ValueError("give either code or range")
        if self.range is not None:
            low, high = self.range
            if self.descendants:
                raise ValueError("descendants applies to a code, a range always includes its subcodes")
            if len(low) != len(high) or low > high:
                raise ValueError("range bounds must have the same length and start <= end")
        return self


class ConceptTable(_Table):
    label: Text
    carried_by: Text
    codes: list[CodeEntry] = []
    values: dict[Name, list[CodeEntry]] = {}

    @model_validator(mode="after")
    def _value_codes_exact(self) -> Self:
        for value, codes in self.values.items():
            if any(c.code is None or c.descendants for c in codes):
                raise ValueError(f"value {value!r}: value codes must be exact codes")
        return self


class ResultsTable(_Table):
    usable_statuses: list[Text] = Field(min_length=1)
    timepoint_specimens: list[Name] = Field(min_length=1)


class AssayTable(_Table):
    concept: Name
    label: Text
    threshold_fraction: OpenFraction
    min_cells: Count


class AnchorTable(_Table):
    label: Text
    concept: Name
    event: AnchorEvent
    occurrence: Count = 1


class CourseTable(_Table):
    label: Text
    required_days: Count
    max_interruption_days: Days
    tolerance_days: Days

    @model_validator(mode="after")
    def _tolerance_below_required(self) -> Self:
        if self.tolerance_days >= self.required_days:
            raise ValueError("tolerance_days must be smaller than required_days")
        return self


class WindowTable(_Table):
    start: Offset = Field(alias="from")
    end: Offset = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise ValueError(f"start must be <= end (from = {self.start}, to = {self.end})")
        return self


class TimepointTable(_Table):
    label: str = ""
    anchor: Name
    unit: OffsetUnit
    target: Offset
    window: WindowTable
    assays: list[Assay] = Field(min_length=1)
    optional_assays: list[Assay] = []
    selection: SelectionRule = SelectionRule.NEAREST


class StrataTable(_Table):
    concept: Name
    values: list[Name] = Field(min_length=1)


class PrimaryTable(_Table):
    timepoint: Name
    assays: list[Assay] = Field(min_length=1)
    confidence_level: OpenFraction
    hypothesis: Text
    # The patient-level historical control's own end-of-induction timepoint (compared with `timepoint`),
    # and the timepoint before treatment that the MRD response pairs with `timepoint`; both optional.
    control_timepoint: Name | None = None
    baseline_timepoint: Name | None = None


class HistoricalControlTable(_Table):
    assay: Assay
    stratum: Name | None = None
    p0: Probability
    source: Text  # required: section 6 allows no p0 without its source


class AnalysisSetTable(_Table):
    label: Text
    definition: Text
    requires: list[AnalysisSetRequirement] = Field(min_length=1)
    course: Name | None = None
    missing_primary_counts_as_not_negative: Flag = False


class EfsTable(_Table):
    origin: Name
    events: list[Name] = Field(min_length=1)
    horizon_years: Count
    censoring: Text
    analysis_time: Text


class AnchoredDayTable(_Table):
    anchor: Name
    offset: Offset
    unit: OffsetUnit


class AdverseEventsTable(_Table):
    terminology: Text
    grade_extension: Text
    start: AnchoredDayTable
    end: AnchoredDayTable
    end_inclusive: Flag
    without_end_anchor: Text
    special_interest: list[Text] = []


class SpanTable(_Table):
    years: Days = 0
    months: Days = 0
    days: Days = 0

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (self.years or self.months or self.days):
            raise ValueError("a span needs years, months or days")
        return self


class CostsTable(_Table):
    start: AnchoredDayTable
    length: SpanTable
    currency: Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")]


class AgeTable(_Table):
    older_than: SpanTable
    younger_than: SpanTable


class ConditionsTable(_Table):
    any_of: list[Name] | None = Field(default=None, min_length=1)
    all_of: list[Name] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.any_of is None) == (self.all_of is None):
            raise ValueError("give either any_of or all_of")
        return self


class ObservationTable(_Table):
    concept: Name
    values: list[Name] = Field(min_length=1)


class DurationTable(_Table):
    at_least_days: Count | None = None
    more_than_days: Days | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.at_least_days is None) == (self.more_than_days is None):
            raise ValueError("give either at_least_days or more_than_days")
        return self


class LookbackTable(_Table):
    concept: Name
    within: SpanTable
    before: Name  # an anchor name or "reference-date"
    duration: DurationTable | None = None
    except_concepts: list[Name] = []


class MrdCriterionTable(_Table):
    timepoint: Name
    assay: Assay
    at_least_fraction: Annotated[ExactDecimal, Field(gt=0, le=1)]
    stratum: Name | None = None


class ConsentTable(_Table):
    concept: Name
    status: Text
    refused_statuses: list[Text] = []

    @model_validator(mode="after")
    def _status_not_refused(self) -> Self:
        if self.status in self.refused_statuses:
            raise ValueError(f"status {self.status!r} cannot also be a refused status")
        return self


class CriterionTable(_Table):
    id: Name
    kind: CriterionKind
    text: Text
    conditions: ConditionsTable | None = None
    observations: list[ObservationTable] = []
    lookbacks: list[LookbackTable] = []
    age: AgeTable | None = None
    mrd: list[MrdCriterionTable] = []
    stratum_concept: Name | None = None
    consent: ConsentTable | None = None
    assessed_after_enrolment: Flag = False
    reading: Text | None = None

    @model_validator(mode="after")
    def _has_a_test(self) -> Self:
        tests = (self.conditions, self.observations, self.lookbacks, self.age, self.mrd, self.consent)
        if not any(t for t in tests):
            raise ValueError("a criterion needs conditions, observations, lookbacks, age, mrd or consent")
        return self


class ProtocolFile(_Table):
    schema_version: Literal[1]
    study: StudyTable
    sites: dict[Name, SiteTable] = Field(min_length=1)
    vocabulary: VocabularyTable
    concepts: dict[Name, ConceptTable] = Field(min_length=1)
    results: ResultsTable
    units: dict[Text, Annotated[ExactDecimal, Field(gt=0)]] = Field(min_length=1)
    assays: dict[Assay, AssayTable] = Field(min_length=1)
    anchors: dict[Name, AnchorTable] = Field(min_length=1)
    courses: dict[Name, CourseTable] = {}
    timepoints: dict[Name, TimepointTable] = Field(min_length=1)
    strata: StrataTable
    primary: PrimaryTable
    historical_control: list[HistoricalControlTable] = Field(min_length=1)
    analysis_sets: dict[Name, AnalysisSetTable] = Field(min_length=1)
    efs: EfsTable
    adverse_events: AdverseEventsTable
    costs: CostsTable | None = None
    eligibility: list[CriterionTable] = []

"""The trial protocol as the rest of mrdhub sees it: frozen values built from the protocol file.

PROTOCOL.md (opening paragraph): every number about the trial lives in one protocol file, loaded and
validated at start-up. `app/protocol/loader.py` reads `protocols/*.toml` into these objects; nothing in
here knows about TOML or pydantic, and nothing else in the code base hard-codes a threshold, a window or
a code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

# Names the protocol file may use besides anchor and concept names.
REFERENCE_DATE = "reference-date"  # the enrolment/screening date of an eligibility request (section 4)
ENROLMENT = "enrolment"  # ResearchSubject.period.start (section 7), the default EFS origin (section 5)
DEATH = "death"  # Patient.deceasedDateTime (section 7), an EFS event without a concept code
ILLUSTRATIVE_SOURCE = "illustrative, not a published rate"  # section 6: the only label allowed for demo p0


class Assay(StrEnum):
    FLOW = "flow"
    NGS = "ngs"


class OffsetUnit(StrEnum):
    """How a day offset relative to an anchor is counted (section 2).

    TRIAL_DAY: the anchor day is day 1 and day N = anchor + (N - 1) calendar days; day 0 is the day before.
    DAYS_FROM_ANCHOR: the anchor day is 0; +7 is seven calendar days later, -14 fourteen days earlier.
    """

    TRIAL_DAY = "trial-day"
    DAYS_FROM_ANCHOR = "days-from-anchor"


class SelectionRule(StrEnum):
    """How one sample is chosen among several in a timepoint window (section 2; default NEAREST)."""

    FIRST = "first"
    LAST = "last"
    NEAREST = "nearest"  # nearest to the target day, ties to the earlier sample


class AnchorEvent(StrEnum):
    """Which moment of the anchor's concept defines the anchor date."""

    START = "start"  # start of the n-th administration/procedure carrying the concept
    END = "end"  # end of the n-th administration/procedure carrying the concept
    COURSE_START = "course-start"  # first infused day of the n-th course (see CourseRule)
    COURSE_END = "course-end"  # last infused day of the n-th course


class CodeMatch(StrEnum):
    EXACT = "exact"
    DESCENDANTS = "descendants"  # the code and every code it prefixes (ICD-10 "G40" -> "G40.9", ATC "L01")
    RANGE = "range"  # an inclusive block of categories (ICD-10 "D80".."D84", with their subcodes)


class CriterionKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class ConditionMatch(StrEnum):
    ANY_OF = "any-of"
    ALL_OF = "all-of"


class DurationComparator(StrEnum):
    AT_LEAST = ">="
    MORE_THAN = ">"


class AnalysisSetRequirement(StrEnum):
    """What a patient must satisfy to be in an analysis set (section 5)."""

    ENROLLED = "enrolled"
    STARTED_COURSE = "started-course"  # received any dose of the set's course
    COMPLETED_COURSE = "completed-course"  # the course is complete (CourseRule)
    EVALUABLE_PRIMARY_RESULT = "evaluable-primary-result"  # classification at the primary timepoint


@dataclass(frozen=True, slots=True)
class Study:
    slug: str  # lower-case identifier value, the prefix of the protocol version
    identifier_system: str
    identifier: str
    title: str
    target_enrolment: int
    arms: tuple[str, ...]
    site_identifier_system: str


@dataclass(frozen=True, slots=True)
class Site:
    code: str
    name: str
    city: str
    zone: str  # IANA time zone; trial days are counted in it (section 2)


@dataclass(frozen=True, slots=True)
class Concept:
    name: str
    label: str
    carried_by: str  # where FHIR carries it, for the reader (section 7)
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConceptCode:
    """One code (or block of codes) the protocol maps to a trial concept (section 3: codes are data)."""

    concept: str
    system: str
    code: str  # for RANGE the lower bound
    match: CodeMatch = CodeMatch.EXACT
    high: str | None = None  # for RANGE the upper bound, same length as `code`
    display: str | None = None
    demo: bool = False  # a made-up local code for demonstrations; never a real LIS code

    def matches(self, *, system: str, code: str) -> bool:
        if system != self.system:
            return False
        if self.match is CodeMatch.EXACT:
            return code == self.code
        if self.match is CodeMatch.DESCENDANTS:
            return code.startswith(self.code)
        assert self.high is not None
        return self.code <= code[: len(self.code)] <= self.high


@dataclass(frozen=True, slots=True)
class ValueCode:
    """A code for one value of a coded concept, e.g. provisional-risk `low`."""

    concept: str
    value: str
    system: str
    code: str
    display: str | None = None
    demo: bool = False


@dataclass(frozen=True, slots=True)
class CodeMap:
    """Incoming codes -> trial concepts; the most specific entry wins: exact, longest prefix, then range.

    Overlaps are intended for hierarchies: ATC L01 (chemotherapy) contains L01EA (ABL kinase inhibitors)
    and L01FX07 (blinatumomab). The loader rejects the same code mapped to two concepts.
    """

    codes: tuple[ConceptCode, ...]
    values: tuple[ValueCode, ...] = ()
    _exact: Mapping[tuple[str, str], ConceptCode] = field(init=False, repr=False, compare=False)
    _values: Mapping[tuple[str, str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = {(c.system, c.code): c for c in self.codes if c.match is CodeMatch.EXACT}
        values = {(v.concept, v.system, v.code): v.value for v in self.values}
        object.__setattr__(self, "_exact", MappingProxyType(exact))
        object.__setattr__(self, "_values", MappingProxyType(values))

    def entry_for(self, system: str, code: str) -> ConceptCode | None:
        if (hit := self._exact.get((system, code))) is not None:
            return hit
        candidates = [
            c for c in self.codes if c.match is not CodeMatch.EXACT and c.matches(system=system, code=code)
        ]
        if not candidates:
            return None
        # Descendant prefixes before ranges, longer prefixes before shorter ones.
        return min(candidates, key=lambda c: (c.match is CodeMatch.RANGE, -len(c.code)))

    def concept_for(self, system: str, code: str) -> str | None:
        entry = self.entry_for(system, code)
        return None if entry is None else entry.concept

    def value_for(self, *, concept: str, system: str, code: str) -> str | None:
        return self._values.get((concept, system, code))

    def codes_of(self, concept: str) -> tuple[ConceptCode, ...]:
        return tuple(c for c in self.codes if c.concept == concept)


@dataclass(frozen=True, slots=True)
class AssayRule:
    """Classification rule of one MRD assay (section 3): threshold and cells needed to reach it."""

    assay: Assay
    concept: str  # e.g. "mrd-flow"
    label: str
    threshold_fraction: Decimal  # >= threshold is positive, < threshold negative
    min_cells: int  # fewer cells analysed cannot show a value below the threshold
    unit_factors: Mapping[str, Decimal]  # accepted UCUM unit -> factor that turns a value into a fraction


@dataclass(frozen=True, slots=True)
class AnchorDefinition:
    name: str
    label: str
    concept: str
    event: AnchorEvent
    occurrence: int = 1  # hd-mtx-2 is the start of the 2nd high-dose methotrexate course


@dataclass(frozen=True, slots=True)
class CourseRule:
    """When administrations form one course and when the course counts as complete (sections 1, 5)."""

    concept: str
    label: str
    required_days: int  # 14 days of blinatumomab
    max_interruption_days: int  # a longer gap without infusion starts a new course
    tolerance_days: int  # complete if infused days >= required_days - tolerance_days


@dataclass(frozen=True, slots=True)
class TimepointDefinition:
    """One MRD timepoint of section 2; target and window are counted in `unit` from `anchor`."""

    name: str
    anchor: str
    unit: OffsetUnit
    target: int
    window_start: int
    window_end: int
    assays: tuple[Assay, ...]
    selection: SelectionRule = SelectionRule.NEAREST
    optional_assays: frozenset[Assay] = frozenset()  # reported, but a missing one is not a data gap
    label: str = ""

    def is_required(self, assay: Assay) -> bool:
        return assay in self.assays and assay not in self.optional_assays


@dataclass(frozen=True, slots=True)
class ResultRules:
    usable_statuses: frozenset[str]  # section 3: final, amended, corrected
    timepoint_specimens: frozenset[str]  # section 2: only bone marrow counts for timepoints


@dataclass(frozen=True, slots=True)
class Strata:
    concept: str  # provisional-risk
    values: tuple[str, ...]  # low, intermediate


@dataclass(frozen=True, slots=True)
class PrimaryEndpoint:
    timepoint: str
    assays: tuple[Assay, ...]
    confidence_level: Decimal
    hypothesis: str
    control_timepoint: str | None = None  # a historical control's primary timepoint; None: `timepoint`
    baseline_timepoint: str | None = None  # the "before" of the MRD response; None: no such analysis

    @property
    def control(self) -> str:
        return self.control_timepoint or self.timepoint


@dataclass(frozen=True, slots=True)
class HistoricalControl:
    """The control rate p0 for one assay (and optionally one stratum), with where it comes from."""

    assay: Assay
    stratum: str | None  # None: overall
    p0: Decimal
    source: str

    @property
    def is_illustrative(self) -> bool:
        return self.source == ILLUSTRATIVE_SOURCE


@dataclass(frozen=True, slots=True)
class CalendarSpan:
    years: int = 0
    months: int = 0
    days: int = 0


@dataclass(frozen=True, slots=True)
class AgeLimits:
    older_than: CalendarSpan  # strictly
    younger_than: CalendarSpan  # strictly


@dataclass(frozen=True, slots=True)
class ConditionSet:
    match: ConditionMatch
    concepts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ObservationTest:
    concept: str
    values: frozenset[str]  # the criterion holds if the observed value is one of these


@dataclass(frozen=True, slots=True)
class DurationRule:
    comparator: DurationComparator
    days: int


@dataclass(frozen=True, slots=True)
class Lookback:
    """Exposure to `concept` within `within` before `before` (an anchor name or REFERENCE_DATE)."""

    concept: str
    within: CalendarSpan
    before: str
    duration: DurationRule | None = None
    except_concepts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MrdCriterion:
    timepoint: str
    assay: Assay
    at_least_fraction: Decimal
    stratum: str | None = None  # only for patients in this stratum


@dataclass(frozen=True, slots=True)
class ConsentRequirement:
    """A consent carrying `concept` whose latest status is `status`; a latest status among
    `refused_statuses` (declined, withdrawn) means the criterion is not met, any other means not yet known."""

    concept: str
    status: str
    refused_statuses: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EligibilityCriterion:
    """One criterion of section 4. It holds if any of its parts holds (conditions, observations, ...).

    For an inclusion criterion "holds" means met; for an exclusion criterion it means the patient is
    excluded. `assessed_after_enrolment` criteria do not keep the overall answer incomplete (section 4.11).
    """

    id: str
    kind: CriterionKind
    text: str
    conditions: ConditionSet | None = None
    observations: tuple[ObservationTest, ...] = ()
    lookbacks: tuple[Lookback, ...] = ()
    age: AgeLimits | None = None
    mrd: tuple[MrdCriterion, ...] = ()
    stratum_concept: str | None = None
    consent: ConsentRequirement | None = None
    assessed_after_enrolment: bool = False
    reading: str | None = None  # our recorded reading of an ambiguous criterion

    @property
    def concepts(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.conditions is not None:
            names.extend(self.conditions.concepts)
        names.extend(o.concept for o in self.observations)
        for lookback in self.lookbacks:
            names.append(lookback.concept)
            names.extend(lookback.except_concepts)
        if self.stratum_concept is not None:
            names.append(self.stratum_concept)
        if self.consent is not None:
            names.append(self.consent.concept)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class AnalysisSet:
    name: str
    label: str
    definition: str
    requires: frozenset[AnalysisSetRequirement]
    course: str | None = None  # course concept for STARTED_COURSE / COMPLETED_COURSE
    missing_primary_counts_as_not_negative: bool = False  # section 5: full analysis set imputation


@dataclass(frozen=True, slots=True)
class EfsDefinition:
    origin: str  # ENROLMENT or an anchor name
    events: tuple[str, ...]  # concept names, or DEATH
    horizon_years: int
    censoring: str
    analysis_time: str


@dataclass(frozen=True, slots=True)
class AnchoredDay:
    anchor: str
    offset: int
    unit: OffsetUnit


@dataclass(frozen=True, slots=True)
class AdverseEventWindow:
    terminology: str
    grade_extension: str
    start: AnchoredDay
    end: AnchoredDay
    end_inclusive: bool
    without_end_anchor: str  # what happens when the end anchor is missing (section 5: data cut-off, flag)
    special_interest: tuple[str, ...]  # term labels, not codes


@dataclass(frozen=True, slots=True)
class CostWindow:
    start: AnchoredDay
    length: CalendarSpan  # [start, start + length)
    currency: str


@dataclass(frozen=True, slots=True)
class Protocol:
    version: str  # "<study slug>@<first 12 hex of sha256 of the file>"
    study: Study
    sites: Mapping[str, Site]
    concepts: Mapping[str, Concept]
    codes: CodeMap
    assays: Mapping[Assay, AssayRule]
    results: ResultRules
    anchors: Mapping[str, AnchorDefinition]
    courses: Mapping[str, CourseRule]  # by concept
    timepoints: tuple[TimepointDefinition, ...]  # in file order
    strata: Strata
    primary: PrimaryEndpoint
    historical_controls: tuple[HistoricalControl, ...]
    eligibility: tuple[EligibilityCriterion, ...]
    analysis_sets: Mapping[str, AnalysisSet]
    efs: EfsDefinition
    adverse_events: AdverseEventWindow
    costs: CostWindow | None = None

    def timepoint(self, name: str) -> TimepointDefinition:
        for timepoint in self.timepoints:
            if timepoint.name == name:
                return timepoint
        raise KeyError(name)

    def p0_for(self, *, assay: Assay, stratum: str | None = None) -> HistoricalControl | None:
        """The stratum's control rate if configured, else the overall one (section 5)."""
        by_key = {(c.assay, c.stratum): c for c in self.historical_controls}
        return by_key.get((assay, stratum)) or by_key.get((assay, None))

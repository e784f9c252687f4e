"""Load a protocol file: TOML -> pydantic (shape) -> cross-reference checks -> frozen domain values.

A bad file raises ProtocolError listing every problem as "<key path>: <problem>", e.g.
"timepoints.D19.window: start must be <= end (from = 22, to = 17)", so the trial office can fix the file
without reading code. The version is the study identifier plus the first 12 hex digits of the SHA-256 of
the file's bytes: the same bytes always give the same version (PROTOCOL.md section 5, "every summary
states ... the protocol file's version").
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import ValidationError

from app.domain.protocol import (
    DEATH,
    ENROLMENT,
    REFERENCE_DATE,
    AdverseEventWindow,
    AgeLimits,
    AnalysisSet,
    AnalysisSetRequirement,
    AnchorDefinition,
    AnchoredDay,
    AnchorEvent,
    Assay,
    AssayRule,
    CalendarSpan,
    CodeMap,
    CodeMatch,
    Concept,
    ConceptCode,
    ConditionMatch,
    ConditionSet,
    ConsentRequirement,
    CostWindow,
    CourseRule,
    DurationComparator,
    DurationRule,
    EfsDefinition,
    EligibilityCriterion,
    HistoricalControl,
    Lookback,
    MrdCriterion,
    ObservationTest,
    PrimaryEndpoint,
    Protocol,
    ResultRules,
    Site,
    Strata,
    Study,
    TimepointDefinition,
    ValueCode,
)
from app.protocol.schema import (
    AnchoredDayTable,
    CodeEntry,
    CriterionTable,
    ProtocolFile,
    SpanTable,
)


@dataclass(frozen=True, slots=True)
class ProtocolProblem:
    path: str  # "timepoints.D19.window"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProtocolError(Exception):
    """The protocol file cannot be used; `problems` lists each key path and what is wrong with it."""

    def __init__(self, source: str, problems: Sequence[ProtocolProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listed = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source} is not a valid protocol file:\n{listed}")


def load_protocol(path: str | PathLike[str]) -> Protocol:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ProtocolError(str(path), [ProtocolProblem("", f"cannot be read: {exc.strerror}")]) from None
    return parse_protocol(data, source=str(path))


def parse_protocol(data: bytes, *, source: str = "<protocol>") -> Protocol:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(source, [ProtocolProblem("", f"not UTF-8 text: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(source, [ProtocolProblem("", f"not valid TOML: {exc}")]) from None
    try:
        file = ProtocolFile.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(source, [_problem(error) for error in exc.errors()]) from None
    problems = _cross_check(file)
    if problems:
        raise ProtocolError(source, problems)
    identifier = file.study.identifier.value
    version = f"{identifier.lower()}@{hashlib.sha256(data).hexdigest()[:12]}"
    return _to_domain(file, version)


def _problem(error: Mapping[str, Any]) -> ProtocolProblem:
    path = ""
    for part in error["loc"]:
        if part == "[key]":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return ProtocolProblem(path, message)


# --- references between tables -------------------------------------------------------------------------

_Report = Callable[[str, str], None]  # (key path, problem)


def _cross_check(file: ProtocolFile) -> list[ProtocolProblem]:
    problems: list[ProtocolProblem] = []

    def problem(path: str, message: str) -> None:
        problems.append(ProtocolProblem(path, message))

    concepts = file.concepts
    anchors = file.anchors

    def need_concept(path: str, name: str) -> None:
        if name not in concepts:
            problem(path, f"unknown concept {name!r}")

    _check_codes(file, problem)
    for i, name in enumerate(file.results.timepoint_specimens):
        need_concept(f"results.timepoint_specimens[{i}]", name)
    assay_concepts: dict[str, Assay] = {}
    for assay, table in file.assays.items():
        need_concept(f"assays.{assay}.concept", table.concept)
        if (other := assay_concepts.setdefault(table.concept, assay)) is not assay:
            problem(f"assays.{assay}.concept", f"concept {table.concept!r} is already the {other} assay")
    for name in file.courses:
        need_concept(f"courses.{name}", name)
    for name, anchor in anchors.items():
        need_concept(f"anchors.{name}.concept", anchor.concept)
        if (
            anchor.event in (AnchorEvent.COURSE_START, AnchorEvent.COURSE_END)
            and anchor.concept not in file.courses
        ):
            problem(f"anchors.{name}.event", f"{anchor.event} needs a [courses.{anchor.concept}] table")

    for name, timepoint in file.timepoints.items():
        path = f"timepoints.{name}"
        if timepoint.anchor not in anchors:
            problem(f"{path}.anchor", f"unknown anchor {timepoint.anchor!r}")
        if not timepoint.window.start <= timepoint.target <= timepoint.window.end:
            problem(f"{path}.target", f"{timepoint.target} is outside the window")
        for i, assay in enumerate(timepoint.assays):
            if assay not in file.assays:
                problem(f"{path}.assays[{i}]", f"assay {assay!r} is not defined in [assays]")
        if len(set(timepoint.assays)) != len(timepoint.assays):
            problem(f"{path}.assays", "an assay is listed twice")
        for i, assay in enumerate(timepoint.optional_assays):
            if assay not in timepoint.assays:
                problem(f"{path}.optional_assays[{i}]", f"{assay!r} is not one of the timepoint's assays")

    strata = file.strata
    need_concept("strata.concept", strata.concept)
    stratum_values = set(strata.values)
    for i, value in enumerate(strata.values):
        if strata.concept in concepts and value not in concepts[strata.concept].values:
            problem(f"strata.values[{i}]", f"{value!r} is not a value of concept {strata.concept!r}")

    primary = file.primary
    if primary.timepoint not in file.timepoints:
        problem("primary.timepoint", f"unknown timepoint {primary.timepoint!r}")
    else:
        for i, assay in enumerate(primary.assays):
            if assay not in file.assays:
                problem(f"primary.assays[{i}]", f"assay {assay!r} is not defined in [assays]")
            elif assay not in file.timepoints[primary.timepoint].assays:
                problem(f"primary.assays[{i}]", f"{primary.timepoint} does not measure {assay!r}")

    for key in ("control_timepoint", "baseline_timepoint"):
        named = getattr(primary, key)
        if named is None:
            continue
        if named not in file.timepoints:
            problem(f"primary.{key}", f"unknown timepoint {named!r}")
        else:
            for assay in primary.assays:
                if assay not in file.timepoints[named].assays:
                    problem(f"primary.{key}", f"{named} does not measure primary assay {assay.value!r}")

    seen_controls: set[tuple[Assay, str | None]] = set()
    for i, control in enumerate(file.historical_control):
        path = f"historical_control[{i}]"
        if control.assay not in file.assays:
            problem(f"{path}.assay", f"assay {control.assay!r} is not defined in [assays]")
        if control.stratum is not None and control.stratum not in stratum_values:
            problem(f"{path}.stratum", f"unknown stratum {control.stratum!r}")
        if (control.assay, control.stratum) in seen_controls:
            problem(path, f"a second p0 for {control.assay} / {control.stratum or 'overall'}")
        seen_controls.add((control.assay, control.stratum))
    for assay in primary.assays:
        if (assay, None) not in seen_controls:
            problem(
                "historical_control", f"no overall p0 for primary assay {assay!r} (PROTOCOL.md section 6)"
            )

    for name, analysis_set in file.analysis_sets.items():
        needs_course = {AnalysisSetRequirement.STARTED_COURSE, AnalysisSetRequirement.COMPLETED_COURSE}
        if analysis_set.course is None and needs_course & set(analysis_set.requires):
            problem(f"analysis_sets.{name}.course", "required by started-course / completed-course")
        if analysis_set.course is not None and analysis_set.course not in file.courses:
            problem(f"analysis_sets.{name}.course", f"no [courses.{analysis_set.course}] table")

    if file.efs.origin != ENROLMENT and file.efs.origin not in anchors:
        problem("efs.origin", f"{file.efs.origin!r} is neither {ENROLMENT!r} nor an anchor")
    for i, event in enumerate(file.efs.events):
        if event != DEATH:
            need_concept(f"efs.events[{i}]", event)

    days: list[tuple[str, AnchoredDayTable]] = [
        ("adverse_events.start", file.adverse_events.start),
        ("adverse_events.end", file.adverse_events.end),
    ]
    if file.costs is not None:
        days.append(("costs.start", file.costs.start))
    for path, day in days:
        if day.anchor not in anchors:
            problem(f"{path}.anchor", f"unknown anchor {day.anchor!r}")

    ids: set[str] = set()
    for i, criterion in enumerate(file.eligibility):
        if criterion.id in ids:
            problem(f"eligibility[{i}].id", f"duplicate criterion id {criterion.id!r}")
        ids.add(criterion.id)
        _check_criterion(f"eligibility[{i}]", criterion, file, problem)
    return problems


def _check_codes(file: ProtocolFile, problem: _Report) -> None:
    owner: dict[tuple[str, CodeMatch, str, str | None], str] = {}
    ranges: list[tuple[str, str, str, str]] = []  # system, low, high, concept
    for name, concept in file.concepts.items():
        entries = [(f"concepts.{name}", CodeEntry(system=file.vocabulary.concept_system, code=name))]
        entries += [(f"concepts.{name}.codes[{i}]", entry) for i, entry in enumerate(concept.codes)]
        for path, entry in entries:
            match, low, high = _match(entry)
            key = (entry.system, match, low, high)
            if (other := owner.setdefault(key, name)) != name:
                problem(path, f"{entry.system}|{low} is already mapped to concept {other!r}")
            if high is not None:
                for system, other_low, other_high, other_name in ranges:
                    if (
                        system == entry.system
                        and other_name != name
                        and low <= other_high
                        and other_low <= high
                    ):
                        problem(
                            path, f"range {low}..{high} overlaps {other_low}..{other_high} of {other_name!r}"
                        )
                ranges.append((entry.system, low, high, name))
        value_owner: dict[tuple[str, str], str] = {}
        for value, codes in concept.values.items():
            entries = [
                (
                    f"concepts.{name}.values.{value}",
                    CodeEntry(system=file.vocabulary.value_system, code=value),
                )
            ]
            entries += [(f"concepts.{name}.values.{value}[{i}]", c) for i, c in enumerate(codes)]
            for path, entry in entries:
                assert entry.code is not None
                if (other := value_owner.setdefault((entry.system, entry.code), value)) != value:
                    problem(path, f"{entry.system}|{entry.code} is already mapped to value {other!r}")


def _check_criterion(path: str, criterion: CriterionTable, file: ProtocolFile, problem: _Report) -> None:
    concepts = file.concepts

    def need_concept(where: str, name: str) -> None:
        if name not in concepts:
            problem(where, f"unknown concept {name!r}")

    if criterion.conditions is not None:
        names = criterion.conditions.any_of or criterion.conditions.all_of or []
        key = "any_of" if criterion.conditions.any_of is not None else "all_of"
        for i, name in enumerate(names):
            need_concept(f"{path}.conditions.{key}[{i}]", name)
    for i, test in enumerate(criterion.observations):
        need_concept(f"{path}.observations[{i}].concept", test.concept)
        for j, value in enumerate(test.values):
            if test.concept in concepts and value not in concepts[test.concept].values:
                problem(
                    f"{path}.observations[{i}].values[{j}]", f"{value!r} is not a value of {test.concept!r}"
                )
    for i, lookback in enumerate(criterion.lookbacks):
        need_concept(f"{path}.lookbacks[{i}].concept", lookback.concept)
        for j, name in enumerate(lookback.except_concepts):
            need_concept(f"{path}.lookbacks[{i}].except_concepts[{j}]", name)
        if lookback.before != REFERENCE_DATE and lookback.before not in file.anchors:
            problem(
                f"{path}.lookbacks[{i}].before",
                f"{lookback.before!r} is neither an anchor nor {REFERENCE_DATE!r}",
            )
    for i, mrd in enumerate(criterion.mrd):
        where = f"{path}.mrd[{i}]"
        timepoint = file.timepoints.get(mrd.timepoint)
        if timepoint is None:
            problem(f"{where}.timepoint", f"unknown timepoint {mrd.timepoint!r}")
        elif mrd.assay not in timepoint.assays:
            problem(f"{where}.assay", f"{mrd.timepoint} does not measure {mrd.assay!r}")
        stratum_concept = concepts.get(criterion.stratum_concept or "")
        if mrd.stratum is not None and criterion.stratum_concept is None:
            problem(f"{where}.stratum", "a stratum needs stratum_concept on the criterion")
        elif (
            mrd.stratum is not None
            and stratum_concept is not None
            and mrd.stratum not in stratum_concept.values
        ):
            problem(f"{where}.stratum", f"{mrd.stratum!r} is not a value of {criterion.stratum_concept!r}")
    if criterion.stratum_concept is not None:
        need_concept(f"{path}.stratum_concept", criterion.stratum_concept)
    if criterion.consent is not None:
        need_concept(f"{path}.consent.concept", criterion.consent.concept)


def _match(entry: CodeEntry) -> tuple[CodeMatch, str, str | None]:
    if entry.range is not None:
        return CodeMatch.RANGE, entry.range[0], entry.range[1]
    assert entry.code is not None
    return (CodeMatch.DESCENDANTS if entry.descendants else CodeMatch.EXACT), entry.code, None


# --- conversion to domain values -----------------------------------------------------------------------


def _to_domain(file: ProtocolFile, version: str) -> Protocol:
    unit_factors = MappingProxyType(dict(file.units))
    return Protocol(
        version=version,
        study=Study(
            slug=file.study.identifier.value.lower(),
            identifier_system=file.study.identifier.system,
            identifier=file.study.identifier.value,
            title=file.study.title,
            target_enrolment=file.study.target_enrolment,
            arms=tuple(file.study.arms),
            site_identifier_system=file.study.site_identifier_system,
        ),
        sites=_frozen({code: Site(code, s.name, s.city, s.zone) for code, s in file.sites.items()}),
        concepts=_frozen(
            {name: Concept(name, c.label, c.carried_by, tuple(c.values)) for name, c in file.concepts.items()}
        ),
        codes=_code_map(file),
        assays=_frozen(
            {
                assay: AssayRule(assay, a.concept, a.label, a.threshold_fraction, a.min_cells, unit_factors)
                for assay, a in file.assays.items()
            }
        ),
        results=ResultRules(
            frozenset(file.results.usable_statuses), frozenset(file.results.timepoint_specimens)
        ),
        anchors=_frozen(
            {
                n: AnchorDefinition(n, a.label, a.concept, a.event, a.occurrence)
                for n, a in file.anchors.items()
            }
        ),
        courses=_frozen(
            {
                n: CourseRule(n, c.label, c.required_days, c.max_interruption_days, c.tolerance_days)
                for n, c in file.courses.items()
            }
        ),
        timepoints=tuple(
            TimepointDefinition(
                name=name,
                anchor=t.anchor,
                unit=t.unit,
                target=t.target,
                window_start=t.window.start,
                window_end=t.window.end,
                assays=tuple(t.assays),
                selection=t.selection,
                optional_assays=frozenset(t.optional_assays),
                label=t.label,
            )
            for name, t in file.timepoints.items()
        ),
        strata=Strata(file.strata.concept, tuple(file.strata.values)),
        primary=PrimaryEndpoint(
            file.primary.timepoint,
            tuple(file.primary.assays),
            file.primary.confidence_level,
            file.primary.hypothesis,
            file.primary.control_timepoint,
            file.primary.baseline_timepoint,
        ),
        historical_controls=tuple(
            HistoricalControl(c.assay, c.stratum, c.p0, c.source) for c in file.historical_control
        ),
        eligibility=tuple(_criterion(c) for c in file.eligibility),
        analysis_sets=_frozen(
            {
                name: AnalysisSet(
                    name,
                    s.label,
                    s.definition,
                    frozenset(s.requires),
                    s.course,
                    s.missing_primary_counts_as_not_negative,
                )
                for name, s in file.analysis_sets.items()
            }
        ),
        efs=EfsDefinition(
            file.efs.origin,
            tuple(file.efs.events),
            file.efs.horizon_years,
            file.efs.censoring,
            file.efs.analysis_time,
        ),
        adverse_events=AdverseEventWindow(
            terminology=file.adverse_events.terminology,
            grade_extension=file.adverse_events.grade_extension,
            start=_day(file.adverse_events.start),
            end=_day(file.adverse_events.end),
            end_inclusive=file.adverse_events.end_inclusive,
            without_end_anchor=file.adverse_events.without_end_anchor,
            special_interest=tuple(file.adverse_events.special_interest),
        ),
        costs=None
        if file.costs is None
        else CostWindow(_day(file.costs.start), _span(file.costs.length), file.costs.currency),
    )


_K = TypeVar("_K")
_V = TypeVar("_V")


def _frozen(items: dict[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(items)


def _code_map(file: ProtocolFile) -> CodeMap:
    concept_system, value_system = file.vocabulary.concept_system, file.vocabulary.value_system
    codes: list[ConceptCode] = []
    values: list[ValueCode] = []
    for name, concept in file.concepts.items():
        codes.append(ConceptCode(name, concept_system, name))
        for entry in concept.codes:
            match, low, high = _match(entry)
            codes.append(ConceptCode(name, entry.system, low, match, high, entry.display, entry.demo))
        for value, entries in concept.values.items():
            values.append(ValueCode(name, value, value_system, value))
            values.extend(
                ValueCode(name, value, e.system, e.code, e.display, e.demo)
                for e in entries
                if e.code is not None
            )
    return CodeMap(tuple(codes), tuple(values))


def _criterion(table: CriterionTable) -> EligibilityCriterion:
    conditions = None
    if table.conditions is not None:
        if table.conditions.any_of is not None:
            conditions = ConditionSet(ConditionMatch.ANY_OF, tuple(table.conditions.any_of))
        else:
            conditions = ConditionSet(ConditionMatch.ALL_OF, tuple(table.conditions.all_of or ()))
    return EligibilityCriterion(
        id=table.id,
        kind=table.kind,
        text=table.text,
        conditions=conditions,
        observations=tuple(ObservationTest(o.concept, frozenset(o.values)) for o in table.observations),
        lookbacks=tuple(
            Lookback(
                concept=lb.concept,
                within=_span(lb.within),
                before=lb.before,
                duration=None
                if lb.duration is None
                else _duration(lb.duration.at_least_days, lb.duration.more_than_days),
                except_concepts=tuple(lb.except_concepts),
            )
            for lb in table.lookbacks
        ),
        age=None
        if table.age is None
        else AgeLimits(_span(table.age.older_than), _span(table.age.younger_than)),
        mrd=tuple(MrdCriterion(m.timepoint, m.assay, m.at_least_fraction, m.stratum) for m in table.mrd),
        stratum_concept=table.stratum_concept,
        consent=None
        if table.consent is None
        else ConsentRequirement(
            table.consent.concept, table.consent.status, frozenset(table.consent.refused_statuses)
        ),
        assessed_after_enrolment=table.assessed_after_enrolment,
        reading=table.reading,
    )


def _duration(at_least: int | None, more_than: int | None) -> DurationRule:
    if at_least is not None:
        return DurationRule(DurationComparator.AT_LEAST, at_least)
    assert more_than is not None
    return DurationRule(DurationComparator.MORE_THAN, more_than)


def _span(table: SpanTable) -> CalendarSpan:
    return CalendarSpan(table.years, table.months, table.days)


def _day(table: AnchoredDayTable) -> AnchoredDay:
    return AnchoredDay(table.anchor, table.offset, table.unit)

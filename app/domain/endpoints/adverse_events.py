"""Adverse events, study vs control (PROTOCOL.md section 5, "Adverse events").

* Window per patient: from protocol [adverse_events].start (induction day 19) to .end (start of the second
  high-dose methotrexate course), the end excluded unless end_inclusive. A patient without the end anchor
  (or with it in conflict) is counted up to the cut-off, inclusive, and flagged; a patient without the start
  anchor is excluded.
* An event counts when its local day is in the window. Events without a precise day cannot be placed: they
  are not counted and are flagged.
* Terms are CTCAE v5 terms as sent, compared case-insensitively with runs of white space collapsed
  ("Cytokine  release syndrome" == "cytokine release syndrome"); rows are keyed by that folded form.
  Events of special interest are the protocol's terms, matched the same way (equality, not substring).
* Per row and arm: patients with >= 1 event, with >= grade 3, and the worst grade per patient (an event
  without a valid grade 1-5 counts as an event of grade "unknown"; a patient's worst grade is the highest
  known one). Study vs control: Fisher's exact two-sided test on patients with >= 1 event and on patients
  with >= grade 3.
"""

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.domain.endpoints.analysis_sets import analysis_set_named, members
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, CohortPatient, build_cohort
from app.domain.endpoints.evidence import (
    Exclusion,
    Flag,
    PatientEntry,
    cohort_exclusions,
    entries_json,
    excluded_members,
    exclusions_json,
    flags_json,
    flags_of,
    sorted_exclusions,
)
from app.domain.endpoints.reporting import Json, analysis_set_json, header, iso, rounded, significant
from app.domain.protocol import AnalysisSet, AnchoredDay, Assay, Protocol
from app.domain.record import AdverseEventFact
from app.domain.statistics import FisherResult, fisher_exact_2x2
from app.domain.timeline import PatientTimeline
from app.domain.timepoints import day_for

ANY = "any adverse event"
GRADES = ("1", "2", "3", "4", "5", "unknown")


def term_key(term: str) -> str:
    return " ".join(term.split()).casefold()


@dataclass(frozen=True, slots=True)
class PatientWindow:
    patient: str
    arm: str
    start: dt.date
    end: dt.date  # last day counted (inclusive)
    open_to_cutoff: bool  # no end anchor: counted up to the cut-off
    counted: tuple[AdverseEventFact, ...]
    outside: tuple[str, ...]  # references of dated events outside the window
    undated: tuple[str, ...]  # references of events without a precise day


@dataclass(frozen=True, slots=True)
class ArmCount:
    n_patients: int
    with_event: int
    grade_3_or_more: int
    worst_grade: tuple[tuple[str, int], ...]  # every grade in GRADES
    entries: tuple[PatientEntry, ...]  # patients with the event; status "worst grade N"


@dataclass(frozen=True, slots=True)
class AeRow:
    term: str
    study: ArmCount
    control: ArmCount
    fisher_any: FisherResult
    fisher_grade_3_or_more: FisherResult


@dataclass(frozen=True, slots=True)
class AdverseEventAnalysis:
    as_of: dt.date
    protocol_version: str
    analysis_set: AnalysisSet
    terminology: str
    any_event: AeRow
    by_term: tuple[AeRow, ...]
    special_interest: tuple[AeRow, ...]
    windows: tuple[PatientWindow, ...]
    excluded: tuple[Exclusion, ...]
    flags: tuple[Flag, ...]


def adverse_events(
    *,
    timelines: Sequence[PatientTimeline],
    protocol: Protocol,
    as_of: dt.date,
    analysis_set: str = "full",
    assay: Assay | None = None,
) -> AdverseEventAnalysis:
    chosen = analysis_set_named(protocol, analysis_set)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    excluded = cohort_exclusions(cohort)
    flags = list(flags_of(cohort.patients))
    windows: dict[str, list[PatientWindow]] = {}
    for arm in (STUDY_ARM, CONTROL_ARM):
        included, out = members(cohort=cohort, arm=arm, analysis_set=chosen, assay=assay, protocol=protocol)
        excluded.extend(excluded_members(out))
        windows[arm] = []
        for m in included:
            found = _window(m.patient, protocol, as_of)
            if isinstance(found, Exclusion):
                excluded.append(found)
                continue
            windows[arm].append(found)
            if found.open_to_cutoff:
                end = protocol.adverse_events.end.anchor
                flags.append(
                    Flag(found.patient, f"no usable {end} anchor: adverse events counted to the cut-off")
                )
            flags.extend(
                Flag(found.patient, f"adverse event {r} has no precise date: not placed")
                for r in found.undated
            )
    study, control = windows[STUDY_ARM], windows[CONTROL_ARM]
    terms = sorted({term_key(e.term) for w in [*study, *control] for e in w.counted})
    special = [term_key(t) for t in protocol.adverse_events.special_interest]
    return AdverseEventAnalysis(
        as_of=as_of,
        protocol_version=protocol.version,
        analysis_set=chosen,
        terminology=protocol.adverse_events.terminology,
        any_event=_row(ANY, study, control, None),
        by_term=tuple(_row(t, study, control, t) for t in terms),
        special_interest=tuple(_row(t, study, control, t) for t in dict.fromkeys(special)),
        windows=tuple(sorted([*study, *control], key=lambda w: w.patient)),
        excluded=sorted_exclusions(excluded),
        flags=tuple(sorted(set(flags), key=lambda f: (f.patient, f.flag))),
    )


def _day(patient: CohortPatient, anchored: AnchoredDay) -> dt.date | None:
    anchor = patient.timeline.anchors.get(anchored.anchor)
    if anchor is None or anchor.date is None:
        return None
    return day_for(anchor_date=anchor.date, offset=anchored.offset, unit=anchored.unit)


def _window(patient: CohortPatient, protocol: Protocol, as_of: dt.date) -> PatientWindow | Exclusion:
    rule = protocol.adverse_events
    start = _day(patient, rule.start)
    if start is None:
        reason = f"adverse-event window start unknown ({rule.start.anchor} missing or in conflict)"
        return Exclusion(patient.reference, patient.arm, reason, (patient.enrolment.reference,))
    end_anchor = _day(patient, rule.end)
    if end_anchor is None:
        end, open_to_cutoff = as_of, True
    else:
        end, open_to_cutoff = (end_anchor if rule.end_inclusive else end_anchor - dt.timedelta(days=1)), False
    counted, outside, undated = [], [], []
    for event in sorted(patient.timeline.record.adverse_events, key=lambda e: e.reference):
        day = None if event.date is None else event.date.day_in(patient.timeline.record.zone)
        if day is None:
            undated.append(event.reference)
        elif start <= day <= end:
            counted.append(event)
        else:
            outside.append(event.reference)
    return PatientWindow(
        patient.reference,
        patient.arm,
        start,
        end,
        open_to_cutoff,
        tuple(counted),
        tuple(outside),
        tuple(undated),
    )


def _grade(event: AdverseEventFact) -> int | None:
    return event.grade if event.grade is not None and 1 <= event.grade <= 5 else None


def _count(windows: Iterable[PatientWindow], term: str | None) -> ArmCount:
    windows = list(windows)
    worst = dict.fromkeys(GRADES, 0)
    entries = []
    severe = 0
    for w in windows:
        events = [e for e in w.counted if term is None or term_key(e.term) == term]
        if not events:
            continue
        grades = [g for e in events if (g := _grade(e)) is not None]
        label = str(max(grades)) if grades else "unknown"
        worst[label] += 1
        severe += bool(grades) and max(grades) >= 3
        entries.append(PatientEntry(w.patient, f"worst grade {label}", tuple(e.reference for e in events)))
    return ArmCount(len(windows), len(entries), severe, tuple(worst.items()), tuple(entries))


def _row(label: str, study: list[PatientWindow], control: list[PatientWindow], term: str | None) -> AeRow:
    s, c = _count(study, term), _count(control, term)

    def fisher(a: int, b: int) -> FisherResult:
        return fisher_exact_2x2(
            study_successes=a, study_n=s.n_patients, control_successes=b, control_n=c.n_patients
        )

    return AeRow(
        label, s, c, fisher(s.with_event, c.with_event), fisher(s.grade_3_or_more, c.grade_3_or_more)
    )


# --- JSON ----------------------------------------------------------------------------------------------


def adverse_events_to_json(result: AdverseEventAnalysis, *, explain: bool = False) -> Json:
    """Shape: header + {"analysis_set", "terminology", "any", "by_term": {term: row}, "special_interest":
    {term: row}, "open_windows", "excluded", "flags"}; a row is {"study": count, "control": count,
    "fisher_any", "fisher_grade_3_or_more"}, a count {"n_patients", "with_event", "grade_3_or_more",
    "worst_grade": {"1".."5", "unknown"}} (+ "explain" per count and "windows" with explain=True)."""

    def count(c: ArmCount) -> Json:
        out: Json = {
            "n_patients": c.n_patients,
            "with_event": c.with_event,
            "grade_3_or_more": c.grade_3_or_more,
            "worst_grade": dict(c.worst_grade),
        }
        if explain:
            out["explain"] = entries_json(c.entries)
        return out

    def fisher(f: FisherResult) -> Json:
        return {"odds_ratio": rounded(f.odds_ratio), "p_value": significant(f.p_value), "reason": f.reason}

    def row(r: AeRow) -> Json:
        return {
            "study": count(r.study),
            "control": count(r.control),
            "fisher_any": fisher(r.fisher_any),
            "fisher_grade_3_or_more": fisher(r.fisher_grade_3_or_more),
        }

    out: Json = {
        **header(endpoint="adverse-events", protocol_version=result.protocol_version, as_of=result.as_of),
        "analysis_set": analysis_set_json(result.analysis_set),
        "terminology": result.terminology,
        "any": row(result.any_event),
        "by_term": {r.term: row(r) for r in result.by_term},
        "special_interest": {r.term: row(r) for r in result.special_interest},
        "open_windows": [w.patient for w in result.windows if w.open_to_cutoff],
        "excluded": exclusions_json(result.excluded),
        "flags": flags_json(result.flags),
    }
    if explain:
        out["windows"] = [
            {
                "patient": w.patient,
                "arm": w.arm,
                "first_day": iso(w.start),
                "last_day": iso(w.end),
                "open_to_cutoff": w.open_to_cutoff,
                "counted": [e.reference for e in w.counted],
                "outside_window": list(w.outside),
                "undated": list(w.undated),
            }
            for w in result.windows
        ]
    return out

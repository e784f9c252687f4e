"""Event-free survival, study vs control (PROTOCOL.md section 5, "5-year EFS").

* Origin: protocol [efs].origin, "enrolment" (ResearchSubject.period.start) or an anchor name.
* Events: the first of the protocol's event concepts (Condition onset: induction failure, relapse, second
  malignancy) and death (Patient.deceasedDateTime). Refuted conditions never count; unconfirmed ones
  (provisional, differential) do not count and are flagged. An event dated only to a month or year is placed
  on the first day of that period (flagged); an event before the origin counts at time 0 (flagged, a data
  query); an event without any date excludes the patient (their time to event cannot be known).
* Censoring: at the last contact, the latest precise clinical date in the record on or before the cut-off
  (cutoff.last_contact). Follow-up beyond the last contact is not assumed: censoring everyone at the
  cut-off would count time in which an event could have gone unrecorded.
* Times are whole days between local calendar days; a year is 365.25 days, so "5 years" is 1826.25 days
  and the number at risk is read at 0, 365.25, 730.5, ... days.
* Kaplan-Meier with Greenwood variance and log-log CI, S(horizon) with CI, median with CI, and the
  log-rank test study vs control: app.domain.statistics.survival.
* Two phases (issue 8): `efs_item` places one patient (a plain, storable EfsItem), `efs_from_items`
  aggregates; `event_free_survival` is the two in one call, and the service feeds the second from derived
  rows (app/services/summaries.py), with unflagged timed patients as (arm, days, event) counts.
"""

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.domain.endpoints.analysis_sets import analysis_set_named, membership
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, UNKNOWN, CohortExclusion, CohortPatient
from app.domain.endpoints.contributions import CohortEntry, cohort_entries
from app.domain.endpoints.cutoff import earliest_day, last_contact
from app.domain.endpoints.errors import AnalysisSetNeedsAssay
from app.domain.endpoints.evidence import Exclusion, Flag, exclusions_json, flags_json, sorted_exclusions
from app.domain.endpoints.reporting import (
    YEAR_DAYS,
    Json,
    analysis_set_json,
    header,
    iso,
    rounded,
    significant,
)
from app.domain.protocol import DEATH, ENROLMENT, AnalysisSet, Assay, Protocol
from app.domain.statistics import (
    KaplanMeierTable,
    LogRankResult,
    MedianSurvival,
    SurvivalEstimate,
    kaplan_meier,
    log_rank_test,
    median_survival,
    number_at_risk,
    survival_at,
)
from app.domain.timeline import PatientTimeline
from app.domain.timepoints import ClinicalDate


@dataclass(frozen=True, slots=True)
class EfsPatient:
    patient: str
    origin: dt.date
    end: dt.date  # event day, or last contact when censored
    days: int
    event: str | None  # the event concept ("relapse", "death", ...) or None when censored
    resources: tuple[str, ...]  # origin source, then the event's or the last contact's resource


@dataclass(frozen=True, slots=True)
class EfsArm:
    arm: str
    patients: tuple[EfsPatient, ...]
    table: KaplanMeierTable
    at_risk_by_year: tuple[tuple[int, int], ...]  # (year, number at risk)
    at_horizon: SurvivalEstimate
    median: MedianSurvival
    durations: tuple[int, ...]  # every patient's days, those given by number only included
    events: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class EfsAnalysis:
    as_of: dt.date
    protocol_version: str
    analysis_set: AnalysisSet
    origin: str
    events: tuple[str, ...]
    horizon_years: int
    analysis_time: str  # when the final analysis is due (protocol [efs].analysis_time)
    study: EfsArm
    control: EfsArm
    log_rank: LogRankResult
    excluded: tuple[Exclusion, ...]
    flags: tuple[Flag, ...]


def event_free_survival(
    *,
    timelines: Sequence[PatientTimeline],
    protocol: Protocol,
    as_of: dt.date,
    analysis_set: str = "full",
    assay: Assay | None = None,
) -> EfsAnalysis:
    """The two phases in one call: each patient's item, then the aggregation of the items."""
    chosen = analysis_set_named(protocol, analysis_set)
    items = [
        efs_item(entry=found, analysis_set=chosen, assay=assay, protocol=protocol)
        for found in cohort_entries(timelines=timelines, protocol=protocol, as_of=as_of)
    ]
    return efs_from_items(items=items, protocol=protocol, as_of=as_of, analysis_set=chosen)


# An item's status: timed (EVENT, CENSORED), or not analysed with a reason.
EVENT, CENSORED = "event", "censored"
TIMED = frozenset({EVENT, CENSORED})
EXCLUDED, NOT_IN_COHORT = "excluded", "not-in-cohort"
# The set needs an assay that was not named (AnalysisSetNeedsAssay); raised by the aggregation, as the
# full computation raises it as soon as one patient reaches that requirement.
NEEDS_ASSAY = "needs-assay"


@dataclass(frozen=True, slots=True)
class EfsItem:
    """One enrolled patient's contribution to the EFS analysis of one set (and assay, for per-protocol).

    Timed patients (status EVENT or CENSORED) carry the origin, the time in days and the event concept
    (None when censored); the others carry the `reason` they are listed as excluded. `flags` are the
    cohort's data queries and the EFS notes about the patient. Plain values only, so that it can be stored
    and read back (app/db/derived.py).
    """

    patient: str  # versioned Patient reference
    arm: str | None
    stratum: str
    site: str
    status: str
    reason: str | None
    resources: tuple[str, ...]  # origin source, then the event's or last contact's (or the exclusion's)
    flags: tuple[str, ...]
    origin: dt.date | None = None
    days: int | None = None
    event: str | None = None

    @property
    def timed(self) -> bool:
        return self.status in TIMED


def efs_item(
    *, entry: CohortEntry, analysis_set: AnalysisSet, assay: Assay | None, protocol: Protocol
) -> EfsItem:
    """Phase one: where one patient of the cohort (cohort_entry) lands in the analysis."""
    if isinstance(entry, CohortExclusion):
        return EfsItem(
            entry.reference, entry.arm, UNKNOWN, UNKNOWN, NOT_IN_COHORT, entry.reason, entry.references, ()
        )

    def out(status: str, reason: str | None, resources: tuple[str, ...]) -> EfsItem:
        return EfsItem(
            entry.reference, entry.arm, entry.stratum, entry.site, status, reason, resources, entry.flags
        )

    try:
        m = membership(patient=entry, analysis_set=analysis_set, assay=assay, protocol=protocol)
    except AnalysisSetNeedsAssay:
        return out(NEEDS_ASSAY, None, ())
    if not m.included:
        return out(EXCLUDED, m.reason or "not in the analysis set", m.resources)
    found = _time_to_event(entry, protocol)
    if isinstance(found, Exclusion):
        return out(EXCLUDED, found.reason, found.resources)
    timed, notes = found
    return EfsItem(
        entry.reference,
        entry.arm,
        entry.stratum,
        entry.site,
        CENSORED if timed.event is None else EVENT,
        None,
        timed.resources,
        (*entry.flags, *notes),
        timed.origin,
        timed.days,
        timed.event,
    )


@dataclass(frozen=True, slots=True)
class TimedGroup:
    """Timed patients alike and known by number only: enough for every figure, not for `explain`. Only
    for patients without flags (flags name the patient)."""

    arm: str
    days: int
    event: bool
    n: int


def efs_from_items(
    *,
    items: Iterable[EfsItem],
    protocol: Protocol,
    as_of: dt.date,
    analysis_set: AnalysisSet,
    groups: Iterable[TimedGroup] = (),
) -> EfsAnalysis:
    """Phase two: Kaplan-Meier per arm, the log-rank test, exclusions and flags from the patients' items.

    Items may come in any order but each patient once; timed patients may instead be passed as `groups`,
    and such an analysis cannot be explained (efs_to_json refuses).
    """
    ordered = sorted(items, key=lambda i: i.patient)
    if any(i.status == NEEDS_ASSAY for i in ordered):
        raise AnalysisSetNeedsAssay(analysis_set.name)
    excluded = [Exclusion(i.patient, i.arm, i.reason or "", i.resources) for i in ordered if not i.timed]
    flags = {Flag(i.patient, f) for i in ordered for f in i.flags}
    given = list(groups)
    arms = []
    for arm in (STUDY_ARM, CONTROL_ARM):
        timed = [_patient(i) for i in ordered if i.timed and i.arm == arm]
        arms.append(_arm(arm, timed, [g for g in given if g.arm == arm and g.n], protocol.efs.horizon_years))
    study, control = arms
    log_rank = log_rank_test(
        study_durations=study.durations,
        study_events=study.events,
        control_durations=control.durations,
        control_events=control.events,
    )
    return EfsAnalysis(
        as_of=as_of,
        protocol_version=protocol.version,
        analysis_set=analysis_set,
        origin=protocol.efs.origin,
        events=protocol.efs.events,
        horizon_years=protocol.efs.horizon_years,
        analysis_time=protocol.efs.analysis_time,
        study=study,
        control=control,
        log_rank=log_rank,
        excluded=sorted_exclusions(excluded),
        flags=tuple(sorted(flags, key=lambda f: (f.patient, f.flag))),
    )


def _patient(item: EfsItem) -> EfsPatient:
    assert item.origin is not None and item.days is not None  # a timed item has both
    end = item.origin + dt.timedelta(days=item.days)
    return EfsPatient(item.patient, item.origin, end, item.days, item.event, item.resources)


def _arm(arm: str, patients: list[EfsPatient], groups: list[TimedGroup], horizon_years: int) -> EfsArm:
    patients.sort(key=lambda p: p.patient)
    # Kaplan-Meier and the log-rank test count patients per distinct time: the order is immaterial.
    durations = [p.days for p in patients] + [g.days for g in groups for _ in range(g.n)]
    events = [p.event is not None for p in patients] + [g.event for g in groups for _ in range(g.n)]
    table = kaplan_meier(durations=durations, events=events)
    years = range(horizon_years + 1)
    at_risk = number_at_risk(table=table, times=[y * YEAR_DAYS for y in years])
    return EfsArm(
        arm=arm,
        patients=tuple(patients),
        table=table,
        at_risk_by_year=tuple(zip(years, at_risk, strict=True)),
        at_horizon=survival_at(table=table, time=horizon_years * YEAR_DAYS),
        median=median_survival(table=table),
        durations=tuple(durations),
        events=tuple(events),
    )


def _time_to_event(patient: CohortPatient, protocol: Protocol) -> tuple[EfsPatient, list[str]] | Exclusion:
    record = patient.timeline.record
    origin_name = protocol.efs.origin
    if origin_name == ENROLMENT:
        origin, origin_ref = patient.enrolment_date, patient.enrolment.reference
    else:
        anchor = patient.timeline.anchors.get(origin_name)
        origin = None if anchor is None else anchor.date
        sources = [] if anchor is None else [c.reference for c in anchor.candidates if c.date == origin]
        origin_ref = sources[0] if sources else origin_name
    if origin is None:
        reason = f"EFS origin ({origin_name}) unknown: date missing, imprecise or in conflict"
        return Exclusion(patient.reference, patient.arm, reason, (patient.enrolment.reference,))
    notes: list[str] = []
    dated: list[tuple[dt.date, str, str]] = []  # (day, concept, reference)
    candidates: list[tuple[str, ClinicalDate | None, str]] = []
    for concept in protocol.efs.events:
        if concept == DEATH:
            if record.deceased is not None:
                candidates.append((DEATH, record.deceased, record.reference))
            continue
        for condition in record.conditions:
            if condition.concept != concept or condition.refuted:
                continue
            if not condition.confirmed:
                notes.append(f"unconfirmed {concept} ({condition.reference}) not counted as an event")
                continue
            candidates.append((concept, condition.onset, condition.reference))
    for concept, date, reference in candidates:
        if date is None:
            reason = f"{concept} ({reference}) has no date: time to event unknown"
            return Exclusion(patient.reference, patient.arm, reason, (origin_ref, reference))
        day = earliest_day(date, record.zone)
        if not date.is_precise:
            notes.append(f"{concept} ({reference}) dated {date.precision} only: placed on {day}")
        if day < origin:
            notes.append(f"{concept} ({reference}) on {day} is before the origin {origin}: counted at day 0")
            day = origin
        dated.append((day, concept, reference))
    event: str | None = None
    if dated:
        end, event, reference = min(dated)
    else:
        contact = last_contact(record)
        end, reference = (origin, origin_ref) if contact is None or contact[0] < origin else contact
    resources = tuple(dict.fromkeys((origin_ref, reference)))
    return EfsPatient(patient.reference, origin, end, (end - origin).days, event, resources), notes


# --- JSON ----------------------------------------------------------------------------------------------


def efs_to_json(result: EfsAnalysis, *, explain: bool = False) -> Json:
    """Shape: header + {"analysis_set", "origin", "events", "censoring", "days_per_year", "horizon_years",
    "analysis_time", "study": arm, "control": arm, "log_rank", "excluded", "flags"}.

    An arm is {"n", "events", "table": [{"time_days", "time_years", "at_risk", "events", "censored",
    "survival", "std_error", "ci95"}], "at_risk_by_year": [{"year", "at_risk"}], "survival_at_horizon":
    {"years", "survival", "ci95", "at_risk", "reason"}, "median": {"days", "ci95_days", "reason"}}, plus
    "patients" [{"patient", "origin", "end", "days", "event", "resources"}] with explain=True.
    """
    lr = result.log_rank
    return {
        **header(endpoint="efs", protocol_version=result.protocol_version, as_of=result.as_of),
        "analysis_set": analysis_set_json(result.analysis_set),
        "origin": result.origin,
        "events": list(result.events),
        "censoring": "at the last contact (latest clinical date on or before the cut-off)",
        "days_per_year": YEAR_DAYS,
        "horizon_years": result.horizon_years,
        "analysis_time": result.analysis_time,
        "study": _arm_json(result.study, result.horizon_years, explain),
        "control": _arm_json(result.control, result.horizon_years, explain),
        "log_rank": {
            "observed_study": lr.observed_study,
            "expected_study": rounded(lr.expected_study),
            "observed_control": lr.observed_control,
            "expected_control": rounded(lr.expected_control),
            "variance": rounded(lr.variance),
            "chi_square": significant(lr.chi_square),
            "p_value": significant(lr.p_value),
            "reason": lr.reason,
        },
        "excluded": exclusions_json(result.excluded),
        "flags": flags_json(result.flags),
    }


def _arm_json(arm: EfsArm, horizon_years: int, explain: bool) -> Json:
    h, m = arm.at_horizon, arm.median
    out: Json = {
        "n": arm.table.n_patients,
        "events": arm.table.n_events,
        "table": [
            {
                "time_days": int(row.time),
                "time_years": rounded(row.time / YEAR_DAYS),
                "at_risk": row.n_at_risk,
                "events": row.n_events,
                "censored": row.n_censored,
                "survival": rounded(row.survival),
                "std_error": rounded(row.std_error),
                "ci95": None if row.ci_lower is None else [rounded(row.ci_lower), rounded(row.ci_upper)],
            }
            for row in arm.table.rows
        ],
        "at_risk_by_year": [{"year": year, "at_risk": n} for year, n in arm.at_risk_by_year],
        "survival_at_horizon": {
            "years": horizon_years,
            "survival": rounded(h.survival),
            "ci95": None if h.ci_lower is None else [rounded(h.ci_lower), rounded(h.ci_upper)],
            "at_risk": h.n_at_risk,
            "reason": h.reason,
        },
        "median": {
            "days": rounded(m.median),
            "ci95_days": [rounded(m.ci_lower), rounded(m.ci_upper)],
            "reason": m.reason,
        },
    }
    if explain:
        if len(arm.patients) != arm.table.n_patients:
            raise ValueError("patients counted by number only (TimedGroup) cannot be explained")
        out["patients"] = [
            {
                "patient": p.patient,
                "origin": iso(p.origin),
                "end": iso(p.end),
                "days": p.days,
                "event": p.event,
                "resources": list(p.resources),
            }
            for p in arm.patients
        ]
    return out

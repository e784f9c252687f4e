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
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain.endpoints.analysis_sets import analysis_set_named, members
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, CohortPatient, build_cohort
from app.domain.endpoints.cutoff import earliest_day, last_contact
from app.domain.endpoints.evidence import (
    Exclusion,
    Flag,
    cohort_exclusions,
    excluded_members,
    exclusions_json,
    flags_json,
    flags_of,
    sorted_exclusions,
)
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
    chosen = analysis_set_named(protocol, analysis_set)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    excluded = cohort_exclusions(cohort)
    flags = list(flags_of(cohort.patients))
    arms = []
    for arm in (STUDY_ARM, CONTROL_ARM):
        included, out = members(cohort=cohort, arm=arm, analysis_set=chosen, assay=assay, protocol=protocol)
        excluded.extend(excluded_members(out))
        timed = []
        for m in included:
            found = _time_to_event(m.patient, protocol)
            if isinstance(found, Exclusion):
                excluded.append(found)
            else:
                timed.append(found[0])
                flags.extend(Flag(m.patient.reference, note) for note in found[1])
        arms.append(_arm(arm, timed, protocol.efs.horizon_years))
    study, control = arms
    log_rank = log_rank_test(
        study_durations=[p.days for p in study.patients],
        study_events=[p.event is not None for p in study.patients],
        control_durations=[p.days for p in control.patients],
        control_events=[p.event is not None for p in control.patients],
    )
    return EfsAnalysis(
        as_of=as_of,
        protocol_version=protocol.version,
        analysis_set=chosen,
        origin=protocol.efs.origin,
        events=protocol.efs.events,
        horizon_years=protocol.efs.horizon_years,
        analysis_time=protocol.efs.analysis_time,
        study=study,
        control=control,
        log_rank=log_rank,
        excluded=sorted_exclusions(excluded),
        flags=tuple(sorted(set(flags), key=lambda f: (f.patient, f.flag))),
    )


def _arm(arm: str, patients: list[EfsPatient], horizon_years: int) -> EfsArm:
    patients.sort(key=lambda p: p.patient)
    table = kaplan_meier(durations=[p.days for p in patients], events=[p.event is not None for p in patients])
    years = range(horizon_years + 1)
    at_risk = number_at_risk(table=table, times=[y * YEAR_DAYS for y in years])
    return EfsArm(
        arm=arm,
        patients=tuple(patients),
        table=table,
        at_risk_by_year=tuple(zip(years, at_risk, strict=True)),
        at_horizon=survival_at(table=table, time=horizon_years * YEAR_DAYS),
        median=median_survival(table=table),
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

"""Healthcare costs, study vs control (PROTOCOL.md section 5, "Healthcare costs").

* Window per patient: [protocol [costs].start, start + [costs].length), calendar months added as in
  timepoints.add_span (2025-01-31 + 1 month = 2025-02-28); by default induction day 1 + 6 months, the end
  excluded. A patient whose window has not closed by the cut-off (its last day is after `as_of`) is excluded:
  the total would be partial. A patient without the start anchor is excluded.
* Costs (ChargeItem.priceOverride, dated by occurrence) whose local day is in the window are summed exactly
  (Decimal). Every summed cost must have an amount and the protocol's currency (CNY): otherwise
  CostDataError names every offending resource, across all patients, instead of returning a sum. Costs
  without a precise date cannot be placed: they are not summed and are flagged.
* A patient without any cost in the window is excluded ("no cost records"), not counted as 0: an empty
  record means the charges were not loaded, not that care was free.
* Per arm: n, median, Q1, Q3 (numpy "linear" quantiles = R type 7) and mean; study vs control by the
  two-sided Mann-Whitney U test (app.domain.statistics).
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from app.domain.endpoints.analysis_sets import analysis_set_named, members
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, CohortPatient, build_cohort
from app.domain.endpoints.errors import CostDataError, EndpointError
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
    Json,
    analysis_set_json,
    decimal_text,
    header,
    iso,
    rounded,
    significant,
)
from app.domain.protocol import AnalysisSet, Assay, CostWindow, Protocol
from app.domain.record import CostFact
from app.domain.statistics import MannWhitneyResult, SampleSummary, mann_whitney_u, summarise_sample
from app.domain.timeline import PatientTimeline
from app.domain.timepoints import add_span, day_for


@dataclass(frozen=True, slots=True)
class PatientCost:
    patient: str
    first_day: dt.date
    last_day: dt.date  # inclusive
    total: Decimal
    resources: tuple[str, ...]  # the ChargeItem versions summed


@dataclass(frozen=True, slots=True)
class ArmCosts:
    patients: tuple[PatientCost, ...]
    summary: SampleSummary


@dataclass(frozen=True, slots=True)
class CostAnalysis:
    as_of: dt.date
    protocol_version: str
    analysis_set: AnalysisSet
    currency: str
    window: CostWindow
    study: ArmCosts
    control: ArmCosts
    mann_whitney: MannWhitneyResult
    excluded: tuple[Exclusion, ...]
    flags: tuple[Flag, ...]


def healthcare_costs(
    *,
    timelines: Sequence[PatientTimeline],
    protocol: Protocol,
    as_of: dt.date,
    analysis_set: str = "full",
    assay: Assay | None = None,
) -> CostAnalysis:
    if protocol.costs is None:
        raise EndpointError("the protocol file has no [costs] section")
    window = protocol.costs
    chosen = analysis_set_named(protocol, analysis_set)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    excluded = cohort_exclusions(cohort)
    flags = list(flags_of(cohort.patients))
    problems: list[tuple[str, str]] = []
    arms: dict[str, list[PatientCost]] = {}
    for arm in (STUDY_ARM, CONTROL_ARM):
        included, out = members(cohort=cohort, arm=arm, analysis_set=chosen, assay=assay, protocol=protocol)
        excluded.extend(excluded_members(out))
        arms[arm] = []
        for m in included:
            found = _patient_cost(m.patient, window, as_of, problems, flags)
            if isinstance(found, Exclusion):
                excluded.append(found)
            else:
                arms[arm].append(found)
    if problems:
        raise CostDataError(problems)
    study, control = arms[STUDY_ARM], arms[CONTROL_ARM]
    return CostAnalysis(
        as_of=as_of,
        protocol_version=protocol.version,
        analysis_set=chosen,
        currency=window.currency,
        window=window,
        study=ArmCosts(tuple(study), summarise_sample(values=[p.total for p in study])),
        control=ArmCosts(tuple(control), summarise_sample(values=[p.total for p in control])),
        mann_whitney=mann_whitney_u(study=[p.total for p in study], control=[p.total for p in control]),
        excluded=sorted_exclusions(excluded),
        flags=tuple(sorted(set(flags), key=lambda f: (f.patient, f.flag))),
    )


def _patient_cost(
    patient: CohortPatient,
    window: CostWindow,
    as_of: dt.date,
    problems: list[tuple[str, str]],
    flags: list[Flag],
) -> PatientCost | Exclusion:
    anchor = patient.timeline.anchors.get(window.start.anchor)
    if anchor is None or anchor.date is None:
        reason = f"cost window start unknown ({window.start.anchor} missing or in conflict)"
        return Exclusion(patient.reference, patient.arm, reason, (patient.enrolment.reference,))
    first = day_for(anchor_date=anchor.date, offset=window.start.offset, unit=window.start.unit)
    last = add_span(start=first, span=window.length) - dt.timedelta(days=1)
    if last > as_of:
        reason = f"cost window {first}..{last} has not closed by the cut-off: the total would be partial"
        return Exclusion(patient.reference, patient.arm, reason, (anchor.candidates[0].reference,))
    summed: list[CostFact] = []
    for cost in sorted(patient.timeline.record.costs, key=lambda c: c.reference):
        day = None if cost.date is None else cost.date.day_in(patient.timeline.record.zone)
        if day is None:
            flags.append(Flag(patient.reference, f"cost {cost.reference} has no precise date: not summed"))
        elif first <= day <= last:
            summed.append(cost)
    for cost in summed:
        if cost.amount is None or not cost.amount.is_finite():
            problems.append((cost.reference, "no amount"))
        if cost.currency is None:
            problems.append((cost.reference, "no currency"))
        elif cost.currency != window.currency:
            problems.append((cost.reference, f"currency {cost.currency}, not {window.currency}"))
    if not summed:
        reason = f"no cost records in the cost window {first}..{last}"
        return Exclusion(patient.reference, patient.arm, reason, (anchor.candidates[0].reference,))
    total = sum((c.amount for c in summed if c.amount is not None and c.amount.is_finite()), Decimal(0))
    return PatientCost(patient.reference, first, last, total, tuple(c.reference for c in summed))


# --- JSON ----------------------------------------------------------------------------------------------


def costs_to_json(result: CostAnalysis, *, explain: bool = False) -> Json:
    """Shape: header + {"analysis_set", "currency", "window", "study": arm, "control": arm, "mann_whitney",
    "excluded", "flags"}; an arm is {"n", "median", "q1", "q3", "mean", "reason", "patients": [{"patient",
    "first_day", "last_day", "total"}]} (each patient + "resources" with explain=True)."""

    def arm(a: ArmCosts) -> Json:
        s = a.summary
        patients = []
        for p in a.patients:
            row: Json = {
                "patient": p.patient,
                "first_day": iso(p.first_day),
                "last_day": iso(p.last_day),
                "total": decimal_text(p.total),
            }
            if explain:
                row["resources"] = list(p.resources)
            patients.append(row)
        return {
            "n": s.n,
            "median": rounded(s.median, 2),
            "q1": rounded(s.q1, 2),
            "q3": rounded(s.q3, 2),
            "mean": rounded(s.mean, 2),
            "reason": s.reason,
            "patients": patients,
        }

    mw, w = result.mann_whitney, result.window
    return {
        **header(endpoint="costs", protocol_version=result.protocol_version, as_of=result.as_of),
        "analysis_set": analysis_set_json(result.analysis_set),
        "currency": result.currency,
        "window": {
            "anchor": w.start.anchor,
            "offset": w.start.offset,
            "unit": w.start.unit.value,
            "length": {"years": w.length.years, "months": w.length.months, "days": w.length.days},
            "end": "exclusive",
        },
        "study": arm(result.study),
        "control": arm(result.control),
        "mann_whitney": {
            "u_statistic": significant(mw.u_statistic),
            "p_value": significant(mw.p_value),
            "method": mw.method,
            "reason": mw.reason,
        },
        "excluded": exclusions_json(result.excluded),
        "flags": flags_json(result.flags),
    }

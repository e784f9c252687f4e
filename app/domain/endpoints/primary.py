"""Primary endpoint: MRD-negative rate at the end of induction, flow and NGS (PROTOCOL.md section 5).

Per group (overall, per stratum, per site): n negative / N, exact two-sided Clopper-Pearson interval at the
protocol's confidence level, and the exact one-sided binomial test of H0: p <= p0 with p0 from the protocol
file (per stratum where configured, else overall; the overall and site lines use the overall p0). In a set
that imputes (full analysis set) a missing or not-evaluable result counts in N as not negative and is
counted in `imputed_not_negative`; in a set that does not, such a patient is listed as excluded.

The patient-level control (arm "historical-control", result at D46) gets its own rate and interval, overall
and per stratum, with Fisher's exact two-sided test against the study group of the same line.
"""

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from app.domain.endpoints.analysis_sets import Membership, analysis_set_named, members
from app.domain.endpoints.cohort import (
    CONTROL_ARM,
    CONTROL_PRIMARY_TIMEPOINT,
    STUDY_ARM,
    UNKNOWN,
    build_cohort,
)
from app.domain.endpoints.evidence import (
    Exclusion,
    Flag,
    PatientEntry,
    cohort_exclusions,
    entries_json,
    entry,
    excluded_members,
    exclusions_json,
    flags_json,
    flags_of,
    sorted_exclusions,
)
from app.domain.endpoints.reporting import Json, analysis_set_json, header, interval, rounded, significant
from app.domain.protocol import AnalysisSet, Assay, Protocol
from app.domain.statistics import FisherResult, clopper_pearson, fisher_exact_2x2, one_sided_binomial_p
from app.domain.timeline import PatientTimeline

NEGATIVE, POSITIVE, IMPUTED = "negative", "positive", "imputed-not-negative"


@dataclass(frozen=True, slots=True)
class RateLine:
    """One line of the primary table; rate, CI and p-value are None with a `reason` when undefined."""

    n_negative: int
    n: int
    rate: float | None
    ci: tuple[float, float] | None
    p0: float | None
    p0_source: str | None
    p_value_one_sided: float | None
    imputed_not_negative: int
    reason: str | None
    entries: tuple[PatientEntry, ...]  # every patient in N: negative, positive or imputed-not-negative


@dataclass(frozen=True, slots=True)
class ControlLine:
    control: RateLine
    fisher: FisherResult  # study (same line) vs control


@dataclass(frozen=True, slots=True)
class PrimaryAnalysis:
    assay: Assay
    timepoint: str
    analysis_set: AnalysisSet
    as_of: dt.date
    protocol_version: str
    hypothesis: str
    confidence_level: float
    overall: RateLine
    by_stratum: tuple[tuple[str, RateLine], ...]
    by_site: tuple[tuple[str, RateLine], ...]
    control_overall: ControlLine | None  # None when no control patient is enrolled
    control_by_stratum: tuple[tuple[str, ControlLine], ...]
    excluded: tuple[Exclusion, ...]
    flags: tuple[Flag, ...]


def primary_endpoint(
    *,
    timelines: Sequence[PatientTimeline],
    protocol: Protocol,
    as_of: dt.date,
    assay: Assay,
    analysis_set: str,
) -> PrimaryAnalysis:
    chosen = analysis_set_named(protocol, analysis_set)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    confidence = float(protocol.primary.confidence_level)
    excluded = cohort_exclusions(cohort)

    def arm(name: str) -> list[Membership]:
        included, out = members(cohort=cohort, arm=name, analysis_set=chosen, assay=assay, protocol=protocol)
        excluded.extend(excluded_members(out))
        counted = []
        for m in included:
            if _status(m) == IMPUTED and not chosen.missing_primary_counts_as_not_negative:
                reason = f"{_reason(m)}; this analysis set does not impute"
                excluded.append(Exclusion(m.patient.reference, m.patient.arm, reason, m.resources))
            else:
                counted.append(m)
        return counted

    study, control = arm(STUDY_ARM), arm(CONTROL_ARM)

    def tested(group: list[Membership], stratum: str | None) -> RateLine:
        historical = protocol.p0_for(assay=assay, stratum=stratum)
        p0, source = (historical.p0, historical.source) if historical else (None, None)
        return _line(group, confidence=confidence, p0=p0, source=source, test=True)

    def compare(group: list[Membership], study_group: list[Membership]) -> ControlLine:
        own = _line(group, confidence=confidence, p0=None, source=None, test=False)
        study_negative = sum(1 for m in study_group if _status(m) == NEGATIVE)
        fisher = fisher_exact_2x2(
            study_successes=study_negative,
            study_n=len(study_group),
            control_successes=own.n_negative,
            control_n=own.n,
        )
        return ControlLine(own, fisher)

    def stratum(group: list[Membership], key: str) -> list[Membership]:
        return [m for m in group if m.patient.stratum == key]

    strata = _keys(protocol.strata.values, (m.patient.stratum for m in [*study, *control]))
    sites = _keys(sorted(protocol.sites), (m.patient.site for m in study))
    has_control = bool(cohort.arm(CONTROL_ARM))
    return PrimaryAnalysis(
        assay=assay,
        timepoint=protocol.primary.timepoint,
        analysis_set=chosen,
        as_of=as_of,
        protocol_version=protocol.version,
        hypothesis=protocol.primary.hypothesis,
        confidence_level=confidence,
        overall=tested(study, None),
        by_stratum=tuple((k, tested(stratum(study, k), None if k == UNKNOWN else k)) for k in strata),
        by_site=tuple((k, tested([m for m in study if m.patient.site == k], None)) for k in sites),
        control_overall=compare(control, study) if has_control else None,
        control_by_stratum=(
            tuple((k, compare(stratum(control, k), stratum(study, k))) for k in strata) if has_control else ()
        ),
        excluded=sorted_exclusions(excluded),
        flags=flags_of(cohort.patients),
    )


def _status(m: Membership) -> str:
    assert m.result is not None  # the primary endpoint always asks with an assay
    return m.result.status.value if m.result.status.evaluable else IMPUTED


def _reason(m: Membership) -> str:
    assert m.result is not None
    return f"{m.result.timepoint} {m.result.assay.value} result {m.result.status.value}: {m.result.reason}"


def _keys(configured: Sequence[str], observed: Iterable[str]) -> tuple[str, ...]:
    """The configured keys (always shown, even when empty), then any other key seen in the data."""
    return (*configured, *sorted(set(observed) - set(configured)))


def _line(
    group: list[Membership], *, confidence: float, p0: Decimal | None, source: str | None, test: bool
) -> RateLine:
    entries = tuple(entry(m, _status(m)) for m in group)
    n = len(entries)
    negatives = sum(1 for e in entries if e.status == NEGATIVE)
    p0_value = None if p0 is None else float(p0)
    reasons = []
    if n == 0:
        reasons.append("no patients in this group (n = 0)")
    if test and p0_value is None:
        reasons.append("no historical control rate p0 is configured for this assay")
    return RateLine(
        n_negative=negatives,
        n=n,
        rate=negatives / n if n else None,
        ci=clopper_pearson(successes=negatives, n=n, confidence=confidence) if n else None,
        p0=p0_value,
        p0_source=source,
        p_value_one_sided=(
            None
            if n == 0 or p0_value is None
            else one_sided_binomial_p(successes=negatives, n=n, p0=p0_value)
        ),
        imputed_not_negative=sum(1 for e in entries if e.status == IMPUTED),
        reason="; ".join(reasons) or None,
        entries=entries,
    )


# --- JSON ----------------------------------------------------------------------------------------------


def primary_to_json(result: PrimaryAnalysis, *, explain: bool = False) -> Json:
    """Shape: header + {"assay", "timepoint", "analysis_set", "hypothesis", "confidence_level", "overall",
    "by_stratum": {stratum: line}, "by_site": {site: line}, "control", "excluded", "flags"}; a line is
    {"n_negative", "n", "rate", "ci95", "p0", "p0_source", "p_value_one_sided", "imputed_not_negative",
    "reason"} (+ "explain" with explain=True)."""

    def control(c: ControlLine) -> Json:
        f = c.fisher
        own = _line_json(c.control, explain, tested=False)
        own["fisher_vs_study"] = {
            "study_n_negative": f.study_successes,
            "study_n": f.study_n,
            "control_n_negative": f.control_successes,
            "control_n": f.control_n,
            "odds_ratio": rounded(f.odds_ratio),
            "p_value_two_sided": significant(f.p_value),
            "reason": f.reason,
        }
        return own

    if result.control_overall is None:
        controls: Json = {
            "timepoint": CONTROL_PRIMARY_TIMEPOINT,
            "overall": None,
            "by_stratum": {},
            "reason": "no historical-control patients enrolled at the cut-off",
        }
    else:
        controls = {
            "timepoint": CONTROL_PRIMARY_TIMEPOINT,
            "overall": control(result.control_overall),
            "by_stratum": {k: control(c) for k, c in result.control_by_stratum},
            "reason": None,
        }
    return {
        **header(endpoint="primary", protocol_version=result.protocol_version, as_of=result.as_of),
        "assay": result.assay.value,
        "timepoint": result.timepoint,
        "analysis_set": analysis_set_json(result.analysis_set),
        "hypothesis": result.hypothesis,
        "confidence_level": rounded(result.confidence_level),
        "overall": _line_json(result.overall, explain),
        "by_stratum": {k: _line_json(v, explain) for k, v in result.by_stratum},
        "by_site": {k: _line_json(v, explain) for k, v in result.by_site},
        "control": controls,
        "excluded": exclusions_json(result.excluded),
        "flags": flags_json(result.flags),
    }


def _line_json(line: RateLine, explain: bool, *, tested: bool = True) -> Json:
    out: Json = {
        "n_negative": line.n_negative,
        "n": line.n,
        "rate": rounded(line.rate),
        "ci95": interval(line.ci),
        "imputed_not_negative": line.imputed_not_negative,
        "reason": line.reason,
    }
    if tested:
        out |= {
            "p0": rounded(line.p0),
            "p0_source": line.p0_source,
            "p_value_one_sided": significant(line.p_value_one_sided),
        }
    if explain:
        out["explain"] = {
            "numerator": entries_json(e for e in line.entries if e.status == NEGATIVE),
            "denominator": entries_json(line.entries),
            "imputed": entries_json(e for e in line.entries if e.status == IMPUTED),
        }
    return out

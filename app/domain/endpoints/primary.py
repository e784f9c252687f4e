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

from app.domain.endpoints.analysis_sets import Membership, analysis_set_named, membership
from app.domain.endpoints.cohort import (
    CONTROL_ARM,
    STUDY_ARM,
    UNKNOWN,
    CohortExclusion,
)
from app.domain.endpoints.contributions import CohortEntry, cohort_entries
from app.domain.endpoints.evidence import (
    Exclusion,
    Flag,
    PatientEntry,
    entries_json,
    exclusions_json,
    flags_json,
    sorted_exclusions,
)
from app.domain.endpoints.reporting import Json, analysis_set_json, header, interval, rounded, significant
from app.domain.protocol import AnalysisSet, Assay, Protocol
from app.domain.statistics import FisherResult, clopper_pearson, fisher_exact_2x2, one_sided_binomial_p
from app.domain.timeline import PatientTimeline

NEGATIVE, POSITIVE, IMPUTED = "negative", "positive", "imputed-not-negative"
COUNTED = frozenset({NEGATIVE, POSITIVE, IMPUTED})
# Not counted: left out of this set, or enrolled without an analysable arm (cohort.py); listed as excluded.
EXCLUDED, NOT_IN_COHORT = "excluded", "not-in-cohort"


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
    entries: tuple[PatientEntry, ...]  # every patient in N (but those given as a CountedGroup)


@dataclass(frozen=True, slots=True)
class ControlLine:
    control: RateLine
    fisher: FisherResult  # study (same line) vs control


@dataclass(frozen=True, slots=True)
class PrimaryAnalysis:
    assay: Assay
    timepoint: str
    control_timepoint: str  # the historical control's own primary timepoint
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
    """The two phases in one call: each patient's item, then the aggregation of the items."""
    chosen = analysis_set_named(protocol, analysis_set)
    items = [
        primary_item(entry=found, analysis_set=chosen, assay=assay, protocol=protocol)
        for found in cohort_entries(timelines=timelines, protocol=protocol, as_of=as_of)
    ]
    return primary_from_items(items=items, protocol=protocol, as_of=as_of, assay=assay, analysis_set=chosen)


@dataclass(frozen=True, slots=True)
class PrimaryItem:
    """One enrolled patient's contribution to the primary analysis of one set and assay.

    `status` is NEGATIVE, POSITIVE or IMPUTED when the patient counts in N; EXCLUDED (not in the set, or
    not evaluable in a set that does not impute) or NOT_IN_COHORT (no analysable arm, see cohort.py) with
    `reason` otherwise. Plain values only, so that it can be stored and read back (app/db/derived.py).
    """

    patient: str  # versioned Patient reference
    arm: str | None
    stratum: str
    site: str
    status: str
    reason: str | None
    resources: tuple[str, ...]  # the resource versions behind the status (or the exclusion)
    flags: tuple[str, ...]  # the cohort's data queries about the patient

    @property
    def counted(self) -> bool:
        return self.status in COUNTED


def primary_item(
    *, entry: CohortEntry, analysis_set: AnalysisSet, assay: Assay, protocol: Protocol
) -> PrimaryItem:
    """Phase one: where one patient of the cohort (cohort_entry) lands in the analysis."""
    if isinstance(entry, CohortExclusion):
        return PrimaryItem(
            entry.reference, entry.arm, UNKNOWN, UNKNOWN, NOT_IN_COHORT, entry.reason, entry.references, ()
        )
    m = membership(patient=entry, analysis_set=analysis_set, assay=assay, protocol=protocol)
    status, reason = _status(m), None
    if not m.included:
        status, reason = EXCLUDED, m.reason or "not in the analysis set"
    elif status == IMPUTED and not analysis_set.missing_primary_counts_as_not_negative:
        status, reason = EXCLUDED, f"{_reason(m)}; this analysis set does not impute"
    return PrimaryItem(
        entry.reference, entry.arm, entry.stratum, entry.site, status, reason, m.resources, entry.flags
    )


@dataclass(frozen=True, slots=True)
class CountedGroup:
    """Patients counted alike and known by number only: enough for every figure, not for `explain`. Only
    for patients without flags (flags name the patient)."""

    arm: str
    stratum: str
    site: str
    status: str  # NEGATIVE, POSITIVE or IMPUTED
    n: int


@dataclass(frozen=True, slots=True)
class _Counted:
    """A counted patient (n = 1, with their entry) or a CountedGroup (entry None)."""

    arm: str | None
    stratum: str
    site: str
    status: str
    n: int
    entry: PatientEntry | None


def primary_from_items(
    *,
    items: Iterable[PrimaryItem],
    protocol: Protocol,
    as_of: dt.date,
    assay: Assay,
    analysis_set: AnalysisSet,
    groups: Iterable[CountedGroup] = (),
) -> PrimaryAnalysis:
    """Phase two: the rate lines, the control comparison, exclusions and flags from the patients' items.

    Items may come in any order but each patient once. Counted patients' `resources` are printed only
    with explain, so a caller that does not explain may pass them empty, or pass such patients as
    `groups`; an analysis with groups cannot be explained (primary_to_json refuses).
    """
    ordered = sorted(items, key=lambda i: i.patient)
    confidence = float(protocol.primary.confidence_level)
    counted = [
        _Counted(i.arm, i.stratum, i.site, i.status, 1, PatientEntry(i.patient, i.status, i.resources))
        for i in ordered
        if i.counted
    ]
    counted += [_Counted(g.arm, g.stratum, g.site, g.status, g.n, None) for g in groups if g.n]
    study = [c for c in counted if c.arm == STUDY_ARM]
    control = [c for c in counted if c.arm == CONTROL_ARM]
    in_cohort = [i for i in ordered if i.status != NOT_IN_COHORT]
    excluded = [Exclusion(i.patient, i.arm, i.reason or "", i.resources) for i in ordered if not i.counted]

    def tested(group: list[_Counted], stratum: str | None) -> RateLine:
        historical = protocol.p0_for(assay=assay, stratum=stratum)
        p0, source = (historical.p0, historical.source) if historical else (None, None)
        return _line(group, confidence=confidence, p0=p0, source=source, test=True)

    def compare(group: list[_Counted], study_group: list[_Counted]) -> ControlLine:
        own = _line(group, confidence=confidence, p0=None, source=None, test=False)
        fisher = fisher_exact_2x2(
            study_successes=_total(study_group, NEGATIVE),
            study_n=_total(study_group),
            control_successes=own.n_negative,
            control_n=own.n,
        )
        return ControlLine(own, fisher)

    def stratum(group: list[_Counted], key: str) -> list[_Counted]:
        return [c for c in group if c.stratum == key]

    strata = _keys(protocol.strata.values, (c.stratum for c in counted))
    sites = _keys(sorted(protocol.sites), (c.site for c in study))
    has_control = bool(control) or any(i.arm == CONTROL_ARM for i in in_cohort)
    return PrimaryAnalysis(
        assay=assay,
        timepoint=protocol.primary.timepoint,
        control_timepoint=protocol.primary.control,
        analysis_set=analysis_set,
        as_of=as_of,
        protocol_version=protocol.version,
        hypothesis=protocol.primary.hypothesis,
        confidence_level=confidence,
        overall=tested(study, None),
        by_stratum=tuple((k, tested(stratum(study, k), None if k == UNKNOWN else k)) for k in strata),
        by_site=tuple((k, tested([c for c in study if c.site == k], None)) for k in sites),
        control_overall=compare(control, study) if has_control else None,
        control_by_stratum=(
            tuple((k, compare(stratum(control, k), stratum(study, k))) for k in strata) if has_control else ()
        ),
        excluded=sorted_exclusions(excluded),
        flags=tuple(sorted({Flag(i.patient, f) for i in in_cohort for f in i.flags}, key=_flag_order)),
    )


def _total(group: list[_Counted], status: str | None = None) -> int:
    return sum(c.n for c in group if status is None or c.status == status)


def _flag_order(flag: Flag) -> tuple[str, str]:
    return flag.patient, flag.flag


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
    group: list[_Counted], *, confidence: float, p0: Decimal | None, source: str | None, test: bool
) -> RateLine:
    entries = tuple(c.entry for c in group if c.entry is not None)
    n = _total(group)
    negatives = _total(group, NEGATIVE)
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
        imputed_not_negative=_total(group, IMPUTED),
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
            "timepoint": result.control_timepoint,
            "overall": None,
            "by_stratum": {},
            "reason": "no historical-control patients enrolled at the cut-off",
        }
    else:
        controls = {
            "timepoint": result.control_timepoint,
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
        if len(line.entries) != line.n:
            raise ValueError("patients counted by number only (CountedGroup) cannot be explained")
        out["explain"] = {
            "numerator": entries_json(e for e in line.entries if e.status == NEGATIVE),
            "denominator": entries_json(line.entries),
            "imputed": entries_json(e for e in line.entries if e.status == IMPUTED),
        }
    return out

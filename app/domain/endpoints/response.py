"""MRD response: paired PRE_BLINA vs POST_BLINA results per study patient, for a waterfall plot
(PROTOCOL.md section 5, "MRD response").

log10 reduction = log10(pre fraction) - log10(post fraction), computed in exact decimal arithmetic
(28 digits) and rounded half-even to 6 decimal places. A result that is only a bound is used at its bound
and the reduction is marked:

* "<x" / "<=x", and "not detected" with a stated sensitivity (the sensitivity is the bound; a zero value
  reads as not detected, as in mrd.classify), give an upper bound on the level ("at-most");
* ">x" / ">=x" give a lower bound ("at-least").

An upper-bounded post level (or a lower-bounded pre level) makes the reduction a lower bound
("at-least"); the opposite makes it an upper bound ("at-most"); bounds pointing both ways leave it
undefined, as do a missing result, a value that cannot be read (specimen inadequate, unconvertible unit,
implausible or contradictory value) and "not detected" without a sensitivity. Each undefined reduction
carries its reason. Patients are ordered for the waterfall: largest reduction first, undefined last, ties
by patient reference.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum

from app.domain.endpoints.analysis_sets import (
    Membership,
    PrimaryResult,
    ResultStatus,
    analysis_set_named,
    members,
    result_at,
)
from app.domain.endpoints.cohort import STUDY_ARM, build_cohort
from app.domain.endpoints.errors import NoBaselineTimepoint
from app.domain.endpoints.evidence import Exclusion, excluded_members, exclusions_json, sorted_exclusions
from app.domain.endpoints.reporting import Json, analysis_set_json, decimal_text, header
from app.domain.mrd import ClassificationRule, Comparator
from app.domain.protocol import AnalysisSet, Assay, Protocol
from app.domain.timeline import PatientTimeline

_PLACES = Decimal("0.000001")
_UNREADABLE = {
    ClassificationRule.CONTRADICTORY_RESULT,
    ClassificationRule.SPECIMEN_INADEQUATE,
    ClassificationRule.UNCONVERTIBLE_UNIT,
    ClassificationRule.IMPLAUSIBLE_VALUE,
    ClassificationRule.NO_VALUE,
}


class Bound(StrEnum):
    EXACT = "exact"
    AT_MOST = "at-most"
    AT_LEAST = "at-least"


@dataclass(frozen=True, slots=True)
class MrdLevel:
    status: ResultStatus
    observation: str | None
    value_as_sent: str | None
    fraction: Decimal | None  # the level used for the reduction (the value, or its bound)
    bound: Bound | None
    reason: str


@dataclass(frozen=True, slots=True)
class PatientResponse:
    patient: str
    stratum: str
    site: str
    pre: MrdLevel
    post: MrdLevel
    log10_reduction: Decimal | None
    reduction_bound: Bound | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class AssayResponse:
    assay: Assay
    patients: tuple[PatientResponse, ...]  # waterfall order
    transitions: tuple[tuple[str, int], ...]  # "pre->post" status pairs, every pair listed
    converted_positive_to_negative: int
    excluded: tuple[Exclusion, ...]


@dataclass(frozen=True, slots=True)
class MrdResponse:
    as_of: dt.date
    protocol_version: str
    analysis_set: AnalysisSet
    pre_timepoint: str
    post_timepoint: str
    by_assay: tuple[AssayResponse, ...]


def mrd_response(
    *, timelines: Sequence[PatientTimeline], protocol: Protocol, as_of: dt.date, analysis_set: str = "full"
) -> MrdResponse:
    chosen = analysis_set_named(protocol, analysis_set)
    baseline = protocol.primary.baseline_timepoint
    if baseline is None:
        raise NoBaselineTimepoint(protocol.version)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=as_of)
    by_assay = []
    for assay in protocol.primary.assays:
        included, out = members(
            cohort=cohort, arm=STUDY_ARM, analysis_set=chosen, assay=assay, protocol=protocol
        )
        patients = [_patient(m, assay, baseline) for m in included]
        patients.sort(key=lambda p: (p.log10_reduction is None, -(p.log10_reduction or 0), p.patient))
        pairs = {f"{a.value}->{b.value}": 0 for a in ResultStatus for b in ResultStatus}
        for p in patients:
            pairs[f"{p.pre.status.value}->{p.post.status.value}"] += 1
        converted = pairs[f"{ResultStatus.POSITIVE.value}->{ResultStatus.NEGATIVE.value}"]
        by_assay.append(
            AssayResponse(
                assay,
                tuple(patients),
                tuple(sorted(pairs.items())),
                converted,
                sorted_exclusions(excluded_members(out)),
            )
        )
    return MrdResponse(
        as_of, protocol.version, chosen, baseline, protocol.primary.timepoint, tuple(by_assay)
    )


def _patient(m: Membership, assay: Assay, baseline: str) -> PatientResponse:
    assert m.result is not None
    pre = _level(result_at(m.patient, baseline, assay))
    post = _level(m.result)
    reduction, bound, reason = _reduction(pre, post)
    p = m.patient
    return PatientResponse(p.reference, p.stratum, p.site, pre, post, reduction, bound, reason)


def _level(result: PrimaryResult) -> MrdLevel:
    c = result.classification
    if c is None:
        return MrdLevel(result.status, None, None, None, None, f"{result.timepoint}: {result.reason}")

    def level(fraction: Decimal | None, bound: Bound | None, reason: str) -> MrdLevel:
        return MrdLevel(result.status, result.observation, c.value_as_sent, fraction, bound, reason)

    if c.rule in _UNREADABLE:
        return level(None, None, f"{result.timepoint} value cannot be used: {c.reason}")
    if c.fraction is not None and c.fraction > 0 and c.comparator in (Comparator.LT, Comparator.LE):
        return level(c.fraction, Bound.AT_MOST, c.reason)
    if c.fraction is not None and c.fraction > 0 and c.comparator in (Comparator.GT, Comparator.GE):
        return level(c.fraction, Bound.AT_LEAST, c.reason)
    if c.fraction is not None and c.fraction > 0:
        return level(c.fraction, Bound.EXACT, c.reason)
    if c.sensitivity_fraction is not None:
        return level(c.sensitivity_fraction, Bound.AT_MOST, "not detected; sensitivity used as the bound")
    return level(None, None, f"{result.timepoint} not detected without a stated sensitivity")


def _reduction(pre: MrdLevel, post: MrdLevel) -> tuple[Decimal | None, Bound | None, str | None]:
    if pre.fraction is None or post.fraction is None:
        missing = [lvl.reason for lvl in (pre, post) if lvl.fraction is None]
        return None, None, "; ".join(missing)
    # A smaller post level or a larger pre level can only make the reduction larger.
    lower = {(Bound.EXACT, Bound.AT_MOST), (Bound.AT_LEAST, Bound.EXACT), (Bound.AT_LEAST, Bound.AT_MOST)}
    upper = {(Bound.EXACT, Bound.AT_LEAST), (Bound.AT_MOST, Bound.EXACT), (Bound.AT_MOST, Bound.AT_LEAST)}
    pair = (pre.bound, post.bound)
    if pair == (Bound.EXACT, Bound.EXACT):
        bound = Bound.EXACT
    elif pair in lower:
        bound = Bound.AT_LEAST
    elif pair in upper:
        bound = Bound.AT_MOST
    else:
        return (
            None,
            None,
            f"both levels are {pre.bound} bounds in the same direction: the reduction is not bounded",
        )
    with localcontext() as context:
        context.prec = 28
        value = pre.fraction.log10() - post.fraction.log10()
    return value.quantize(_PLACES, rounding=ROUND_HALF_EVEN) + 0, bound, None


# --- JSON ----------------------------------------------------------------------------------------------


def response_to_json(result: MrdResponse, *, explain: bool = False) -> Json:
    """Shape: header + {"analysis_set", "pre_timepoint", "post_timepoint", "by_assay": {assay: {"patients":
    [{"patient", "stratum", "site", "pre", "post", "log10_reduction", "reduction_bound", "reason"}],
    "transitions": {"positive->negative": n, ...}, "converted_positive_to_negative", "excluded"}}}; a level
    is {"status", "observation", "value_as_sent", "fraction", "bound", "reason"}. Each patient's
    observations are the resource versions behind the row, so the rows are the explanation; `explain` adds
    nothing here."""
    del explain

    def level(lvl: MrdLevel) -> Json:
        return {
            "status": lvl.status.value,
            "observation": lvl.observation,
            "value_as_sent": lvl.value_as_sent,
            "fraction": decimal_text(lvl.fraction),
            "bound": None if lvl.bound is None else lvl.bound.value,
            "reason": lvl.reason,
        }

    def patient(p: PatientResponse) -> Json:
        return {
            "patient": p.patient,
            "stratum": p.stratum,
            "site": p.site,
            "pre": level(p.pre),
            "post": level(p.post),
            "log10_reduction": None if p.log10_reduction is None else float(p.log10_reduction),
            "reduction_bound": None if p.reduction_bound is None else p.reduction_bound.value,
            "reason": p.reason,
        }

    return {
        **header(endpoint="mrd-response", protocol_version=result.protocol_version, as_of=result.as_of),
        "analysis_set": analysis_set_json(result.analysis_set),
        "pre_timepoint": result.pre_timepoint,
        "post_timepoint": result.post_timepoint,
        "by_assay": {
            a.assay.value: {
                "patients": [patient(p) for p in a.patients],
                "transitions": dict(a.transitions),
                "converted_positive_to_negative": a.converted_positive_to_negative,
                "excluded": exclusions_json(a.excluded),
            }
            for a in result.by_assay
        },
    }

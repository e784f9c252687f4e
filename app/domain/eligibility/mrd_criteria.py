"""MRD criteria: the result chosen at a timepoint against a criterion's own threshold, per stratum
(PROTOCOL.md section 4, inclusion 4 and exclusion 11).

The result is the timepoint's selected sample (section 2, `PatientTimeline.outcome`), as of the reference
date. Its normalised value is compared with the criterion's `at_least_fraction`, not with the assay's
negative/positive threshold: an exact value decides; "<x" (and "not detected" with a stated sensitivity x)
shows the value is below x, so it fails when x is at or below the criterion's threshold ("<0.01 %" against
>= 0.01 %) and is unknown otherwise; ">x" / ">=x" holds when x reaches the threshold. A result that is not
evaluable for its own reasons (inadequate specimen, unconvertible unit, too few cells, contradictory or
no value) is unknown whatever the threshold.

The stratum (provisional risk) comes from coded observations dated on or before the reference date (or
undated); when they disagree, or none is recorded, the criterion is unknown. A stratum the criterion does
not list (provisional high risk) fails it.
"""

from __future__ import annotations

from decimal import Decimal

from app.domain.eligibility.facts import Context, Finding, PartResult, Timing
from app.domain.mrd import (
    Classification,
    ClassificationRule,
    Comparator,
    MrdClassification,
    percent_text,
)
from app.domain.protocol import EligibilityCriterion, MrdCriterion
from app.domain.timepoints import TimepointStatus

# Not evaluable whatever the threshold: the result itself is unusable, not merely too coarse.
_UNUSABLE = frozenset(
    {
        ClassificationRule.SPECIMEN_INADEQUATE,
        ClassificationRule.UNCONVERTIBLE_UNIT,
        ClassificationRule.IMPLAUSIBLE_VALUE,
        ClassificationRule.CONTRADICTORY_RESULT,
        ClassificationRule.NO_VALUE,
        ClassificationRule.TOO_FEW_CELLS,
    }
)


def mrd_parts(criterion: EligibilityCriterion, ctx: Context) -> list[PartResult]:
    general = [m for m in criterion.mrd if m.stratum is None]
    by_stratum = [m for m in criterion.mrd if m.stratum is not None]
    if not by_stratum or criterion.stratum_concept is None:
        return [_mrd_part(m, ctx, "", ()) for m in general]
    stratum, part = _stratum(criterion.stratum_concept, ctx)
    parts = [_mrd_part(m, ctx, "", ()) for m in general]
    if stratum is None:
        assert part is not None
        return [part, *parts]
    label = ctx.label(criterion.stratum_concept)
    value, evidence = stratum
    shown = f"{label}: {value} ({', '.join(evidence)})"
    applicable = [m for m in by_stratum if m.stratum == value]
    if not applicable and not general:
        listed = " or ".join(dict.fromkeys(m.stratum for m in by_stratum if m.stratum))
        return [PartResult(Finding.FAILS, f"{shown}: the criterion applies to {listed} only", evidence)]
    return [*parts, *(_mrd_part(m, ctx, f"{shown}; ", evidence) for m in applicable)]


def _stratum(concept: str, ctx: Context) -> tuple[tuple[str, tuple[str, ...]] | None, PartResult | None]:
    label = ctx.label(concept)
    facts = [
        f
        for f in ctx.record.observations
        if f.concept == concept and ctx.timing(f.effective) in (Timing.COUNTS, Timing.UNDATED)
    ]
    found = ctx.protocol.concepts.get(concept)
    values = " / ".join(found.values) if found is not None else ""
    wanted = (f"{label} ({values}) dated on or before {ctx.as_of}",)
    if not facts:
        return None, PartResult(Finding.UNKNOWN, f"no {label} recorded", missing=wanted)
    evidence = tuple(f.reference for f in facts)
    unmapped = [f for f in facts if f.value is None]
    if unmapped:
        sent = ", ".join(f"{f.value_as_sent!r} ({f.reference})" for f in unmapped)
        return None, PartResult(Finding.UNKNOWN, f"{label} not mapped to a value: {sent}", evidence, wanted)
    distinct = {f.value for f in facts if f.value is not None}
    if len(distinct) > 1:
        listed = ", ".join(f"{f.value} ({f.reference})" for f in facts)
        return None, PartResult(
            Finding.UNKNOWN, f"{label} recorded differently: {listed}", evidence, (f"one agreed {label}",)
        )
    return (distinct.pop(), evidence), None


def _mrd_part(m: MrdCriterion, ctx: Context, prefix: str, stratum_evidence: tuple[str, ...]) -> PartResult:
    timepoint = ctx.protocol.timepoint(m.timepoint)
    assay = ctx.protocol.assays[m.assay]
    what = f"{m.timepoint} {m.assay.value} MRD"
    need = f">= {percent_text(m.at_least_fraction)}"
    outcome = ctx.timeline.outcome(m.timepoint, m.assay.value)
    specimens = ", ".join(ctx.label(s) for s in sorted(ctx.protocol.results.timepoint_specimens))
    wanted = f"a {assay.label} MRD result ({specimens}) at {timepoint.label or timepoint.name}"
    if outcome is None or outcome.selected is None:
        why = "no result" if outcome is None else outcome.reason
        missing = [
            wanted
            + (
                ""
                if outcome is None or outcome.window is None
                else f", {outcome.window.start}..{outcome.window.end}"
            )
        ]
        if outcome is not None and outcome.status is TimepointStatus.AWAITING_ANCHOR:
            anchor = ctx.protocol.anchors[timepoint.anchor].label
            missing.insert(0, f"{anchor} (the anchor of {m.timepoint})")
        return PartResult(Finding.UNKNOWN, f"{prefix}no {what} yet: {why}", stratum_evidence, tuple(missing))
    reference = outcome.selected.sample.reference
    classification = ctx.timeline.classifications.get(reference)
    evidence = (*stratum_evidence, reference)
    if classification is None:
        return PartResult(
            Finding.UNKNOWN, f"{prefix}{what} ({reference}) not classified", evidence, (wanted,)
        )
    not_detected = any(
        r.measurement.not_detected for r in ctx.record.mrd_results if r.sample.reference == reference
    )
    finding, shown = compare(classification, m.at_least_fraction, not_detected=not_detected)
    stated = f"{prefix}{what} {shown} ({reference})"
    if finding is Finding.HOLDS:
        return PartResult(finding, f"{stated}, {need}", evidence)
    if finding is Finding.FAILS:
        return PartResult(finding, f"{stated}, not {need}", evidence)
    return PartResult(
        finding,
        f"{stated}: cannot tell whether {need}",
        evidence,
        (f"an evaluable {wanted[2:]}",),
    )


def compare(
    classification: MrdClassification, at_least: Decimal, *, not_detected: bool = False
) -> tuple[Finding, str]:
    """Whether the classified result is >= `at_least`, and how the result reads ("0.05 %", "<0.01 %")."""
    if classification.classification is Classification.NOT_EVALUABLE and classification.rule in _UNUSABLE:
        return Finding.UNKNOWN, f"not evaluable ({classification.reason})"
    value, comparator = classification.fraction, classification.comparator
    sensitivity = classification.sensitivity_fraction
    if not_detected or (value == 0 and comparator is None):
        bounds: list[tuple[Decimal, bool]] = []  # (upper bound, strict)
        if sensitivity is not None:
            bounds.append((sensitivity, True))
        if value is not None and comparator in (Comparator.LT, Comparator.LE):
            bounds.append((value, comparator is Comparator.LT))
        below = any(bound <= at_least if strict else bound < at_least for bound, strict in bounds)
        shown = "not detected"
        if sensitivity is not None:
            shown += f" (sensitivity {percent_text(sensitivity)})"
        return (Finding.FAILS if below else Finding.UNKNOWN), shown
    if value is None:
        return Finding.UNKNOWN, f"without a value ({classification.reason})"
    shown = f"{comparator or ''}{percent_text(value)}"
    if comparator is None:
        return (Finding.HOLDS if value >= at_least else Finding.FAILS), shown
    if comparator is Comparator.LT:
        return (Finding.FAILS if value <= at_least else Finding.UNKNOWN), shown
    if comparator is Comparator.LE:
        return (Finding.FAILS if value < at_least else Finding.UNKNOWN), shown
    return (Finding.HOLDS if value >= at_least else Finding.UNKNOWN), shown

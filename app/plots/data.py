"""What each figure shows, read off the endpoint analyses' JSON (app/services/endpoints.py).

Plain functions over the JSON dicts, so a figure's numbers can be checked without drawing it: the Kaplan-Meier
steps are the endpoint's table, the waterfall bars its per-patient reductions, the forest rows its rates.
"""

import math
import textwrap
from dataclasses import dataclass
from typing import Any

# Colours by POST_BLINA classification (colour-blind safe, Okabe-Ito).
STATUS_COLOURS = {
    "negative": "#009E73",
    "positive": "#D55E00",
    "not-evaluable": "#999999",
    "missing": "#CCCCCC",
}


@dataclass(frozen=True)
class KmCurve:
    arm: str
    label: str
    n: int
    events: int
    # Step function (drawn "post"): survival is y[i] from x[i] until x[i + 1]. Starts at (0, 1).
    x_years: tuple[float, ...]
    y: tuple[float, ...]
    lower: tuple[float, ...]  # 95 % band; NaN where the endpoint reports none (survival 0)
    upper: tuple[float, ...]
    censored_x_years: tuple[float, ...]
    censored_y: tuple[float, ...]
    at_risk_by_year: tuple[tuple[int, int], ...]  # (year, at risk)
    horizon: str  # e.g. "5-yr EFS 0.75 (0.31-0.93)" or "5-yr EFS not estimable"


@dataclass(frozen=True)
class KmFigure:
    curves: tuple[KmCurve, ...]
    log_rank: str  # "log-rank p = 0.80"
    horizon_years: int
    title: str


ARMS = (("study", "Blinatumomab"), ("control", "Historical control"))


def _horizon_text(line: dict[str, Any]) -> str:
    years = line.get("years")
    if line.get("survival") is None:
        return f"{years}-yr EFS not estimable"
    text = f"{years}-yr EFS {line['survival']:.2f}"
    if line.get("ci95"):
        low, high = line["ci95"]
        text += f" ({low:.2f}-{high:.2f})"
    return text


def km_figure(efs: dict[str, Any]) -> KmFigure:
    """Kaplan-Meier curves of the EFS endpoint: the step coordinates are the endpoint's table itself."""
    curves = []
    for arm, label in ARMS:
        part = efs.get(arm)
        if not part:
            continue
        table = part["table"]
        x, y = [0.0], [1.0]
        lower, upper = [1.0], [1.0]
        censored_x, censored_y = [], []
        for row in table:
            x.append(float(row["time_years"]))
            y.append(float(row["survival"]))
            band = row.get("ci95")
            lower.append(float(band[0]) if band else math.nan)
            upper.append(float(band[1]) if band else math.nan)
            if row["censored"]:
                censored_x.append(float(row["time_years"]))
                censored_y.append(float(row["survival"]))
        curves.append(
            KmCurve(
                arm=arm,
                label=label,
                n=int(part["n"]),
                events=int(part["events"]),
                x_years=tuple(x),
                y=tuple(y),
                lower=tuple(lower),
                upper=tuple(upper),
                censored_x_years=tuple(censored_x),
                censored_y=tuple(censored_y),
                at_risk_by_year=tuple((int(r["year"]), int(r["at_risk"])) for r in part["at_risk_by_year"]),
                horizon=_horizon_text(part["survival_at_horizon"]),
            )
        )
    test = efs.get("log_rank") or {}
    p = test.get("p_value")
    log_rank = f"log-rank p = {p:.3f}" if p is not None else f"log-rank: {test.get('reason') or 'not done'}"
    return KmFigure(
        curves=tuple(curves),
        log_rank=log_rank,
        horizon_years=int(efs.get("horizon_years", 5)),
        title=f"Event-free survival ({efs['analysis_set']['label']}, data cut-off {efs['as_of']})",
    )


@dataclass(frozen=True)
class WaterfallBar:
    patient: str
    site: str
    log10_reduction: float
    bound: str  # exact, at-least, at-most
    post_status: str
    colour: str
    # The reduction that would take this patient's PRE_BLINA value below the assay threshold.
    needed_for_threshold: float | None


@dataclass(frozen=True)
class WaterfallPanel:
    assay: str
    threshold_fraction: float
    bars: tuple[WaterfallBar, ...]
    not_shown: int  # patients without both results


def waterfall_panel(response: dict[str, Any], *, assay: str, threshold_fraction: float) -> WaterfallPanel:
    """Bars from the largest log10 reduction to the largest rise; ties by patient, for a fixed order."""
    patients = response["by_assay"][assay]["patients"]
    bars, missing = [], 0
    for line in patients:
        reduction = line.get("log10_reduction")
        if reduction is None:
            missing += 1
            continue
        post = line.get("post") or {}
        status = post.get("status") or "missing"
        pre_fraction = (line.get("pre") or {}).get("fraction")
        needed = (
            math.log10(float(pre_fraction) / threshold_fraction)
            if pre_fraction is not None and float(pre_fraction) > 0
            else None
        )
        bars.append(
            WaterfallBar(
                patient=line["patient"].split("/_history/")[0],
                site=line.get("site") or "",
                log10_reduction=float(reduction),
                bound=line.get("reduction_bound") or "exact",
                post_status=status,
                colour=STATUS_COLOURS.get(status, STATUS_COLOURS["missing"]),
                needed_for_threshold=needed,
            )
        )
    bars.sort(key=lambda b: (-b.log10_reduction, b.patient))
    return WaterfallPanel(assay, threshold_fraction, tuple(bars), missing)


@dataclass(frozen=True)
class ForestRow:
    label: str
    group: str  # Overall, Stratum, Site, Control
    n_negative: int
    n: int
    rate: float | None
    low: float | None
    high: float | None
    p0: float | None
    note: str  # "6/8" or the reason there is no rate


@dataclass(frozen=True)
class ForestFigure:
    assay: str
    rows: tuple[ForestRow, ...]
    p0: float | None
    p0_source: str
    title: str


def _forest_row(label: str, group: str, line: dict[str, Any]) -> ForestRow:
    band = line.get("ci95")
    rate = line.get("rate")
    note = f"{line['n_negative']}/{line['n']}" if rate is not None else (line.get("reason") or "no patients")
    return ForestRow(
        label=label,
        group=group,
        n_negative=int(line["n_negative"]),
        n=int(line["n"]),
        rate=rate,
        low=band[0] if band else None,
        high=band[1] if band else None,
        p0=line.get("p0"),
        note=note,
    )


def forest_figure(primary: dict[str, Any]) -> ForestFigure:
    """Overall, per stratum, per site (the study arm), then the historical control arm."""
    overall = primary["overall"]
    rows = [_forest_row("Overall", "Overall", overall)]
    rows += [_forest_row(name, "Stratum", line) for name, line in primary.get("by_stratum", {}).items()]
    rows += [_forest_row(name, "Site", line) for name, line in sorted(primary.get("by_site", {}).items())]
    control = (primary.get("control") or {}).get("overall")
    if control:
        rows.append(_forest_row(f"Control ({primary['control']['timepoint']})", "Control", control))
    return ForestFigure(
        assay=primary["assay"],
        rows=tuple(rows),
        p0=overall.get("p0"),
        p0_source=overall.get("p0_source") or "source not given",
        title=(
            f"MRD-negative rate at {primary['timepoint']} ({primary['assay']}, "
            f"{primary['analysis_set']['label']}, data cut-off {primary['as_of']})"
        ),
    )


@dataclass(frozen=True)
class ConsortBox:
    step: str
    n: int
    parent: str | None  # the step its patients come from
    level: int  # rows from the top
    lost: int  # patients lost on the way from the box above
    reasons: tuple[str, ...]  # "n  reason", most frequent first


@dataclass(frozen=True)
class ConsortFigure:
    boxes: tuple[ConsortBox, ...]
    side_note: str
    title: str


def _reason_lines(reasons: dict[str, int], *, width: int = 58, longest: int = 110) -> tuple[str, ...]:
    lines: list[str] = []
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        short = reason if len(reason) <= longest else reason[: longest - 1] + "…"
        wrapped = textwrap.wrap(f"{count} x {short}", width=width, subsequent_indent="    ")
        lines.extend(wrapped)
    return tuple(lines)


def consort_figure(consort: dict[str, Any]) -> ConsortFigure:
    """Each step one level below the step its patients come from; branches share a level."""
    arrivals = {drop["to"]: drop for drop in consort["drops"]}
    levels: dict[str, int] = {}
    boxes = []
    for step in consort["steps"]:
        name = step["step"]
        drop = arrivals.get(name)
        level = levels.get(drop["from"], -1) + 1 if drop else 0
        levels[name] = level
        boxes.append(
            ConsortBox(
                step=name,
                n=int(step["n"]),
                parent=drop["from"] if drop else None,
                level=level,
                lost=int(drop["n"]) if drop else 0,
                reasons=_reason_lines(drop["reasons"]) if drop else (),
            )
        )
    controls = consort.get("historical_controls_enrolled")
    return ConsortFigure(
        boxes=tuple(boxes),
        side_note=f"Historical controls enrolled: {controls}" if controls is not None else "",
        title=f"CONSORT flow (data cut-off {consort['as_of']})",
    )

"""Drawing the figures with matplotlib's Agg canvas (no pyplot, no display), byte-identical for equal data.

Determinism: fixed size, dpi and font (DejaVu Sans, shipped with matplotlib), `svg.hashsalt` fixed so SVG ids
do not vary, and no creation date or software version in the file's metadata.
"""

import io
import math
import threading
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from app.plots.data import STATUS_COLOURS, ConsortFigure, ForestFigure, KmFigure, WaterfallPanel

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
DPI = 150
ARM_COLOURS = {"study": "#0072B2", "control": "#E69F00"}
# rcParams are process-wide: one figure is saved at a time so concurrent requests cannot mix styles.
_SAVING = threading.Lock()


def render(draw: Callable[[Figure], None], *, size_in: tuple[float, float], fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    metadata: dict[str, Any] = {"Date": None, "Creator": None} if fmt == "svg" else {"Software": None}
    with (
        _SAVING,
        matplotlib.rc_context(
            {"svg.hashsalt": "mrdhub", "font.family": "DejaVu Sans", "font.size": 9, "path.simplify": False}
        ),
    ):
        figure = Figure(figsize=size_in, dpi=DPI)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def draw_km(figure: Figure, data: KmFigure) -> None:
    grid = figure.add_gridspec(2, 1, height_ratios=(5, 1.3), hspace=0.35, left=0.2, right=0.96)
    axes = figure.add_subplot(grid[0])
    for curve in data.curves:
        colour = ARM_COLOURS.get(curve.arm, "black")
        label = f"{curve.label} (n={curve.n}, {curve.events} events; {curve.horizon})"
        axes.step(curve.x_years, curve.y, where="post", color=colour, linewidth=1.6, label=label)
        x, lower, upper = _band(curve.x_years, curve.lower, curve.upper)
        axes.fill_between(x, lower, upper, step="post", color=colour, alpha=0.15, linewidth=0)
        axes.plot(
            curve.censored_x_years,
            curve.censored_y,
            linestyle="none",
            marker="|",
            markersize=9,
            color=colour,
            markeredgewidth=1.4,
        )
    axes.plot([], [], linestyle="none", marker="|", color="black", label="censored")
    axes.plot([], [], linestyle="none", label=data.log_rank)
    axes.set_xlim(0, data.horizon_years)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("Years since enrolment")
    axes.set_ylabel("Event-free survival")
    axes.set_title(data.title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=7, frameon=False)
    _at_risk_table(figure.add_subplot(grid[1], sharex=axes), data)


def _band(
    x: tuple[float, ...], lower: tuple[float, ...], upper: tuple[float, ...]
) -> tuple[list[float], list[float], list[float]]:
    """The band up to where the endpoint stops giving one (survival 0), closing its last step there."""
    end = next((i for i, value in enumerate(lower) if math.isnan(value)), len(lower))
    if end == len(lower) or end == 0:
        return list(x[:end]), list(lower[:end]), list(upper[:end])
    return list(x[: end + 1]), [*lower[:end], lower[end - 1]], [*upper[:end], upper[end - 1]]


def _at_risk_table(axes: Axes, data: KmFigure) -> None:
    axes.set_title("Number at risk", fontsize=8, loc="left")
    for row, curve in enumerate(data.curves):
        y = len(data.curves) - row
        for year, at_risk in curve.at_risk_by_year:
            if year <= data.horizon_years:
                axes.text(year, y, str(at_risk), ha="center", va="center", color=ARM_COLOURS.get(curve.arm))
        axes.text(-0.02, y, curve.label, ha="right", va="center", transform=axes.get_yaxis_transform())
    axes.set_ylim(0.4, len(data.curves) + 0.6)
    axes.set_yticks([])
    axes.tick_params(axis="x", labelbottom=False, length=0)
    for side in ("top", "right", "left", "bottom"):
        axes.spines[side].set_visible(False)


def draw_waterfall(figure: Figure, panels: list[WaterfallPanel], *, title: str) -> None:
    figure.suptitle(title)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, index + 1)
        positions = list(range(len(panel.bars)))
        heights = [b.log10_reduction for b in panel.bars]
        bars = axes.bar(
            positions, heights, color=[b.colour for b in panel.bars], edgecolor="black", linewidth=0.5
        )
        for bar, data in zip(bars, panel.bars, strict=True):
            # A bound (e.g. "not detected" after treatment) is at least / at most this reduction.
            if data.bound != "exact":
                bar.set_hatch("//")
        needed = [(x, b.needed_for_threshold) for x, b in zip(positions, panel.bars, strict=True)]
        shown = [(x, v) for x, v in needed if v is not None]
        axes.plot(
            [x for x, _ in shown],
            [v for _, v in shown],
            linestyle="none",
            marker="_",
            markersize=14,
            markeredgewidth=2,
            color="black",
            label=f"reduction needed to fall below the {panel.assay} threshold "
            f"({_percent(panel.threshold_fraction)})",
        )
        axes.axhline(0, color="black", linewidth=0.8)
        for status, colour in STATUS_COLOURS.items():
            axes.bar([0], [0], color=colour, label=f"POST_BLINA {status}", width=0)
        axes.bar(
            [0], [0], color="white", edgecolor="black", hatch="//", label="bound (not detected / <)", width=0
        )
        axes.set_xticks(positions, [b.site for b in panel.bars], rotation=45, ha="right", fontsize=7)
        axes.set_ylabel("log10 reduction")
        note = f" ({panel.not_shown} without both results not shown)" if panel.not_shown else ""
        axes.set_title(
            f"{panel.assay.upper()}: threshold {_percent(panel.threshold_fraction)}{note}", fontsize=9
        )
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=6, loc="upper right", frameon=False)
    figure.subplots_adjust(hspace=0.6, bottom=0.12)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def draw_forest(figure: Figure, data: ForestFigure) -> None:
    axes = figure.add_subplot(1, 1, 1)
    rows = list(data.rows)
    ys = list(range(len(rows), 0, -1))
    for y, row in zip(ys, rows, strict=True):
        if row.rate is None:
            axes.text(0.5, y, row.note, ha="center", va="center", fontsize=7, color="grey")
            continue
        colour = "#E69F00" if row.group == "Control" else "#0072B2"
        low = row.rate - (row.low if row.low is not None else row.rate)
        high = (row.high if row.high is not None else row.rate) - row.rate
        size = 4 + 6 * math.sqrt(row.n / max(r.n for r in rows) if rows[0].n else 1)
        marker = "D" if row.group == "Overall" else "s"
        axes.errorbar(
            [row.rate], [y], xerr=[[low], [high]], fmt=marker, color=colour, markersize=size, capsize=3
        )
        if row.p0 is not None and row.group != "Control":
            axes.plot([row.p0], [y], marker="|", markersize=12, color="black")
    if data.p0 is not None:
        axes.axvline(
            data.p0,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"historical p0 = {data.p0:g} ({data.p0_source})",
        )
    axes.set_yticks(ys, [f"{r.group}: {r.label}" if r.group not in ("Overall",) else r.label for r in rows])
    right = axes.secondary_yaxis("right")
    right.set_yticks(ys, [r.note if r.rate is not None else "" for r in rows])
    right.tick_params(length=0)
    axes.set_xlim(0, 1)
    axes.set_ylim(0.3, len(rows) + 0.7)
    axes.set_xlabel("MRD-negative rate with exact (Clopper-Pearson) 95 % CI")
    axes.set_title(data.title, fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, -0.28), fontsize=7, frameon=False)
    figure.subplots_adjust(left=0.28, right=0.88, bottom=0.22)


def draw_consort(figure: Figure, data: ConsortFigure) -> None:
    axes = figure.add_axes((0, 0, 1, 0.94))
    axes.set_axis_off()
    figure.suptitle(data.title)
    depth = max((b.level for b in data.boxes), default=0) + 1
    by_level: dict[int, list[int]] = {}
    for index, box in enumerate(data.boxes):
        by_level.setdefault(box.level, []).append(index)
    centre: dict[str, tuple[float, float]] = {}
    row_height = 1 / depth
    for level, members in sorted(by_level.items()):
        y = 1 - (level + 0.5) * row_height
        for slot, index in enumerate(members):
            box = data.boxes[index]
            x = 0.3 if len(members) == 1 else 0.12 + 0.36 * slot / max(len(members) - 1, 1)
            centre[box.step] = (x, y)
            text = f"{box.step.replace('-', ' ').capitalize()}\nn = {box.n}"
            axes.add_patch(
                FancyBboxPatch(
                    (x - 0.11, y - 0.3 * row_height),
                    0.22,
                    0.6 * row_height,
                    boxstyle="round,pad=0.005",
                    facecolor="#EAF2FB",
                    edgecolor="black",
                    transform=axes.transAxes,
                )
            )
            axes.text(x, y, text, ha="center", va="center", fontsize=8, transform=axes.transAxes)
            if level == 0:
                continue
            parent_x, parent_y = centre.get(box.parent or "", (x, y + row_height))
            axes.annotate(
                "",
                xy=(x, y + 0.3 * row_height),
                xytext=(parent_x, parent_y - 0.3 * row_height),
                xycoords="axes fraction",
                arrowprops={"arrowstyle": "->", "lw": 1},
            )
            if box.lost or box.reasons:
                lines = [f"Not {box.step.replace('-', ' ')}: n = {box.lost}", *box.reasons]
                side_x = 0.58 if len(members) == 1 else 0.58 + 0.21 * slot
                axes.text(
                    side_x,
                    y + 0.5 * row_height,
                    "\n".join(lines),
                    ha="left",
                    va="center",
                    fontsize=6,
                    transform=axes.transAxes,
                    bbox={"boxstyle": "round", "facecolor": "#FFF4E0", "edgecolor": "grey"},
                )
    if data.side_note:
        axes.text(0.98, 0.99, data.side_note, ha="right", va="top", fontsize=8, transform=axes.transAxes)

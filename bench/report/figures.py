"""The report's figures, one function each, after Canziani, Paszke & Culurciello (2016),
"An Analysis of Deep Neural Network Models for Practical Applications" (arXiv:1605.07678).

Each function takes the tidy :class:`~bench.report.data.ReportData` and returns a
:class:`FigureResult`: a matplotlib figure (not yet saved) and a short reading of it, or
``fig=None`` and a sentence saying why the figure is left out. Figures are built on
``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so the report does
not depend on (or change) the process's matplotlib backend. Setups (machine, device, dtype,
threads, configuration) get one panel each and are never averaged together; :func:`_by_setup`
is the one place a figure splits cells into panels (the configuration is part of the setup,
so eager and compiled cells never share a panel; the speed-up figure alone puts the
configurations of one machine/device/dtype side by side, as ratios to eager). Cells whose
output was wrong are not in ``data.cells`` and so in no figure. Power and energy are drawn as
:mod:`bench.report.data` chose them (``power_plot_w``, ``energy_plot_per_image_j``). The
roofline (12) draws each setup's measured ceilings (``data.ceilings``, matched by
:func:`~bench.report.data.setup_roofs`); the layer-type figure (13) has a panel per
per-layer profile (``data.layers``, ``effbench profile``) rather than per setup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.data import (
    EAGER,
    LAYER_GROUPS,
    PROFILE_KEY,
    LineFit,
    ReportData,
    Roofs,
    config_order,
    fit_line,
    models_with,
    pareto_front,
    setup_labels,
    setup_roofs,
)
from bench.units import GIGA, MEGA, MIB, MS_PER_S, to_mib, to_millions

DPI = 150
PANEL_W_IN = 5.4
PANEL_H_IN = 3.9
LABEL_FONTSIZE = 7.5
# Bubble areas (points²): proportional to the quantity, with a floor so that tiny
# networks stay visible (stated in each bubble chart's caption).
BUBBLE_MAX_PT2 = 1400.0
BUBBLE_MIN_PT2 = 14.0


@dataclass(frozen=True, slots=True)
class Fit:
    """A line fitted in one panel, with the data it was fitted to (for the reading and tests)."""

    setup: str
    batch_size: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    models: tuple[str, ...]
    line: LineFit
    x_name: str = ""
    y_name: str = ""


@dataclass(frozen=True, slots=True)
class FigureResult:
    """A built figure (``fig``), or ``fig=None`` and ``skipped`` saying why."""

    name: str
    title: str
    fig: Figure | None
    reading: str
    skipped: str | None = None
    fits: tuple[Fit, ...] = ()
    labels: tuple[Any, ...] = field(default=())


# --------------------------------------------------------------------------- helpers


def _new_figure(
    n_panels: int, title: str, ncols_max: int = 2, height: float = PANEL_H_IN
) -> tuple[Figure, list[Any]]:
    """A figure of ``n_panels`` axes; ``title`` is the figure's label (the page shows it)."""
    ncols = max(1, min(n_panels, ncols_max))
    nrows = math.ceil(max(n_panels, 1) / ncols)
    fig = Figure(figsize=(PANEL_W_IN * ncols + 1.9, height * nrows + 0.5), dpi=DPI)
    fig.set_layout_engine("constrained")
    fig.set_label(title)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, list(axes[:n_panels])


@dataclass(frozen=True, slots=True)
class Panel:
    """One axes of a faceted figure: the setup it shows and that setup's cells."""

    ax: Any
    setup: str
    cells: pd.DataFrame


def _by_setup(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The cells of each setup, setups in sorted order (a machine's eager setup before its
    other configurations): the one place figures facet."""
    first = cells.drop_duplicates("setup")
    order = sorted(
        zip(
            first["base_setup"],
            first["config"] != EAGER,
            first["config"],
            first["setup"],
            strict=True,
        )
    )
    return [(setup, cells[cells["setup"] == setup]) for *_, setup in order]


def _setup_panels(
    cells: pd.DataFrame, title: str, height: float = PANEL_H_IN
) -> tuple[Figure, list[Panel]]:
    """A figure with one panel per setup (see :func:`_by_setup`), each ``height`` inches."""
    groups = _by_setup(cells)
    fig, axes = _new_figure(len(groups), title, height=height)
    return fig, [Panel(ax, setup, sc) for ax, (setup, sc) in zip(axes, groups, strict=True)]


def _batch_lines(
    data: ReportData,
    cells: pd.DataFrame,
    title: str,
    line: Callable[[Panel, pd.DataFrame, Any], None],
    finish: Callable[[Panel], str],
) -> tuple[Figure, list[str]]:
    """A figure of one panel per setup, each network a line against batch size (log2
    axis), and the network legend. ``line(panel, g, color)`` draws one network's cells
    ``g`` (sorted by batch size); ``finish(panel)`` labels the panel after the batch axis
    is set and returns a sentence for the reading ("" for none)."""
    fig, panels = _setup_panels(cells, title)
    parts = []
    for panel in panels:
        # one line per network and input size: runs at two sizes are two lines, not a zigzag
        for (model, _size), g in panel.cells.groupby(["model", "image_size"], sort=True):
            line(panel, g.sort_values("batch_size"), data.colors[model])
        _log2_batch_axis(panel.ax, panel.cells["batch_size"].astype(int))
        parts.append(finish(panel))
    _model_legend(fig, data, cells["model"].unique())
    return fig, parts


def _plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def _log2_batch_axis(ax: Any, batch_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(batch_sizes)))
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (images)")


def _log_axis(axis: Any) -> None:
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def _model_legend(fig: Figure, data: ReportData, models: Sequence[str], title: str = "network"):
    handles = [
        Line2D([], [], color=data.colors[m], marker="o", lw=1.6, label=m) for m in sorted(models)
    ]
    fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False)


def _bubble_legend(ax: Any, max_value: float, unit: str, scale: float, title: str) -> None:
    """Reference bubbles (1, 2, 5 × 10^k) so that areas can be read as numbers."""
    if not max_value > 0:
        return
    k = math.floor(math.log10(max_value))
    steps = [m * 10.0**e for e in range(k - 3, k + 1) for m in (1, 2, 5)]
    steps = [v for v in steps if v <= max_value * 1.0001]
    refs = sorted({steps[i] for i in (-1, -3, -5) if len(steps) >= -i})
    refs = [v for v in refs if v * scale >= BUBBLE_MIN_PT2]
    handles = [
        ax.scatter([], [], s=v * scale, color="0.6", alpha=0.5, edgecolor="0.3", label=f"{v:g}")
        for v in refs
    ]
    if handles:
        # Outside the axes, spaced by the largest bubble, so that no bubble overlaps another.
        biggest_pt = math.sqrt(max(v * scale for v in refs) / math.pi) * 2
        ax.legend(
            handles=handles,
            title=f"{title} ({unit})",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            frameon=False,
            labelspacing=max(1.0, biggest_pt / 7.5 * 0.9),
            borderpad=0.6,
            handletextpad=max(0.8, biggest_pt / 7.5 * 0.6),
            fontsize=7.5,
            title_fontsize=7.5,
            scatterpoints=1,
        )


def _bubble_sizes(values: Sequence[float], max_value: float) -> tuple[np.ndarray, float]:
    scale = BUBBLE_MAX_PT2 / max_value if max_value > 0 else 0.0
    sizes = np.maximum(np.asarray(values, dtype=float) * scale, BUBBLE_MIN_PT2)
    return sizes, scale


def _freeze_layout(fig: Figure) -> None:
    """Run the layout once and fix it, so that labels placed in pixels stay where placed."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


_DIRECTIONS = (
    *((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)),
    *((1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1)),
)
_GAPS_PX = (2.0, 8.0, 16.0, 28.0, 44.0, 64.0, 90.0, 120.0, 155.0, 195.0, 240.0)


def place_labels(
    ax: Any,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    colors: Sequence[Any],
    sizes_pt2: Sequence[float] | None = None,
) -> list[Any]:
    """Label points without overlaps: each label tries positions around its point, nearest
    first, and takes the first one that overlaps no label placed before it, no other point
    and stays inside the axes; labels moved away get a thin leader line. Call after
    :func:`_freeze_layout`. Deterministic: the same points give the same placement."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    pts = ax.transData.transform(np.column_stack([xs, ys]).astype(float))
    radii = (
        np.sqrt(np.asarray(sizes_pt2, dtype=float) / math.pi) * px_per_pt
        if sizes_pt2 is not None
        else np.full(len(texts), 3.0 * px_per_pt)
    )
    frame = ax.get_window_extent(renderer)
    frame_box = (frame.x0, frame.y0, frame.x1, frame.y1)
    dims = _label_sizes(ax, renderer, texts)
    # Each point is an obstacle the size of its marker (at least a few pixels).
    point_boxes = [
        (p[0] - max(r, 3.0), p[1] - max(r, 3.0), p[0] + max(r, 3.0), p[1] + max(r, 3.0))
        for p, r in zip(pts, radii, strict=True)
    ]
    placed: list[tuple[float, ...]] = []
    annotations = []
    order = sorted(range(len(texts)), key=lambda i: (-pts[i][1], pts[i][0], texts[i]))
    for i in order:
        (px, py), r, (w, h) = pts[i], radii[i], dims[i]
        others = [b for j, b in enumerate(point_boxes) if j != i]
        cx, cy, gap = _label_position((px, py), r, (w, h), placed, others, frame_box)
        placed.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        arrow = (
            {"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 0, "shrinkB": r / px_per_pt}
            if gap > 10
            else None
        )
        annotations.append(
            ax.annotate(
                texts[i],
                xy=(xs[i], ys[i]),
                xytext=((cx - px) / px_per_pt, (cy - py) / px_per_pt),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=LABEL_FONTSIZE,
                color=_darker(colors[i]),
                arrowprops=arrow,
                annotation_clip=False,
            )
        )
    return annotations


def _label_sizes(ax: Any, renderer: Any, texts: Sequence[str]) -> list[tuple[float, float]]:
    """Each label's (width, height) in pixels as drawn, with a pixel or two of margin."""
    dims = []
    for t in texts:
        probe = ax.text(0, 0, t, fontsize=LABEL_FONTSIZE)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        dims.append((bb.width + 2.0, bb.height + 1.0))
    return dims


def _label_position(
    point: tuple[float, float],
    radius: float,
    size: tuple[float, float],
    placed: Sequence[tuple[float, ...]],
    obstacles: Sequence[tuple[float, ...]],
    frame_box: tuple[float, ...],
) -> tuple[float, float, float]:
    """The centre (pixels) and gap of the cheapest box of ``size`` around ``point``, nearest
    first: overlapping a placed label costs most, leaving the axes less, covering another
    point least; the first position that costs nothing is taken."""
    (px, py), r, (w, h) = point, radius, size
    best: tuple[float, float, float] | None = None
    best_cost = math.inf
    for gap in _GAPS_PX:
        for ux, uy in _DIRECTIONS:
            cx = px + ux * (r + gap + w / 2)
            cy = py + uy * (r + gap + h / 2)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            cost = 1000.0 * sum(_boxes_overlap(box, b) for b in placed)
            cost += 30.0 * sum(_boxes_overlap(box, b) for b in obstacles)
            inside = _boxes_overlap(box, frame_box)
            cost += 100.0 * (w * h - inside)
            if cost < best_cost:
                best_cost, best = cost, (cx, cy, gap)
            if cost == 0:
                break
        if best_cost == 0:
            break
    assert best is not None
    return best


def _darker(color: Any) -> tuple[float, float, float]:
    r, g, b = color[:3]
    return (r * 0.7, g * 0.7, b * 0.7)


def _per_model(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per network: counts and published figures (they do not depend on the setup)."""
    ordered = cells.sort_values(["model", "batch_size", "setup"], kind="stable")
    return ordered.groupby("model", sort=True).agg(
        params=("params", "first"),
        params_m=("params_m", "first"),
        gmacs=("gmacs", "first"),
        top1=("top1", "first"),
        top5=("top5", "first"),
        accuracy_source=("accuracy_source", "first"),
    )


def _names(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}"


def _percent(value: float) -> str:
    """A percentage with two significant digits, never in exponent form (100%, 6.9%, 0.43%)."""
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def _skip(name: str, title: str, why: str) -> FigureResult:
    return FigureResult(name=name, title=title, fig=None, reading="", skipped=why)


def _no_accuracy_note(missing: Sequence[str]) -> str:
    if not missing:
        return ""
    has, be = ("has", "is") if len(missing) == 1 else ("have", "are")
    return f" {_names(missing)} {has} no published accuracy and {be} left out."


def _unverified(per_model: pd.DataFrame) -> list[str]:
    """Networks whose accuracy source says it was not checked against the paper's text."""
    src = per_model["accuracy_source"].astype("string")
    return [str(m) for m in per_model.index[src.str.contains("unverified", na=False)]]


def _unverified_note(per_model: pd.DataFrame) -> str:
    names = _unverified(per_model)
    if not names:
        return ""
    return f" The accuracy of {_names(names)} is unverified (not checked against the paper's text)."


def _accuracy_sources(per_model: pd.DataFrame) -> str:
    """The sources of the published accuracies, their common prefix said once."""
    sources = sorted({str(s) for s in per_model["accuracy_source"].dropna()})
    if not sources:
        return ""
    prefix = ""
    if len(sources) > 1:
        for chars in zip(*sources, strict=False):
            if len(set(chars)) > 1:
                break
            prefix += chars[0]
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    if len(prefix) >= 10:
        text = prefix.strip() + " (" + ", ".join(s[len(prefix) :] for s in sources) + ")"
    else:
        text = "; ".join(sources)
    return " Accuracy is as published, not measured here: " + text + "."


# --------------------------------------------------------------------------- figures


def accuracy_bar(data: ReportData) -> FigureResult:
    """1. Published top-1 accuracy of each network (bar)."""
    name, title = "01-accuracy", "Top-1 accuracy per network"
    per_model = _per_model(data.cells)
    with_acc, without = models_with(data.cells, "top1")
    if not with_acc:
        return _skip(
            name,
            title,
            "No network has a published top-1 accuracy, so there is no bar chart of it.",
        )
    pm = per_model.loc[with_acc].sort_values("top1")
    fig, (ax,) = _new_figure(1, title, height=0.35 * len(pm) + 1.2)
    ax.barh(pm.index, pm["top1"], color=[data.colors[m] for m in pm.index])
    unverified = set(_unverified(pm))
    for y, (m, v) in enumerate(pm["top1"].items()):
        label = f"{v:.1f} (unverified)" if m in unverified else f"{v:.1f}"
        ax.text(v + 0.3, y, label, va="center", fontsize=LABEL_FONTSIZE)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_xlim(0, min(100.0, pm["top1"].max() * 1.1))
    ax.grid(axis="y", visible=False)
    best, worst = pm.index[-1], pm.index[0]
    reading = (
        f"{best} is the most accurate ({pm.loc[best, 'top1']:.1f}% top-1), {worst} the least "
        f"({pm.loc[worst, 'top1']:.1f}%)."
        + _no_accuracy_note(without)
        + _unverified_note(pm)
        + _accuracy_sources(pm)
    )
    return FigureResult(name, title, fig, reading)


def accuracy_vs_ops(data: ReportData) -> FigureResult:
    """2. Top-1 accuracy vs operations (G-MACs per image); bubble area ∝ parameters."""
    name, title = "02-accuracy-vs-ops", "Top-1 accuracy vs operations (bubble area: parameters)"
    per_model = _per_model(data.cells)
    with_acc, without = models_with(data.cells, "top1")
    pm = per_model.loc[with_acc].dropna(subset=["gmacs", "params_m"])
    if pm.empty:
        return _skip(
            name,
            title,
            "No network has both a published accuracy and a MAC count, so accuracy cannot be "
            "set against operations.",
        )
    sizes, scale = _bubble_sizes(pm["params_m"], float(pm["params_m"].max()))
    fig, (ax,) = _new_figure(1, title)
    colors = [data.colors[m] for m in pm.index]
    ax.scatter(pm["gmacs"], pm["top1"], s=sizes, c=colors, alpha=0.55, edgecolors="0.25", lw=0.6)
    front = pareto_front(list(pm.index), list(pm["gmacs"]), list(pm["top1"]))
    fr = pm.loc[front]
    ax.step(fr["gmacs"], fr["top1"], where="post", color="0.4", ls="--", lw=0.9, zorder=0)
    if pm["gmacs"].max() / max(pm["gmacs"].min(), 1e-12) > 20:
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
    ax.set_xlabel("operations (G-MACs per image, counted)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.margins(0.15)
    _bubble_legend(ax, float(pm["params_m"].max()), "M", scale, "parameters")
    _freeze_layout(fig)
    labels = place_labels(ax, list(pm["gmacs"]), list(pm["top1"]), list(pm.index), colors, sizes)
    reading = (
        f"The dashed line is the accuracy/operations Pareto frontier: {_names(front)} "
        f"{'is' if len(front) == 1 else 'are'} on it (no other network is both cheaper and at "
        f"least as accurate). Bubble area is proportional to the parameter count (minimum "
        f"{BUBBLE_MIN_PT2:g} pt² so that small networks stay visible); MACs are counted "
        f"by {_names(sorted(set(data.cells['macs_counter'].dropna().astype(str))))}."
        + _no_accuracy_note(without)
    )
    return FigureResult(name, title, fig, reading, labels=tuple(labels))


def time_vs_batch(data: ReportData) -> FigureResult:
    """3. Time per image vs batch size (log-log), p10–p90 band, one panel per setup."""
    name, title = "03-time-per-image", "Time per image vs batch size"
    cells = data.cells.dropna(subset=["time_per_image_ms"])
    if cells.empty:
        return _skip(name, title, "No cell finished with a timing, so there is nothing to plot.")

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.fill_between(
            g["batch_size"],
            g["time_per_image_ms_p10"],
            g["time_per_image_ms_p90"],
            color=c,
            alpha=0.18,
            lw=0,
        )
        p.ax.plot(g["batch_size"], g["time_per_image_ms"], marker="o", ms=3.5, color=c, lw=1.5)

    def finish(p: Panel) -> str:
        p.ax.set_yscale("log")
        _log_axis(p.ax.yaxis)
        p.ax.set_ylabel("time per image (ms)")
        p.ax.set_title(p.setup, fontsize=9)
        return _batching_gain(p.cells, p.setup)

    fig, parts = _batch_lines(data, cells, title, line, finish)
    reading = (
        "Lines are the median time per image (median of repeats); bands span the 10th to 90th "
        "percentile of the per-forward latency divided by the batch size. "
        + " ".join(p for p in parts if p)
    )
    return FigureResult(name, title, fig, reading)


def _batching_gain(sc: pd.DataFrame, setup: str) -> str:
    lo, hi = int(sc["batch_size"].min()), int(sc["batch_size"].max())
    if lo == hi:
        return ""
    gains = {}
    sizes = sc.groupby("model")["image_size"].nunique()
    for (model, size), g in sc.groupby(["model", "image_size"], sort=True):
        t = g.set_index("batch_size")["time_per_image_ms"]
        if lo in t.index and hi in t.index:
            gains[_sized(str(model), int(size), int(sizes[model]))] = float(t[lo] / t[hi])
    if not gains:
        return ""
    best = max(gains, key=lambda m: gains[m])
    worst = min(gains, key=lambda m: gains[m])
    return (
        f"On {setup}, going from batch {lo} to {hi} divides the time per image by "
        f"{gains[best]:.2f} for {best} and by {gains[worst]:.2f} for {worst}."
    )


def _sized(model: str, image_size: int, sizes: int) -> str:
    """The network's name, with its input size where the cells hold it at ``sizes`` > 1
    sizes (0: a part written before the size was recorded)."""
    if sizes < 2:
        return model
    return f"{model} ({image_size} px)" if image_size else f"{model} (size not recorded)"


def power_vs_batch(data: ReportData) -> FigureResult:
    """4. Mean power during the timed forwards vs batch size, net of idle where known."""
    name, title = "04-power", "Power vs batch size"
    cells = data.cells[np.isfinite(data.cells["power_w_mean"].astype(float))]
    if cells.empty:
        sources = sorted({str(s) for s in data.cells["power_source"].dropna()})
        why = f" (power source: {'; '.join(sources)})" if sources else ""
        return _skip(
            name,
            title,
            f"No power was measured in these runs{why}, so power and energy figures are left out.",
        )
    has_idle = cells["power_is_net"]
    ylabel = (
        "power above idle (W)"
        if has_idle.all()
        else "power (W)"
        if not has_idle.any()
        else "power (W; above idle where idle was measured)"
    )

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.plot(g["batch_size"], g["power_plot_w"], marker="o", ms=3.5, color=c)

    def finish(p: Panel) -> str:
        p.ax.set_ylabel(ylabel)
        p.ax.set_title(p.setup, fontsize=9)
        return ""

    fig, _ = _batch_lines(data, cells, title, line, finish)
    sources = sorted({str(s) for s in cells["power_source"].dropna()})
    reading = (
        f"Mean power over the timed forwards ({'; '.join(sources)}), "
        + (
            "minus the idle power measured before the run."
            if has_idle.all()
            else "gross where no idle power was measured."
        )
        + f" Highest: {cells.loc[cells['power_plot_w'].idxmax(), 'model']} at "
        f"{cells['power_plot_w'].max():.1f} W."
    )
    return FigureResult(name, title, fig, reading)


def _memory_method(methods: Sequence[str]) -> str:
    """What ``peak_memory_bytes`` is for the ``memory_method`` values of one setup
    (``bench.probes.memory``: the probe, then how the pass ran)."""
    parts = []
    for m in sorted(set(methods)):
        own = "own pass" in m
        if m.startswith("cpu"):
            how = (
                " in one forward of its own, glibc returning freed memory so that it follows "
                "live memory"
                if own and "glibc" in m
                else " in one forward of its own"
                if own
                else " over the timed forwards, what the allocator kept from earlier forwards "
                "included"
            )
            parts.append(
                f"the resident set's high-water mark above the worker's pre-model baseline{how}"
                f" (memory_method {m})"
            )
        elif m.startswith("cuda"):
            how = " in one forward of its own" if own else " over the timed forwards"
            parts.append(
                "the CUDA caching allocator's max_memory_allocated above the pre-model "
                f"baseline{how} (memory_method {m})"
            )
        else:
            parts.append(f"not measured (memory_method {m})")
    return "; ".join(parts) if parts else "of an unrecorded method"


def _memory_sentence(cells: pd.DataFrame, setup: str) -> str:
    methods = [str(m) for m in cells["memory_method"].dropna()]
    return f"On {setup}, peak memory is {_memory_method(methods)}."


def _counted_ratio(sc: pd.DataFrame, setup: str) -> str:
    """Measured peak ÷ counted (weights + activation peak) at the largest batch size."""
    both = sc.dropna(subset=["peak_memory_bytes", "counted_memory_bytes"])
    both = both[both["counted_memory_bytes"] > 0]
    if both.empty:
        return ""
    top = int(both["batch_size"].max())
    at = both[both["batch_size"] == top]
    ratio = at["peak_memory_bytes"].astype(float) / at["counted_memory_bytes"]
    spread = _span(f"{ratio.min():.2f}", f"{ratio.max():.2f}")
    return f" At batch {top} the measured peak is {spread}× the counted one."


def _span(lo: str, hi: str) -> str:
    """``lo–hi``, or one number where both read the same."""
    return lo if lo == hi else f"{lo}–{hi}"


def memory_vs_batch(data: ReportData) -> FigureResult:
    """5. Peak memory vs batch size (measured), with the counted weights + activation peak
    dashed and the weights alone dotted."""
    name, title = "05-memory", "Peak memory vs batch size"
    cells = data.cells.dropna(subset=["peak_memory_mib"])
    if cells.empty:
        return _skip(name, title, "No cell recorded a peak memory, so there is nothing to plot.")
    has_counted = bool(np.isfinite(cells["counted_memory_mib"].astype(float)).any())

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.plot(g["batch_size"], g["peak_memory_mib"], marker="o", ms=3.5, color=c)
        counted = g.dropna(subset=["counted_memory_mib"])
        if len(counted):
            p.ax.plot(counted["batch_size"], counted["counted_memory_mib"], color=c, ls="--",
                      lw=1.2)  # fmt: skip
        w = g["weights_mib"].dropna()
        if len(w):
            bs = p.cells["batch_size"].astype(int)
            p.ax.hlines(float(w.iloc[0]), bs.min(), bs.max(), colors=[c], linestyles=":", lw=1.3)

    def finish(p: Panel) -> str:
        p.ax.set_yscale("log")
        _log_axis(p.ax.yaxis)
        p.ax.set_ylabel("memory (MiB)")
        methods = sorted({str(m) for m in p.cells["memory_method"].dropna()})
        dashed = "\ndashed: counted weights + activations · " if has_counted else " · "
        p.ax.set_title(
            f"{p.setup}\nsolid: peak ({', '.join(methods)}){dashed}dotted: weights", fontsize=8
        )
        text = _memory_sentence(p.cells, p.setup) + _counted_ratio(p.cells, p.setup)
        smallest = int(p.cells["batch_size"].astype(int).min())
        b1 = p.cells[p.cells["batch_size"] == smallest]
        share = (b1["weights_mib"] / b1["peak_memory_mib"]).dropna()
        if len(share):
            text += (
                f" Weights are {share.min():.0%}–{share.max():.0%} of the peak at batch {smallest}."
            )
        return text

    fig, parts = _batch_lines(data, cells, title, line, finish)
    counted = (
        "The dashed line of the same colour is the counted weights + activation peak "
        "(activation_peak_bytes: live tensor bytes besides the weights during one forward, "
        "input included, counted on the meta device), the same on every device: the measured "
        "peak above it is the allocator's and runtime's own (workspaces, caching, "
        "fragmentation). "
        if has_counted
        else ""
    )
    reading = (
        "Solid lines are the measured peak memory: what the worker held above its pre-model "
        "baseline (weights, activations and workspaces); the dotted line of the same colour "
        "is the weights alone, so the gap is activations and workspace. "
        + counted
        + " ".join(p for p in parts if p)
    )
    return FigureResult(name, title, fig, reading)


def _scatter_fit_panel(
    ax: Any,
    data: ReportData,
    sub: pd.DataFrame,
    x_col: str,
    y_col: str,
    x_scale: float,
    y_scale: float,
) -> tuple[LineFit | None, list[Any]]:
    """Points (labelled later), and the least-squares line fitted in the plotted units
    scaled back by ``x_scale``/``y_scale`` (so the fit is in the row's own units)."""
    colors = [data.colors[m] for m in sub["model"]]
    ax.scatter(
        sub[x_col] / x_scale, sub[y_col] / y_scale, c=colors, s=30, edgecolors="0.25", lw=0.5
    )
    if sub[x_col].nunique() < 2:
        return None, colors
    fit = fit_line(list(sub[x_col]), list(sub[y_col]))
    xs = np.linspace(float(sub[x_col].min()), float(sub[x_col].max()), 50)
    ax.plot(xs / x_scale, (fit.slope * xs + fit.intercept) / y_scale, color="0.35", lw=1, ls="--")
    return fit, colors


def _fit_box(ax: Any, text: str) -> None:
    ax.text(
        0.02,
        0.97,
        text,
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=7.5,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9},
    )


def memory_vs_params(data: ReportData) -> FigureResult:
    """6. Peak memory at the smallest batch (1) vs parameters, with a least-squares line."""
    name, title = "06-memory-vs-params", "Memory at batch 1 vs parameters"
    cells = data.cells.dropna(subset=["peak_memory_bytes", "params"])
    cells = cells[cells["batch_size"] == 1]
    if cells.empty:
        return _skip(
            name, title, "No network has both a peak memory and a parameter count at batch size 1."
        )
    fig, panels = _setup_panels(cells, title)
    fits, readings, pending = [], [], []
    for p in panels:
        ax, setup = p.ax, p.setup
        sub = p.cells.sort_values("model")
        sub = sub.assign(params=sub["params"].astype(float))
        fit, colors = _scatter_fit_panel(ax, data, sub, "params", "peak_memory_bytes", MEGA, MIB)
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel("peak memory at batch 1 (MiB)")
        ax.set_title(setup, fontsize=9)
        pending.append((ax, sub, colors))
        if fit is None:
            readings.append(f"On {setup}, fewer than two networks: no line fitted.")
            continue
        fits.append(
            Fit(
                setup,
                1,
                tuple(sub["params"]),
                tuple(sub["peak_memory_bytes"].astype(float)),
                tuple(sub["model"]),
                fit,
                "params",
                "peak_memory_bytes",
            )
        )
        _fit_box(
            ax,
            f"slope {fit.slope:.2f} bytes/parameter\nintercept {to_mib(fit.intercept):.1f} MiB"
            f"\nR² {fit.r2:.3f} (n = {fit.n})",
        )
        readings.append(
            f"On {setup}, each parameter adds {fit.slope:.2f} bytes of peak memory at batch 1 "
            f"(float32 weights alone are 4), above a fixed {to_mib(fit.intercept):.1f} MiB "
            f"(R² = {fit.r2:.3f}, {fit.n} networks)."
        )
    _freeze_layout(fig)
    labels = []
    for ax, sub, colors in pending:
        labels += place_labels(
            ax,
            list(to_millions(sub["params"])),
            list(sub["peak_memory_mib"]),
            list(sub["model"]),
            colors,
        )
    methods = " ".join(_memory_sentence(p.cells, p.setup) for p in panels)
    reading = (
        "Least-squares line of measured peak memory on parameter count. "
        + " ".join(readings)
        + " "
        + methods
    )
    return FigureResult(name, title, fig, reading, fits=tuple(fits), labels=tuple(labels))


def _larger_batch(sc: pd.DataFrame) -> int | None:
    """The largest batch size above 1 measured for as many networks as any batch size > 1."""
    counts = sc[sc["batch_size"] > 1].groupby("batch_size")["model"].nunique()
    if counts.empty or counts.max() < 2:
        return None
    return int(counts[counts == counts.max()].index.max())


def ops_vs_time(data: ReportData) -> FigureResult:
    """7. Operations vs time per image, with a least-squares line and R², at batch 1 and at
    a larger batch size, one row of panels per setup."""
    name, title = "07-ops-vs-time", "Operations vs time per image"
    cells = data.cells.dropna(subset=["gmacs", "time_per_image_ms"])
    if cells.empty:
        return _skip(name, title, "No network has both a MAC count and a timing.")
    panels: list[tuple[str, int, pd.DataFrame]] = []
    for setup, sc in _by_setup(cells):
        for b in (1, _larger_batch(sc)):
            sub = sc[sc["batch_size"] == b] if b is not None else sc.iloc[0:0]
            if len(sub):
                panels.append((setup, int(b), sub.sort_values("model")))
    if not panels:
        return _skip(name, title, "No batch size has timings of networks with a MAC count.")
    fig, axes = _new_figure(len(panels), title)
    fits, readings, pending = [], [], []
    for ax, (setup, b, sub) in zip(axes, panels, strict=True):
        fit, colors = _scatter_fit_panel(ax, data, sub, "gmacs", "time_per_image_ms", 1.0, 1.0)
        ax.set_xlabel("operations (G-MACs per image)")
        ax.set_ylabel("time per image (ms)")
        ax.set_title(f"{setup} · batch {b}", fontsize=9)
        pending.append((ax, sub, colors))
        if fit is None:
            continue
        fits.append(
            Fit(
                setup,
                b,
                tuple(sub["gmacs"]),
                tuple(sub["time_per_image_ms"]),
                tuple(sub["model"]),
                fit,
                "gmacs",
                "time_per_image_ms",
            )
        )
        _fit_box(
            ax,
            f"slope {fit.slope:.3g} ms/G-MAC\nintercept {fit.intercept:.3g} ms\n"
            f"R² {fit.r2:.3f} (n = {fit.n})",
        )
        readings.append(
            f"{setup}, batch {b}: {fit.slope:.3g} ms per G-MAC, R² = {fit.r2:.3f} "
            f"({fit.n} networks; {MS_PER_S / fit.slope if fit.slope > 0 else float('nan'):.3g} "
            "G-MAC/s effective)."
        )
    _freeze_layout(fig)
    labels = []
    for ax, sub, colors in pending:
        labels += place_labels(
            ax, list(sub["gmacs"]), list(sub["time_per_image_ms"]), list(sub["model"]), colors
        )
    reading = (
        "Least-squares line of time per image on operations; R² says how much of the spread "
        "in time the operation count explains. " + " ".join(readings)
    )
    return FigureResult(name, title, fig, reading, fits=tuple(fits), labels=tuple(labels))


def _best_per_model(
    sc: pd.DataFrame, column: str, pick: Callable[[pd.Series], Any]
) -> pd.DataFrame:
    idx = sc.groupby("model", sort=True)[column].apply(pick)
    return sc.loc[list(idx)].sort_values("model")


def accuracy_vs_throughput(data: ReportData) -> FigureResult:
    """8. Top-1 accuracy vs images per second (best batch size); bubble area ∝ operations."""
    name, title = (
        "08-accuracy-vs-throughput",
        "Top-1 accuracy vs images per second (bubble area: operations)",
    )
    without = models_with(data.cells, "top1")[1]
    cells = data.cells.dropna(subset=["top1", "throughput_ips", "gmacs"])
    if cells.empty:
        return _skip(name, title, "No network has both a published accuracy and a throughput.")
    max_ops = float(cells["gmacs"].max())
    fig, panels = _setup_panels(cells, title)
    pending, readings = [], []
    for p in panels:
        ax, setup = p.ax, p.setup
        best = _best_per_model(p.cells, "throughput_ips", pd.Series.idxmax)
        sizes, scale = _bubble_sizes(best["gmacs"], max_ops)
        colors = [data.colors[m] for m in best["model"]]
        ax.scatter(
            best["throughput_ips"],
            best["top1"],
            s=sizes,
            c=colors,
            alpha=0.55,
            edgecolors="0.25",
            lw=0.6,
        )
        if best["throughput_ips"].max() / best["throughput_ips"].min() > 20:
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
        ax.set_xlabel("throughput (images/s, best batch size)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(setup, fontsize=9)
        ax.margins(0.18)
        _bubble_legend(ax, max_ops, "G-MACs", scale, "operations")
        texts = [
            f"{m} (bs {int(b)})" for m, b in zip(best["model"], best["batch_size"], strict=True)
        ]
        pending.append((ax, best, texts, colors, sizes))
        fastest = best.loc[best["throughput_ips"].idxmax()]
        readings.append(
            f"On {setup}, {fastest['model']} is the fastest ({fastest['throughput_ips']:.0f} "
            f"images/s at batch {int(fastest['batch_size'])}, {fastest['top1']:.1f}% top-1)."
        )
    _freeze_layout(fig)
    labels = []
    for ax, best, texts, colors, sizes in pending:
        labels += place_labels(
            ax, list(best["throughput_ips"]), list(best["top1"]), texts, colors, sizes
        )
    reading = (
        "Each network at the batch size with its highest throughput (shown in the label); "
        f"bubble area is proportional to operations per image (minimum {BUBBLE_MIN_PT2:g} pt²). "
        + " ".join(readings)
        + _no_accuracy_note(without)
    )
    return FigureResult(name, title, fig, reading, labels=tuple(labels))


def accuracy_density(data: ReportData) -> FigureResult:
    """9. Accuracy density: top-1 accuracy per million parameters, per network."""
    name, title = "09-accuracy-density", "Accuracy density: top-1 per million parameters"
    per_model = _per_model(data.cells)
    with_acc, without = models_with(data.cells, "top1")
    pm = per_model.loc[with_acc].dropna(subset=["params_m"])
    pm = pm[pm["params_m"] > 0]
    if pm.empty:
        return _skip(name, title, "No network has both a published accuracy and a parameter count.")
    pm = pm.assign(density=pm["top1"] / pm["params_m"]).sort_values("density")
    fig, (ax,) = _new_figure(1, title, height=0.35 * len(pm) + 1.2)
    ax.barh(pm.index, pm["density"], color=[data.colors[m] for m in pm.index])
    for y, v in enumerate(pm["density"]):
        ax.text(v * 1.01, y, f"{v:.3g}", va="center", fontsize=LABEL_FONTSIZE)
    ax.set_xlabel("top-1 accuracy per million parameters (% / M parameters)")
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, pm["density"].max() * 1.15)
    reading = (
        f"{pm.index[-1]} uses its parameters best ({pm['density'].iloc[-1]:.3g} %/M), "
        f"{pm.index[0]} least ({pm['density'].iloc[0]:.3g} %/M)." + _no_accuracy_note(without)
    )
    return FigureResult(name, title, fig, reading)


def energy_vs_accuracy(data: ReportData) -> FigureResult:
    """10. Energy per image (lowest over batch sizes) vs top-1 accuracy, where power was
    measured."""
    name, title = "10-energy-vs-accuracy", "Energy per image vs top-1 accuracy"
    cells = data.cells[np.isfinite(data.cells["energy_per_image_j"].astype(float))]
    if cells.empty:
        sources = sorted({str(s) for s in data.cells["power_source"].dropna()})
        why = f" (power source: {'; '.join(sources)})" if sources else ""
        return _skip(
            name,
            title,
            f"No energy was measured in these runs{why}, so energy per image cannot be set "
            "against accuracy.",
        )
    cells = cells.dropna(subset=["top1"])
    if cells.empty:
        return _skip(
            name, title, "The networks with an energy measurement have no published accuracy."
        )
    net = cells["energy_is_net"]
    energy = "energy_plot_per_image_j"
    fig, panels = _setup_panels(cells, title)
    pending = []
    for p in panels:
        ax = p.ax
        best = _best_per_model(p.cells, energy, pd.Series.idxmin)
        colors = [data.colors[m] for m in best["model"]]
        ax.scatter(best[energy], best["top1"], c=colors, s=30, edgecolors="0.25", lw=0.5)
        ax.set_xlabel(
            "energy per image (J" + (", above idle)" if net.all() else ")") + ", best batch size"
        )
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(p.setup, fontsize=9)
        ax.margins(0.18)
        texts = [
            f"{m} (bs {int(b)})" for m, b in zip(best["model"], best["batch_size"], strict=True)
        ]
        pending.append((ax, best, texts, colors))
    _freeze_layout(fig)
    labels = []
    for ax, best, texts, colors in pending:
        labels += place_labels(ax, list(best[energy]), list(best["top1"]), texts, colors)
    reading = "Each network at the batch size with its lowest energy per image (in the label); " + (
        "energy above idle power."
        if net.all()
        else "gross energy where no idle power was measured."
    )
    return FigureResult(name, title, fig, reading, labels=tuple(labels))


@dataclass(frozen=True, slots=True)
class Speedup:
    """One point of the speed-up figure: eager latency ÷ ``config`` latency (medians of
    repeats) of ``model`` at ``batch_size`` on ``base_setup``."""

    base_setup: str
    model: str
    config: str
    batch_size: int
    image_size: int
    eager_ms: float
    config_ms: float

    @property
    def ratio(self) -> float:
        return self.eager_ms / self.config_ms


def speedups(cells: pd.DataFrame) -> list[Speedup]:
    """Every cell of a configuration other than eager that has an eager cell of the same
    network, batch size and image size on the same base setup, sorted."""
    cols = ["base_setup", "model", "batch_size", "image_size"]
    timed = cells[np.isfinite(cells["latency_ms_median"].astype(float))]
    timed = timed[timed["latency_ms_median"].astype(float) > 0]
    eager = timed[timed["config"] == EAGER].set_index(cols)["latency_ms_median"]
    out = []
    for r in timed[timed["config"] != EAGER].itertuples(index=False):
        key = (r.base_setup, r.model, r.batch_size, r.image_size)
        if key in eager.index:
            out.append(
                Speedup(
                    str(r.base_setup),
                    str(r.model),
                    str(r.config),
                    int(r.batch_size),
                    int(r.image_size),
                    float(eager[key]),
                    float(r.latency_ms_median),
                )
            )
    return sorted(out, key=lambda p: (p.base_setup, p.model, p.config, p.image_size, p.batch_size))


_CONFIG_STYLES = ("-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)))  # "--" is the line at 1
_CONFIG_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _ratio_axis(ax: Any, ratios: Sequence[float]) -> None:
    """A y axis for ratios that always shows 1: logarithmic when they span more than a
    factor of 4 (so that 2× and 0.5× are as far from 1), else linear."""
    lo, hi = min(*ratios, 1.0), max(*ratios, 1.0)
    if hi / lo > 4:
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_ylim(lo / 1.25, hi * 1.25)
    else:
        pad = 0.08 * (hi - lo) or 0.05
        ax.set_ylim(lo - pad, hi + pad)


def _speedup_phrase(p: Speedup, with_px: bool) -> str:
    px = f", {p.image_size} px" if with_px else ""
    return f"{p.ratio:.2f}× ({p.model}, {p.config}, batch {p.batch_size}{px})"


def _compile_times(cells: pd.DataFrame, several_setups: bool) -> str:
    """Median ``compile_s`` per compiled configuration (and base setup, when there are
    several), as a sentence; "" when no cell recorded one. Cells with a wrong output count:
    their compile time was measured all the same."""
    timed = cells.dropna(subset=["compile_s"])
    if timed.empty:
        return ""
    parts = []
    for (base, config), g in timed.groupby(["base_setup", "config"], sort=True):
        where = f" on {base}" if several_setups else ""
        parts.append(f"{config} {float(g['compile_s'].median()):.3g} s{where}")
    return (
        " Compile time (median of the cells' compile_s, never counted in the latency): "
        + "; ".join(parts)
        + "."
    )


def _speedup_panel(
    ax: Any,
    data: ReportData,
    base: str,
    points: Sequence[Speedup],
    style: dict[str, tuple[Any, str]],
) -> str:
    """One panel of figure 11: a line per (network, configuration, image size) and the
    configurations' legend; returns the panel's sentence (largest and smallest speed-up)."""
    # the image size is named only where a network was measured at several
    with_px = len({(p.model, p.image_size) for p in points}) > len({p.model for p in points})
    lines: dict[tuple[str, str, int], list[Speedup]] = {}
    for p in points:
        lines.setdefault((p.model, p.config, p.image_size), []).append(p)
    for (model, config, _), line in lines.items():
        ls, marker = style[config]
        ax.plot(
            [p.batch_size for p in line],
            [p.ratio for p in line],
            ls=ls,
            marker=marker,
            ms=4,
            lw=1.5,
            color=data.colors[model],
        )
    ax.axhline(1.0, color="0.35", ls="--", lw=0.9, zorder=0)
    _log2_batch_axis(ax, [p.batch_size for p in points])
    _ratio_axis(ax, [p.ratio for p in points])
    ax.set_ylabel("speed-up over eager (×)")
    ax.set_title(base, fontsize=9)
    shown = [c for c in style if any(p.config == c for p in points)]
    handles = [
        Line2D([], [], color="0.3", ls=style[c][0], marker=style[c][1], label=c) for c in shown
    ]
    ax.legend(handles=handles, title="configuration", loc="best", frameon=False)
    best = max(points, key=lambda p: (p.ratio, -p.batch_size))
    worst = min(points, key=lambda p: (p.ratio, p.batch_size))
    return (
        f"On {base}, the largest speed-up is {_speedup_phrase(best, with_px)} and the "
        f"smallest {_speedup_phrase(worst, with_px)}."
    )


def speedup_vs_eager(data: ReportData) -> FigureResult:
    """11. Speed-up over eager (eager latency ÷ configuration latency) vs batch size, one
    panel per machine/device/dtype, a line per (network, configuration)."""
    name, title = "11-speedup-vs-eager", "Speed-up over eager per configuration"
    configs = config_order(data.measured_cells["config"].dropna().astype(str))
    if not configs:
        return _skip(name, title, "No cell finished, so there is no speed-up to draw.")
    if EAGER not in configs:
        return _skip(
            name,
            title,
            "No eager cell was measured, so there is no speed-up over eager to compute "
            "(add eager to --configs).",
        )
    if configs == (EAGER,):
        return _skip(
            name,
            title,
            "Only the eager configuration was measured, so there is no speed-up over eager "
            "to draw (run with --configs eager,compile,... to compare configurations).",
        )
    points = speedups(data.cells)
    wrong = not data.wrong_output.empty
    if not points:
        return _skip(
            name,
            title,
            "No cell of another configuration has an eager cell of the same network, batch "
            "size and setup to compare with"
            + (" (cells with a wrong output are not compared)." if wrong else "."),
        )
    others = [c for c in configs if c != EAGER]
    style = {c: (_CONFIG_STYLES[i % 4], _CONFIG_MARKERS[i % 8]) for i, c in enumerate(others)}
    bases = sorted({p.base_setup for p in points})
    fig, axes = _new_figure(len(bases), title)
    readings = [
        _speedup_panel(ax, data, base, [p for p in points if p.base_setup == base], style)
        for ax, base in zip(axes, bases, strict=True)
    ]
    _model_legend(fig, data, sorted({p.model for p in points}))
    reading = (
        "Speed-up = eager latency ÷ the configuration's latency for the same network, batch "
        "size and setup (medians of repeats); above the dashed line at 1 the configuration "
        "is faster than eager, below it slower. "
        + " ".join(readings)
        + _compile_times(data.measured_cells, len(bases) > 1)
    )
    return FigureResult(name, title, fig, reading)


# --------------------------------------------------------------------------- roofline


def _pct(fraction: float) -> str:
    return _percent(100 * fraction)


def _rate(per_s: float, unit: str) -> str:
    """A rate in G``unit``/s, or T``unit``/s from a thousand G up (``unit``: MAC or B)."""
    if abs(per_s) >= 1e12:
        return f"{per_s / 1e12:.3g} T{unit}/s"
    return f"{per_s / GIGA:.3g} G{unit}/s"


def _tick(v: float, _pos: Any = None) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _batch_marker_pt2(batch_sizes: Any) -> np.ndarray:
    """Marker area (points²) of the roofline's points: grows with log2 of the batch size."""
    return 16.0 + 14.0 * np.log2(np.asarray(batch_sizes, dtype=float))


def _roof_xy(
    compute: float, bandwidth: float, x_lo: float, x_hi: float
) -> tuple[list[float], list[float]]:
    """The roofline min(compute, bandwidth × I) from ``x_lo`` to ``x_hi`` (MACs per byte) as
    a polyline in (MACs/byte, MACs/s), its corner at the ridge compute ÷ bandwidth; with one
    roof only, that roof alone."""
    xs = [x_lo, x_hi]
    ridge = compute / bandwidth
    if math.isfinite(ridge) and x_lo < ridge < x_hi:
        xs = [x_lo, ridge, x_hi]
    return xs, [float(np.fmin(compute, bandwidth * x)) for x in xs]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a network stands on one setup's roofline: its highest fraction of the compute
    roof (``compute_fraction``, at ``compute_batch``) and its highest fraction of the
    roofline bound at its own intensity (``roofline_fraction``, at ``roofline_batch`` and
    ``intensity_macs_per_byte``); NaN where the roofs are not known."""

    model: str
    compute_fraction: float
    compute_batch: int
    roofline_fraction: float
    roofline_batch: int
    intensity_macs_per_byte: float
    achieved_macs_per_s: float


def roofline_standings(cells: pd.DataFrame, roofs: Roofs) -> list[Standing]:
    """One :class:`Standing` per network of one setup's ``cells`` (sorted by name). The
    compute fraction is achieved ÷ the measured GEMM roof drawn (the rows' own
    ``compute_fraction`` where no roof was measured)."""
    achieved = cells["achieved_macs_per_s"].astype(float)
    if math.isfinite(roofs.compute_macs_per_s):
        frac = achieved / roofs.compute_macs_per_s
    else:
        frac = pd.to_numeric(cells["compute_fraction"], errors="coerce").astype(float)
    bound = roofs.bound_macs_per_s(cells["intensity_macs_per_byte"].astype(float))
    sc = cells.assign(_frac=frac, _eff=achieved / bound, _rate=achieved)
    out = []
    for model, g in sc.groupby("model", sort=True):
        g = g.sort_values("batch_size")
        near = g.loc[g["_frac"].idxmax()] if g["_frac"].notna().any() else g.iloc[-1]
        best = g.loc[g["_eff"].idxmax()] if g["_eff"].notna().any() else g.iloc[-1]
        out.append(
            Standing(
                str(model),
                float(near["_frac"]),
                int(near["batch_size"]),
                float(best["_eff"]),
                int(best["batch_size"]),
                float(best["intensity_macs_per_byte"]),
                float(g["_rate"].max()),
            )
        )
    return out


def _roofline_sentence(setup: str, roofs: Roofs, standings: Sequence[Standing]) -> str:
    """A panel's reading: its roofs, the networks nearest the compute roof and those
    farthest from both (each at its best batch size)."""
    if roofs.measured:
        text = (
            f"On {setup}, the measured roofs are {_rate(roofs.compute_macs_per_s, 'MAC')} "
            f"(gemm) and {_rate(roofs.bandwidth_bytes_per_s, 'B')} (triad), meeting at "
            f"{roofs.ridge_macs_per_byte:.3g} MACs/byte"
        )
    else:
        have = _measured_roofs(roofs, "{rate} ({kind})")
        text = f"On {setup}, " + (
            f"only one roof was measured, {have[0]}"
            if have
            else "no ceilings were measured (no ceilings.parquet for this machine, device, "
            "dtype and threads), so only the points are drawn"
        )
    if math.isfinite(roofs.conv3x3_macs_per_s):
        text += f"; a 3×3 convolution reaches {_rate(roofs.conv3x3_macs_per_s, 'MAC')}"
    sheet = [
        _rate(v, unit)
        for v, unit in (
            (roofs.datasheet_compute_macs_per_s, "MAC"),
            (roofs.datasheet_bandwidth_bytes_per_s, "B"),
        )
        if math.isfinite(v)
    ]
    if sheet:
        cite = f" ({roofs.datasheet_citation})" if roofs.datasheet_citation else ""
        text += f"; the datasheet gives {' and '.join(sheet)}{cite}"
    text += "."
    ranked = sorted(
        (s for s in standings if math.isfinite(s.compute_fraction)),
        key=lambda s: (-s.compute_fraction, s.model),
    )
    k = 2 if len(standings) >= 4 else 1
    near = ranked[:k]
    if near:
        phrases = [f"{s.model} ({_pct(s.compute_fraction)} of it at batch {s.compute_batch})"
                   for s in near]  # fmt: skip
        text += " Nearest the compute roof: " + _names(phrases) + "."
    elif standings:
        fastest = max(standings, key=lambda s: (s.achieved_macs_per_s, s.model))
        text += f" Highest rate: {fastest.model} ({_rate(fastest.achieved_macs_per_s, 'MAC')})."
    named = {s.model for s in near}
    far = sorted(
        (s for s in standings if math.isfinite(s.roofline_fraction) and s.model not in named),
        key=lambda s: (s.roofline_fraction, s.model),
    )[:k]
    if far:
        text += (
            " Farthest from both roofs: "
            + _names(
                [
                    f"{s.model} (at best {_pct(s.roofline_fraction)} of the roofline bound, "
                    f"at batch {s.roofline_batch} and {s.intensity_macs_per_byte:.3g} MACs/byte)"
                    for s in far
                ]
            )
            + "."
        )
    return text


def _roofline_limits(
    pts: pd.DataFrame, roofs: Roofs
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits (MACs/byte, GMAC/s) holding every point, the ridges and the roofs."""
    xs = [float(v) for v in pts["intensity_macs_per_byte"]]
    ridges = [
        roofs.ridge_macs_per_byte,
        roofs.datasheet_compute_macs_per_s / roofs.datasheet_bandwidth_bytes_per_s,
    ]
    xs += [r for r in ridges if _finite_positive(r)]
    ys = [float(v) / GIGA for v in pts["achieved_macs_per_s"]]
    tops = [
        v / GIGA
        for v in (
            roofs.compute_macs_per_s,
            roofs.conv3x3_macs_per_s,
            roofs.datasheet_compute_macs_per_s,
        )
        if _finite_positive(v)
    ]
    return (min(xs) / 4, max(xs) * 4), (min(ys) / 4, max(ys + tops) * 2.5)


def _finite_positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _measured_roofs(roofs: Roofs, form: str) -> list[str]:
    """The measured roofs (gemm, then triad) that exist, each as ``form`` with ``rate``
    (human units) and ``kind`` filled."""
    pairs = (
        (roofs.compute_macs_per_s, "MAC", "gemm"),
        (roofs.bandwidth_bytes_per_s, "B", "triad"),
    )
    return [
        form.format(rate=_rate(v, unit), kind=kind) for v, unit, kind in pairs if math.isfinite(v)
    ]


def _draw_roofs(ax: Any, roofs: Roofs, x_lo: float, x_hi: float) -> list[Any]:
    """The measured roofline (solid, ridge marked), the conv3x3 ceiling (thin dashed) and the
    datasheet roofline (dotted); returns the legend handles."""
    handles = []
    if math.isfinite(roofs.compute_macs_per_s) or math.isfinite(roofs.bandwidth_bytes_per_s):
        xs, ys = _roof_xy(roofs.compute_macs_per_s, roofs.bandwidth_bytes_per_s, x_lo, x_hi)
        parts = _measured_roofs(roofs, "{rate} {kind}")
        (line,) = ax.plot(
            xs,
            [y / GIGA for y in ys],
            color="0.15",
            lw=1.8,
            gid="roofline",
            label="measured: " + ", ".join(parts),
            zorder=1,
        )
        handles.append(line)
        if roofs.measured:
            ridge = roofs.ridge_macs_per_byte
            ax.plot([ridge], [roofs.compute_macs_per_s / GIGA], marker="D", ms=5, color="0.15")
            ax.annotate(
                f"ridge {ridge:.3g} MACs/B",
                (ridge, roofs.compute_macs_per_s / GIGA),
                xytext=(4, 5),
                textcoords="offset points",
                fontsize=7,
                color="0.2",
            )
    if math.isfinite(roofs.conv3x3_macs_per_s):
        conv = ax.axhline(
            roofs.conv3x3_macs_per_s / GIGA,
            color="0.3",
            ls="--",
            lw=0.9,
            gid="conv3x3",
            label=f"conv3x3: {_rate(roofs.conv3x3_macs_per_s, 'MAC')}",
            zorder=1,
        )
        handles.append(conv)
    dc, db = roofs.datasheet_compute_macs_per_s, roofs.datasheet_bandwidth_bytes_per_s
    if math.isfinite(dc) or math.isfinite(db):
        xs, ys = _roof_xy(dc, db, x_lo, x_hi)
        # the legend names the sheet; its address is in the reading
        cite = roofs.datasheet_citation.split(", http")[0].split("; ")[0]
        short = cite if len(cite) <= 60 else cite[:59] + "…"
        (sheet,) = ax.plot(
            xs,
            [y / GIGA for y in ys],
            color="0.45",
            ls=":",
            lw=1.4,
            gid="datasheet",
            label=f"datasheet ({short})" if short else "datasheet",
            zorder=1,
        )
        handles.append(sheet)
    return handles


def _batch_handles(ax: Any, batch_sizes: Sequence[int]) -> list[Any]:
    sizes = sorted(set(batch_sizes))
    if len(sizes) > 4:
        sizes = [sizes[0], sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3], sizes[-1]]
    area = _batch_marker_pt2(sizes)
    return [
        ax.scatter([], [], s=float(a), color="0.6", edgecolor="0.3", label=f"batch {b}")
        for a, b in zip(area, sizes, strict=True)
    ]


def roofline(data: ReportData) -> FigureResult:
    """12. Roofline: achieved GMAC/s vs arithmetic intensity (MACs per byte), log-log, one
    panel per setup; the measured roofs min(gemm, triad × I), the conv3x3 ceiling and the
    datasheet roofs where known."""
    name, title = "12-roofline", "Roofline: achieved rate vs arithmetic intensity"
    cells = data.cells
    ok = np.isfinite(cells["intensity_macs_per_byte"].astype(float)) & np.isfinite(
        cells["achieved_macs_per_s"].astype(float)
    )
    cells = cells[ok]
    cells = cells[(cells["intensity_macs_per_byte"] > 0) & (cells["achieved_macs_per_s"] > 0)]
    if cells.empty:
        return _skip(
            name,
            title,
            "No cell has both an arithmetic intensity (intensity_macs_per_byte, from the "
            "bytes each forward reads and writes) and an achieved rate (achieved_macs_per_s); "
            "runs made before these columns existed have neither, so there is no roofline.",
        )
    roofs_of = setup_roofs(data)
    fig, panels = _setup_panels(cells, title, height=PANEL_H_IN + 1.0)
    pending, readings = [], []
    for p in panels:
        ax, sc = p.ax, p.cells.sort_values(["model", "batch_size"])
        roofs = roofs_of[p.setup]
        (x_lo, x_hi), (y_lo, y_hi) = _roofline_limits(sc, roofs)
        handles = _draw_roofs(ax, roofs, x_lo, x_hi)
        colors = [data.colors[m] for m in sc["model"]]
        ax.scatter(
            sc["intensity_macs_per_byte"],
            sc["achieved_macs_per_s"] / GIGA,
            s=_batch_marker_pt2(sc["batch_size"]),
            c=colors,
            alpha=0.8,
            edgecolors="0.25",
            lw=0.5,
            zorder=3,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, numticks=12))
            axis.set_major_formatter(FuncFormatter(_tick))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("arithmetic intensity (MACs per byte read and written)")
        ax.set_ylabel("achieved rate (GMAC/s)")
        ax.set_title(p.setup, fontsize=9)
        handles += _batch_handles(ax, [int(b) for b in sc["batch_size"]])
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2,
                  frameon=False, fontsize=7, scatterpoints=1)  # fmt: skip
        last = sc.groupby("model", sort=True).tail(1)  # each network at its largest batch
        pending.append((ax, last))
        readings.append(_roofline_sentence(p.setup, roofs, roofline_standings(sc, roofs)))
    _model_legend(fig, data, cells["model"].unique())
    _freeze_layout(fig)
    labels = []
    for ax, last in pending:
        labels += place_labels(
            ax,
            list(last["intensity_macs_per_byte"]),
            list(last["achieved_macs_per_s"] / GIGA),
            list(last["model"]),
            [data.colors[m] for m in last["model"]],
            list(_batch_marker_pt2(last["batch_size"])),
        )
    reading = (
        "Each point is a cell: x is its arithmetic intensity, MACs per image ÷ bytes per "
        "image, the bytes every op of the forward reads and writes (counted, no cache reuse, "
        "so an upper bound on memory traffic and the intensity a lower bound: a point can sit "
        "above the sloped roof where caches serve part of that traffic); y is MACs × "
        "batch ÷ median latency. Marker area grows with the batch size; each network is "
        "named at its largest batch. The solid line is the roofline of the measured ceilings, "
        "min(gemm, triad bandwidth × intensity), its corner the ridge point; the thin dashed "
        "line is the measured 3×3-convolution rate and the dotted one the datasheet's peaks "
        "where known. A point far below both roofs is held back by neither arithmetic nor "
        "bandwidth but by overhead (small kernels, layout changes, Python). " + " ".join(readings)
    )
    return FigureResult(name, title, fig, reading, labels=tuple(labels))


# --------------------------------------------------------------------------- layer types


@dataclass(frozen=True, slots=True)
class LayerShares:
    """One per-layer profile (``effbench profile``): per layer group, the share of the
    summed layer time and of the MACs; the layers' summed time and the plain forward's."""

    model: str
    setup: str
    batch_size: int
    image_size: int
    groups: tuple[str, ...]
    time_share: tuple[float, ...]
    mac_share: tuple[float, ...]
    sum_layers_ms: float
    forward_ms: float

    def excess(self) -> list[tuple[str, float, float]]:
        """(group, time share, MAC share) of the groups whose time share exceeds their MAC
        share by more than half a percentage point, largest excess first."""
        rows = [
            (g, t, 0.0 if math.isnan(m) else m)
            for g, t, m in zip(self.groups, self.time_share, self.mac_share, strict=True)
        ]
        over = [r for r in rows if r[1] - r[2] > 0.005]
        return sorted(over, key=lambda r: (-(r[1] - r[2]), self.groups.index(r[0])))


def profiles(data: ReportData) -> list[LayerShares]:
    """The profiles in ``data.layers``, one per (network, setup, batch size, image size):
    where the same profile was made more than once, the latest (by timestamp). Sorted by
    network, setup and batch size."""
    layers = data.layers
    if layers.empty:
        return []
    key = list(PROFILE_KEY)
    stamp = layers["timestamp"].astype(str)
    latest = stamp.groupby([layers[k].astype(str) for k in key]).transform("max")
    layers = layers[stamp == latest]
    firsts = layers.drop_duplicates(key)
    labels = setup_labels(firsts.assign(host=firsts["hostname"].fillna("unknown host")))
    config = firsts["config"].astype(str)
    labels = labels.where(config == EAGER, labels + " · " + config)
    out = []
    for (_, first), label in zip(firsts.iterrows(), labels, strict=True):
        same = np.logical_and.reduce([layers[k].astype(str) == str(first[k]) for k in key])
        out.append(_profile(layers[same], str(label)))
    return sorted(out, key=lambda p: (p.model, p.setup, p.batch_size, p.image_size))


def _profile(rows: pd.DataFrame, setup: str) -> LayerShares:
    sums = rows.groupby("group", sort=False)[["time_ms", "macs"]].sum(min_count=1)
    order = [g for g in LAYER_GROUPS if g in sums.index]
    order += sorted(g for g in sums.index if g not in LAYER_GROUPS)
    sums = sums.loc[order]
    total_t, total_m = float(sums["time_ms"].sum()), float(sums["macs"].sum())
    time_share = sums["time_ms"] / total_t if total_t > 0 else sums["time_ms"] * np.nan
    mac_share = sums["macs"] / total_m if total_m > 0 else sums["macs"] * np.nan
    first = rows.iloc[0]
    summed = float(first["sum_layers_ms"]) if pd.notna(first["sum_layers_ms"]) else total_t
    return LayerShares(
        str(first["model"]),
        setup,
        int(first["batch_size"]),
        int(first["image_size"]) if pd.notna(first["image_size"]) else 0,
        tuple(order),
        tuple(float(v) for v in time_share.fillna(0.0)),
        tuple(float(v) for v in mac_share),
        summed,
        float(first["forward_ms"]),
    )


def _px(p: LayerShares) -> str:
    """`` · N px`` unless the image is 224 px, the size of most networks here, or unknown."""
    return "" if p.image_size == 224 else f" · {p.image_size} px" if p.image_size else ""


def _profile_sentence(p: LayerShares) -> str:
    over = p.excess()[:2]
    text = f"{p.model} on {p.setup}, batch {p.batch_size}{_px(p)}: "
    if over:
        text += "; ".join(
            f"{g} layers take {_pct(t)} of the layer time for {_pct(m)} of the MACs"
            for g, t, m in over
        )
    else:
        text += "time follows the MACs (no group's time share exceeds its MAC share)"
    if math.isfinite(p.forward_ms) and p.forward_ms > 0:
        text += (
            f"; the layers add up to {p.sum_layers_ms:.3g} ms against {p.forward_ms:.3g} ms "
            f"for the plain forward ({p.sum_layers_ms / p.forward_ms:.2f}×)"
        )
    return text + "."


def layer_types(data: ReportData) -> FigureResult:
    """13. Time share vs MAC share per layer group (conv, depthwise conv, norm, ...), one
    panel per per-layer profile (``effbench profile``)."""
    name, title = "13-layer-types", "Time share vs MAC share per layer type"
    found = profiles(data)
    if not found:
        return _skip(
            name,
            title,
            "No per-layer profile was given; make one with `effbench profile MODEL --out DIR` "
            "and pass DIR to the report with the runs.",
        )
    n_groups = max(len(p.groups) for p in found)
    fig, axes = _new_figure(len(found), title, height=0.42 * n_groups + 1.4)
    neutral = (0.35, 0.45, 0.6)
    for ax, p in zip(axes, found, strict=True):
        y = np.arange(len(p.groups), dtype=float)
        color = data.colors.get(p.model, neutral)
        t = [100 * v for v in p.time_share]
        m = [0.0 if math.isnan(v) else 100 * v for v in p.mac_share]
        ax.barh(y - 0.2, t, height=0.38, color=color, label="time share")
        ax.barh(y + 0.2, m, height=0.38, color="0.78", edgecolor="0.45", lw=0.5, hatch="///",
                label="MAC share")  # fmt: skip
        top = max(*t, *m, 1.0)
        for yy, tv, mv in zip(y, t, m, strict=True):
            ax.text(tv + top * 0.01, yy - 0.2, _percent(tv), va="center", fontsize=6.5)
            ax.text(mv + top * 0.01, yy + 0.2, _percent(mv), va="center", fontsize=6.5)
        ax.set_yticks(y, list(p.groups))
        ax.set_ylim(len(p.groups) - 0.5, -0.5)
        ax.set_xlim(0, top * 1.2)
        ax.grid(axis="y", visible=False)
        forward = f", forward {p.forward_ms:.3g} ms" if math.isfinite(p.forward_ms) else ""
        ax.set_xlabel(f"share (%) · layers {p.sum_layers_ms:.3g} ms{forward}")
        ax.set_title(f"{p.model} · batch {p.batch_size}{_px(p)}\n{p.setup}", fontsize=8.5)
    fig.legend(
        handles=[
            Patch(color="0.35", label="time share (of the summed layer time)"),
            Patch(facecolor="0.78", edgecolor="0.45", hatch="///", label="MAC share"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    reading = (
        "Per layer group, the share of the summed per-layer time (effbench profile times each "
        "leaf layer with hooks) against the share of the layers' MACs; a group whose time "
        "share exceeds its MAC share spends its time on memory traffic and overhead rather "
        "than multiplying (depthwise convolutions, norms and activations do few MACs per "
        "byte). The layer times include the hooks' own overhead, so their sum can exceed the "
        "plain forward; where it falls short, the rest ran outside leaf layers (residual "
        "adds, concatenations). " + " ".join(_profile_sentence(p) for p in found)
    )
    return FigureResult(name, title, fig, reading)


FIGURES: tuple[Callable[[ReportData], FigureResult], ...] = (
    accuracy_bar,
    accuracy_vs_ops,
    time_vs_batch,
    power_vs_batch,
    memory_vs_batch,
    memory_vs_params,
    ops_vs_time,
    accuracy_vs_throughput,
    accuracy_density,
    energy_vs_accuracy,
    speedup_vs_eager,
    roofline,
    layer_types,
)

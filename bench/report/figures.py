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
:mod:`bench.report.data` chose them (``power_plot_w``, ``energy_plot_per_image_j``).
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
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.data import (
    EAGER,
    LineFit,
    ReportData,
    config_order,
    fit_line,
    models_with,
    pareto_front,
)
from bench.units import MEGA, MIB, MS_PER_S, to_mib, to_millions

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


def _setup_panels(cells: pd.DataFrame, title: str) -> tuple[Figure, list[Panel]]:
    """A figure with one panel per setup (see :func:`_by_setup`)."""
    groups = _by_setup(cells)
    fig, axes = _new_figure(len(groups), title)
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
        for model, g in panel.cells.groupby("model", sort=True):
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
    for model, g in sc.groupby("model", sort=True):
        t = g.set_index("batch_size")["time_per_image_ms"]
        if lo in t.index and hi in t.index:
            gains[model] = float(t[lo] / t[hi])
    if not gains:
        return ""
    best = max(gains, key=lambda m: gains[m])
    worst = min(gains, key=lambda m: gains[m])
    return (
        f"On {setup}, going from batch {lo} to {hi} divides the time per image by "
        f"{gains[best]:.2f} for {best} and by {gains[worst]:.2f} for {worst}."
    )


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


def memory_vs_batch(data: ReportData) -> FigureResult:
    """5. Peak memory vs batch size, with the static part (weights) as a dotted line."""
    name, title = "05-memory", "Peak memory vs batch size"
    cells = data.cells.dropna(subset=["peak_memory_mib"])
    if cells.empty:
        return _skip(name, title, "No cell recorded a peak memory, so there is nothing to plot.")

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.plot(g["batch_size"], g["peak_memory_mib"], marker="o", ms=3.5, color=c)
        w = g["weights_mib"].dropna()
        if len(w):
            bs = p.cells["batch_size"].astype(int)
            p.ax.hlines(float(w.iloc[0]), bs.min(), bs.max(), colors=[c], linestyles=":", lw=1.3)

    def finish(p: Panel) -> str:
        p.ax.set_yscale("log")
        _log_axis(p.ax.yaxis)
        p.ax.set_ylabel("memory (MiB)")
        methods = sorted({str(m) for m in p.cells["memory_method"].dropna()})
        p.ax.set_title(
            f"{p.setup}\nsolid: peak ({', '.join(methods)}) · dotted: weights", fontsize=8
        )
        smallest = int(p.cells["batch_size"].astype(int).min())
        b1 = p.cells[p.cells["batch_size"] == smallest]
        share = (b1["weights_mib"] / b1["peak_memory_mib"]).dropna()
        if not len(share):
            return ""
        return (
            f"On {p.setup}, weights are {share.min():.0%}–{share.max():.0%} of the peak at "
            f"batch {smallest}."
        )

    fig, parts = _batch_lines(data, cells, title, line, finish)
    shares = [p for p in parts if p]
    reading = (
        "Peak memory is what the worker held above its pre-model baseline during the measured "
        "forward (weights included); the dotted line of the same colour is the weights alone, "
        "the static part, so the gap is activations and workspace. " + " ".join(shares)
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
    reading = "Least-squares line of peak memory on parameter count. " + " ".join(readings)
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
)

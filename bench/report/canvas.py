"""Drawing helpers every figure shares: the figure and its panels, axes, the network
legend, per-cell markers (hollow where a cell cannot be trusted), bubbles and fitted lines.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so the report does not depend on (or change) the process's matplotlib backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.analyses import Fit, by_setup, untrusted
from bench.report.data import ReportData
from bench.report.labels import Box, boxes_overlap, point_boxes

DPI = 150
PANEL_W_IN = 5.4
PANEL_H_IN = 3.9
# Bubble areas (points²): proportional to the quantity, with a floor so that tiny
# networks stay visible (stated in each bubble chart's caption).
BUBBLE_MAX_PT2 = 1400.0
BUBBLE_MIN_PT2 = 14.0
POINT_PT2 = 3.5**2  # the per-cell markers on the batch-size lines (3.5 pt across)
HOLLOW_LABEL = "hollow: contended or implausible"
HOLLOW_ON_LINE = 2.5  # area factor of a hollow marker on a line (the line crosses it)
FIT_POINT_PT2 = 30.0  # the points of a panel with a fitted line
# Where the box of a fit's numbers may go (axes fraction, alignment), in order of preference.
FIT_BOX_CORNERS = ((0.02, 0.97, "left", "top"), (0.98, 0.97, "right", "top"),
                   (0.98, 0.03, "right", "bottom"), (0.02, 0.03, "left", "bottom"))  # fmt: skip
_HEADROOM_STEPS = 8  # at most this many fifths of headroom added to free a corner


@dataclass(frozen=True, slots=True)
class Drawn:
    """What a figure function returns: a matplotlib figure (not yet saved) and a short
    reading of it, or ``fig=None`` and ``skipped`` saying why the figure is left out."""

    fig: Figure | None
    reading: str
    skipped: str | None = None
    fits: tuple[Fit, ...] = ()
    labels: tuple[Any, ...] = field(default=())


def skip(why: str) -> Drawn:
    """A figure left out, and the sentence that says why."""
    return Drawn(fig=None, reading="", skipped=why)


# --------------------------------------------------------------------------- figure, panels


def new_figure(
    n_panels: int, ncols_max: int = 2, height: float = PANEL_H_IN
) -> tuple[Figure, list[Any]]:
    """A figure of ``n_panels`` axes, ``height`` inches each, at most ``ncols_max`` a row."""
    ncols = max(1, min(n_panels, ncols_max))
    nrows = math.ceil(max(n_panels, 1) / ncols)
    fig = Figure(figsize=(PANEL_W_IN * ncols + 1.9, height * nrows + 0.5), dpi=DPI)
    fig.set_layout_engine("constrained")
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


def setup_panels(cells: pd.DataFrame, height: float = PANEL_H_IN) -> tuple[Figure, list[Panel]]:
    """A figure with one panel per setup (:func:`bench.report.analyses.by_setup`), each
    ``height`` inches."""
    groups = by_setup(cells)
    fig, axes = new_figure(len(groups), height=height)
    return fig, [Panel(ax, setup, sc) for ax, (setup, sc) in zip(axes, groups, strict=True)]


def batch_lines(
    data: ReportData,
    cells: pd.DataFrame,
    y: str,
    line: Callable[[Panel, pd.DataFrame, Any], None],
    finish: Callable[[Panel], str],
) -> tuple[Figure, list[Panel], list[str]]:
    """A figure of one panel per setup, each network (and input size) a line against batch
    size (log2 axis) with a marker per cell at column ``y`` (hollow where the cell is
    contended or implausible), and the network legend. ``line(panel, g, color)`` draws one
    network's line and what goes with it from its cells ``g`` (sorted by batch size);
    ``finish(panel)`` labels the panel after the batch axis is set and returns a sentence
    for the reading ("" for none)."""
    fig, panels = setup_panels(cells)
    parts = []
    for panel in panels:
        # one line per network and input size: runs at two sizes are two lines, not a zigzag
        for (model, _size), g in panel.cells.groupby(["model", "image_size"], sort=True):
            g = g.sort_values("batch_size")
            color = data.colors[model]
            line(panel, g, color)
            cell_points(panel.ax, g["batch_size"], g[y], [color] * len(g), g["quality"],
                        grow_hollow=HOLLOW_ON_LINE, zorder=3)  # fmt: skip
        log2_batch_axis(panel.ax, panel.cells["batch_size"].astype(int))
        parts.append(finish(panel))
    hollow = bool(untrusted(cells["quality"]).any())
    model_legend(fig, data, cells["model"].unique(), hollow=hollow)
    return fig, panels, parts


def freeze_layout(fig: Figure) -> None:
    """Run the layout once and fix it, so that labels placed in pixels stay where placed."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


# --------------------------------------------------------------------------- axes


def plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def log2_batch_axis(ax: Any, batch_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(batch_sizes)))
    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (images)")


def log_axis(axis: Any) -> None:
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain))
    axis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------- markers, legend


def model_legend(
    fig: Figure,
    data: ReportData,
    models: Sequence[str],
    title: str = "network",
    hollow: bool = False,
) -> None:
    """The networks' colours; with ``hollow``, an entry saying what a hollow marker is."""
    handles = [
        Line2D([], [], color=data.colors[m], marker="o", lw=1.6, label=m) for m in sorted(models)
    ]
    if hollow:
        handles.append(
            Line2D(
                [], [], ls="none", marker="o", mfc="none", mec="0.2", mew=1.2, label=HOLLOW_LABEL
            )
        )
    fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False)


def marker_faces(
    colors: Sequence[Any],
    qualities: Sequence[object] | pd.Series,
    lw: float = 0.5,
    alpha: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Face colours, edge colours (RGBA, ``alpha`` applied) and edge widths of per-cell
    markers: filled in the network's colour with a dark edge, or hollow (a transparent
    face; a thicker edge in the network's colour) where the cell is contended or
    implausible. The one place the figures decide how a cell's verdict is drawn. (The
    alpha is applied here because a collection's alpha would fill a ``none`` face.)"""
    hollow = untrusted(qualities)
    faces = np.array([to_rgba(c, alpha) for c in colors]).reshape(-1, 4)
    edges = np.array(
        [to_rgba(c if h else "0.25", alpha) for c, h in zip(colors, hollow, strict=True)]
    )
    faces[hollow] = 0.0
    widths = [max(1.3, 2.4 * lw) if h else lw for h in hollow]
    return faces, edges.reshape(-1, 4), widths


def cell_points(
    ax: Any,
    x: Any,
    y: Any,
    colors: Sequence[Any],
    qualities: Sequence[object] | pd.Series,
    s: Any = POINT_PT2,
    lw: float = 0.5,
    alpha: float | None = None,
    grow_hollow: float = 1.0,
    **kw: Any,
) -> Any:
    """One marker per cell (a scatter), hollow where the cell is contended or implausible;
    ``grow_hollow`` scales the area of hollow markers (small markers on a line: so that the
    line through them does not hide that they are open)."""
    faces, edges, widths = marker_faces(colors, qualities, lw, alpha)
    sizes = np.broadcast_to(np.asarray(s, dtype=float), (len(faces),))
    sizes = np.where(untrusted(qualities), sizes * grow_hollow, sizes)
    return ax.scatter(x, y, s=sizes, facecolors=faces, edgecolors=edges, linewidths=widths, **kw)


# --------------------------------------------------------------------------- bubbles


def bubble_legend(ax: Any, max_value: float, unit: str, scale: float, title: str) -> None:
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


def bubble_sizes(values: Sequence[float], max_value: float) -> tuple[np.ndarray, float]:
    """Marker areas (points²) proportional to ``values`` (the largest possible
    ``max_value`` at :data:`BUBBLE_MAX_PT2`), floored at :data:`BUBBLE_MIN_PT2`; and the
    scale (points² per unit)."""
    scale = BUBBLE_MAX_PT2 / max_value if max_value > 0 else 0.0
    sizes = np.maximum(np.asarray(values, dtype=float) * scale, BUBBLE_MIN_PT2)
    return sizes, scale


# --------------------------------------------------------------------------- fitted lines


def scatter_fit(
    ax: Any,
    data: ReportData,
    sub: pd.DataFrame,
    columns: tuple[str, str],
    scales: tuple[float, float],
    fit: Fit | None,
    log: bool = False,
) -> list[Any]:
    """One panel's points (labelled later) and its least-squares line ``fit`` (in the
    rows' own units), both drawn in the plotted units: ``columns`` (x, y) divided by
    ``scales``. With ``log`` the line is sampled evenly on a log axis (a straight fit shows
    as a curve there) and drawn where it is positive. Returns the points' colours."""
    (x_col, y_col), (x_scale, y_scale) = columns, scales
    colors = [data.colors[m] for m in sub["model"]]
    cell_points(ax, sub[x_col] / x_scale, sub[y_col] / y_scale, colors, sub["quality"],
                s=FIT_POINT_PT2)  # fmt: skip
    if fit is None:
        return colors
    lo, hi = float(sub[x_col].min()), float(sub[x_col].max())
    xs = np.geomspace(lo, hi, 50) if log else np.linspace(lo, hi, 50)
    ys = fit.line.slope * xs + fit.line.intercept
    keep = ys > 0 if log else np.ones(len(xs), dtype=bool)
    ax.plot(xs[keep] / x_scale, ys[keep] / y_scale, color="0.35", lw=1, ls="--")
    return colors


def fit_box(ax: Any, text: str, xs: Sequence[float], ys: Sequence[float]) -> Box:
    """The fitted line's numbers in a box, in the first corner of the axes that covers none
    of the points (``xs``, ``ys``: data coordinates): upper left, upper right, lower right,
    lower left. Where every corner covers a point, the y axis grows upward until the upper
    left is free. Returns the box (display pixels) for the labels to avoid. Call after
    :func:`freeze_layout`."""
    renderer = ax.figure.canvas.get_renderer()
    radius_px = math.sqrt(FIT_POINT_PT2 / math.pi) * ax.figure.dpi / 72.0
    frame = {"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9}
    t = ax.text(0, 0, text, transform=ax.transAxes, fontsize=7.5, bbox=frame)
    for _ in range(_HEADROOM_STEPS):
        points = point_boxes(ax, xs, ys, [radius_px] * len(xs))
        for x, y, ha, va in FIT_BOX_CORNERS:
            t.set(x=x, y=y, ha=ha, va=va)
            box = _box_of(t, renderer)
            if not any(boxes_overlap(box, p) for p in points):
                return box
        _grow_upward(ax)
    x, y, ha, va = FIT_BOX_CORNERS[0]
    t.set(x=x, y=y, ha=ha, va=va)
    return _box_of(t, renderer)


def _box_of(t: Any, renderer: Any) -> Box:
    """The display-pixel box of a text's frame (its bbox patch)."""
    t.update_bbox_position_size(renderer)
    bb = t.get_bbox_patch().get_window_extent(renderer)
    return (bb.x0, bb.y0, bb.x1, bb.y1)


def _grow_upward(ax: Any) -> None:
    """Raise the top of the y axis by a fifth of its height (in its own scale)."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(lo, hi * (hi / lo) ** 0.2)
    else:
        ax.set_ylim(lo, hi + 0.2 * (hi - lo))

"""The speed-up of each configuration over eager (``effbench run --configs``): one panel
per machine/device/dtype, the configurations of one setup side by side as ratios."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.lines import Line2D

from bench.report import readings
from bench.report.analyses import Speedup, speedups
from bench.report.canvas import (
    HOLLOW_ON_LINE,
    Drawn,
    cell_points,
    log2_batch_axis,
    log_axis,
    model_legend,
    new_figure,
    skip,
)
from bench.report.data import EAGER, UNTRUSTED, ReportData, config_order

_CONFIG_STYLES = ("-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)))  # "--" is the line at 1
_CONFIG_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _ratio_axis(ax: Any, ratios: Sequence[float]) -> None:
    """A y axis for ratios that always shows 1: logarithmic when they span more than a
    factor of 4 (so that 2× and 0.5× are as far from 1), else linear."""
    lo, hi = min(*ratios, 1.0), max(*ratios, 1.0)
    if hi / lo > 4:
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_ylim(lo / 1.25, hi * 1.25)
    else:
        pad = 0.08 * (hi - lo) or 0.05
        ax.set_ylim(lo - pad, hi + pad)


def _speedup_panel(
    ax: Any,
    data: ReportData,
    base: str,
    points: Sequence[Speedup],
    style: dict[str, tuple[Any, str]],
) -> str:
    """One panel: a line per (network, configuration, image size) and the configurations'
    legend; returns the panel's sentence (largest and smallest speed-up)."""
    # the image size is named only where a network was measured at several
    with_px = len({(p.model, p.image_size) for p in points}) > len({p.model for p in points})
    lines: dict[tuple[str, str, int], list[Speedup]] = {}
    for p in points:
        lines.setdefault((p.model, p.config, p.image_size), []).append(p)
    for (model, config, _), line in lines.items():
        ls, marker = style[config]
        x, y = [p.batch_size for p in line], [p.ratio for p in line]
        color = data.colors[model]
        ax.plot(x, y, ls=ls, lw=1.5, color=color)
        cell_points(ax, x, y, [color] * len(line), [p.quality for p in line], s=16.0,
                    marker=marker, grow_hollow=HOLLOW_ON_LINE, zorder=3)  # fmt: skip
    ax.axhline(1.0, color="0.35", ls="--", lw=0.9, zorder=0)
    log2_batch_axis(ax, [p.batch_size for p in points])
    _ratio_axis(ax, [p.ratio for p in points])
    ax.set_ylabel("speed-up over eager (×)")
    ax.set_title(base, fontsize=9)
    shown = [c for c in style if any(p.config == c for p in points)]
    handles = [
        Line2D([], [], color="0.3", ls=style[c][0], marker=style[c][1], label=c) for c in shown
    ]
    ax.legend(handles=handles, title="configuration", loc="best", frameon=False)
    return readings.speedup_sentence(base, points, with_px)


def _why_none(data: ReportData, configs: tuple[str, ...]) -> str | None:
    """Why there is no speed-up over eager to draw (None where there may be one)."""
    if not configs:
        return "No cell finished, so there is no speed-up to draw."
    if EAGER not in configs:
        return (
            "No eager cell was measured, so there is no speed-up over eager to compute "
            "(add eager to --configs)."
        )
    if configs == (EAGER,):
        return (
            "Only the eager configuration was measured, so there is no speed-up over eager "
            "to draw (run with --configs eager,compile,... to compare configurations)."
        )
    return None


def speedup_vs_eager(data: ReportData) -> Drawn:
    """Speed-up over eager (eager latency ÷ configuration latency) vs batch size, one
    panel per machine/device/dtype, a line per (network, configuration)."""
    configs = config_order(data.measured_cells["config"].dropna().astype(str))
    why = _why_none(data, configs)
    if why is not None:
        return skip(why)
    points = speedups(data.cells)
    wrong = not data.wrong_output.empty
    if not points:
        return skip(
            "No cell of another configuration has an eager cell of the same network, batch "
            "size and setup to compare with"
            + (" (cells with a wrong output are not compared)." if wrong else ".")
        )
    others = [c for c in configs if c != EAGER]
    style = {c: (_CONFIG_STYLES[i % 4], _CONFIG_MARKERS[i % 8]) for i, c in enumerate(others)}
    bases = sorted({p.base_setup for p in points})
    fig, axes = new_figure(len(bases))
    parts = [
        _speedup_panel(ax, data, base, [p for p in points if p.base_setup == base], style)
        for ax, base in zip(axes, bases, strict=True)
    ]
    hollow = [p for p in points if p.quality in UNTRUSTED]
    model_legend(fig, data, sorted({p.model for p in points}), hollow=bool(hollow))
    reading = (
        "Speed-up = eager latency ÷ the configuration's latency for the same network, batch "
        "size and setup (medians of repeats); above the dashed line at 1 the configuration "
        "is faster than eager, below it slower. "
        + " ".join(parts)
        + readings.compile_times(data.measured_cells, len(bases) > 1)
        + readings.hollow_speedups(hollow, len(bases) > 1)
    )
    return Drawn(fig, reading)

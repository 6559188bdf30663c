"""Time share against MAC share per layer type, one panel per per-layer profile
(``data.layers``, ``effbench profile``) rather than per setup."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.patches import Patch

from bench.report import readings
from bench.report.analyses import LayerShares, profiles
from bench.report.canvas import Drawn, new_figure, skip
from bench.report.data import ReportData

NEUTRAL = (0.35, 0.45, 0.6)  # a profiled network that no run measured has no colour
READING = (
    "Per layer group, the share of the summed per-layer time (effbench profile times each "
    "leaf layer with hooks) against the share of the layers' MACs; a group whose time "
    "share exceeds its MAC share spends its time on memory traffic and overhead rather "
    "than multiplying (depthwise convolutions, norms and activations do few MACs per "
    "byte). The layer times include the hooks' own overhead, so their sum can exceed the "
    "plain forward; where it falls short, the rest ran outside leaf layers (residual "
    "adds, concatenations). "
)


def _panel(ax: Any, p: LayerShares, color: Any) -> None:
    """Per group, the time share (coloured) beside the MAC share (hatched), in percent."""
    y = np.arange(len(p.groups), dtype=float)
    t = [100 * v for v in p.time_share]
    m = [0.0 if math.isnan(v) else 100 * v for v in p.mac_share]
    ax.barh(y - 0.2, t, height=0.38, color=color, label="time share")
    ax.barh(y + 0.2, m, height=0.38, color="0.78", edgecolor="0.45", lw=0.5, hatch="///",
            label="MAC share")  # fmt: skip
    top = max(*t, *m, 1.0)
    for yy, tv, mv in zip(y, t, m, strict=True):
        ax.text(tv + top * 0.01, yy - 0.2, readings.percent(tv), va="center", fontsize=6.5)
        ax.text(mv + top * 0.01, yy + 0.2, readings.percent(mv), va="center", fontsize=6.5)
    ax.set_yticks(y, list(p.groups))
    ax.set_ylim(len(p.groups) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.2)
    ax.grid(axis="y", visible=False)
    forward = f", forward {p.forward_ms:.3g} ms" if math.isfinite(p.forward_ms) else ""
    ax.set_xlabel(f"share (%) · layers {p.sum_layers_ms:.3g} ms{forward}")
    ax.set_title(f"{p.model} · batch {p.batch_size}{readings.px(p)}\n{p.setup}", fontsize=8.5)


def layer_types(data: ReportData) -> Drawn:
    """Time share vs MAC share per layer group (conv, depthwise conv, norm, ...), one
    panel per per-layer profile (`effbench profile`)."""
    found = profiles(data.layers)
    if not found:
        return skip(
            "No per-layer profile was given; make one with `effbench profile MODEL --out DIR` "
            "and pass DIR to the report with the runs."
        )
    n_groups = max(len(p.groups) for p in found)
    fig, axes = new_figure(len(found), height=0.42 * n_groups + 1.4)
    for ax, p in zip(axes, found, strict=True):
        _panel(ax, p, data.colors.get(p.model, NEUTRAL))
    fig.legend(
        handles=[
            Patch(color="0.35", label="time share (of the summed layer time)"),
            Patch(facecolor="0.78", edgecolor="0.45", hatch="///", label="MAC share"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    reading = READING + " ".join(readings.profile_sentence(p) for p in found)
    return Drawn(fig, reading)

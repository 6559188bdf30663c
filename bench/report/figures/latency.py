"""Figures of time: per image against batch size, and against operations."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report import readings
from bench.report.analyses import by_setup, larger_batch, line_ends, panel_fit
from bench.report.canvas import (
    Drawn,
    Panel,
    batch_lines,
    fit_box,
    freeze_layout,
    log_axis,
    new_figure,
    scatter_fit,
    skip,
)
from bench.report.data import ReportData
from bench.report.labels import RIGHTWARD, place_labels

LABEL_ROOM = 2.5  # the batch axis runs this factor past the largest batch: the names' room


def time_vs_batch(data: ReportData) -> Drawn:
    """Time per image vs batch size (log-log), one panel per setup: a line per network, a
    bar from the 10th to the 90th percentile at each cell, each network named at its
    largest batch size."""
    cells = data.cells.dropna(subset=["time_per_image_ms"])
    if cells.empty:
        return skip("No cell finished with a timing, so there is nothing to plot.")

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.plot(g["batch_size"], g["time_per_image_ms"], color=c, lw=1.5)
        # a thin bar per cell, not a band per network: twelve translucent bands overlap
        # into one smear (issue 23)
        spread = g.dropna(subset=["time_per_image_ms_p10", "time_per_image_ms_p90"])
        if len(spread):
            p.ax.vlines(spread["batch_size"], spread["time_per_image_ms_p10"],
                        spread["time_per_image_ms_p90"], colors=[c], lw=1.0, alpha=0.6,
                        zorder=2)  # fmt: skip

    def finish(p: Panel) -> str:
        p.ax.set_yscale("log")
        log_axis(p.ax.yaxis)
        p.ax.set_ylabel("time per image (ms)")
        p.ax.set_title(p.setup, fontsize=9)
        return readings.batching_gain(p.cells, p.setup)

    fig, panels, parts = batch_lines(data, cells, "time_per_image_ms", line, finish)
    freeze_layout(fig)
    labels = []
    for p in panels:
        lo, hi = p.ax.get_xlim()
        p.ax.set_xlim(lo, hi * LABEL_ROOM)  # room right of the lines for their names
        ends = line_ends(p.cells)
        colors = [data.colors[m] for m in ends["model"]]
        x, y = list(ends["batch_size"]), list(ends["time_per_image_ms"])
        labels += place_labels(p.ax, x, y, list(ends["label"]), colors, directions=RIGHTWARD)
    reading = (
        "Lines are the median time per image (median of repeats); the vertical bar at each "
        "cell spans the 10th to 90th percentile of the per-forward latency divided by the "
        "batch size. Each network is named at its largest batch size. "
        + " ".join(p for p in parts if p)
        + readings.hollow_note(cells)
    )
    return Drawn(fig, reading, labels=tuple(labels))


def ops_vs_time(data: ReportData) -> Drawn:
    """Operations vs time per image at batch 1 and at a larger batch size, one row of
    panels per setup, with a least-squares line whose slope, intercept and R² sit in a box
    in a corner where no point is."""
    cells = data.cells.dropna(subset=["gmacs", "time_per_image_ms"])
    if cells.empty:
        return skip("No network has both a MAC count and a timing.")
    panels: list[tuple[str, int, pd.DataFrame]] = []
    for setup, sc in by_setup(cells):
        for b in (1, larger_batch(sc)):
            sub = sc[sc["batch_size"] == b] if b is not None else sc.iloc[0:0]
            if len(sub):
                panels.append((setup, int(b), sub.sort_values("model")))
    if not panels:
        return skip("No batch size has timings of networks with a MAC count.")
    fig, axes = new_figure(len(panels))
    fits, parts, pending = [], [], []
    for ax, (setup, b, sub) in zip(axes, panels, strict=True):
        fit = panel_fit(sub, "gmacs", "time_per_image_ms", b)
        colors = scatter_fit(ax, data, sub, ("gmacs", "time_per_image_ms"), (1.0, 1.0), fit)
        ax.set_xlabel("operations (G-MACs per image)")
        ax.set_ylabel("time per image (ms)")
        ax.set_title(f"{setup} · batch {b}", fontsize=9)
        box = None
        if fit is not None:
            fits.append(fit)
            line = fit.line
            box = (
                f"slope {line.slope:.3g} ms/G-MAC\nintercept {line.intercept:.3g} ms\n"
                f"R² {line.r2:.3f} (n = {line.n})"
            )
            parts.append(readings.ops_fit_sentence(fit))
        pending.append((ax, sub, colors, box))
    freeze_layout(fig)
    labels = []
    for ax, sub, colors, box in pending:
        xs, ys = list(sub["gmacs"]), list(sub["time_per_image_ms"])
        avoid = [fit_box(ax, box, xs, ys)] if box else []
        labels += place_labels(ax, xs, ys, list(sub["model"]), colors, avoid=avoid)
    drawn = pd.concat([sub for *_, sub in panels])
    reading = (
        "Least-squares line of time per image on operations; R² says how much of the spread "
        "in time the operation count explains. " + " ".join(parts) + readings.hollow_note(drawn)
    )
    return Drawn(fig, reading, fits=tuple(fits), labels=tuple(labels))

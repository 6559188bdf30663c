"""Figures of time: per image against batch size, and against operations."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report import readings
from bench.report.analyses import by_setup, larger_batch, panel_fit
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
from bench.report.labels import place_labels


def time_vs_batch(data: ReportData) -> Drawn:
    """Time per image vs batch size (log-log), p10–p90 band, one panel per setup."""
    cells = data.cells.dropna(subset=["time_per_image_ms"])
    if cells.empty:
        return skip("No cell finished with a timing, so there is nothing to plot.")

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.fill_between(
            g["batch_size"],
            g["time_per_image_ms_p10"],
            g["time_per_image_ms_p90"],
            color=c,
            alpha=0.18,
            lw=0,
        )
        p.ax.plot(g["batch_size"], g["time_per_image_ms"], color=c, lw=1.5)

    def finish(p: Panel) -> str:
        p.ax.set_yscale("log")
        log_axis(p.ax.yaxis)
        p.ax.set_ylabel("time per image (ms)")
        p.ax.set_title(p.setup, fontsize=9)
        return readings.batching_gain(p.cells, p.setup)

    fig, _, parts = batch_lines(data, cells, "time_per_image_ms", line, finish)
    reading = (
        "Lines are the median time per image (median of repeats); bands span the 10th to 90th "
        "percentile of the per-forward latency divided by the batch size. "
        + " ".join(p for p in parts if p)
        + readings.hollow_note(cells)
    )
    return Drawn(fig, reading)


def ops_vs_time(data: ReportData) -> Drawn:
    """Operations vs time per image, with a least-squares line and R², at batch 1 and at a
    larger batch size, one row of panels per setup."""
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
        colors = scatter_fit(ax, data, sub, "gmacs", "time_per_image_ms", 1.0, 1.0, fit)
        ax.set_xlabel("operations (G-MACs per image)")
        ax.set_ylabel("time per image (ms)")
        ax.set_title(f"{setup} · batch {b}", fontsize=9)
        pending.append((ax, sub, colors))
        if fit is None:
            continue
        fits.append(fit)
        line = fit.line
        fit_box(
            ax,
            f"slope {line.slope:.3g} ms/G-MAC\nintercept {line.intercept:.3g} ms\n"
            f"R² {line.r2:.3f} (n = {line.n})",
        )
        parts.append(readings.ops_fit_sentence(fit))
    freeze_layout(fig)
    labels = []
    for ax, sub, colors in pending:
        labels += place_labels(
            ax, list(sub["gmacs"]), list(sub["time_per_image_ms"]), list(sub["model"]), colors
        )
    drawn = pd.concat([sub for *_, sub in panels])
    reading = (
        "Least-squares line of time per image on operations; R² says how much of the spread "
        "in time the operation count explains. " + " ".join(parts) + readings.hollow_note(drawn)
    )
    return Drawn(fig, reading, fits=tuple(fits), labels=tuple(labels))

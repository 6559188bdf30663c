"""Figures of memory: the measured peak against batch size (with the counted weights +
activations beside it), and against parameters at batch 1."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.report import readings
from bench.report.analyses import panel_fit
from bench.report.canvas import (
    Drawn,
    Panel,
    batch_lines,
    fit_box,
    freeze_layout,
    log_axis,
    scatter_fit,
    setup_panels,
    skip,
)
from bench.report.data import ReportData
from bench.report.labels import place_labels
from bench.units import MEGA, MIB, to_mib, to_millions


def memory_vs_batch(data: ReportData) -> Drawn:
    """Peak memory vs batch size (measured), with the counted weights + activation peak
    dashed and the weights alone dotted."""
    cells = data.cells.dropna(subset=["peak_memory_mib"])
    if cells.empty:
        return skip("No cell recorded a peak memory, so there is nothing to plot.")
    has_counted = bool(np.isfinite(cells["counted_memory_mib"].astype(float)).any())

    def line(p: Panel, g: pd.DataFrame, c: Any) -> None:
        p.ax.plot(g["batch_size"], g["peak_memory_mib"], color=c)
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
        log_axis(p.ax.yaxis)
        p.ax.set_ylabel("memory (MiB)")
        methods = sorted({str(m) for m in p.cells["memory_method"].dropna()})
        dashed = "\ndashed: counted weights + activations · " if has_counted else " · "
        p.ax.set_title(
            f"{p.setup}\nsolid: peak ({', '.join(methods)}){dashed}dotted: weights", fontsize=8
        )
        return (
            readings.memory_sentence(p.cells, p.setup)
            + readings.counted_ratio(p.cells)
            + readings.weights_share(p.cells)
        )

    fig, _, parts = batch_lines(data, cells, "peak_memory_mib", line, finish)
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
        + readings.hollow_note(cells)
    )
    return Drawn(fig, reading)


def _log_axes(ax: Any, sub: pd.DataFrame) -> bool:
    """Logarithmic parameter and memory axes (networks span orders of magnitude in both:
    on linear axes most points crowd one corner), where every value is positive; linear
    where one is not (a log axis cannot show 0). Whether both axes are logarithmic."""
    log = bool((sub["params"] > 0).all() and (sub["peak_memory_bytes"].astype(float) > 0).all())
    if log:
        for axis in ("x", "y"):
            getattr(ax, f"set_{axis}scale")("log")
            log_axis(getattr(ax, f"{axis}axis"))
    return log


def memory_vs_params(data: ReportData) -> Drawn:
    """Peak memory at batch 1 vs parameters, log-log where every value is positive, with a
    least-squares line whose numbers sit in a box in a corner where no point is."""
    cells = data.cells.dropna(subset=["peak_memory_bytes", "params"])
    cells = cells[cells["batch_size"] == 1]
    if cells.empty:
        return skip("No network has both a peak memory and a parameter count at batch size 1.")
    fig, panels = setup_panels(cells)
    fits, parts, pending, logs = [], [], [], []
    for p in panels:
        sub = p.cells.sort_values("model")
        sub = sub.assign(params=sub["params"].astype(float))
        fit = panel_fit(sub, "params", "peak_memory_bytes", 1)
        log = _log_axes(p.ax, sub)
        logs.append(log)
        colors = scatter_fit(p.ax, data, sub, ("params", "peak_memory_bytes"), (MEGA, MIB), fit,
                             log=log)  # fmt: skip
        p.ax.set_xlabel("parameters (millions)")
        p.ax.set_ylabel("peak memory at batch 1 (MiB)")
        p.ax.set_title(p.setup, fontsize=9)
        box = None
        if fit is None:
            parts.append(f"On {p.setup}, fewer than two networks: no line fitted.")
        else:
            fits.append(fit)
            line = fit.line
            box = (
                f"slope {line.slope:.2f} bytes/parameter\nintercept "
                f"{to_mib(line.intercept):.1f} MiB\nR² {line.r2:.3f} (n = {line.n})"
            )
            parts.append(readings.memory_fit_sentence(fit))
        pending.append((p.ax, sub, colors, box))
    freeze_layout(fig)
    labels = []
    for ax, sub, colors, box in pending:
        xs, ys = list(to_millions(sub["params"])), list(sub["peak_memory_mib"])
        avoid = [fit_box(ax, box, xs, ys)] if box else []
        labels += place_labels(ax, xs, ys, list(sub["model"]), colors, avoid=avoid)
    methods = " ".join(readings.memory_sentence(p.cells, p.setup) for p in panels)
    reading = (
        "Least-squares line of measured peak memory on parameter count"
        + (
            "; both axes are logarithmic (parameter counts span orders of magnitude), so the "
            "straight line shows as a curve that flattens towards the intercept"
            + ("" if all(logs) else " (linear in a panel with a value of 0)")
            + ". "
            if any(logs)
            else ". "
        )
        + " ".join(parts)
        + " "
        + methods
        + readings.hollow_note(cells)
    )
    return Drawn(fig, reading, fits=tuple(fits), labels=tuple(labels))

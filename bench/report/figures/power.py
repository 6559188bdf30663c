"""Figures of power and energy, net of idle where the idle power was measured
(:mod:`bench.report.data` chose ``power_plot_w`` and ``energy_plot_per_image_j``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.report import readings
from bench.report.analyses import best_per_model
from bench.report.canvas import (
    Drawn,
    Panel,
    batch_lines,
    cell_points,
    freeze_layout,
    setup_panels,
    skip,
)
from bench.report.data import ReportData
from bench.report.labels import place_labels


def _sources(data: ReportData) -> str:
    """`` (power source: ...)`` of every cell, to say why nothing was measured."""
    sources = sorted({str(s) for s in data.cells["power_source"].dropna()})
    return f" (power source: {'; '.join(sources)})" if sources else ""


def power_vs_batch(data: ReportData) -> Drawn:
    """Mean power during the timed forwards vs batch size, net of idle where known."""
    cells = data.cells[np.isfinite(data.cells["power_w_mean"].astype(float))]
    if cells.empty:
        why = _sources(data)
        return skip(
            f"No power was measured in these runs{why}, so power and energy figures are left out."
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
        p.ax.plot(g["batch_size"], g["power_plot_w"], color=c)

    def finish(p: Panel) -> str:
        p.ax.set_ylabel(ylabel)
        p.ax.set_title(p.setup, fontsize=9)
        return ""

    fig, _, _ = batch_lines(data, cells, "power_plot_w", line, finish)
    sources = sorted({str(s) for s in cells["power_source"].dropna()})
    reading = (
        f"Mean power over the timed forwards ({'; '.join(sources)}), "
        + (
            "minus the idle power measured before the run."
            if has_idle.all()
            else "gross where no idle power was measured."
        )
        + f" Highest: {cells.loc[cells['power_plot_w'].idxmax(), 'model']} at "
        f"{cells['power_plot_w'].max():.1f} W." + readings.hollow_note(cells)
    )
    return Drawn(fig, reading)


def energy_vs_accuracy(data: ReportData) -> Drawn:
    """Energy per image (lowest over batch sizes) vs top-1 accuracy, where power was
    measured, one panel per setup."""
    cells = data.cells[np.isfinite(data.cells["energy_per_image_j"].astype(float))]
    if cells.empty:
        why = _sources(data)
        return skip(
            f"No energy was measured in these runs{why}, so energy per image cannot be set "
            "against accuracy."
        )
    cells = cells.dropna(subset=["top1"])
    if cells.empty:
        return skip("The networks with an energy measurement have no published accuracy.")
    net = cells["energy_is_net"]
    energy = "energy_plot_per_image_j"
    fig, panels = setup_panels(cells)
    pending = []
    for p in panels:
        ax = p.ax
        best = best_per_model(p.cells, energy, pd.Series.idxmin)
        colors = [data.colors[m] for m in best["model"]]
        cell_points(ax, best[energy], best["top1"], colors, best["quality"], s=30)
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
    freeze_layout(fig)
    labels = []
    for ax, best, texts, colors in pending:
        labels += place_labels(ax, list(best[energy]), list(best["top1"]), texts, colors)
    reading = (
        "Each network at the batch size with its lowest energy per image (in the label); "
        + (
            "energy above idle power."
            if net.all()
            else "gross energy where no idle power was measured."
        )
        + readings.hollow_note(pd.concat([best for _, best, *_ in pending]))
    )
    return Drawn(fig, reading, labels=tuple(labels))

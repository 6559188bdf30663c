"""The roofline: each cell's achieved rate against its arithmetic intensity, under the
roofs its setup measured (``data.ceilings``, matched by
:func:`bench.report.data.setup_roofs`), the 3×3-convolution rate and the datasheet's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report import readings
from bench.report.analyses import above_the_roof, roofline_cells, roofline_standings, untrusted
from bench.report.canvas import (
    PANEL_H_IN,
    Drawn,
    cell_points,
    freeze_layout,
    model_legend,
    setup_panels,
    skip,
)
from bench.report.data import ReportData, Roofs, setup_roofs
from bench.report.labels import place_labels
from bench.units import GIGA

BATCH_ENTRIES = 6  # the most batch sizes the legend shows

READING = (
    "Each point is a cell: x is its arithmetic intensity, MACs per image ÷ bytes per "
    "image, the bytes every op of the forward reads and writes (counted, no cache reuse, "
    "so an upper bound on memory traffic and the intensity a lower bound: a point can sit "
    "above the sloped roof where caches serve part of that traffic); y is MACs × "
    "batch ÷ median latency. Marker area grows with the batch size, a thin line joins each "
    "network's cells in batch order, and each network is named at its largest batch. The "
    "solid line is the roofline of the measured ceilings, min(gemm, triad bandwidth × "
    "intensity), its corner the ridge point; the thin dashed line is the measured "
    "3×3-convolution rate and the dotted one the datasheet's peaks where known. A point far "
    "below both roofs is held back by neither arithmetic nor bandwidth but by overhead "
    "(small kernels, layout changes, Python). "
)


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


def _finite_positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _limits(pts: pd.DataFrame, roofs: Roofs) -> tuple[tuple[float, float], tuple[float, float]]:
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


def _measured_roof(ax: Any, roofs: Roofs, x_lo: float, x_hi: float) -> list[Any]:
    """The measured roofline (solid, ridge marked), where either roof was measured."""
    if not (math.isfinite(roofs.compute_macs_per_s) or math.isfinite(roofs.bandwidth_bytes_per_s)):
        return []
    xs, ys = _roof_xy(roofs.compute_macs_per_s, roofs.bandwidth_bytes_per_s, x_lo, x_hi)
    parts = readings.measured_roofs(roofs, "{rate} {kind}")
    (line,) = ax.plot(
        xs,
        [y / GIGA for y in ys],
        color="0.15",
        lw=1.8,
        gid="roofline",
        label="measured: " + ", ".join(parts),
        zorder=1,
    )
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
    return [line]


def _draw_roofs(ax: Any, roofs: Roofs, x_lo: float, x_hi: float) -> list[Any]:
    """The measured roofline (solid, ridge marked), the conv3x3 ceiling (thin dashed) and the
    datasheet roofline (dotted); returns the legend handles."""
    handles = _measured_roof(ax, roofs, x_lo, x_hi)
    if math.isfinite(roofs.conv3x3_macs_per_s):
        conv = ax.axhline(
            roofs.conv3x3_macs_per_s / GIGA,
            color="0.3",
            ls="--",
            lw=0.9,
            gid="conv3x3",
            label=f"conv3x3: {readings.rate(roofs.conv3x3_macs_per_s, 'MAC')}",
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
    """The legend's marker sizes: every batch size, or :data:`BATCH_ENTRIES` of them evenly
    spread (the smallest and the largest included) where there are more."""
    sizes = sorted(set(batch_sizes))
    if len(sizes) > BATCH_ENTRIES:
        step = (len(sizes) - 1) / (BATCH_ENTRIES - 1)
        sizes = [sizes[round(i * step)] for i in range(BATCH_ENTRIES)]
    area = _batch_marker_pt2(sizes)
    return [
        ax.scatter([], [], s=float(a), color="0.6", edgecolor="0.3", label=f"batch {b}")
        for a, b in zip(area, sizes, strict=True)
    ]


def _trails(ax: Any, data: ReportData, sc: pd.DataFrame) -> None:
    """Each network's cells (per input size) joined in batch order, in its colour."""
    for (model, _size), g in sc.groupby(["model", "image_size"], sort=True):
        if len(g) > 1:
            g = g.sort_values("batch_size")
            ax.plot(g["intensity_macs_per_byte"], g["achieved_macs_per_s"] / GIGA,
                    color=data.colors[model], lw=0.9, alpha=0.6, zorder=2)  # fmt: skip


def _axes(ax: Any, setup: str, limits: tuple[tuple[float, float], tuple[float, float]]) -> None:
    """Log-log axes with plain tick labels, the limits, labels and the panel's title."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=12))
        axis.set_major_formatter(FuncFormatter(_tick))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel("arithmetic intensity (MACs per byte read and written)")
    ax.set_ylabel("achieved rate (GMAC/s)")
    ax.set_title(setup, fontsize=9)


def _panel(ax: Any, data: ReportData, setup: str, sc: pd.DataFrame, roofs: Roofs) -> bool:
    """One setup's roofs, points and legend; whether any point is drawn hollow."""
    limits = _limits(sc, roofs)
    handles = _draw_roofs(ax, roofs, *limits[0])
    _trails(ax, data, sc)
    colors = [data.colors[m] for m in sc["model"]]
    # a point above the compute roof is implausible whatever its row says
    drawn = sc["quality"].mask(above_the_roof(sc, roofs) & ~untrusted(sc["quality"]),
                               "implausible")  # fmt: skip
    cell_points(ax, sc["intensity_macs_per_byte"], sc["achieved_macs_per_s"] / GIGA,
                colors, drawn, s=_batch_marker_pt2(sc["batch_size"]), alpha=0.8,
                zorder=3)  # fmt: skip
    _axes(ax, setup, limits)
    handles += _batch_handles(ax, [int(b) for b in sc["batch_size"]])
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2,
              frameon=False, fontsize=7, scatterpoints=1)  # fmt: skip
    return bool(untrusted(drawn).any())


def roofline(data: ReportData) -> Drawn:
    """Roofline: achieved GMAC/s vs arithmetic intensity (MACs per byte), log-log, one
    panel per setup, each network's cells joined in batch order; the measured roofs
    min(gemm, triad × I), the conv3x3 ceiling and the datasheet roofs where known."""
    cells = roofline_cells(data.cells)
    if cells.empty:
        return skip(
            "No cell has both an arithmetic intensity (intensity_macs_per_byte, from the "
            "bytes each forward reads and writes) and an achieved rate (achieved_macs_per_s); "
            "runs made before these columns existed have neither, so there is no roofline."
        )
    roofs_of = setup_roofs(data)
    fig, panels = setup_panels(cells, height=PANEL_H_IN + 1.0)
    pending, parts, hollow = [], [], False
    for p in panels:
        sc = p.cells.sort_values(["model", "batch_size"])
        roofs = roofs_of[p.setup]
        hollow = _panel(p.ax, data, p.setup, sc, roofs) or hollow
        last = sc.groupby("model", sort=True).tail(1)  # each network at its largest batch
        pending.append((p.ax, last))
        standings = roofline_standings(sc, roofs)
        parts.append(readings.roofline_sentence(p.setup, roofs, standings, sc))
    model_legend(fig, data, cells["model"].unique(), hollow=hollow)
    freeze_layout(fig)
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
    contended = cells[cells["quality"].eq("contended")]  # the others are named above
    reading = READING + " ".join(parts) + readings.hollow_note(contended)
    return Drawn(fig, reading, labels=tuple(labels))

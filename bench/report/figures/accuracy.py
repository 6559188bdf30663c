"""Figures of published accuracy: per network, against operations, against throughput and
per parameter."""

from __future__ import annotations

import pandas as pd

from bench.report import readings
from bench.report.analyses import best_per_model, models_with, pareto_front, per_model, unverified
from bench.report.canvas import (
    BUBBLE_MIN_PT2,
    Drawn,
    bubble_legend,
    bubble_sizes,
    cell_points,
    freeze_layout,
    log_axis,
    new_figure,
    setup_panels,
    skip,
)
from bench.report.data import ReportData
from bench.report.labels import LABEL_FONTSIZE, place_labels

LOG_SPAN = 20  # an axis whose values span more than this factor is logarithmic


def accuracy_bar(data: ReportData) -> Drawn:
    """Published top-1 accuracy of each network (bar)."""
    pm = per_model(data.cells)
    with_acc, without = models_with(data.cells, "top1")
    if not with_acc:
        return skip("No network has a published top-1 accuracy, so there is no bar chart of it.")
    pm = pm.loc[with_acc].sort_values("top1")
    fig, (ax,) = new_figure(1, height=0.35 * len(pm) + 1.2)
    ax.barh(pm.index, pm["top1"], color=[data.colors[m] for m in pm.index])
    doubtful = set(unverified(pm))
    for y, (m, v) in enumerate(pm["top1"].items()):
        label = f"{v:.1f} (unverified)" if m in doubtful else f"{v:.1f}"
        ax.text(v + 0.3, y, label, va="center", fontsize=LABEL_FONTSIZE)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_xlim(0, min(100.0, pm["top1"].max() * 1.1))
    ax.grid(axis="y", visible=False)
    best, worst = pm.index[-1], pm.index[0]
    reading = (
        f"{best} is the most accurate ({pm.loc[best, 'top1']:.1f}% top-1), {worst} the least "
        f"({pm.loc[worst, 'top1']:.1f}%)."
        + readings.no_accuracy_note(without)
        + readings.unverified_note(pm)
        + readings.accuracy_sources(pm)
    )
    return Drawn(fig, reading)


def accuracy_vs_ops(data: ReportData) -> Drawn:
    """Top-1 accuracy vs operations (G-MACs per image); bubble area ∝ parameters; the
    accuracy/operations Pareto frontier dashed."""
    with_acc, without = models_with(data.cells, "top1")
    pm = per_model(data.cells).loc[with_acc].dropna(subset=["gmacs", "params_m"])
    if pm.empty:
        return skip(
            "No network has both a published accuracy and a MAC count, so accuracy cannot be "
            "set against operations."
        )
    sizes, scale = bubble_sizes(pm["params_m"], float(pm["params_m"].max()))
    fig, (ax,) = new_figure(1)
    colors = [data.colors[m] for m in pm.index]
    ax.scatter(pm["gmacs"], pm["top1"], s=sizes, c=colors, alpha=0.55, edgecolors="0.25", lw=0.6)
    front = pareto_front(list(pm.index), list(pm["gmacs"]), list(pm["top1"]))
    fr = pm.loc[front]
    ax.step(fr["gmacs"], fr["top1"], where="post", color="0.4", ls="--", lw=0.9, zorder=0)
    if pm["gmacs"].max() / max(pm["gmacs"].min(), 1e-12) > LOG_SPAN:
        ax.set_xscale("log")
        log_axis(ax.xaxis)
    ax.set_xlabel("operations (G-MACs per image, counted)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.margins(0.15)
    bubble_legend(ax, float(pm["params_m"].max()), "M", scale, "parameters")
    freeze_layout(fig)
    labels = place_labels(ax, list(pm["gmacs"]), list(pm["top1"]), list(pm.index), colors, sizes)
    counters = sorted(set(data.cells["macs_counter"].dropna().astype(str)))
    reading = (
        f"The dashed line is the accuracy/operations Pareto frontier: {readings.names(front)} "
        f"{'is' if len(front) == 1 else 'are'} on it (no other network is both cheaper and at "
        f"least as accurate). Bubble area is proportional to the parameter count (minimum "
        f"{BUBBLE_MIN_PT2:g} pt² so that small networks stay visible); MACs are counted "
        f"by {readings.names(counters)}." + readings.no_accuracy_note(without)
    )
    return Drawn(fig, reading, labels=tuple(labels))


def accuracy_vs_throughput(data: ReportData) -> Drawn:
    """Top-1 accuracy vs images per second at each network's best batch size, one panel per
    setup; bubble area ∝ operations."""
    without = models_with(data.cells, "top1")[1]
    cells = data.cells.dropna(subset=["top1", "throughput_ips", "gmacs"])
    if cells.empty:
        return skip("No network has both a published accuracy and a throughput.")
    max_ops = float(cells["gmacs"].max())
    fig, panels = setup_panels(cells)
    pending, parts, drawn = [], [], []
    for p in panels:
        ax = p.ax
        best = best_per_model(p.cells, "throughput_ips", pd.Series.idxmax)
        sizes, scale = bubble_sizes(best["gmacs"], max_ops)
        colors = [data.colors[m] for m in best["model"]]
        cell_points(ax, best["throughput_ips"], best["top1"], colors, best["quality"], s=sizes,
                    lw=0.6, alpha=0.55)  # fmt: skip
        if best["throughput_ips"].max() / best["throughput_ips"].min() > LOG_SPAN:
            ax.set_xscale("log")
            log_axis(ax.xaxis)
        ax.set_xlabel("throughput (images/s, best batch size)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(p.setup, fontsize=9)
        ax.margins(0.18)
        bubble_legend(ax, max_ops, "G-MACs", scale, "operations")
        texts = [
            f"{m} (bs {int(b)})" for m, b in zip(best["model"], best["batch_size"], strict=True)
        ]
        pending.append((ax, best, texts, colors, sizes))
        drawn.append(best)
        fastest = best.loc[best["throughput_ips"].idxmax()]
        parts.append(
            f"On {p.setup}, {fastest['model']} is the fastest ({fastest['throughput_ips']:.0f} "
            f"images/s at batch {int(fastest['batch_size'])}, {fastest['top1']:.1f}% top-1)."
        )
    freeze_layout(fig)
    labels = []
    for ax, best, texts, colors, sizes in pending:
        labels += place_labels(
            ax, list(best["throughput_ips"]), list(best["top1"]), texts, colors, sizes
        )
    reading = (
        "Each network at the batch size with its highest throughput (shown in the label); "
        f"bubble area is proportional to operations per image (minimum {BUBBLE_MIN_PT2:g} pt²). "
        + " ".join(parts)
        + readings.no_accuracy_note(without)
        + readings.hollow_note(pd.concat(drawn))
    )
    return Drawn(fig, reading, labels=tuple(labels))


def accuracy_density(data: ReportData) -> Drawn:
    """Accuracy density: top-1 accuracy per million parameters, per network."""
    with_acc, without = models_with(data.cells, "top1")
    pm = per_model(data.cells).loc[with_acc].dropna(subset=["params_m"])
    pm = pm[pm["params_m"] > 0]
    if pm.empty:
        return skip("No network has both a published accuracy and a parameter count.")
    pm = pm.assign(density=pm["top1"] / pm["params_m"]).sort_values("density")
    fig, (ax,) = new_figure(1, height=0.35 * len(pm) + 1.2)
    ax.barh(pm.index, pm["density"], color=[data.colors[m] for m in pm.index])
    for y, v in enumerate(pm["density"]):
        ax.text(v * 1.01, y, f"{v:.3g}", va="center", fontsize=LABEL_FONTSIZE)
    ax.set_xlabel("top-1 accuracy per million parameters (% / M parameters)")
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, pm["density"].max() * 1.15)
    reading = (
        f"{pm.index[-1]} uses its parameters best ({pm['density'].iloc[-1]:.3g} %/M), "
        f"{pm.index[0]} least ({pm['density'].iloc[0]:.3g} %/M)."
        + readings.no_accuracy_note(without)
    )
    return Drawn(fig, reading)

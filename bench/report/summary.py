"""The summary table: one row per (setup, network), built from the per-cell table of
:mod:`bench.report.data`, and its CSV and Markdown forms (``summary.csv``, ``summary.md``).

Pure pandas: no figure, no HTML. The CSV keeps every number as a number (units in the
column names); the Markdown and the page write numbers for people (:func:`format_cell`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.escape import csv_text, markdown_text
from bench.quality import QUALITIES, rank
from bench.report.data import EAGER, WRONG_OUTPUT_COLUMNS, ReportData
from bench.report.notice import (
    attempts_sentence,
    configs_sentence,
    quality_markdown,
    quality_notice,
    superseded_sentence,
    wrong_sentence,
)
from bench.status import OK
from bench.units import GIGA

# Summary columns of the memory count and the roofline, left out where no row has them
# (runs made before they were recorded).
ROOFLINE_SUMMARY = (
    "activation_peak_mib_bs1",
    "intensity_macs_per_byte_bs1",
    "achieved_gmacs_per_s_max",
    "compute_fraction_bs_max",
)


SIG3 = "sig3"  # a column format: three significant digits, never an exponent (1,320; 0.0123)


@dataclass(frozen=True, slots=True)
class TableColumn:
    """A summary column: its CSV name (units in the name), its heading, its format (a
    ``str.format`` pattern, or :data:`SIG3`) and whether the page shows it under "more
    columns" rather than in the main table (counts, references and roofline detail: the
    main table fits a 1280-pixel screen)."""

    key: str
    heading: str
    fmt: str = SIG3
    more: bool = False


SUMMARY_COLUMNS: tuple[TableColumn, ...] = (
    TableColumn("model", "network", "{}"),
    TableColumn("config", "configuration", "{}"),
    TableColumn("output_ok", "output", "{}"),
    TableColumn("quality", "quality", "{}"),
    TableColumn("family", "family", "{}", more=True),
    TableColumn("params_m", "parameters (M)", "{:,.2f}"),
    TableColumn("gmacs", "G-MACs / image", "{:,.3f}"),
    TableColumn("top1_pct", "top-1 (%)", "{:.2f}"),
    TableColumn("top5_pct", "top-5 (%)", "{:.2f}", more=True),
    TableColumn("time_per_image_ms_bs1", "time / image at batch 1 (ms)"),
    TableColumn("time_per_image_ms_best", "best time / image (ms)"),
    TableColumn("best_batch_size", "at batch", "{:,.0f}"),
    TableColumn("speedup_bs1", "speed-up over eager at batch 1", "{:,.2f}"),
    TableColumn("compile_s", "compile (s)", more=True),
    TableColumn("max_rel_err", "max rel. error", "{:.2g}", more=True),
    TableColumn("throughput_ips_max", "max images / s", "{:,.1f}"),
    TableColumn("peak_memory_mib_bs1", "peak memory at batch 1 (MiB)", "{:,.1f}"),
    TableColumn(
        "activation_peak_mib_bs1", "counted activations at batch 1 (MiB)", "{:,.1f}", more=True
    ),
    TableColumn("weights_mib", "weights (MiB)", "{:,.1f}", more=True),
    TableColumn("intensity_macs_per_byte_bs1", "MACs / byte at batch 1", more=True),
    TableColumn("achieved_gmacs_per_s_max", "max GMAC/s", more=True),
    TableColumn("compute_fraction_bs_max", "of compute roof at largest batch", "{:.1%}", more=True),
    TableColumn("power_w_max", "max power (W)", "{:,.1f}"),
    TableColumn("energy_per_image_j_min", "min energy / image (J)"),
    TableColumn("batch_sizes_ok", "batch sizes ok", "{:,.0f}", more=True),
    TableColumn("rows_failed", "rows failed", "{:,.0f}", more=True),
    TableColumn("wide_iqr_cells", "cells with IQR above 10%", "{:,.0f}", more=True),
    TableColumn("repeats_max", "repeats", "{:,.0f}", more=True),
)


def plugin_columns(extra: Sequence[Any]) -> tuple[TableColumn, ...]:
    """Summary columns of the numeric measurements outside the contract (``ReportData.
    extra``, as their files declare them): each one's per-cell value at batch 1, under
    "more columns"."""
    numeric = [c for c in extra if c.kind.rstrip("?") in ("float", "int")]
    unit = {c.name: f" ({c.unit})" if c.unit else "" for c in numeric}
    return tuple(
        TableColumn(f"{c.name}_bs1", f"{c.name} at batch 1{unit[c.name]}", more=True)
        for c in numeric
    )


def summary_table(data: ReportData) -> pd.DataFrame:
    """One row per (setup, network), the setup naming the configuration where there are
    several: counts, published accuracy and the measured figures (medians of repeats; power
    and energy net of idle where known, as the figures show them). Networks whose every cell
    failed get a row with only failures. Timings come from cells whose output was right;
    ``output_ok`` says ``WRONG at batch ...`` where a cell's was not, and those cells' times
    are in no column. ``quality`` is ``clean``, or the worse verdicts of its cells with
    their batch sizes (``contended at batch 4; noisy at batch 1``). Columns without data
    anywhere (power, compile time, output checks and verdicts of older files; the
    configuration when all is eager) are left out. Plugin measurements the files declare
    (:func:`plugin_columns`) follow the built-in columns."""
    plugins = plugin_columns(data.extra)
    records = []
    failed = data.rows[data.rows["status"] != OK].groupby(["setup", "model"]).size()
    checked = data.measured_cells
    order = {c: i for i, c in enumerate(data.configs)}
    firsts = data.rows.drop_duplicates(["setup", "model"])
    pairs = sorted(
        zip(firsts["base_setup"], firsts["model"], firsts["config"], firsts["setup"], strict=True),
        key=lambda p: (p[0], p[1], order[p[2]], p[3]),
    )
    for base, model, config, setup in pairs:
        g = data.cells[(data.cells["setup"] == setup) & (data.cells["model"] == model)]
        g = g.sort_values("batch_size")
        mine = checked[(checked["setup"] == setup) & (checked["model"] == model)]
        rec: dict[str, Any] = {"setup": setup, "base_setup": base, "model": model}
        first = firsts[(firsts["setup"] == setup) & (firsts["model"] == model)].iloc[0]
        rec.update(family=first["family"], config=config, **_output_check(mine))
        rec["rows_failed"] = int(failed.get((setup, model), 0))
        rec["compile_s"] = pd.to_numeric(mine["compile_s"], errors="coerce").median()
        if len(g):
            rec.update(_measured(g, plugins))
        else:
            rec.update(batch_sizes_ok=0, wide_iqr_cells=0)
        records.append(rec)
    cols = ["setup", "base_setup", *(c.key for c in (*SUMMARY_COLUMNS, *plugins)),
            "accuracy_source"]  # fmt: skip
    df = pd.DataFrame.from_records(records, columns=cols)
    text = {"setup", "base_setup", "model", "family", "config", "output_ok", "quality",
            "accuracy_source"}  # fmt: skip
    for c in cols:
        if c not in text:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["speedup_bs1"] = _speedup_bs1(df) if data.shows_config else np.nan
    # Columns that no setup measured (no power anywhere) are left out rather than shown empty.
    optional = ("speedup_bs1", "compile_s", "max_rel_err", "output_ok", "quality",
                *ROOFLINE_SUMMARY, *(c.key for c in plugins))  # fmt: skip
    empty = [c for c in ("power_w_max", "energy_per_image_j_min", *optional) if df[c].isna().all()]
    if not data.shows_config:
        empty += ["config", "base_setup"]
    return df.drop(columns=empty)


def _measured(g: pd.DataFrame, plugins: Sequence[TableColumn] = ()) -> dict[str, Any]:
    """The summary's measured columns from one (setup, network)'s cells, sorted by batch;
    ``plugins`` (:func:`plugin_columns`) at batch 1."""
    b1 = g[g["batch_size"] == 1]
    at_bs1 = {c.key: b1[c.key.removesuffix("_bs1")].iloc[0] if len(b1) else np.nan
              for c in plugins}  # fmt: skip
    timed = g["time_per_image_ms"].notna().any()  # older files may lack it
    best = g.loc[g["time_per_image_ms"].idxmin()] if timed else None
    return dict(
        params_m=g["params_m"].iloc[0],
        gmacs=g["gmacs"].iloc[0],
        top1_pct=g["top1"].iloc[0],
        top5_pct=g["top5"].iloc[0],
        time_per_image_ms_bs1=b1["time_per_image_ms"].iloc[0] if len(b1) else np.nan,
        time_per_image_ms_best=np.nan if best is None else best["time_per_image_ms"],
        best_batch_size=np.nan if best is None else best["batch_size"],
        throughput_ips_max=g["throughput_ips"].max(),
        peak_memory_mib_bs1=b1["peak_memory_mib"].iloc[0] if len(b1) else np.nan,
        activation_peak_mib_bs1=b1["activation_peak_mib"].iloc[0] if len(b1) else np.nan,
        intensity_macs_per_byte_bs1=b1["intensity_macs_per_byte"].iloc[0] if len(b1) else np.nan,
        achieved_gmacs_per_s_max=g["achieved_macs_per_s"].max() / GIGA,
        compute_fraction_bs_max=_roof_share(g.iloc[-1]),
        quality=_quality_text(g),
        weights_mib=g["weights_mib"].iloc[0],
        power_w_max=g["power_plot_w"].max(),
        energy_per_image_j_min=g["energy_plot_per_image_j"].min(),
        batch_sizes_ok=len(g),
        wide_iqr_cells=int(g["noisy"].sum()),
        repeats_max=int(g["n_repeats"].max()),
        accuracy_source=g["accuracy_source"].iloc[0],
        **at_bs1,
    )


def _roof_share(cell: pd.Series) -> float:
    """A cell's achieved rate ÷ its setup's compute roof (``roof_fraction``), or NaN where
    the rate is above the roof: such a rate is implausible, never a fraction of it."""
    share = float(pd.to_numeric(cell["roof_fraction"], errors="coerce"))
    return share if share <= 1 and cell["quality"] != "implausible" else math.nan


def _quality_text(g: pd.DataFrame) -> Any:
    """``clean``, or each verdict but clean (worst first) with the batch sizes that have it;
    NaN when no cell was judged (files written before verdicts)."""
    judged = g[g["quality"].isin(QUALITIES)]
    if judged.empty:
        return np.nan
    parts = []
    for q in sorted(set(judged["quality"]) - {"clean"}, key=rank, reverse=True):
        batches = sorted(int(b) for b in judged.loc[judged["quality"] == q, "batch_size"])
        parts.append(f"{q} at batch {', '.join(map(str, batches))}")
    return "; ".join(parts) or "clean"


def _output_check(cells: pd.DataFrame) -> dict[str, Any]:
    """``output_ok`` (``ok``, ``WRONG at batch 1, 4`` or NaN when never checked) and the
    largest relative error of a (setup, network)'s cells."""
    verdict = cells["output_ok"].astype("boolean")
    err = pd.to_numeric(cells["max_rel_err"], errors="coerce")
    bad = sorted(int(b) for b in cells.loc[verdict.eq(False).fillna(False), "batch_size"])
    if bad:
        text: Any = "WRONG at batch " + ", ".join(map(str, bad))
    elif verdict.notna().any():
        text = "ok"
    else:
        text = np.nan
    return {"output_ok": text, "max_rel_err": err.max() if err.notna().any() else np.nan}


def _speedup_bs1(df: pd.DataFrame) -> pd.Series:
    """Eager time per image at batch 1 ÷ this row's, same base setup and network (NaN
    without an eager row to divide by; 1 for eager itself)."""
    if not (df["config"] == EAGER).any():
        return pd.Series(np.nan, index=df.index)
    eager = df[df["config"] == EAGER].set_index(["base_setup", "model"])["time_per_image_ms_bs1"]
    ref = pd.Series(
        [eager.get((b, m), np.nan) for b, m in zip(df["base_setup"], df["model"], strict=True)],
        index=df.index,
        dtype=float,
    )
    return ref / df["time_per_image_ms_bs1"]


def significant(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits for people: thousands separated, never in
    exponent form, no trailing zeros (1,230,000; 1,320; 12.3; 0.0123; 0.5)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    magnitude = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - magnitude)
    v = round(v, digits - 1 - magnitude) if decimals == 0 else v  # 1,234,567 → 1,230,000
    text = f"{v:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_cell(v: Any, fmt: str) -> str:
    """A table cell as a person reads it: ``–`` where there is no value."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    try:
        return significant(float(v)) if fmt == SIG3 else fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def columns_of(df: pd.DataFrame, extra: Sequence[Any] = ()) -> list[TableColumn]:
    """The summary columns ``df`` has: the built-in ones, then those of ``extra``
    (:func:`plugin_columns`)."""
    return [c for c in (*SUMMARY_COLUMNS, *plugin_columns(extra)) if c.key in df.columns]


def summary_csv(df: pd.DataFrame) -> str:
    """The summary table as CSV; text that a spreadsheet would run as a formula gets a
    leading ``'`` (numbers are written as numbers)."""
    safe = df.copy()
    for col in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[col]):
            safe[col] = safe[col].map(csv_text)
    return safe.to_csv(index=False, float_format="%.10g", lineterminator="\n")


def md_table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(markdown_text, headings)) + " |"]
    lines.append("|" + "|".join("---" for _ in headings) + "|")
    lines += ["| " + " | ".join(markdown_text(c) for c in r) + " |" for r in rows]
    return lines


def summary_markdown(data: ReportData, df: pd.DataFrame, figures: Sequence[Any]) -> str:
    lines = ["# effbench report", ""]
    lines.append(
        f"{len(data.runs)} run(s): "
        + ", ".join(f"{markdown_text(r.run_id)} ({markdown_text(r.path)})" for r in data.runs)
        + f"; {len(data.cells)} measured cells, {len(data.failures)} failed rows."
    )
    lines += quality_markdown(quality_notice(data))
    if data.notes:
        lines += ["", "Read from older files: " + "; ".join(map(markdown_text, data.notes)) + "."]
    if data.superseded:
        lines += ["", markdown_text(superseded_sentence(data))]
    if data.attempts_not_kept:
        lines += ["", markdown_text(attempts_sentence(data))]
    if data.shows_config:
        lines += ["", markdown_text(configs_sentence(data))]
    if len(data.wrong_output):
        lines += ["", "**" + markdown_text(wrong_sentence(data)) + "**"]
    cols = columns_of(df, data.extra)
    for setup, g in table_groups(df):
        lines += ["", f"## {markdown_text(setup)}", ""]
        rows = [[format_cell(r[c.key], c.fmt) for c in cols] for _, r in g.iterrows()]
        lines += md_table([c.heading for c in cols], rows)
    if len(data.wrong_output):
        lines += ["", "## Cells with wrong output", ""]
        wrong = [
            [format_cell(r[c.key], c.fmt) for c in WRONG_COLUMNS]
            for _, r in data.wrong_output.iterrows()
        ]
        lines += md_table([c.heading for c in WRONG_COLUMNS], wrong)
    skipped = [f for f in figures if f.skipped]
    if skipped:
        lines += ["", "## Figures left out", ""]
        lines += [f"- {markdown_text(f.title)}: {markdown_text(f.skipped)}" for f in skipped]
    lines += ["", "## Cells that did not finish", ""]
    if len(data.failures):
        lines += md_table(
            ["setup", "network", "batch", "status", "error"],
            [
                [r.setup, r.model, str(r.batch_size), r.status, str(r.error or "")]
                for r in data.failures.itertuples()
            ],
        )
    else:
        lines.append("None: every cell finished.")
    return "\n".join(lines) + "\n"


WRONG_COLUMNS = tuple(
    TableColumn(key, heading, fmt)
    for key, (heading, fmt) in zip(
        WRONG_OUTPUT_COLUMNS,
        (
            ("setup", "{}"),
            ("network", "{}"),
            ("batch", "{:,.0f}"),
            ("configuration", "{}"),
            ("max abs. error", "{:.3g}"),
            ("max rel. error", "{:.3g}"),
            ("time / image, not plotted (ms)", SIG3),
        ),
        strict=True,
    )
)


def table_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The summary's tables: one per setup, or, when setups name their configuration, one
    per machine/device/dtype with a row per (network, configuration), eager first."""
    by = "base_setup" if "base_setup" in df.columns else "setup"
    return [(str(k), g) for k, g in df.groupby(by, sort=True)]

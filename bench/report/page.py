"""The report's text outputs: ``index.html`` (self-contained: inline CSS and JS, figures by
relative path, no network requests), ``summary.md``, ``summary.csv`` and ``report.json``.

Every number in them comes from the per-cell table built by :mod:`bench.report.data`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.escape import csv_text, markdown_text
from bench.quality import QUALITIES, rank
from bench.quality import summary as quality_counts
from bench.report.canvas import DPI
from bench.report.data import EAGER, UNTRUSTED, WRONG_OUTPUT_COLUMNS, ReportData, setup_roofs
from bench.units import GIGA

REPORT_FORMAT = 1
BANNER_LIST_OPEN = 12  # more untrusted cells than this: the banner's list is folded
# Summary columns of the memory count and the roofline, left out where no row has them
# (runs made before they were recorded).
ROOFLINE_SUMMARY = (
    "activation_peak_mib_bs1",
    "intensity_macs_per_byte_bs1",
    "achieved_gmacs_per_s_max",
    "compute_fraction_bs_max",
)


@dataclass(frozen=True, slots=True)
class Column:
    """A summary column: its CSV name (units in the name), its heading and its format."""

    key: str
    heading: str
    fmt: str = "{:.3g}"


SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("model", "network", "{}"),
    Column("config", "configuration", "{}"),
    Column("output_ok", "output", "{}"),
    Column("quality", "quality", "{}"),
    Column("family", "family", "{}"),
    Column("params_m", "parameters (M)", "{:.2f}"),
    Column("gmacs", "G-MACs / image", "{:.3f}"),
    Column("top1_pct", "top-1 (%)", "{:.2f}"),
    Column("top5_pct", "top-5 (%)", "{:.2f}"),
    Column("time_per_image_ms_bs1", "time / image at batch 1 (ms)", "{:.3g}"),
    Column("time_per_image_ms_best", "best time / image (ms)", "{:.3g}"),
    Column("best_batch_size", "at batch", "{:.0f}"),
    Column("speedup_bs1", "speed-up over eager at batch 1", "{:.2f}"),
    Column("compile_s", "compile (s)", "{:.3g}"),
    Column("max_rel_err", "max rel. error", "{:.2g}"),
    Column("throughput_ips_max", "max images / s", "{:.1f}"),
    Column("peak_memory_mib_bs1", "peak memory at batch 1 (MiB)", "{:.1f}"),
    Column("activation_peak_mib_bs1", "counted activations at batch 1 (MiB)", "{:.1f}"),
    Column("weights_mib", "weights (MiB)", "{:.1f}"),
    Column("intensity_macs_per_byte_bs1", "MACs / byte at batch 1", "{:.3g}"),
    Column("achieved_gmacs_per_s_max", "max GMAC/s", "{:.3g}"),
    Column("compute_fraction_bs_max", "of compute roof at largest batch", "{:.1%}"),
    Column("power_w_max", "max power (W)", "{:.1f}"),
    Column("energy_per_image_j_min", "min energy / image (J)", "{:.3g}"),
    Column("batch_sizes_ok", "batch sizes ok", "{:.0f}"),
    Column("rows_failed", "rows failed", "{:.0f}"),
    Column("noisy_cells", "noisy cells", "{:.0f}"),
    Column("repeats_max", "repeats", "{:.0f}"),
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
    configuration when all is eager) are left out."""
    records = []
    failed = data.rows[data.rows["status"] != "ok"].groupby(["setup", "model"]).size()
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
            rec.update(_measured(g))
        else:
            rec.update(batch_sizes_ok=0, noisy_cells=0)
        records.append(rec)
    cols = ["setup", "base_setup", *(c.key for c in SUMMARY_COLUMNS), "accuracy_source"]
    df = pd.DataFrame.from_records(records, columns=cols)
    text = {"setup", "base_setup", "model", "family", "config", "output_ok", "quality",
            "accuracy_source"}  # fmt: skip
    for c in cols:
        if c not in text:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["speedup_bs1"] = _speedup_bs1(df) if data.shows_config else np.nan
    # Columns that no setup measured (no power anywhere) are left out rather than shown empty.
    optional = ("speedup_bs1", "compile_s", "max_rel_err", "output_ok", "quality",
                *ROOFLINE_SUMMARY)  # fmt: skip
    empty = [c for c in ("power_w_max", "energy_per_image_j_min", *optional) if df[c].isna().all()]
    if not data.shows_config:
        empty += ["config", "base_setup"]
    return df.drop(columns=empty)


def _measured(g: pd.DataFrame) -> dict[str, Any]:
    """The summary's measured columns from one (setup, network)'s cells, sorted by batch."""
    b1 = g[g["batch_size"] == 1]
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
        noisy_cells=int(g["noisy"].sum()),
        repeats_max=int(g["n_repeats"].max()),
        accuracy_source=g["accuracy_source"].iloc[0],
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


def _cell(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _columns_of(df: pd.DataFrame) -> list[Column]:
    return [c for c in SUMMARY_COLUMNS if c.key in df.columns]


def summary_csv(df: pd.DataFrame) -> str:
    """The summary table as CSV; text that a spreadsheet would run as a formula gets a
    leading ``'`` (numbers are written as numbers)."""
    safe = df.copy()
    for col in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[col]):
            safe[col] = safe[col].map(csv_text)
    return safe.to_csv(index=False, float_format="%.10g", lineterminator="\n")


def _md_table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
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
    lines += _quality_markdown(quality_notice(data))
    if data.notes:
        lines += ["", "Read from older files: " + "; ".join(map(markdown_text, data.notes)) + "."]
    if data.superseded:
        lines += ["", markdown_text(_superseded_sentence(data))]
    if data.attempts_not_kept:
        lines += ["", markdown_text(_attempts_sentence(data))]
    if data.shows_config:
        lines += ["", markdown_text(_configs_sentence(data))]
    if len(data.wrong_output):
        lines += ["", "**" + markdown_text(_wrong_sentence(data)) + "**"]
    cols = _columns_of(df)
    for setup, g in _table_groups(df):
        lines += ["", f"## {markdown_text(setup)}", ""]
        rows = [[_cell(r[c.key], c.fmt) for c in cols] for _, r in g.iterrows()]
        lines += _md_table([c.heading for c in cols], rows)
    if len(data.wrong_output):
        lines += ["", "## Cells with wrong output", ""]
        wrong = [
            [_cell(r[c.key], c.fmt) for c in WRONG_COLUMNS] for _, r in data.wrong_output.iterrows()
        ]
        lines += _md_table([c.heading for c in WRONG_COLUMNS], wrong)
    skipped = [f for f in figures if f.skipped]
    if skipped:
        lines += ["", "## Figures left out", ""]
        lines += [f"- {markdown_text(f.title)}: {markdown_text(f.skipped)}" for f in skipped]
    lines += ["", "## Cells that did not finish", ""]
    if len(data.failures):
        lines += _md_table(
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
    Column(key, heading, fmt)
    for key, (heading, fmt) in zip(
        WRONG_OUTPUT_COLUMNS,
        (
            ("setup", "{}"),
            ("network", "{}"),
            ("batch", "{:.0f}"),
            ("configuration", "{}"),
            ("max abs. error", "{:.3g}"),
            ("max rel. error", "{:.3g}"),
            ("time / image, not plotted (ms)", "{:.3g}"),
        ),
        strict=True,
    )
)


def _table_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The summary's tables: one per setup, or, when setups name their configuration, one
    per machine/device/dtype with a row per (network, configuration), eager first."""
    by = "base_setup" if "base_setup" in df.columns else "setup"
    return [(str(k), g) for k, g in df.groupby(by, sort=True)]


@dataclass(frozen=True, slots=True)
class QualityNotice:
    """What the report says about the verdicts of its cells: counts by quality (cells
    written before verdicts left out), the cells whose number cannot be trusted (contended
    or implausible; rows of ``measured_cells``), and whether that needs the banner."""

    counts: dict[str, int]
    unjudged: int
    untrusted: pd.DataFrame

    @property
    def banner(self) -> bool:
        return not self.untrusted.empty

    @property
    def judged(self) -> int:
        return sum(self.counts.values())

    def counts_sentence(self) -> str:
        before = f" ({self.unjudged} more written before verdicts)" if self.unjudged else ""
        return f"Of {self.judged} measured cells: {quality_counts(self.counts)}{before}."

    def todo(self) -> list[str]:
        """What to do, per kind of verdict present (docs/noise.md)."""
        out = []
        if self.counts.get("contended"):
            out.append(
                "Contended cells did not get their CPU or GPU during their timed window "
                "(other processes, a hypervisor or a slowing GPU took it), so they read slow "
                "by an unknown amount: do not compare them. Measure them again on a quiet "
                "host: `effbench run --resume RUN_FOLDER` measures every cell without an "
                "acceptable row, `--remeasure N` retries contended cells within a run, and "
                "on a shared runner leave cores free with a lower `--threads` or pin the "
                "worker's cores; `--require-quiet` refuses to start on a busy host."
            )
        if self.counts.get("implausible"):
            out.append(
                "Implausible cells are faster than the measured compute roof: the roof was "
                "measured at a busier moment (or the MAC count is wrong), so they are not "
                "read as a fraction of it. Measure the ceilings again on a quiet host "
                "(`effbench peak`)."
            )
        if self.counts.get("noisy"):
            out.append(
                "Noisy cells missed the precision target (their median's confidence interval "
                "is wider than asked): fair, but less precise; a longer `--max-time` helps."
            )
        return out


def quality_notice(data: ReportData) -> QualityNotice:
    """The verdicts of every measured cell (wrong outputs included) of ``data``."""
    cells = data.measured_cells
    judged = cells[cells["quality"].isin(QUALITIES)]
    counts = {q: int(n) for q, n in judged["quality"].value_counts().items()}
    untrusted = cells[cells["quality"].isin(UNTRUSTED)].sort_values(
        ["setup", "model", "batch_size"], kind="stable"
    )
    return QualityNotice(counts, len(cells) - len(judged), untrusted.reset_index(drop=True))


def _untrusted_items(notice: QualityNotice) -> list[str]:
    """One line per contended or implausible cell (plain text, to be escaped)."""
    out = []
    for r in notice.untrusted.itertuples():
        repeats = f" in {r.quality_repeats} repeats" if isinstance(r.quality_repeats, str) else ""
        why = f": {r.quality_reason}" if isinstance(r.quality_reason, str) else ""
        out.append(
            f"{r.model} at batch {int(r.batch_size)} on {r.setup}: {r.quality}{repeats}{why}"
        )
    return out


def _with_code(text: str) -> str:
    """``text`` escaped, its `backticked` spans as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{_e(p)}</code>" if i % 2 else _e(p) for i, p in enumerate(parts))


def _quality_html(notice: QualityNotice) -> list[str]:
    """The banner at the top of the page (a contended or implausible cell), or a quiet line
    of the counts (every judged cell clean or noisy); nothing when no cell was judged."""
    if not notice.judged:
        return []
    if not notice.banner:
        noisy = notice.counts.get("noisy", 0)
        share = (
            f" {noisy} of {notice.judged} ({noisy / notice.judged:.0%}) are noisy: their "
            "median's confidence interval missed the precision target (fair conditions, less "
            "precise than asked)."
            if noisy
            else ""
        )
        return [
            f'<p class="lead quality-note" id="quality-note">Quality: '
            f"{_e(quality_counts(notice.counts))} cells; no cell contended or implausible."
            f"{_e(share)} See <code>docs/noise.md</code>.</p>"
        ]
    items = "".join(f"<li>{_e(t)}</li>" for t in _untrusted_items(notice))
    n = len(notice.untrusted)
    listing = f"<ul>{items}</ul>"
    if n > BANNER_LIST_OPEN:
        listing = f"<details><summary>The {n} cells</summary>{listing}</details>"
    todo = "".join(f"<p>{_with_code(t)}</p>" for t in notice.todo())
    return [
        '<section class="banner" id="quality-banner" role="alert">'
        f"<p><strong>{n} cell(s) cannot be trusted (contended or implausible).</strong> "
        f"{_e(notice.counts_sentence())} They are drawn hollow in every figure and named in "
        "each figure's caption; the summary's <code>quality</code> column says which batch "
        f"sizes.</p>{listing}{todo}"
        "<p>How each verdict is made, and what to do on a shared runner: "
        "<code>docs/noise.md</code>.</p></section>"
    ]


def _quality_markdown(notice: QualityNotice) -> list[str]:
    if not notice.judged:
        return []
    if not notice.banner:
        return ["", markdown_text(f"Quality: {quality_counts(notice.counts)} cells.")]
    lines = ["", "**" + markdown_text(
        f"{len(notice.untrusted)} cell(s) cannot be trusted (contended or implausible). "
        + notice.counts_sentence()
    ) + "**", ""]  # fmt: skip
    lines += [f"- {markdown_text(t)}" for t in _untrusted_items(notice)]
    for t in [*notice.todo(), "How each verdict is made: docs/noise.md."]:
        lines += ["", markdown_text(t)]
    return lines


def _attempts_sentence(data: ReportData) -> str:
    return (
        f"{data.attempts_not_kept} earlier attempt(s) of re-measured cells are not shown: of "
        "the attempts of a cell, the one with the best quality is."
    )


def _superseded_sentence(data: ReportData) -> str:
    """The older runs left out because a more recent run measured the same cells."""
    if not data.superseded:
        return ""
    runs = "; ".join(
        f"{s.run_id} ({s.cells} cell(s), {s.rows} row(s); measured again by {', '.join(s.by)})"
        for s in data.superseded
    )
    return (
        "Older runs not shown: " + runs + ". Of each cell and setup the report keeps the "
        "most recent run's rows (runs made at different times are not repeats of one "
        "measurement); set runs against each other with `effbench compare`, or give the "
        "report only the runs to show."
    )


def _configs_sentence(data: ReportData) -> str:
    return (
        f"Configurations: {', '.join(data.configs)}. Each setup label ends in its "
        "configuration, so every table row and every panel of figures 3 to 8, 10 and 12 "
        "shows one configuration, never a mix; figure 11 sets each against eager."
    )


def _wrong_sentence(data: ReportData) -> str:
    w = data.wrong_output
    cells = "; ".join(
        f"{r.model} {r.config} batch {int(r.batch_size)} on {r.setup}" for r in w.itertuples()
    )
    return (
        f"Wrong output: {len(w)} cell(s) differ from eager float32 beyond their dtype's "
        f"tolerance ({cells}). They are left out of every figure and of the table's timings "
        "(marked WRONG): a wrong answer fast is not a fast network."
    )


CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#fbfcfd; --accent:#2a6fb0; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:1.2rem 1.5rem 3rem; }
h1 { font-size:1.7rem; margin:.2rem 0 .3rem; }
h2 { font-size:1.25rem; margin:2.2rem 0 .6rem; border-bottom:1px solid var(--line);
     padding-bottom:.25rem; }
h3 { font-size:1.02rem; margin:1.4rem 0 .4rem; }
p.lead { color:var(--muted); margin:.2rem 0 1rem; }
nav { background:#fff; border:1px solid var(--line); border-radius:8px; padding:.5rem 1rem;
      font-size:.9rem; }
nav a { color:var(--accent); text-decoration:none; margin-right:1rem; white-space:nowrap; }
figure { margin:1.2rem 0 2rem; background:#fff; border:1px solid var(--line);
         border-radius:8px; padding:.8rem 1rem; }
figure img { display:block; max-width:100%; height:auto; margin:.3rem auto; }
figcaption { color:var(--fg); font-size:.93rem; max-width:75ch; }
figcaption a { color:var(--accent); font-size:.85rem; }
.skipped { color:var(--muted); font-style:italic; }
.table-wrap { overflow-x:auto; background:#fff; border:1px solid var(--line);
              border-radius:8px; }
table { border-collapse:collapse; font-size:.85rem; width:100%; }
th, td { padding:.3rem .55rem; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; }
th:first-child, td:first-child, td.text, th.text { text-align:left; }
thead th { background:#f1f4f8; position:sticky; top:0; }
table.sortable thead th { cursor:pointer; user-select:none; }
table.sortable thead th[data-dir="asc"]::after { content:" ▲"; }
table.sortable thead th[data-dir="desc"]::after { content:" ▼"; }
tbody tr:hover { background:#f6f8fb; }
tr.wrong, tr.wrong:hover { background:#fde4e4; }
tr.wrong td.output { color:#a40000; font-weight:700; }
.banner { background:#fff1dc; border:2px solid #c77700; border-radius:8px;
          padding:.4rem 1rem; margin:.6rem 0 1rem; color:#4a2c00; }
.banner ul { margin:.3rem 0; padding-left:1.3rem; font-size:.9rem; }
.banner p { margin:.4rem 0; }
p.wrong { background:#fde4e4; border:1px solid #e0a0a0; border-radius:8px; padding:.5rem 1rem;
          color:#7a0000; }
table.kv td:first-child { color:var(--muted); width:14rem; }
table.kv td { white-space:normal; text-align:left; word-break:break-word; }
details { margin:.6rem 0; }
summary { cursor:pointer; font-weight:600; }
code { font-size:.85em; background:#eef1f5; padding:0 .25em; border-radius:3px; }
"""

JS = """
(function () {
  function key(row, i) {
    var c = row.cells[i];
    if (c.hasAttribute('data-v')) {
      var v = c.getAttribute('data-v');
      return v === '' ? null : parseFloat(v);
    }
    return c.textContent.trim().toLowerCase();
  }
  document.querySelectorAll('table.sortable thead th').forEach(function (th) {
    th.addEventListener('click', function () {
      var table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
      var asc = th.getAttribute('data-dir') !== 'asc';
      table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, i), y = key(b, i);
        if (x === null) return 1;
        if (y === null) return -1;
        var d = (typeof x === 'number') ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  // Records whether every figure loaded (read by the report's browser test).
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; });
    var out = document.getElementById('image-check');
    out.setAttribute('data-loaded', ok.length);
    out.setAttribute('data-total', imgs.length);
    out.textContent = 'images loaded: ' + ok.length + ' of ' + imgs.length;
  });
})();
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _html_table(
    df: pd.DataFrame, cols: Sequence[Column], sortable: bool, flag: str | None = None
) -> str:
    """A table of ``df``'s ``cols``; rows whose column ``flag`` starts with ``WRONG`` get
    the class ``wrong`` (and that cell the class ``output``)."""
    head = "".join(
        f'<th class="{"text" if c.fmt == "{}" else "num"}">{_e(c.heading)}</th>' for c in cols
    )
    body = []
    for _, r in df.iterrows():
        tds = []
        wrong = flag is not None and str(r[flag]).startswith("WRONG")
        for c in cols:
            v = r[c.key]
            if c.fmt == "{}":
                cls = "text output" if wrong and c.key == flag else "text"
                tds.append(f'<td class="{cls}">{_e(_cell(v, c.fmt))}</td>')
            else:
                num = "" if pd.isna(v) else repr(float(v))
                tds.append(f'<td data-v="{num}">{_e(_cell(v, c.fmt))}</td>')
        tr = '<tr class="wrong">' if wrong else "<tr>"
        body.append(tr + "".join(tds) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return (
        f'<div class="table-wrap"><table{cls}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _environment_html(data: ReportData) -> str:
    keys = (
        "hostname",
        "platform",
        "cpu_model",
        "cpu_count",
        "default_threads",
        "python_version",
        "torch_version",
        "torchvision_version",
        "cuda_version",
        "cudnn_version",
        "nvidia_driver",
        "mkldnn",
        "effbench_commit",
    )
    parts = []
    for run in data.runs:
        man = run.manifest
        env = man.get("environment") or {}
        rows = [
            ("run folder", run.path),
            ("rows read", run.rows),
            ("created", man.get("created", "–")),
            ("command", " ".join(map(str, man.get("argv") or [])) or "–"),
        ]
        rows += [(k, env[k]) for k in keys if k in env]
        gpus = env.get("gpus") or []
        if gpus:
            rows.append(("GPUs", "; ".join(str(g.get("name", g)) for g in gpus)))
        if man.get("options"):
            rows.append(("options", json.dumps(man["options"], sort_keys=True)))
        if not man:
            rows.append(("manifest", "none found: environment unknown"))
        trs = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
        parts.append(
            f"<details open><summary>{_e(run.run_id)}</summary>"
            f'<div class="table-wrap"><table class="kv"><tbody>{trs}</tbody></table></div>'
            "</details>"
        )
    return "".join(parts)


def _failures_html(data: ReportData) -> str:
    if not len(data.failures):
        return "<p>None: every planned cell finished with status <code>ok</code>.</p>"
    cols = (
        Column("setup", "setup", "{}"),
        Column("model", "network", "{}"),
        Column("batch_size", "batch", "{:.0f}"),
        Column("repeat", "repeat", "{:.0f}"),
        Column("status", "status", "{}"),
        Column("error", "error", "{}"),
        Column("run_id", "run", "{}"),
    )
    return (
        f"<p>{len(data.failures)} row(s) did not finish; they are in no figure.</p>"
        + _html_table(data.failures, cols, sortable=True)
    )


def index_html(
    data: ReportData,
    df: pd.DataFrame,
    figures: Sequence[Any],
    images: dict[str, tuple[str, int, int]],
) -> str:
    """The page: summary tables per setup, figures with their readings, failures, runs.
    ``images`` maps figure names to (PNG path relative to the page, width px, height px)."""
    n_ok = len(data.cells)
    notice = quality_notice(data)
    toc = [("summary", "Summary"), ("figures", "Figures")]
    if len(data.wrong_output):
        toc.append(("wrong-output", "Cells with wrong output"))
    toc += [("failures", "Cells that did not finish"), ("runs", "Runs and environment")]
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>effbench efficiency report</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>Efficiency report</h1>",
        *_quality_html(notice),
        '<p class="lead">'
        f"{len(data.models)} networks on {len(data.setups)} setup(s) from {len(data.runs)} run(s): "
        f"{n_ok} measured cells, {len(data.failures)} rows that did not finish. Figures after "
        "Canziani, Paszke &amp; Culurciello (2016), <i>An Analysis of Deep Neural Network "
        "Models for Practical Applications</i> (arXiv:1605.07678). Times, memory, power and "
        "counts are measured by effbench; accuracies are published figures with their source."
        "</p>",
        *(
            [f'<p class="lead">Read from older files: {_e("; ".join(data.notes))}.</p>']
            if data.notes
            else []
        ),
        *(
            [f'<p class="lead" id="superseded">{_e(_superseded_sentence(data))}</p>']
            if data.superseded
            else []
        ),
        *(
            [f'<p class="lead">{_e(_attempts_sentence(data))}</p>']
            if data.attempts_not_kept
            else []
        ),
        "<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in toc) + "</nav>",
        '<h2 id="summary">Summary</h2>',
        "<p>One table per setup (machine, device, dtype, threads, and the arm of an A/B run); "
        "click a heading to sort. Cells measured several times are summarized by the median "
        "of their repeats (the best attempt of each, from the most recent run of the cell). "
        'The same table is in <a href="summary.csv">summary.csv</a> and '
        '<a href="summary.md">summary.md</a>.</p>',
    ]
    if data.shows_config:
        out.append(f"<p>{_e(_configs_sentence(data))}</p>")
    if len(data.wrong_output):
        out.append(
            f'<p class="wrong"><strong>{_e(_wrong_sentence(data))}</strong> '
            '<a href="#wrong-output">The cells and their errors.</a></p>'
        )
    cols = _columns_of(df)
    flag = "output_ok" if "output_ok" in df.columns else None
    for setup, g in _table_groups(df):
        out.append(f"<h3>{_e(setup)}</h3>")
        out.append(_html_table(g, cols, sortable=True, flag=flag))
    out += _figures_html(data, figures, images)
    if len(data.wrong_output):
        out.append('<h2 id="wrong-output">Cells with wrong output</h2>')
        out.append(
            "<p>Their output differs from eager float32 on the same input beyond the dtype's "
            "tolerance (<code>output_ok</code> false): they are in no figure, and their "
            "times, shown here, are not measurements of the network.</p>"
        )
        out.append(_html_table(data.wrong_output, WRONG_COLUMNS, sortable=True))
    out.append('<h2 id="failures">Cells that did not finish</h2>')
    out.append(_failures_html(data))
    out.append('<h2 id="runs">Runs and environment</h2>')
    out.append('<p>Inputs of this report (also in <a href="report.json">report.json</a>).</p>')
    out.append(_environment_html(data))
    out.append('<p id="image-check" hidden></p>')
    out.append(f"</main><script>{JS}</script></body></html>")
    return "\n".join(out) + "\n"


def _figures_html(
    data: ReportData, figures: Sequence[Any], images: dict[str, tuple[str, int, int]]
) -> list[str]:
    """The page's figures section: each drawn figure with its reading, or why it is left
    out."""
    out = ['<h2 id="figures">Figures</h2>']
    if data.shows_config:
        out.append(
            "<p>In figures 3 to 8, 10 and 12 each panel shows one configuration, named at the end "
            "of its setup label (machine · dtype · configuration); figure 11 divides eager's "
            "latency by each other configuration's, one panel per machine and dtype.</p>"
        )
    for i, f in enumerate(figures, 1):
        if f.skipped:
            out.append(
                f'<p class="skipped" id="{_e(f.name)}">Figure {i}, {_e(f.title.lower())}, '
                f"is left out: {_e(f.skipped)}</p>"
            )
            continue
        png, w, h = images[f.name]
        svg = png[: -len(".png")] + ".svg"
        # Shown at 120 CSS pixels per inch: the 150-dpi PNG stays sharp on dense screens.
        cw, ch = round(w * 120 / DPI), round(h * 120 / DPI)
        out.append(
            f'<figure id="{_e(f.name)}"><h3>{i}. {_e(f.title)}</h3>'
            f'<img src="{_e(png)}" alt="{_e(f.title)}" width="{cw}" height="{ch}">'
            f"<figcaption>{_e(f.reading)} "
            f'<a href="{_e(svg)}">SVG</a> · <a href="{_e(png)}">PNG</a></figcaption></figure>'
        )
    return out


def to_plain(v: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    return v.item() if isinstance(v, np.generic) else v


def _quality_json(data: ReportData) -> dict[str, Any]:
    """The verdicts of the cells, the untrusted cells, the runs and attempts not shown."""
    notice = quality_notice(data)

    def text(v: Any) -> Any:
        return v if isinstance(v, str) else None

    return {
        "counts": {q: notice.counts.get(q, 0) for q in QUALITIES},
        "unjudged_cells": notice.unjudged,
        "untrusted_cells": [
            {
                "setup": r.setup,
                "model": r.model,
                "batch_size": int(r.batch_size),
                "config": r.config,
                "quality": r.quality,
                "repeats": text(r.quality_repeats),
                "reason": text(r.quality_reason),
            }
            for r in notice.untrusted.itertuples()
        ],
        "superseded_runs": [
            {"run_id": x.run_id, "cells": x.cells, "rows": x.rows, "by": list(x.by)}
            for x in data.superseded
        ],
        "attempts_not_kept": data.attempts_not_kept,
    }


def report_json(data: ReportData, figures: Sequence[Any], files: dict[str, list[str]]) -> str:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    doc = {
        "report_format": REPORT_FORMAT,
        "inputs": [
            {
                "path": r.path,
                "run_id": r.run_id,
                "created": r.manifest.get("created"),
                "rows": r.rows,
            }
            for r in data.runs
        ],
        "rows": len(data.rows),
        "loader_notes": list(data.notes),
        "cells_plotted": len(data.cells),
        "rows_not_ok": len(data.failures),
        "quality": _quality_json(data),
        "setups": list(data.setups),
        "models": list(data.models),
        "configs": list(data.configs),
        "cells_wrong_output": [
            {k: clean(to_plain(r[k])) for k in WRONG_OUTPUT_COLUMNS}
            for _, r in data.wrong_output.iterrows()
        ],
        "figures": [
            {"name": f.name, "title": f.title, "files": files[f.name], "reading": f.reading}
            for f in figures
            if not f.skipped
        ],
        "figures_left_out": [
            {"name": f.name, "title": f.title, "why": f.skipped} for f in figures if f.skipped
        ],
        "roofs": [
            {
                "setup": setup,
                "compute_macs_per_s": clean(r.compute_macs_per_s),
                "bandwidth_bytes_per_s": clean(r.bandwidth_bytes_per_s),
                "ridge_macs_per_byte": clean(r.ridge_macs_per_byte),
                "conv3x3_macs_per_s": clean(r.conv3x3_macs_per_s),
                "datasheet_compute_macs_per_s": clean(r.datasheet_compute_macs_per_s),
                "datasheet_bandwidth_bytes_per_s": clean(r.datasheet_bandwidth_bytes_per_s),
                "datasheet_citation": r.datasheet_citation or None,
            }
            for setup, r in setup_roofs(data).items()
        ],
        "fits": [
            {
                "figure": f.name,
                "setup": fit.setup,
                "batch_size": fit.batch_size,
                "x": fit.x_name,
                "y": fit.y_name,
                "models": list(fit.models),
                "slope": clean(fit.line.slope),
                "intercept": clean(fit.line.intercept),
                "r2": clean(fit.line.r2),
                "n": fit.line.n,
            }
            for f in figures
            for fit in f.fits
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"

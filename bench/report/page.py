"""The report's page, ``index.html`` (self-contained: the style sheet and script of
``static/`` inline, figures by relative path, no network requests), and ``report.json``.

Every number in them comes from the per-cell table built by :mod:`bench.report.data`; the
summary table is :mod:`bench.report.summary`'s, the banner :mod:`bench.report.notice`'s.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd

from bench.quality import QUALITIES
from bench.report.canvas import DPI
from bench.report.data import WRONG_OUTPUT_COLUMNS, ReportData, setup_roofs
from bench.report.figures import SPEEDUP, figure, per_setup_numbers
from bench.report.notice import (
    attempts_sentence,
    configs_sentence,
    quality_html,
    quality_notice,
    superseded_sentence,
    wrong_sentence,
)
from bench.report.summary import WRONG_COLUMNS, TableColumn, columns_of, format_cell, table_groups

REPORT_FORMAT = 1
STATIC = "static"  # package data beside this module: the page's style sheet and script
SUMMARY_WRAP = "table-wrap summary"  # the summary tables' frames (the page's script measures them)


def static_text(name: str) -> str:
    """A file of the page's package data (``static/report.css``, ``static/report.js``)."""
    return files("bench.report").joinpath(STATIC, name).read_text(encoding="utf-8")


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _html_table(
    df: pd.DataFrame,
    cols: Sequence[TableColumn],
    sortable: bool,
    flag: str | None = None,
    wrap: str = "table-wrap",
) -> str:
    """A table of ``df``'s ``cols`` in a ``div`` of class ``wrap``; rows whose column
    ``flag`` starts with ``WRONG`` get the class ``wrong`` (and that cell the class
    ``output``)."""
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
                tds.append(f'<td class="{cls}">{_e(format_cell(v, c.fmt))}</td>')
            else:
                num = "" if pd.isna(v) else repr(float(v))
                tds.append(f'<td data-v="{num}">{_e(format_cell(v, c.fmt))}</td>')
        tr = '<tr class="wrong">' if wrong else "<tr>"
        body.append(tr + "".join(tds) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return (
        f'<div class="{wrap}"><table{cls}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _summary_tables(g: pd.DataFrame, extra: Sequence[Any] = ()) -> list[str]:
    """One setup's summary: the main columns, and the others (counts, references, roofline
    detail) folded under "More columns", keyed by the network, so that the page needs no
    sideways scrolling on a 1280-pixel screen."""
    cols = columns_of(g, extra)
    main = [c for c in cols if not c.more]
    more = [c for c in cols if c.more]
    flag = "output_ok" if "output_ok" in g.columns else None
    out = [_html_table(g, main, sortable=True, flag=flag, wrap=SUMMARY_WRAP)]
    if more:
        key = [c for c in main if c.key in ("model", "config")]
        names = ", ".join(c.heading for c in more)
        out.append(
            f'<details class="more"><summary>More columns: {_e(names)}</summary>'
            + _html_table(g, key + more, sortable=True, wrap=SUMMARY_WRAP)
            + "</details>"
        )
    return out


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
        TableColumn("setup", "setup", "{}"),
        TableColumn("model", "network", "{}"),
        TableColumn("batch_size", "batch", "{:.0f}"),
        TableColumn("repeat", "repeat", "{:.0f}"),
        TableColumn("status", "status", "{}"),
        TableColumn("error", "error", "{}"),
        TableColumn("run_id", "run", "{}"),
    )
    return (
        f"<p>{len(data.failures)} row(s) did not finish; they are in no figure.</p>"
        + _html_table(data.failures, cols, sortable=True)
    )


def _head_html(data: ReportData) -> list[str]:
    """The page's head, title, banner (or quality line), lead paragraphs and contents."""
    toc = [("summary", "Summary"), ("figures", "Figures")]
    if len(data.wrong_output):
        toc.append(("wrong-output", "Cells with wrong output"))
    toc += [("failures", "Cells that did not finish"), ("runs", "Runs and environment")]
    leads = [(data.notes, f"Read from older files: {'; '.join(data.notes)}.", ""),
             (data.superseded, superseded_sentence(data), ' id="superseded"'),
             (data.attempts_not_kept, attempts_sentence(data), "")]  # fmt: skip
    return [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>effbench efficiency report</title>",
        f"<style>\n{static_text('report.css')}</style></head><body><main>",
        "<h1>Efficiency report</h1>",
        *quality_html(quality_notice(data)),
        '<p class="lead">'
        f"{len(data.models)} networks on {len(data.setups)} setup(s) from {len(data.runs)} run(s): "
        f"{len(data.cells)} measured cells, {len(data.failures)} rows that did not finish. "
        "Figures after Canziani, Paszke &amp; Culurciello (2016), <i>An Analysis of Deep Neural "
        "Network Models for Practical Applications</i> (arXiv:1605.07678). Times, memory, power "
        "and counts are measured by effbench; accuracies are published figures with their "
        "source.</p>",
        *(f'<p class="lead"{attr}>{_e(text)}</p>' for shown, text, attr in leads if shown),
        "<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in toc) + "</nav>",
    ]


def _summary_html(data: ReportData, df: pd.DataFrame) -> list[str]:
    """The summary section: what the tables hold, then one table (and its "more columns")
    per setup."""
    out = [
        '<h2 id="summary">Summary</h2>',
        "<p>One table per setup (machine, device, dtype, threads, and the arm of an A/B run); "
        "click a heading to sort. Cells measured several times are summarized by the median "
        "of their repeats (the best attempt of each, from the most recent run of the cell). "
        'The same table is in <a href="summary.csv">summary.csv</a> and '
        '<a href="summary.md">summary.md</a>.</p>',
    ]
    if data.shows_config:
        out.append(f"<p>{_e(configs_sentence(data))}</p>")
    if len(data.wrong_output):
        out.append(
            f'<p class="wrong"><strong>{_e(wrong_sentence(data))}</strong> '
            '<a href="#wrong-output">The cells and their errors.</a></p>'
        )
    for setup, g in table_groups(df):
        out.append(f"<h3>{_e(setup)}</h3>")
        out += _summary_tables(g, data.extra)
    return out


def index_html(
    data: ReportData,
    df: pd.DataFrame,
    figures: Sequence[Any],
    images: dict[str, tuple[str, int, int]],
) -> str:
    """The page: summary tables per setup, figures with their readings, failures, runs.
    ``images`` maps figure names to (PNG path relative to the page, width px, height px)."""
    out = _head_html(data) + _summary_html(data, df) + _figures_html(data, figures, images)
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
    out.append('<p id="layout-check" hidden></p>')
    out.append(f"</main><script>\n{static_text('report.js')}</script></body></html>")
    return "\n".join(out) + "\n"


def _figures_html(
    data: ReportData, figures: Sequence[Any], images: dict[str, tuple[str, int, int]]
) -> list[str]:
    """The page's figures section: each drawn figure with its reading, or why it is left
    out."""
    out = ['<h2 id="figures">Figures</h2>']
    if data.shows_config:
        out.append(
            f"<p>In figures {per_setup_numbers()} each panel shows one configuration, named at "
            "the end of its setup label (machine · dtype · configuration); figure "
            f"{figure(SPEEDUP).number} divides eager's latency by each other configuration's, "
            "one panel per machine and dtype.</p>"
        )
    for f in figures:
        i = f.number
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


def _clean(v: Any) -> Any:
    """A number JSON can hold: NaN and infinities as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _roofs_json(data: ReportData) -> list[dict[str, Any]]:
    return [
        {
            "setup": setup,
            "compute_macs_per_s": _clean(r.compute_macs_per_s),
            "bandwidth_bytes_per_s": _clean(r.bandwidth_bytes_per_s),
            "ridge_macs_per_byte": _clean(r.ridge_macs_per_byte),
            "conv3x3_macs_per_s": _clean(r.conv3x3_macs_per_s),
            "datasheet_compute_macs_per_s": _clean(r.datasheet_compute_macs_per_s),
            "datasheet_bandwidth_bytes_per_s": _clean(r.datasheet_bandwidth_bytes_per_s),
            "datasheet_citation": r.datasheet_citation or None,
        }
        for setup, r in setup_roofs(data).items()
    ]


def _fits_json(figures: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "figure": f.name,
            "setup": fit.setup,
            "batch_size": fit.batch_size,
            "x": fit.x_name,
            "y": fit.y_name,
            "models": list(fit.models),
            "slope": _clean(fit.line.slope),
            "intercept": _clean(fit.line.intercept),
            "r2": _clean(fit.line.r2),
            "n": fit.line.n,
        }
        for f in figures
        for fit in f.fits
    ]


def report_json(data: ReportData, figures: Sequence[Any], files: dict[str, list[str]]) -> str:
    """``report.json``: the inputs, the verdicts, the figures drawn and left out, each
    setup's roofs and every fitted line."""
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
            {k: _clean(to_plain(r[k])) for k in WRONG_OUTPUT_COLUMNS}
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
        "roofs": _roofs_json(data),
        "fits": _fits_json(figures),
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"

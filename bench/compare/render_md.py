"""A comparison as markdown: what was compared and how, the noise seen, then one table row
per (cell, metric), worst first. Every name is escaped (bench.escape.markdown_text)."""

from __future__ import annotations

import math

from bench.compare.environment import refused_differences
from bench.compare.results import CellResult, Comparison
from bench.compare.settings import Metric
from bench.compare.text import cell_name, fmt_ratio, fmt_value, summary_line
from bench.escape import markdown_text

TABLE_HEADER = [
    "| verdict | metric | model | batch | device | dtype | px | threads | baseline "
    "| candidate | ratio | interval | repeats (b/c) | evidence |",
    "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---|",
]


def to_markdown(c: Comparison) -> str:
    lines = [*_header(c), *_notes(c), *TABLE_HEADER]
    lines += [_table_row(r, c.settings.metric(r.metric)) for r in c.results]
    for title, keys in (
        ("Only in the baseline (not measured by the candidate)", c.only_baseline),
        ("Only in the candidate (new cells, nothing to compare with)", c.only_candidate),
    ):
        if keys:
            lines += ["", f"**{title}:** " + "; ".join(markdown_text(cell_name(k)) for k in keys)]
    return "\n".join(lines) + "\n"


def _header(c: Comparison) -> list[str]:
    """The summary line and one paragraph on what the ratio and its interval are."""
    s = c.settings
    how = (
        "Ratio = candidate / baseline: the Hodges–Lehmann estimate (median of the ratios "
        "of every candidate repeat to every baseline repeat) with its Mann–Whitney "
        "interval (`--test rank`); the baseline and candidate columns are geometric "
        "means"
        if s.test == "rank"
        else "Ratio = candidate / baseline (geometric means of per-repeat values, Welch "
        "interval on their logs)"
    )
    families = "; ".join(
        f"{f.metric} {f.tests} tests, {f.discoveries} discoveries, {f.confidence:.3%}"
        for f in c.families
    )
    return [
        f"### effbench compare: {summary_line(c)}",
        "",
        f"Baseline {markdown_text(c.baseline)} vs candidate {markdown_text(c.candidate)}; "
        f"metrics: {', '.join(c.metrics)}. "
        + how
        + f"; latency per repeat: the {s.latency_statistic} of its iterations. "
        f"Threshold ±{s.threshold.fraction:.1%}{_counted_threshold(c)}; "
        f"Benjamini–Hochberg at α = {s.alpha} per "
        "metric, intervals at the matching false-coverage level: " + families + ".",
        "",
    ]


def _counted_threshold(c: Comparison) -> str:
    """The threshold of counted metrics, where one was compared (they have their own)."""
    counted = [m for m in c.metrics if c.settings.metric(m).counted]
    if not counted:
        return ""
    return (
        f" (counted {', '.join(counted)}: ±{c.settings.count_threshold.fraction:.2%}, "
        "`--count-threshold`, each cell exact up to the counting noise)"
    )


def _notes(c: Comparison) -> list[str]:
    """Paragraphs on drift, run-to-run spread and environment differences, where present."""
    s = c.settings
    lines = []
    noise = [
        f"{m} ±{c.spread(m):.1%} (a {2 * s.threshold.fraction:.0%} change needs about "
        f"{c.repeats_for(m)} repeats per side to be flagged 19 times in 20)"
        for m in c.metrics
        if c.spread(m) is not None
    ]
    if c.interleaved is False:
        lines += [
            "The two sides were measured at different times, not interleaved: the machine's "
            "drift between them is not in the repeats' spread, so every interval is widened "
            f"by a ±{math.expm1(s.drift_floor):.0%} drift allowance (`--drift-floor`; "
            "interleave the two with `effbench run --variant` to need none).",
            "",
        ]
    if noise:
        lines += [
            (
                "Run-to-run spread (the sd of log per-repeat values that would give the rank "
                "intervals' width, median over cells): "
                if s.test == "rank"
                else "Run-to-run spread (sd of log per-repeat values, median over cells): "
            )
            + "; ".join(noise)
            + ".",
            "",
        ]
    if c.env_differences:
        lines.append(
            (
                "**Environments differ** (compared anyway): "
                if refused_differences(c)
                else "**The two sides ran different code or environments** (compared): "
            )
            + "; ".join(
                f"{d.what}: {markdown_text(d.baseline)} vs {markdown_text(d.candidate)}"
                for d in c.env_differences
            )
        )
        lines.append("")
    return lines


def _table_row(r: CellResult, m: Metric) -> str:
    k = {col: markdown_text(v) for col, v in r.cell.items()}
    verdict = f"**{r.verdict}**" if r.verdict == "regression" else r.shown_verdict
    interval = "-" if r.ci_low is None else f"[{fmt_ratio(r.ci_low)}, {fmt_ratio(r.ci_high)}]"
    evidence = markdown_text(r.evidence + (f": {r.note}" if r.note else ""))
    return (
        f"| {verdict} | {r.metric} | {k['model']} | {k['batch_size']} | {k['device_name']} "
        f"| {k['dtype']} | {k['image_size']} | {k['threads']} "
        f"| {fmt_value(r.base_value, m)} | {fmt_value(r.cand_value, m)} "
        f"| {fmt_ratio(r.ratio)} | {interval} | {r.n_base}/{r.n_cand} | {evidence} |"
    )

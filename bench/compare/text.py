"""The words and numbers every output of a comparison shares: cell names, values with
units, ratios, the one-line summary."""

from __future__ import annotations

import re
from typing import Any

from bench.compare.results import Comparison
from bench.compare.settings import MATCH_KEY, VERDICTS, Metric


def fmt_value(value: float | None, metric: Metric) -> str:
    if value is None:
        return "-"
    if metric.name == "memory":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g} {metric.unit}".rstrip()


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


def plain(value: object) -> str:
    """``value`` on one line without control characters (also invalid in XML 1.0)."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(value))


def cell_name(key: tuple[Any, ...]) -> str:
    c = dict(zip(MATCH_KEY, key, strict=True))
    config = "" if c.get("config", "eager") == "eager" else f" {c['config']}"
    return plain(
        f"{c['model']} bs={c['batch_size']} {c['device_name']} {c['dtype']}{config} "
        f"{c['image_size']}px t{c['threads']}"
    )


def summary_line(c: Comparison) -> str:
    counts = ", ".join(f"{c.count(v)} {v}" for v in VERDICTS)
    contended = sum(r.evidence == "contended" for r in c.results)
    if contended:
        counts += f" ({contended} inconclusive because the host was contended)"
    return (
        f"{counts} ({len(c.results)} cell-metric comparisons; "
        f"{len(c.only_baseline)} baseline-only, {len(c.only_candidate)} candidate-only cells)"
    )

"""The regression gate: is a candidate run worse than a baseline run, cell by cell?

The unit of evidence is the *repeat*: one fresh worker process measuring one cell (a row).
Per matched cell and metric, each side contributes its per-repeat values (latency: the
row's ``latency_ms_median``; memory: ``peak_memory_bytes``; energy: ``energy_j``). The
estimate is the ratio of geometric means, candidate / baseline, with a Welch interval on
the log values. Per-iteration samples are *not* pooled as if independent: iterations in
one process share its memory layout, thread placement and clock state, so their spread
understates run-to-run variation. ``--test rank`` replaces the Welch interval by the
Hodges-Lehmann estimate (median of all pairwise ratios) and its Mann-Whitney interval:
distribution-free, and on a shared machine's skewed per-repeat values it needs several times
fewer repeats (docs/compare.md), but it needs 5+ repeats per side to reach alpha 0.01.

With one repeat on one side and several on the other, the single repeat is assumed to vary
as the others do (equal-variance t-test of one new value). With one repeat on each side
there is no run-to-run variation to estimate at all; latency then falls back to the
within-run samples (``latency_ms_samples``) and every metric gets a fixed noise floor of
±``SINGLE_RUN_FLOOR`` (log scale) added to its interval. The
output says so for each such cell. docs/compare.md shows the measurement behind the floor.

Two sides measured at different times (their rows' timestamps do not overlap, as with a
stored baseline) carry the machine's drift between those times, which no spread inside one
run shows: their intervals are widened by ``DRIFT_FLOOR``. Interleaved sides (`effbench run
--variant`) need no such allowance.

Multiple cells: the two-sided p-values of the cells of each metric (one family per metric)
are corrected with Benjamini–Hochberg at ``alpha``; every interval is then drawn at the
false-coverage-rate level ``1 - alpha * max(R, 1) / m`` (Benjamini & Yekutieli 2005), R
discoveries out of m tests, so an interval excludes 1 exactly when its cell is a BH
discovery.

Counted metrics (``instructions``, ``cycles``: `effbench run --count-instructions`) are
deterministic: per cell the estimate is the ratio of the two sides' values and its interval
that ratio ± ``COUNT_FLOOR`` (the counting noise), judged against their own threshold
(``--count-threshold``, ``COUNT_THRESHOLD``); no drift allowance, no contention check.

Verdicts, with threshold t and bounds [1/(1+t), 1+t]:
regression (interval above 1 and estimate above 1+t), improvement (interval below 1 and
estimate below 1/(1+t)), unchanged (interval inside the bounds), inconclusive (anything
else, never a silent pass).

The package, one job a module (the statistics themselves live in :mod:`bench.stats`):

- ``settings``: metrics, thresholds and the test asked for (:class:`Settings`);
- ``results``: the sides, per-cell results and the :class:`Comparison`;
- ``matching``: sides loaded from run folders, cells matched on ``MATCH_KEY``;
- ``environment``: environment differences and the refusal to compare across them;
- ``verdicts``: per-cell estimates, Benjamini-Hochberg per metric, verdicts;
- ``gate``: :func:`compare_sides` / :func:`compare_paths`, the above end to end;
- ``text``, ``render_md``, ``render_json``, ``render_junit``: the three outputs.

Pure: pandas and numpy only, no torch, no probes, no runner.
"""

from __future__ import annotations

import numpy as np

from bench.compare.environment import (
    ENV_KEYS,
    ROW_KEYS,
    EnvironmentMismatch,
    check_environments,
    environment_differences,
)
from bench.compare.gate import compare_paths, compare_sides
from bench.compare.matching import load_side, nothing_compared, overlap_in_time
from bench.compare.render_json import to_dict, to_json
from bench.compare.render_junit import to_junit
from bench.compare.render_md import to_markdown
from bench.compare.results import CellResult, Comparison, EnvDifference, Family, Side
from bench.compare.settings import (
    COUNT_FLOOR,
    COUNT_THRESHOLD,
    DRIFT_FLOOR,
    LATENCY_STATISTICS,
    MATCH_KEY,
    METRICS,
    SINGLE_RUN_FLOOR,
    TESTS,
    VERDICTS,
    Metric,
    Settings,
    Threshold,
    parse_metrics,
)
from bench.compare.text import summary_line
from bench.compare.verdicts import CellEstimate, verdict_of
from bench.errors import InvalidOption
from bench.stats.distributions import betainc, rank_sum_counts, t_ppf, t_sf
from bench.stats.inference import (
    EXACT_RANK_LIMIT,
    RankEstimate,
    bh_discoveries,
    pooled_log_sd,
    rank_estimate,
    repeats_needed,
)
from bench.status import FAILED

RENDERERS = {"md": to_markdown, "json": to_json, "junit": to_junit}


def render(c: Comparison, fmt: str) -> str:
    try:
        return RENDERERS[fmt](c)
    except KeyError:
        raise InvalidOption(f"unknown format {fmt!r}; choose {', '.join(RENDERERS)}") from None


def _rank(base: np.ndarray, cand: np.ndarray, floor: float) -> RankEstimate:
    """:func:`bench.stats.inference.rank_estimate` with this module's ``EXACT_RANK_LIMIT``,
    read at call time so that a test may lower it."""
    return rank_estimate(base, cand, floor, exact_limit=EXACT_RANK_LIMIT)


__all__ = [
    "COUNT_FLOOR",
    "COUNT_THRESHOLD",
    "DRIFT_FLOOR",
    "ENV_KEYS",
    "EXACT_RANK_LIMIT",
    "FAILED",
    "LATENCY_STATISTICS",
    "MATCH_KEY",
    "METRICS",
    "RENDERERS",
    "ROW_KEYS",
    "SINGLE_RUN_FLOOR",
    "TESTS",
    "VERDICTS",
    "CellEstimate",
    "CellResult",
    "Comparison",
    "EnvDifference",
    "EnvironmentMismatch",
    "Family",
    "Metric",
    "Settings",
    "Side",
    "Threshold",
    "betainc",
    "bh_discoveries",
    "check_environments",
    "compare_paths",
    "compare_sides",
    "environment_differences",
    "load_side",
    "nothing_compared",
    "overlap_in_time",
    "parse_metrics",
    "pooled_log_sd",
    "rank_sum_counts",
    "render",
    "repeats_needed",
    "summary_line",
    "t_ppf",
    "t_sf",
    "to_dict",
    "to_json",
    "to_junit",
    "to_markdown",
    "verdict_of",
]

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

Verdicts, with threshold t and bounds [1/(1+t), 1+t]:
regression (interval above 1 and estimate above 1+t), improvement (interval below 1 and
estimate below 1/(1+t)), unchanged (interval inside the bounds), inconclusive (anything
else, never a silent pass). Pure: pandas and numpy only, no torch.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, InvalidOption, NothingCompared, ResultsCorrupt
from bench.escape import markdown_text
from bench.keys import CellKey
from bench.store import discover, load_discovered

MATCH_KEY = CellKey.MATCH_COLUMNS  # what a cell is matched on across the two sides
VERDICTS = ("regression", "inconclusive", "improvement", "unchanged")  # most severe first
# Run-to-run noise a single repeat cannot see (log scale: a factor of 2), used when each side
# has one repeat. docs/compare.md: on the shared 2-core CI machine, single repeats of the same
# cell differed by more than 50% in 6-8% of pairs (so a ±50% floor gave 2-6% false
# regressions), by more than 100% in well under 1%. Quiet runners may lower it with
# --single-run-floor after measuring their own A/A spread.
SINGLE_RUN_FLOOR = math.log(2.0)
# Drift a baseline measured at another time carries (log scale, ±20%), used when the two sides
# do not overlap in time. docs/compare.md: on the shared CI machine two runs of 10 repeats
# each, minutes apart, differed by a median of 9% per cell (95th percentile 33%), and without
# this allowance 7-9% of A/A cells were false regressions. Interleaved A/B runs
# (`effbench run --variant`) need none; steady runners may lower it with --drift-floor.
DRIFT_FLOOR = math.log(1.20)
FAILED = ("oom", "crashed", "timeout", "error")


class EnvironmentMismatch(BenchError):
    """Baseline and candidate were measured in environments that change the numbers."""


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    column: str
    unit: str
    samples_column: str | None = None


# The per-repeat value of the latency metric: the median of the repeat's timed iterations
# (default), or their 10th percentile, which ignores interference that slows only part of a
# repeat's iterations; docs/compare.md measures both on a shared machine.
LATENCY_STATISTICS = {"median": "latency_ms_median", "p10": "latency_ms_p10"}

# How the per-repeat values of two sides are compared when both have 2+ repeats:
# welch: ratio of geometric means, Welch's t interval on the logs (the default; works from 2
#        repeats per side);
# rank:  Hodges-Lehmann estimate (median of all candidate/baseline ratios of repeats) with the
#        Mann-Whitney interval, exact up to EXACT_RANK_LIMIT pairs. Distribution-free: on a
#        shared machine, whose per-repeat values are skewed (most repeats fast, some much
#        slower), it needs far fewer repeats (docs/compare.md), but it cannot reach alpha
#        0.01 below 5 repeats per side.
TESTS = {
    "welch": "ratio of geometric means, Welch interval on log values",
    "rank": "Hodges-Lehmann ratio, Mann-Whitney interval",
}
EXACT_RANK_LIMIT = 2500  # n_base * n_cand up to which the rank test's null is exact

METRICS: dict[str, Metric] = {
    "latency": Metric("latency", "latency_ms_median", "ms", "latency_ms_samples"),
    "memory": Metric("memory", "peak_memory_bytes", "bytes"),
    "energy": Metric("energy", "energy_j", "J"),
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """A relative change, parsed once from '5%' or '0.05'."""

    fraction: float

    @classmethod
    def parse(cls, text: str, upper: float = 1.0, allow_zero: bool = False) -> Threshold:
        """``text`` as a fraction in (0, ``upper``) ([0, ``upper``) with ``allow_zero``);
        '5%' and '0.05' are the same."""
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*", text)
        if not m:
            raise InvalidOption(f"cannot read threshold {text!r}; write it like 5% or 0.05")
        value = float(m.group(1)) / (100 if m.group(2) else 1)
        smallest_ok = value >= 0 if allow_zero else value > 0
        if not smallest_ok or value >= upper:
            raise InvalidOption(f"threshold {text!r} must lie between 0% and {upper:.0%}, e.g. 5%")
        return cls(value)

    @property
    def log_bound(self) -> float:
        return math.log1p(self.fraction)


@dataclass(frozen=True, slots=True)
class Settings:
    metrics: tuple[str, ...] | None = None  # None: every metric with data on both sides
    threshold: Threshold = field(default_factory=lambda: Threshold(0.05))
    alpha: float = 0.01
    single_run_floor: float = SINGLE_RUN_FLOOR
    drift_floor: float = DRIFT_FLOOR  # log scale; only for sides measured at different times
    trim: float = 0.0  # > 0: Yuen's trimmed test across repeats (see _welch)
    latency_statistic: str = "median"  # a key of LATENCY_STATISTICS
    test: str = "welch"  # a key of TESTS: how repeats are compared

    def metric(self, name: str) -> Metric:
        """The metric ``name`` as these settings read it (latency: which per-repeat value)."""
        m = METRICS[name]
        if name == "latency":
            return Metric(m.name, LATENCY_STATISTICS[self.latency_statistic], m.unit,
                          m.samples_column)  # fmt: skip
        return m

    def validate(self) -> None:
        if self.latency_statistic not in LATENCY_STATISTICS:
            raise InvalidOption(
                f"unknown latency statistic {self.latency_statistic!r}; choose from "
                f"{', '.join(LATENCY_STATISTICS)}"
            )
        if self.test not in TESTS:
            raise InvalidOption(f"unknown test {self.test!r}; choose from {', '.join(TESTS)}")
        if not 0 <= self.trim < 0.5:
            raise InvalidOption(f"trim {self.trim} must lie in [0, 0.5)")
        if self.trim and self.test != "welch":
            raise InvalidOption("trimming (Yuen's test) applies to the welch test only")
        if not 0 < self.alpha < 1:
            raise InvalidOption(f"--alpha {self.alpha} must lie between 0 and 1, e.g. 0.01")
        for m in self.metrics or ():
            if m not in METRICS:
                raise InvalidOption(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison: its rows and the environment records of its runs."""

    label: str
    rows: pd.DataFrame
    environments: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class CellResult:
    key: tuple[Any, ...]
    metric: str
    verdict: str
    evidence: str  # "repeats", "samples", "single values" or "failed"
    n_base: int
    n_cand: int
    base_value: float | None = None  # geometric mean of the per-repeat values
    cand_value: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    note: str = ""
    spread: float | None = None  # run-to-run sd of the log per-repeat values (both sides)

    @property
    def cell(self) -> dict[str, Any]:
        return dict(zip(MATCH_KEY, self.key, strict=True))


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: str
    candidate: str
    settings: Settings
    metrics: tuple[str, ...]
    results: tuple[CellResult, ...]
    only_baseline: tuple[tuple[Any, ...], ...]
    only_candidate: tuple[tuple[Any, ...], ...]
    env_differences: tuple[tuple[str, str, str], ...]
    # per metric: (tests m, BH discoveries R, confidence level of its intervals)
    families: tuple[tuple[str, int, int, float], ...] = ()
    # whether the two sides' measurements overlap in time (None: no readable timestamps)
    interleaved: bool | None = None

    @property
    def tests(self) -> int:
        return sum(f[1] for f in self.families)

    @property
    def discoveries(self) -> int:
        return sum(f[2] for f in self.families)

    @property
    def confidence(self) -> float:
        return min((f[3] for f in self.families), default=1.0)

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.results)

    def spread(self, metric: str) -> float | None:
        """The median run-to-run spread of ``metric`` over cells compared on repeats."""
        values = [r.spread for r in self.results if r.metric == metric and r.spread is not None]
        return float(np.median(values)) if values else None

    def repeats_for(self, metric: str) -> int | None:
        """Repeats per side that would flag a change of twice the threshold with ~95%
        probability at the median spread of ``metric`` (see :func:`repeats_needed`)."""
        spread = self.spread(metric)
        if spread is None:
            return None
        t = self.settings.threshold.fraction
        return repeats_needed(spread, 2 * t, t, self.settings.alpha)

    def exit_code(self, fail_on_inconclusive: bool = False) -> int:
        """0 nothing regressed; 1 a regression; 2 inconclusive (or a baseline cell missing
        from the candidate) when ``fail_on_inconclusive``."""
        if self.count("regression"):
            return 1
        if fail_on_inconclusive and (self.count("inconclusive") or self.only_baseline):
            return 2
        return 0


# --------------------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile (0.5 <= q < 1) of Student's t, by bisection on ``t_sf``."""
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > 1.0 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def bh_discoveries(p_values: Sequence[float], alpha: float) -> int:
    """Benjamini–Hochberg: the number R of hypotheses rejected at false discovery rate
    ``alpha`` (the R smallest p-values)."""
    p = np.sort(np.asarray(p_values, dtype=float))
    m = len(p)
    if not m:
        return 0
    below = np.nonzero(p <= alpha * np.arange(1, m + 1) / m)[0]
    return int(below[-1] + 1) if len(below) else 0


def pooled_log_sd(base: np.ndarray, cand: np.ndarray) -> float:
    """Run-to-run spread: the pooled standard deviation of the log per-repeat values of both
    sides (each side about its own mean); 0.1 is about ±10% from one repeat to the next."""
    lb, lc = np.log(base), np.log(cand)
    ss = float(((lb - lb.mean()) ** 2).sum() + ((lc - lc.mean()) ** 2).sum())
    return math.sqrt(ss / (len(lb) + len(lc) - 2))


def repeats_needed(spread: float, change: float, threshold: float, alpha: float) -> int:
    """Repeats per side from which a real relative ``change`` (e.g. 0.10) is called a
    regression with about 95% probability, at run-to-run ``spread`` (sd of log values).

    Normal approximation, one cell: the estimate must clear both the interval's half-width
    (z at ``1 - alpha/2``) and the threshold, 1.645 standard errors below the true change;
    the standard error of the log ratio is ``spread * sqrt(2 / n)``. With many cells the
    Benjamini–Hochberg level lies between ``alpha / cells`` and ``alpha``, so this is the
    least that will do.
    """
    delta, bound = math.log1p(change), math.log1p(threshold)
    if delta <= bound:
        raise InvalidOption(f"a change of {change:.1%} cannot exceed the {threshold:.1%} threshold")
    z_a, z_b = _normal_ppf(1 - alpha / 2), _normal_ppf(0.95)
    se = min(delta / (z_a + z_b), (delta - bound) / z_b)
    return max(2, math.ceil(2 * spread * spread / (se * se)))


@dataclass(frozen=True, slots=True)
class _Estimate:
    d: float  # mean log candidate - mean log baseline
    se: float
    df: float
    floor: float

    def p_value(self) -> float:
        return _p_value(self)

    def interval(self, alpha: float) -> tuple[float, float]:
        """The 1 - alpha interval of the log ratio, widened by ``floor``."""
        half = _half_width(self, alpha)
        return self.d - half, self.d + half


def _cut(n: int, trim: float) -> int:
    return math.floor(trim * n) if n >= 3 else 0


def _trimmed_log_mean(values: np.ndarray, trim: float) -> float:
    x = np.sort(np.log(values))
    g = _cut(len(x), trim)
    return float(x[g : len(x) - g].mean())


def _welch(base: np.ndarray, cand: np.ndarray, floor: float, trim: float = 0.0) -> _Estimate:
    """Welch's difference of means of log values; a side with one value has no variance.

    With ``trim > 0`` this is Yuen's test: ``floor(trim * n)`` values are cut from each end
    of each side, means are trimmed means and variances winsorized (Yuen 1974); with
    nothing to cut it is exactly Welch's test.
    """
    parts = []  # (mean, variance of the mean, degrees of freedom of that variance)
    for x in (np.sort(np.log(base)), np.sort(np.log(cand))):
        n = len(x)
        g = _cut(n, trim)
        h = n - 2 * g
        mean = float(x[g : n - g].mean())
        if n < 2:
            parts.append((mean, 0.0, 0))
            continue
        w = np.clip(x, x[g], x[n - 1 - g])
        v = float(np.var(w, ddof=1)) * (n - 1) / (h * (h - 1))
        parts.append((mean, v, h - 1))
    (mb, vb, fb), (mc, vc, fc) = parts
    var = vb + vc
    denom = sum(v * v / f for v, f in ((vb, fb), (vc, fc)) if f > 0 and v > 0)
    df = var * var / denom if denom > 0 else math.inf
    return _Estimate(mc - mb, math.sqrt(var), df, floor)


def _borrowed(base: np.ndarray, cand: np.ndarray, floor: float = 0.0) -> _Estimate:
    """One side has a single repeat, the other several: assume the single repeat varies as
    the others do (the equal-variance t-test of one new value against a sample)."""
    lb, lc = np.log(base), np.log(cand)
    many = lb if len(lb) > 1 else lc
    s2 = float(np.var(many, ddof=1))
    se = math.sqrt(s2 * (1.0 / len(lb) + 1.0 / len(lc)))
    return _Estimate(float(lc.mean() - lb.mean()), se, float(len(many) - 1), floor)


def _p_value(e: _Estimate) -> float:
    """Two-sided p-value of 'the log ratio lies within ±floor'."""
    excess = abs(e.d) - e.floor
    if excess <= 0:
        return 1.0
    if e.se == 0:
        return 0.0
    z = excess / e.se
    if math.isinf(e.df):
        return math.erfc(z / math.sqrt(2.0))
    return min(1.0, 2.0 * t_sf(z, e.df))


def _half_width(e: _Estimate, alpha: float) -> float:
    if e.se == 0:
        return e.floor
    q = 1.0 - alpha / 2.0
    t = _normal_ppf(q) if math.isinf(e.df) else t_ppf(q, e.df)
    return t * e.se + e.floor


def _normal_ppf(q: float) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > 1.0 - q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=64)
def rank_sum_counts(n: int, m: int) -> tuple[int, ...]:
    """Exact null distribution of the Mann-Whitney statistic U for samples of ``n`` and
    ``m`` without ties: entry u is the number of the C(n+m, n) orderings with U = u.

    These are the coefficients of the Gaussian binomial [n+m choose n]_q, built as the
    product over i = 1..n of (1 - q^(m+i)) / (1 - q^i), every intermediate a polynomial.
    """
    size = n * m + 1
    c = [0] * size
    c[0] = 1
    for i in range(1, n + 1):
        step = m + i
        for k in range(size - 1, step - 1, -1):  # multiply by (1 - q^(m+i))
            c[k] -= c[k - step]
        for k in range(i, size):  # divide by (1 - q^i)
            c[k] += c[k - i]
    return tuple(c)


@dataclass(frozen=True, slots=True)
class _RankEstimate:
    """Hodges-Lehmann shift of the log values and its Mann-Whitney (Moses) interval.

    ``diffs`` are the sorted n*m pairwise differences log(candidate) - log(baseline); U at
    shift s counts the differences above s (ties a half). The interval at level 1 - alpha
    cuts ``c - 1`` differences from each end, c the largest with P(U <= c - 1) <= alpha/2,
    so it excludes s exactly when the test of shift s rejects at alpha. ``floor`` widens
    the interval on both sides and moves the null to ±floor, as for Welch.
    """

    diffs: np.ndarray
    n: int
    m: int
    floor: float
    exact: bool  # no ties and n*m <= EXACT_RANK_LIMIT: exact null, else normal with ties
    tie_term: float = 0.0  # the ties' reduction of Var(U): n m sum(t^3 - t) / (12 N (N-1))

    @property
    def d(self) -> float:
        return float(np.median(self.diffs))

    def _u(self, shift: float) -> float:
        above = len(self.diffs) - np.searchsorted(self.diffs, shift, side="right")
        ties = np.searchsorted(self.diffs, shift, side="right") - np.searchsorted(
            self.diffs, shift, side="left"
        )
        return float(above) + 0.5 * float(ties)

    def _sd(self) -> float:
        n, m = self.n, self.m
        return math.sqrt(n * m * (n + m + 1) / 12.0 - self.tie_term)

    def p_value(self) -> float:
        """Two-sided p-value of 'the log ratio lies within ±floor'."""
        d = self.d
        if abs(d) <= self.floor:
            return 1.0
        u = self._u(math.copysign(self.floor, d))
        nm = self.n * self.m
        if self.exact:
            counts = rank_sum_counts(self.n, self.m)
            tail = min(round(u), nm - round(u))
            return min(1.0, 2.0 * sum(counts[: tail + 1]) / math.comb(self.n + self.m, self.n))
        sd = self._sd()
        if sd == 0:
            return 1.0
        excess = max(abs(u - nm / 2.0) - 0.5, 0.0)  # continuity correction
        return min(1.0, math.erfc(excess / sd / math.sqrt(2.0)))

    def interval(self, alpha: float) -> tuple[float, float]:
        """The 1 - alpha interval of the log ratio, widened by ``floor``; infinite when no
        ordering of this few repeats is rare enough for ``alpha``."""
        nm = self.n * self.m
        if self.exact:
            counts = rank_sum_counts(self.n, self.m)
            total = math.comb(self.n + self.m, self.n)
            c, below = 0, 0
            while c < nm and 2 * (below + counts[c]) <= alpha * total:
                below += counts[c]
                c += 1
        else:
            # U beyond nm/2 + 0.5 + z sd rejects (continuity-corrected, as p_value)
            c = math.floor(nm / 2.0 - 0.5 - _normal_ppf(1.0 - alpha / 2.0) * self._sd()) + 1
        if c < 1:
            return -math.inf, math.inf
        c = min(c, (nm + 1) // 2)
        return float(self.diffs[c - 1]) - self.floor, float(self.diffs[nm - c]) + self.floor


def _rank(base: np.ndarray, cand: np.ndarray, floor: float) -> _RankEstimate:
    lb, lc = np.log(base), np.log(cand)
    diffs = np.sort((lc[None, :] - lb[:, None]).ravel())
    pooled = np.concatenate([lb, lc])
    _, counts = np.unique(pooled, return_counts=True)
    ties = float(((counts.astype(float) ** 3) - counts).sum())
    n, m = len(lb), len(lc)
    big = n + m
    exact = ties == 0 and n * m <= EXACT_RANK_LIMIT
    return _RankEstimate(diffs, n, m, floor, exact, n * m * ties / (12.0 * big * (big - 1)))


def _rank_spread(est: _RankEstimate) -> float | None:
    """The run-to-run spread (sd of log values) for which Welch would draw the rank test's
    95% interval: its half-width / 1.96 * sqrt(n m / (n + m)). None when it is infinite."""
    lo, hi = replace(est, floor=0.0).interval(0.05)
    if not math.isfinite(hi - lo):
        return None
    return (hi - lo) / (2 * 1.959964) * math.sqrt(est.n * est.m / (est.n + est.m))


def verdict_of(d: float, lo: float, hi: float, log_bound: float) -> str:
    """Read the verdict off a log-ratio estimate ``d`` and its interval [lo, hi]."""
    if lo > 0 and d > log_bound:
        return "regression"
    if hi < 0 and d < -log_bound:
        return "improvement"
    if lo >= -log_bound and hi <= log_bound:
        return "unchanged"
    return "inconclusive"


# --------------------------------------------------------------------------- comparing


def _key(row: Any) -> tuple[Any, ...]:
    return tuple(int(v) if isinstance(v, (np.integer,)) else v for v in row)


def _values(rows: pd.DataFrame, column: str) -> np.ndarray:
    v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v) & (v > 0)]


def _samples(rows: pd.DataFrame, column: str) -> np.ndarray:
    chunks = [np.asarray(s, dtype=float) for s in rows[column] if s is not None and len(s)]
    if not chunks:
        return np.empty(0)
    v = np.concatenate(chunks)
    return v[np.isfinite(v) & (v > 0)]


def _has_data(rows: pd.DataFrame, metric: Metric) -> bool:
    ok = rows[rows["status"] == "ok"]
    return len(_values(ok, metric.column)) > 0


def _lacks(rows: pd.DataFrame, metric: Metric) -> bool:
    """Rows ran (some are ok) yet none measured ``metric``: it is not measured here at all.
    A side whose every row failed does not lack it; its cells are reported as failed."""
    return bool((rows["status"] == "ok").any()) and not _has_data(rows, metric)


def compare_sides(base: Side, cand: Side, settings: Settings) -> Comparison:
    """Compare every matched cell of ``cand`` with ``base``; see the module docstring."""
    settings.validate()
    for side in (base, cand):
        if side.rows.empty:
            raise ResultsCorrupt(f"{side.label} holds no result rows; run `effbench run` first")
    if settings.metrics:
        metrics = tuple(dict.fromkeys(settings.metrics))
        for name in metrics:
            for side in (base, cand):
                if _lacks(side.rows, settings.metric(name)):
                    raise InvalidOption(
                        f"metric {name!r} has no data in {side.label} (column "
                        f"{settings.metric(name).column} is empty in every ok row); "
                        f"drop --metric {name}"
                    )
    else:
        metrics = tuple(
            n
            for n in METRICS
            if _has_data(base.rows, settings.metric(n))
            and not _lacks(cand.rows, settings.metric(n))
        )
        if not metrics:
            raise InvalidOption(
                f"no metric has data in both {base.label} and {cand.label} "
                "(no ok rows with latency, memory or energy); check both runs finished"
            )

    groups = {
        label: {_key(k): g for k, g in side.rows.groupby(list(MATCH_KEY), dropna=False)}
        for label, side in (("base", base), ("cand", cand))
    }
    keys_b, keys_c = groups["base"], groups["cand"]
    interleaved = overlap_in_time(base, cand)
    drift = settings.drift_floor if interleaved is False else 0.0
    matched = sorted((k for k in keys_b if k in keys_c), key=str)
    only_b = tuple(sorted((k for k in keys_b if k not in keys_c), key=str))
    only_c = tuple(sorted((k for k in keys_c if k not in keys_b), key=str))
    if not matched:
        raise NothingCompared(nothing_compared(base, cand, only_b, only_c))

    pending: list[
        tuple[
            tuple[Any, ...],
            str,
            _Estimate | _RankEstimate,
            str,
            int,
            int,
            float,
            float,
            float | None,
        ]
    ] = []
    fixed: list[CellResult] = []
    for key in matched:
        gb, gc = keys_b[key], keys_c[key]
        okb, okc = gb[gb["status"] == "ok"], gc[gc["status"] == "ok"]
        for name in metrics:
            metric = settings.metric(name)
            vb, vc = _values(okb, metric.column), _values(okc, metric.column)
            if len(vc) == 0 and len(vb) > 0 and gc["status"].isin(FAILED).any():
                status = ", ".join(sorted(set(gc["status"]) - {"ok", "skipped"}))
                fixed.append(
                    CellResult(
                        key,
                        name,
                        "regression",
                        "failed",
                        len(vb),
                        0,
                        note=f"candidate failed ({status}); baseline ran",
                    )
                )
                continue
            if len(vb) == 0 and len(vc) == 0 and gb["status"].isin(FAILED).any():
                status = ", ".join(sorted(set(gc["status"]) | set(gb["status"])))
                verdict = "unchanged" if set(gb["status"]) == set(gc["status"]) else "inconclusive"
                fixed.append(
                    CellResult(
                        key,
                        name,
                        verdict,
                        "failed",
                        0,
                        0,
                        note=f"failed on both sides ({status})",
                    )
                )
                continue
            if len(vb) == 0 or len(vc) == 0:
                statuses = (
                    f"baseline {sorted(set(gb['status']))}, candidate {sorted(set(gc['status']))}"
                )
                fixed.append(
                    CellResult(
                        key,
                        name,
                        "inconclusive",
                        "no data",
                        len(vb),
                        len(vc),
                        note=f"no {metric.column} on one side ({statuses})",
                    )
                )
                continue
            gmean_b, gmean_c = float(np.exp(np.log(vb).mean())), float(np.exp(np.log(vc).mean()))
            spread = None
            est: _Estimate | _RankEstimate
            if len(vb) >= 2 and len(vc) >= 2 and settings.test == "rank":
                est, evidence = _rank(vb, vc, drift), "repeats"
                spread = _rank_spread(est)
            elif len(vb) >= 2 and len(vc) >= 2:
                spread = pooled_log_sd(vb, vc)
                est, evidence = _welch(vb, vc, drift, settings.trim), "repeats"
                gmean_b = math.exp(_trimmed_log_mean(vb, settings.trim))
                gmean_c = math.exp(_trimmed_log_mean(vc, settings.trim))
            elif max(len(vb), len(vc)) >= 2:
                est, evidence = _borrowed(vb, vc, drift), "borrowed spread"
            else:
                sb = _samples(okb, metric.samples_column) if metric.samples_column else None
                sc = _samples(okc, metric.samples_column) if metric.samples_column else None
                floor = max(settings.single_run_floor, drift)
                if sb is not None and sc is not None and len(sb) > 1 and len(sc) > 1:
                    est, evidence = _welch(sb, sc, floor), "samples"
                    # the estimate stays the ratio of the per-repeat medians
                    est = _Estimate(math.log(gmean_c / gmean_b), est.se, est.df, floor)
                else:
                    est, evidence = _welch(vb, vc, floor), "single values"
            pending.append((key, name, est, evidence, len(vb), len(vc), gmean_b, gmean_c, spread))

    # one family per metric: trivially significant memory changes must not loosen the
    # latency intervals
    p_values = [p[2].p_value() for p in pending]
    families = []
    levels: dict[str, float] = {}
    for name in metrics:
        ps = [p for p, item in zip(p_values, pending, strict=True) if item[1] == name]
        r = bh_discoveries(ps, settings.alpha)
        levels[name] = settings.alpha * max(r, 1) / max(len(ps), 1)
        families.append((name, len(ps), r, 1.0 - levels[name]))
    bound = settings.threshold.log_bound
    results = list(fixed)
    for (key, name, est, evidence, nb, nc, gb_, gc_, spread), p in zip(
        pending, p_values, strict=True
    ):
        lo, hi = est.interval(levels[name])
        note = ""
        if not math.isfinite(hi - lo):
            note = (
                f"too few repeats for the rank test to reach the {1 - levels[name]:.2%} level; "
                "add repeats or use --test welch"
            )
        if evidence == "borrowed spread":
            note = "one side has a single repeat; its run-to-run spread is taken from the other"
        if evidence in ("repeats", "borrowed spread") and est.floor > 0:
            note = "; ".join(
                n for n in (note, f"±{math.expm1(est.floor):.0%} drift allowance") if n
            )
        elif evidence not in ("repeats", "borrowed spread"):
            floor = f"±{math.expm1(est.floor):.0%} noise floor"
            how = (
                f"interval from within-run samples, widened by a {floor}"
                if evidence == "samples"
                else f"no variance to estimate, interval is the ratio ± a {floor}"
            )
            note = f"a single repeat on each side: {how}; use --repeats 5 or more"
        results.append(
            CellResult(
                key,
                name,
                verdict_of(est.d, lo, hi, bound),
                evidence,
                nb,
                nc,
                gb_,
                gc_,
                math.exp(est.d),
                math.exp(lo) if math.isfinite(lo) else None,
                math.exp(hi) if math.isfinite(hi) else None,
                p,
                note,
                spread,
            )
        )
    results.sort(key=_severity)
    return Comparison(
        base.label, cand.label, settings, metrics, tuple(results), only_b, only_c,
        environment_differences(base, cand), tuple(families), interleaved,
    )  # fmt: skip


def nothing_compared(
    base: Side, cand: Side, only_b: Sequence[tuple[Any, ...]], only_c: Sequence[tuple[Any, ...]]
) -> str:
    """The one-line error when the two sides share no cell: what each side has, and which
    key columns keep them apart."""
    apart = []
    for i, col in enumerate(MATCH_KEY):
        vb, vc = {str(k[i]) for k in only_b}, {str(k[i]) for k in only_c}
        if not vb & vc:
            apart.append(f"{col} ({_few(sorted(vb))} vs {_few(sorted(vc))})")
    why = (
        "they differ in " + "; ".join(apart)
        if apart
        else "each key value occurs on both sides, but no combination of them does"
    )
    return (
        f"nothing was compared: {_plain(base.label)} and {_plain(cand.label)} share no cell "
        f"(cells match on {', '.join(MATCH_KEY)}); {why}. The baseline has "
        f"{_few([_cell_name(k) for k in only_b])}; the candidate has "
        f"{_few([_cell_name(k) for k in only_c])}. Compare runs of the same sweep on the same "
        "kind of device"
    )


def _few(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _time_span(side: Side) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    if "timestamp" not in side.rows:
        return None
    t = pd.to_datetime(side.rows["timestamp"], errors="coerce", utc=True, format="ISO8601").dropna()
    return (t.min(), t.max()) if len(t) else None


def overlap_in_time(base: Side, cand: Side) -> bool | None:
    """Whether the two sides were measured over overlapping spans of time (interleaved, as
    `effbench run --variant` does); ``None`` when a side has no readable timestamps."""
    sb, sc = _time_span(base), _time_span(cand)
    if sb is None or sc is None:
        return None
    return bool(sb[0] <= sc[1] and sc[0] <= sb[1])


def _severity(r: CellResult) -> tuple[Any, ...]:
    rank = VERDICTS.index(r.verdict)
    ratio = r.ratio if r.ratio is not None else math.inf
    # regressions and inconclusive cells worst first; improvements best first
    return (rank, -ratio if rank < 2 else ratio, str(r.key), r.metric)


# --------------------------------------------------------------------------- environments

# What changes the numbers: refuse to compare when these differ.
ENV_KEYS = ("torch_version", "cuda_version", "cudnn_version")
ROW_KEYS = ("device_name", "dtype", "torch_version", "tf32")


def _side_env(side: Side) -> dict[str, str]:
    out: dict[str, set[str]] = {}
    for env in side.environments:
        for k in ENV_KEYS:
            out.setdefault(k, set()).add(str(env.get(k)))
    ok = side.rows[side.rows["status"] == "ok"]
    for k in ROW_KEYS:
        vals = {str(v) for v in ok[k] if v is not None and not pd.isna(v)}
        if vals:
            out.setdefault(k, set()).update(vals)
    return {k: ", ".join(sorted(v)) for k, v in out.items()}


def environment_differences(base: Side, cand: Side) -> tuple[tuple[str, str, str], ...]:
    """(what, baseline value, candidate value) for each thing that matters and differs."""
    eb, ec = _side_env(base), _side_env(cand)
    return tuple(
        (k, eb[k], ec[k]) for k in dict.fromkeys([*ENV_KEYS, *ROW_KEYS]) if k in eb and k in ec
        and eb[k] != ec[k]
    )  # fmt: skip


def check_environments(comparison: Comparison) -> None:
    if comparison.env_differences:
        diffs = "; ".join(f"{k}: {b} vs {c}" for k, b, c in comparison.env_differences)
        raise EnvironmentMismatch(
            f"baseline and candidate environments differ ({diffs}); their numbers are not "
            "comparable. Re-measure the baseline here, or pass --allow-env-mismatch"
        )


def load_side(path: str | Path) -> Side:
    """Rows and run environments of a run folder, a folder of runs or a part file (found
    by :func:`bench.store.discover`, as every loader finds them)."""
    p = Path(path)
    found = discover([p])
    rows = load_discovered(found).rows
    if rows.empty:
        raise ResultsCorrupt(f"{p} holds no result rows; run `effbench run` first")
    envs = tuple(
        env for r in found.runs if isinstance(env := r.manifest.get("environment", {}), Mapping)
    )
    return Side(str(p), rows, envs)


def compare_paths(
    baseline: str | Path,
    candidate: str | Path,
    settings: Settings,
    allow_env_mismatch: bool = False,
) -> Comparison:
    comparison = compare_sides(load_side(baseline), load_side(candidate), settings)
    if not allow_env_mismatch:
        check_environments(comparison)
    return comparison


# --------------------------------------------------------------------------- outputs


def _fmt_value(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "memory":
        return f"{value / 2**20:.1f} MiB"
    unit = METRICS[metric].unit
    return f"{value:.4g} {unit}"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


def _plain(value: object) -> str:
    """``value`` on one line without control characters (also invalid in XML 1.0)."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(value))


def _cell_name(key: tuple[Any, ...]) -> str:
    c = dict(zip(MATCH_KEY, key, strict=True))
    return _plain(
        f"{c['model']} bs={c['batch_size']} {c['device_name']} {c['dtype']} "
        f"{c['image_size']}px t{c['threads']}"
    )


def summary_line(c: Comparison) -> str:
    counts = ", ".join(f"{c.count(v)} {v}" for v in VERDICTS)
    return (
        f"{counts} ({len(c.results)} cell-metric comparisons; "
        f"{len(c.only_baseline)} baseline-only, {len(c.only_candidate)} candidate-only cells)"
    )


def to_markdown(c: Comparison) -> str:
    s = c.settings
    lines = [
        f"### effbench compare: {summary_line(c)}",
        "",
        f"Baseline {markdown_text(c.baseline)} vs candidate {markdown_text(c.candidate)}; "
        f"metrics: {', '.join(c.metrics)}. "
        + (
            "Ratio = candidate / baseline: the Hodges–Lehmann estimate (median of the ratios "
            "of every candidate repeat to every baseline repeat) with its Mann–Whitney "
            "interval (`--test rank`); the baseline and candidate columns are geometric "
            "means"
            if s.test == "rank"
            else "Ratio = candidate / baseline (geometric means of per-repeat values, Welch "
            "interval on their logs)"
        )
        + f"; latency per repeat: the {s.latency_statistic} of its iterations. "
        f"Threshold ±{s.threshold.fraction:.1%}; Benjamini–Hochberg at α = {s.alpha} per "
        "metric, intervals at the matching false-coverage level: "
        + "; ".join(
            f"{name} {m} tests, {r} discoveries, {conf:.3%}" for name, m, r, conf in c.families
        )
        + ".",
        "",
    ]
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
            "**Environments differ** (compared anyway): "
            + "; ".join(
                f"{k}: {markdown_text(b)} vs {markdown_text(v)}" for k, b, v in c.env_differences
            )
        )
        lines.append("")
    lines += [
        "| verdict | metric | model | batch | device | dtype | px | threads | baseline "
        "| candidate | ratio | interval | repeats (b/c) | evidence |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in c.results:
        k = {col: markdown_text(v) for col, v in r.cell.items()}
        verdict = f"**{r.verdict}**" if r.verdict == "regression" else r.verdict
        interval = "-" if r.ci_low is None else f"[{_fmt_ratio(r.ci_low)}, {_fmt_ratio(r.ci_high)}]"
        evidence = markdown_text(r.evidence + (f": {r.note}" if r.note else ""))
        lines.append(
            f"| {verdict} | {r.metric} | {k['model']} | {k['batch_size']} | {k['device_name']} "
            f"| {k['dtype']} | {k['image_size']} | {k['threads']} "
            f"| {_fmt_value(r.base_value, r.metric)} | {_fmt_value(r.cand_value, r.metric)} "
            f"| {_fmt_ratio(r.ratio)} | {interval} | {r.n_base}/{r.n_cand} | {evidence} |"
        )
    for title, keys in (
        ("Only in the baseline (not measured by the candidate)", c.only_baseline),
        ("Only in the candidate (new cells, nothing to compare with)", c.only_candidate),
    ):
        if keys:
            lines += ["", f"**{title}:** " + "; ".join(markdown_text(_cell_name(k)) for k in keys)]
    return "\n".join(lines) + "\n"


def to_dict(c: Comparison) -> dict[str, Any]:
    s = c.settings
    return {
        "baseline": c.baseline,
        "candidate": c.candidate,
        "settings": {
            "metrics": list(c.metrics),
            "threshold": s.threshold.fraction,
            "alpha": s.alpha,
            "single_run_floor": math.expm1(s.single_run_floor),
            "drift_floor": math.expm1(s.drift_floor),
            "latency_statistic": s.latency_statistic,
            "latency_column": LATENCY_STATISTICS[s.latency_statistic],
            "test": s.test,
            "trim": s.trim,
            "correction": "benjamini-hochberg",
        },
        "tests": c.tests,
        "discoveries": c.discoveries,
        "families": [
            {
                "metric": n,
                "tests": m,
                "discoveries": r,
                "confidence": conf,
                "spread": c.spread(n),
                "repeats_for_twice_threshold": c.repeats_for(n),
            }
            for n, m, r, conf in c.families
        ],
        "summary": {v: c.count(v) for v in VERDICTS},
        "interleaved": c.interleaved,
        "results": [
            {
                **r.cell,
                "metric": r.metric,
                "verdict": r.verdict,
                "evidence": r.evidence,
                "n_baseline": r.n_base,
                "n_candidate": r.n_cand,
                "baseline": r.base_value,
                "candidate": r.cand_value,
                "ratio": r.ratio,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_value": r.p_value,
                "spread": r.spread,
                "note": r.note,
            }
            for r in c.results
        ],
        "only_baseline": [dict(zip(MATCH_KEY, k, strict=True)) for k in c.only_baseline],
        "only_candidate": [dict(zip(MATCH_KEY, k, strict=True)) for k in c.only_candidate],
        "environment_differences": [
            {"what": k, "baseline": b, "candidate": v} for k, b, v in c.env_differences
        ],
    }


def to_json(c: Comparison) -> str:
    return json.dumps(to_dict(c), indent=2, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def to_junit(c: Comparison) -> str:
    """JUnit XML: one test case per (cell, metric); a failure per regression, a skip per
    inconclusive cell and per baseline cell the candidate did not measure."""
    suite = ET.Element(
        "testsuite",
        name="effbench compare",
        tests=str(len(c.results) + len(c.only_baseline)),
        failures=str(c.count("regression")),
        errors="0",
        skipped=str(c.count("inconclusive") + len(c.only_baseline)),
    )
    for r in c.results:
        case = ET.SubElement(
            suite, "testcase", classname=f"effbench.{r.metric}", name=_cell_name(r.key)
        )
        detail = (
            f"{r.verdict}: ratio {_fmt_ratio(r.ratio)} interval "
            f"[{_fmt_ratio(r.ci_low)}, {_fmt_ratio(r.ci_high)}] baseline "
            f"{_fmt_value(r.base_value, r.metric)} candidate {_fmt_value(r.cand_value, r.metric)} "
            f"repeats {r.n_base}/{r.n_cand} ({r.evidence}) {_plain(r.note)}".strip()
        )
        if r.verdict == "regression":
            ET.SubElement(case, "failure", message=detail, type="regression").text = detail
        elif r.verdict == "inconclusive":
            ET.SubElement(case, "skipped", message=detail)
        else:
            ET.SubElement(case, "system-out").text = detail
    for k in c.only_baseline:
        case = ET.SubElement(suite, "testcase", classname="effbench.unmatched", name=_cell_name(k))
        ET.SubElement(case, "skipped", message="in the baseline but not in the candidate")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"md": to_markdown, "json": to_json, "junit": to_junit}


def render(c: Comparison, fmt: str) -> str:
    try:
        return RENDERERS[fmt](c)
    except KeyError:
        raise InvalidOption(f"unknown format {fmt!r}; choose {', '.join(RENDERERS)}") from None


def parse_metrics(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """``--metric latency --metric memory`` or ``--metric latency,memory``."""
    if not values:
        return None
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    for n in names:
        if n not in METRICS:
            raise InvalidOption(f"unknown metric {n!r}; choose from {', '.join(METRICS)}")
    return names

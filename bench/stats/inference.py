"""Two-sample inference on per-repeat values (one positive value per fresh-process repeat),
as the regression gate uses it. Every estimate is of the log ratio candidate / baseline.

- :func:`welch`: Welch's difference of mean logs (Yuen's trimmed test with ``trim > 0``);
- :func:`borrowed`: one repeat against several, the single one assumed to vary as the rest;
- :func:`rank_estimate`: the Hodges-Lehmann shift with its Mann-Whitney (Moses) interval;
- :func:`bh_discoveries`: Benjamini-Hochberg over a family of p-values;
- :func:`pooled_log_sd` and :func:`repeats_needed`: run-to-run spread and the repeats it
  takes to see a change.

``floor`` (log scale) moves each null to "the log ratio lies within ±floor" and widens each
interval by ``floor`` on both sides: the allowance for noise the repeats cannot show.
Pure: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bench.errors import InvalidOption
from bench.stats.distributions import normal_ppf, rank_sum_counts, t_ppf, t_sf

EXACT_RANK_LIMIT = 2500  # n_base * n_cand up to which the rank test's null is exact


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
    z_a, z_b = normal_ppf(1 - alpha / 2), normal_ppf(0.95)
    se = min(delta / (z_a + z_b), (delta - bound) / z_b)
    return max(2, math.ceil(2 * spread * spread / (se * se)))


@dataclass(frozen=True, slots=True)
class TEstimate:
    """A log-ratio estimate with a t interval (a normal one when ``df`` is infinite)."""

    d: float  # mean log candidate - mean log baseline
    se: float
    df: float
    floor: float

    def p_value(self) -> float:
        """Two-sided p-value of 'the log ratio lies within ±floor'."""
        excess = abs(self.d) - self.floor
        if excess <= 0:
            return 1.0
        if self.se == 0:
            return 0.0
        z = excess / self.se
        if math.isinf(self.df):
            return math.erfc(z / math.sqrt(2.0))
        return min(1.0, 2.0 * t_sf(z, self.df))

    def interval(self, alpha: float) -> tuple[float, float]:
        """The 1 - alpha interval of the log ratio, widened by ``floor``."""
        half = self._half_width(alpha)
        return self.d - half, self.d + half

    def _half_width(self, alpha: float) -> float:
        if self.se == 0:
            return self.floor
        q = 1.0 - alpha / 2.0
        t = normal_ppf(q) if math.isinf(self.df) else t_ppf(q, self.df)
        return t * self.se + self.floor


def _cut(n: int, trim: float) -> int:
    return math.floor(trim * n) if n >= 3 else 0


def trimmed_log_mean(values: np.ndarray, trim: float) -> float:
    """The mean of the log values with ``floor(trim * n)`` cut from each end (n >= 3)."""
    x = np.sort(np.log(values))
    g = _cut(len(x), trim)
    return float(x[g : len(x) - g].mean())


def welch(base: np.ndarray, cand: np.ndarray, floor: float, trim: float = 0.0) -> TEstimate:
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
    return TEstimate(mc - mb, math.sqrt(var), df, floor)


def borrowed(base: np.ndarray, cand: np.ndarray, floor: float = 0.0) -> TEstimate:
    """One side has a single repeat, the other several: assume the single repeat varies as
    the others do (the equal-variance t-test of one new value against a sample)."""
    lb, lc = np.log(base), np.log(cand)
    many = lb if len(lb) > 1 else lc
    s2 = float(np.var(many, ddof=1))
    se = math.sqrt(s2 * (1.0 / len(lb) + 1.0 / len(lc)))
    return TEstimate(float(lc.mean() - lb.mean()), se, float(len(many) - 1), floor)


@dataclass(frozen=True, slots=True)
class RankEstimate:
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
    exact: bool  # no ties and n*m <= the exact limit: exact null, else normal with ties
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
            c = math.floor(nm / 2.0 - 0.5 - normal_ppf(1.0 - alpha / 2.0) * self._sd()) + 1
        if c < 1:
            return -math.inf, math.inf
        c = min(c, (nm + 1) // 2)
        return float(self.diffs[c - 1]) - self.floor, float(self.diffs[nm - c]) + self.floor


def rank_estimate(
    base: np.ndarray, cand: np.ndarray, floor: float, exact_limit: int = EXACT_RANK_LIMIT
) -> RankEstimate:
    """The Hodges-Lehmann estimate of ``cand`` over ``base``; its null is exact without ties
    up to ``exact_limit`` pairs, the normal approximation with tie correction beyond."""
    lb, lc = np.log(base), np.log(cand)
    diffs = np.sort((lc[None, :] - lb[:, None]).ravel())
    pooled = np.concatenate([lb, lc])
    _, counts = np.unique(pooled, return_counts=True)
    ties = float(((counts.astype(float) ** 3) - counts).sum())
    n, m = len(lb), len(lc)
    big = n + m
    exact = ties == 0 and n * m <= exact_limit
    return RankEstimate(diffs, n, m, floor, exact, n * m * ties / (12.0 * big * (big - 1)))


def rank_spread(est: RankEstimate) -> float | None:
    """The run-to-run spread (sd of log values) for which Welch would draw the rank test's
    95% interval: its half-width / 1.96 * sqrt(n m / (n + m)). None when it is infinite."""
    lo, hi = replace(est, floor=0.0).interval(0.05)
    if not math.isfinite(hi - lo):
        return None
    return (hi - lo) / (2 * 1.959964) * math.sqrt(est.n * est.m / (est.n + est.m))

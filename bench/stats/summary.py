"""Summaries of one repeat's timing samples: median, percentiles, IQR and a distribution-free
confidence interval of the median. Pure: numpy only, no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


def median_ci_ranks(n: int, z: float = Z95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the order statistics bounding a ~95% CI of the median.

    Distribution-free: the number of samples below the median is Binomial(n, 1/2), so
    ranks n/2 ∓ z·√n/2 bound it (normal approximation). None when n is too small (< 6).
    """
    if n < 6:
        return None
    half = z * math.sqrt(n) / 2
    lo = math.floor(n / 2 - half)
    hi = math.ceil(n / 2 + half) - 1
    return max(lo, 0), min(hi, n - 1)


def median_ci(samples: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    """(low, high) bounds of the median's confidence interval, or None if n < 6."""
    ranks = median_ci_ranks(len(samples), z)
    if ranks is None:
        return None
    ordered = sorted(samples)
    return ordered[ranks[0]], ordered[ranks[1]]


def ci_relative_halfwidth(samples: Sequence[float]) -> float:
    """Largest distance from the median to a CI bound, as a fraction of the median.

    ``inf`` when the interval cannot be formed yet.
    """
    ci = median_ci(samples)
    if ci is None:
        return math.inf
    med = float(np.median(samples))
    if med <= 0:
        return math.inf
    return max(med - ci[0], ci[1] - med) / med


@dataclass(frozen=True, slots=True)
class Summary:
    """Summary of latency samples (same unit as the samples)."""

    n: int
    median: float
    mean: float
    p10: float
    p90: float
    iqr: float
    ci_low: float | None
    ci_high: float | None

    @property
    def noisy(self) -> bool:
        """IQR above 10% of the median, torch.utils.benchmark's warning threshold."""
        return self.iqr > 0.10 * self.median


def summarize(samples: Sequence[float]) -> Summary:
    if not samples:
        raise ValueError("no samples to summarize")
    a = np.asarray(samples, dtype=float)
    q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
    ci = median_ci(samples)
    return Summary(
        n=len(a),
        median=float(q50),
        mean=float(a.mean()),
        p10=float(q10),
        p90=float(q90),
        iqr=float(q75 - q25),
        ci_low=None if ci is None else float(ci[0]),
        ci_high=None if ci is None else float(ci[1]),
    )

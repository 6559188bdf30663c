"""Median confidence interval and summaries against exact references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.stats import ci_relative_halfwidth, median_ci, median_ci_ranks, summarize


def _binomial_coverage(n: int, lo: int, hi: int) -> float:
    """P(X_(lo) <= median < X_(hi)) for continuous data: P(lo < B <= hi), B~Bin(n, 1/2),
    with 0-based ranks lo, hi (B = number of samples below the true median)."""
    return sum(math.comb(n, k) for k in range(lo + 1, hi + 1)) / 2**n


@pytest.mark.parametrize("n", [6, 10, 30, 100, 1000])
def test_median_ci_ranks_cover_about_95_percent(n: int) -> None:
    ranks = median_ci_ranks(n)
    assert ranks is not None
    coverage = _binomial_coverage(n, *ranks)
    assert 0.93 <= coverage <= 0.995


def test_no_interval_below_six_samples() -> None:
    assert median_ci_ranks(5) is None
    assert ci_relative_halfwidth([1.0, 1.0, 1.0]) == math.inf


def test_ci_brackets_median_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(10, 1, 30).tolist()
    large = rng.normal(10, 1, 3000).tolist()
    lo, hi = median_ci(small)
    assert lo <= float(np.median(small)) <= hi
    assert ci_relative_halfwidth(large) < ci_relative_halfwidth(small)


def test_summary_matches_numpy() -> None:
    data = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0, 6.0, 8.0, 9.0]
    s = summarize(data)
    assert s.n == 10
    assert s.median == 5.5
    assert s.mean == 5.5
    assert s.p10 == pytest.approx(np.percentile(data, 10))
    assert s.p90 == pytest.approx(np.percentile(data, 90))
    assert s.iqr == pytest.approx(np.percentile(data, 75) - np.percentile(data, 25))
    assert s.noisy  # IQR 4.5 > 10% of 5.5


def test_summary_rejects_empty() -> None:
    with pytest.raises(ValueError):
        summarize([])

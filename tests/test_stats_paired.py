"""bench.stats.paired: the Newey–West paired estimate of ping-pong bursts, against hand
calculations and against the coverage it promises on simulated autocorrelated series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import InvalidOption
from bench.stats.paired import (
    autocovariances,
    bartlett_sum,
    newey_west_lag,
    paired_hac,
    with_session_spread,
)


def test_newey_west_lag_follows_the_1994_rule() -> None:
    # floor(4 (n/100)^(2/9)): n=100 -> 4; n=20 -> 4*0.2^0.222 = 2.80 -> 2; n=1000 -> 6.6 -> 6
    assert newey_west_lag(100) == 4
    assert newey_west_lag(20) == 2
    assert newey_west_lag(1000) == 6
    assert newey_west_lag(3) == 1  # at least 1 ...
    assert newey_west_lag(1) == 0  # ... and below n


def test_long_run_variance_of_a_short_series_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # deviations -1.5 -0.5 0.5 1.5: gamma0 = 5/4, gamma1 = (0.75 - 0.25 + 0.75)/4 = 0.3125
    gamma = autocovariances(x, 2.5, 1)
    assert gamma == pytest.approx([1.25, 0.3125])
    # lag 1: weight 1 - 1/2
    assert bartlett_sum(gamma, 1) == pytest.approx(1.25 + 2 * 0.5 * 0.3125)
    est = paired_hac([x], lag=1)
    assert est.d == pytest.approx(2.5)
    assert est.se == pytest.approx(math.sqrt(1.5625 / 4))
    assert est.df == pytest.approx(3 * 4 / 2)  # 3 N / (L + 1)


def test_alternating_signs_shrink_the_variance_and_runs_widen_it() -> None:
    alternating = np.array([0.01, -0.01] * 10) + 0.05
    runs = np.array([0.06] * 5 + [0.04] * 5 + [0.06] * 5 + [0.04] * 5)
    iid_se = float(np.std(alternating, ddof=0) / math.sqrt(20))
    # the same values, ordered: negative lag-1 correlation (ABBA drift) vs positive (states)
    assert paired_hac([alternating]).se < iid_se
    assert paired_hac([runs]).se > iid_se
    assert paired_hac([alternating]).d == pytest.approx(0.05)


def test_sessions_are_pooled_for_the_mean_but_not_across_their_boundaries() -> None:
    a, b = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6])
    est = paired_hac([a, b], lag=1)
    assert est.d == pytest.approx(np.concatenate([a, b]).mean())
    mean = est.d
    expected = 3 * bartlett_sum(autocovariances(a, mean, 1), 1)
    expected += 2 * bartlett_sum(autocovariances(b, mean, 1), 1)
    assert est.se == pytest.approx(math.sqrt(expected) / 5)


def test_one_sessions_assumed_offset_adds_its_variance_and_keeps_the_pairs_df() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])  # the hand calculation above: se^2 = 1.5625 / 4
    est, tau, estimated = with_session_spread([x], 0.5)
    assert (tau, estimated) == (0.5, False)
    assert est.d == pytest.approx(2.5)
    assert est.se == pytest.approx(math.sqrt(1.5625 / 4 + 0.25))  # one session: weight 1
    assert est.df == pytest.approx(6.0)


def test_sessions_spread_wider_than_assumed_decide_tau_and_the_df() -> None:
    # three constant sessions: no variance within, means 0, 0.3, 0.6 (variance 0.09)
    sessions = [np.full(4, 0.0), np.full(4, 0.3), np.full(4, 0.6)]
    est, tau, estimated = with_session_spread(sessions, 0.1)
    assert estimated and tau == pytest.approx(0.3)
    # the mean of three equal sessions with nothing within them: tau^2 / 3
    assert est.d == pytest.approx(0.3)
    assert est.se == pytest.approx(math.sqrt(0.09 / 3))
    assert est.df == 2.0  # S - 1
    # narrower than assumed: the assumption stands
    est, tau, estimated = with_session_spread(sessions, 0.5)
    assert (tau, estimated) == (0.5, False)


def test_a_single_pair_is_refused() -> None:
    with pytest.raises(InvalidOption, match="two or more pairs"):
        paired_hac([np.array([0.1])])


@pytest.mark.parametrize(("phi", "least"), [(0.0, 0.97), (0.5, 0.91), (-0.5, 0.98)])
def test_the_99_percent_interval_covers_the_mean_of_autocorrelated_series(
    phi: float, least: float
) -> None:
    """AR(1) series of 30 pairs (a gate run's cell): the interval at alpha 0.01 covers the
    true mean close to 99% of the time without autocorrelation or with negative one (the
    alternating order under drift), and 93% at phi = 0.5 (docs/compare.md says so), where
    the plain iid t interval misses far more often: the reason for the HAC variance."""
    rng = np.random.default_rng(24)
    n, trials, alpha = 30, 2000, 0.01
    hits, naive_hits = 0, 0
    for _ in range(trials):
        e = rng.normal(0.0, 0.02, n + 50)
        x = np.zeros(n + 50)
        for t in range(1, n + 50):
            x[t] = phi * x[t - 1] + e[t]
        x = x[50:] + 0.05
        lo, hi = paired_hac([x]).interval(alpha)
        hits += lo <= 0.05 <= hi
        se = float(np.std(x, ddof=1) / math.sqrt(n))
        naive_hits += abs(float(x.mean()) - 0.05) <= 2.756 * se  # t(29) at 0.995
    assert hits / trials >= least
    if phi > 0:
        assert naive_hits / trials < hits / trials - 0.03

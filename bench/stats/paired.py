"""Paired inference on alternating bursts (ping-pong arms, `effbench run --pingpong`).

In one ping-pong session (one cell and repeat) burst i of the baseline arm and burst i of
the candidate arm ran back to back, so the paired unit is their log ratio
``d_i = log(candidate_i) - log(baseline_i)`` (of each burst's median, say). The estimate is
the mean of every ``d`` of every session; ``exp`` of it is the ratio.

Its standard error must allow for autocorrelation between pairs. The host's fast and slow
states last from 0.1 s to tens of seconds, several pairs, and a state that slows one arm's
code more than the other's (a cache-hungry neighbour, say) moves neighbouring ``d`` alike
(positive autocorrelation: the plain standard error is too small). The alternating order (A
B, then B A) turns a steady drift into alternating signs (negative autocorrelation: too
large). The variance of the mean is therefore the Newey–West long-run variance (Newey &
West 1987): the autocovariances of ``d`` up to lag L within each session, weighted by the
Bartlett kernel ``1 - l / (L + 1)`` (which keeps it positive), summed over sessions;
L = floor(4 (n / 100)^(2/9)) (Newey & West 1994's rule for the Bartlett kernel, n the
pairs of the longest session) and at least 1. The long-run variance from a few tens of
pairs is itself uncertain, so the interval uses Student's t with the equivalent degrees of
freedom of a Bartlett lag window truncated at M = L + 1, ``3 N / M`` (Priestley 1981,
section 6.2.4; N every pair), not the normal quantile. ``tests/test_stats_paired.py`` checks
the variance by hand and the interval's coverage on simulated autocorrelated series.

Why not a rank test on the pairs (Wilcoxon's signed-rank): it assumes independent pairs,
which neighbouring bursts are not. Why not a block bootstrap: with the 20-40 pairs of one
gate run its intervals are known to undercover, and the t interval on a HAC variance is
exact enough and deterministic. Pure: numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.errors import InvalidOption
from bench.stats.inference import TEstimate


def newey_west_lag(n: int) -> int:
    """Newey & West (1994)'s lag for the Bartlett kernel, ``floor(4 (n/100)^(2/9))``, at
    least 1 and below ``n``."""
    if n < 2:
        return 0
    return max(1, min(n - 1, math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))))


def autocovariances(x: np.ndarray, mean: float, lags: int) -> np.ndarray:
    """``gamma(l) = sum_t (x_t - mean)(x_{t+l} - mean) / n`` for l = 0..lags (the biased
    estimator, which with Bartlett weights keeps the long-run variance positive)."""
    dev = np.asarray(x, dtype=float) - mean
    n = len(dev)
    return np.array([float(dev[: n - lag] @ dev[lag:]) / n for lag in range(lags + 1)])


def bartlett_sum(gamma: np.ndarray, lag: int) -> float:
    """``gamma(0) + 2 sum_{l=1..lag} (1 - l/(lag+1)) gamma(l)``."""
    weights = 1.0 - np.arange(1, lag + 1) / (lag + 1.0)
    return float(gamma[0] + 2.0 * (weights * gamma[1 : lag + 1]).sum())


def paired_hac(
    sessions: Sequence[np.ndarray], floor: float = 0.0, lag: int | None = None
) -> TEstimate:
    """The mean of the log ratios of every session's pairs, with the Newey–West standard
    error described in the module docstring (``lag`` overrides the rule); ``floor`` widens
    the interval and moves the null as in :class:`bench.stats.inference.TEstimate`."""
    parts = [np.asarray(s, dtype=float) for s in sessions if len(s)]
    total = sum(len(s) for s in parts)
    if total < 2:
        raise InvalidOption("a paired estimate needs two or more pairs")
    mean = float(np.concatenate(parts).mean())
    lag = newey_west_lag(max(len(s) for s in parts)) if lag is None else lag
    long_run = 0.0
    for s in parts:
        lag_s = min(lag, len(s) - 1)
        long_run += len(s) * bartlett_sum(autocovariances(s, mean, lag_s), lag_s)
    var = max(long_run, 0.0) / (total * total)
    df = max(1.0, 3.0 * total / (lag + 1.0))
    return TEstimate(mean, math.sqrt(var), df, floor)


def with_session_spread(
    sessions: Sequence[np.ndarray], assumed: float, floor: float = 0.0
) -> tuple[TEstimate, float, bool]:
    """The pooled mean of :func:`paired_hac` with a variance that allows for the sessions'
    own offsets: one worker process can run the same code a few percent faster than another
    for its whole life, which no pair inside the session can see. With ``w_s = n_s / N``,
    ``v_s`` session s's own Newey–West variance of its mean (about its own mean) and ``tau``
    the sd of the offsets (log scale), the variance is ``sum_s w_s^2 (v_s + tau^2)``: a
    random-effects mean (DerSimonian & Laird 1986) with the pairs' weights.

    ``tau`` is the larger of ``assumed`` and, with two or more sessions, the method-of-
    moments estimate: the variance of the session means less the mean ``v_s``. When the
    estimate decides, the interval has ``S - 1`` degrees of freedom (S sessions); when
    ``assumed`` does, it is taken as known and the pairs' degrees of freedom stay. A
    session of one pair borrows the pooled variance per pair. Returns the estimate, ``tau``
    and whether the sessions' spread decided it."""
    parts = [np.asarray(s, dtype=float) for s in sessions if len(s)]
    pooled = paired_hac(parts, floor)
    total = sum(len(s) for s in parts)
    per_pair = pooled.se * pooled.se * total
    within = [paired_hac([s]).se ** 2 if len(s) >= 2 else per_pair for s in parts]
    tau2, estimated = assumed * assumed, False
    if len(parts) >= 2:
        means = np.array([s.mean() for s in parts])
        moment = float(means.var(ddof=1)) - float(np.mean(within))
        if moment > tau2:
            tau2, estimated = moment, True
    var = sum((len(s) / total) ** 2 * (v + tau2) for s, v in zip(parts, within, strict=True))
    df = float(len(parts) - 1) if estimated else pooled.df
    return TEstimate(pooled.d, math.sqrt(var), df, floor), math.sqrt(tau2), estimated

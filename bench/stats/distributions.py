"""Distributions computed here, so that no SciPy is needed: Student's t (through the
regularised incomplete beta function), the standard normal quantile, and the exact null
distribution of the Mann-Whitney statistic. Checked against printed tables and enumeration
in tests/test_compare.py. Pure: the standard library only."""

from __future__ import annotations

import math
from functools import lru_cache


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


def normal_ppf(q: float) -> float:
    """The ``q`` quantile (0.5 <= q < 1) of the standard normal, by bisection on erfc."""
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

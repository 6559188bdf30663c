"""Pure statistics: numpy and the standard library only, no torch, no pandas.

- :mod:`bench.stats.summary`: one repeat's timing samples (median, percentiles, IQR, the
  median's confidence interval); what the worker writes on each row.
- :mod:`bench.stats.distributions`: Student's t, the normal quantile, the regularised
  incomplete beta function and the exact null of the Mann-Whitney statistic.
- :mod:`bench.stats.inference`: two-sample inference on per-repeat values as the regression
  gate (:mod:`bench.compare`) uses it: Welch / Yuen on logs, Hodges-Lehmann with the
  Mann-Whitney interval, Benjamini-Hochberg, the repeats a change needs.
"""

from bench.stats.summary import (
    Z95,
    Summary,
    ci_relative_halfwidth,
    median_ci,
    median_ci_ranks,
    summarize,
)

__all__ = [
    "Z95",
    "Summary",
    "ci_relative_halfwidth",
    "median_ci",
    "median_ci_ranks",
    "summarize",
]

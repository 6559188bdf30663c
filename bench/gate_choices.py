"""The regression gate's choices that the command line offers, declared here, in the pure
layer (no pandas, no numpy): ``bench.compare`` judges with them, and ``bench.cli`` builds
its `compare` options from them without importing the gate (0.3 s of pandas for every
command, `run` included)."""

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

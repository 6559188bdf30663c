"""What a comparison is asked: the metrics, the threshold, the test and its allowances,
parsed and checked once. Pure: the standard library and the row contract (``bench.schema``,
whose columns declare the gate's metrics)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.errors import InvalidOption
from bench.gate_choices import LATENCY_STATISTICS, TESTS
from bench.keys import CellKey
from bench.schema import DECLARED, Column

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
# The offset one ping-pong session's workers can carry for their whole life (log scale, sd
# ±3%), which its pairs cannot see (bench.stats.paired.with_session_spread). docs/compare.md:
# over 71 A/A cells of the probe networks in ping-pong on the shared 2-core CI machine, the
# sessions' mean log ratios spread 2.1 times as far as their pairs' intervals allowed, an
# extra sd of 3.3% (2.6% with the arms on any core, 4.2% on one), and without it 4 of 27
# A/A cells were false regressions. Several sessions (`--repeats`) measure it themselves;
# dedicated machines may lower it with --session-spread after an A/A run of their own.
SESSION_SPREAD = math.log(1.03)
# The noise a counted metric may carry (log scale, ±0.25%): instructions of one forward
# counted under valgrind in separate processes, seeded, one thread (bench.instructions).
# docs/compare.md measured a spread of up to 0.22% over three processes (mobilenet_v3_small at
# batch 1; six of nine cells under 0.1%); anything beyond this is a change of the work.
COUNT_FLOOR = math.log1p(0.0025)
# The smallest change of a counted metric that matters by default: counts resolve far below
# any timing threshold, and their point is to see small changes of work (`--count-threshold`).
COUNT_THRESHOLD = 0.005


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    column: str
    unit: str
    samples_column: str | None = None
    # deterministic (counted under valgrind): one value per side is exact up to COUNT_FLOOR;
    # no drift, no contention, no run-to-run spread to estimate
    counted: bool = False


def gate_metrics(columns: Iterable[Column]) -> dict[str, Metric]:
    """The gate's metrics: one per column that declares a ``gate`` (``bench.schema.Gate``),
    timed ones first, each group in declaration order."""
    gated = [(c, c.gate) for c in columns if c.gate is not None]
    gated.sort(key=lambda pair: pair[1].counted)  # stable: declaration order within each
    return {
        g.metric: Metric(g.metric, c.name, g.unit or c.unit, g.samples, g.counted) for c, g in gated
    }


METRICS: dict[str, Metric] = gate_metrics(DECLARED)


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
    session_spread: float = SESSION_SPREAD  # log scale; ping-pong sessions' own offsets
    trim: float = 0.0  # > 0: Yuen's trimmed test across repeats (bench.stats.inference.welch)
    latency_statistic: str = "median"  # a key of LATENCY_STATISTICS
    test: str = "welch"  # a key of TESTS: how repeats are compared
    # the threshold of counted metrics (instructions, cycles): see COUNT_THRESHOLD
    count_threshold: Threshold = field(default_factory=lambda: Threshold(COUNT_THRESHOLD))
    # the gate metrics of measurements outside the contract that both sides' files declare
    # (plugin measurements; bench.compare.gate fills it in from what it loaded)
    extra_metrics: tuple[Metric, ...] = ()

    @property
    def known_metrics(self) -> dict[str, Metric]:
        """Every metric these settings can compare: the contract's, then the plugins'."""
        return {**METRICS, **{m.name: m for m in self.extra_metrics if m.name not in METRICS}}

    def threshold_of(self, name: str) -> Threshold:
        """The threshold metric ``name`` is judged against."""
        return self.count_threshold if self.known_metrics[name].counted else self.threshold

    def metric(self, name: str) -> Metric:
        """The metric ``name`` as these settings read it (latency: which per-repeat value)."""
        m = self.known_metrics[name]
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
        known = self.known_metrics
        for m in self.metrics or ():
            if m not in known:
                raise InvalidOption(f"unknown metric {m!r}; choose from {', '.join(known)}")


def parse_metrics(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """``--metric latency --metric memory`` or ``--metric latency,memory``."""
    values = list(values or ())
    if not values:
        return None
    names = tuple(n.strip() for v in values for n in v.split(","))
    if not all(names):
        raise InvalidOption(
            f"--metric {','.join(values)!r} has an empty name; give latency, memory or "
            "energy (comma-separated), or leave --metric out for all with data"
        )
    for n in names:  # a plugin's metric is known once its files are read (Settings.validate)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
            raise InvalidOption(f"unknown metric {n!r}; choose from {', '.join(METRICS)}")
    return names

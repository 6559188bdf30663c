"""What a comparison holds: its two sides, one result per (cell, metric), and the whole
comparison with its families of tests and exit code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bench.compare.settings import MATCH_KEY, Settings
from bench.schema import Column
from bench.stats.inference import repeats_needed


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison: its rows and the environment records of its runs."""

    label: str
    rows: pd.DataFrame
    environments: tuple[Mapping[str, Any], ...] = ()
    # columns outside the contract that its files declare (plugin measurements)
    extra: tuple[Column, ...] = ()


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

    @property
    def shown_verdict(self) -> str:
        """The verdict as the reports print it: ``inconclusive (contended)`` when the host
        contended a side's rows, so no one reads it as a lack of repeats."""
        return f"{self.verdict} (contended)" if self.evidence == "contended" else self.verdict


# Named tuples, not dataclasses: callers unpack them (`for name, m, r, _ in c.families`).
class Family(NamedTuple):
    """The tests of one metric, corrected together with Benjamini-Hochberg."""

    metric: str
    tests: int  # m
    discoveries: int  # R
    confidence: float  # the level of its intervals, 1 - alpha * max(R, 1) / m


class EnvDifference(NamedTuple):
    """Something that changes the numbers and differs between the two sides."""

    what: str
    baseline: str
    candidate: str


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: str
    candidate: str
    settings: Settings
    metrics: tuple[str, ...]
    results: tuple[CellResult, ...]
    only_baseline: tuple[tuple[Any, ...], ...]
    only_candidate: tuple[tuple[Any, ...], ...]
    env_differences: tuple[EnvDifference, ...]
    families: tuple[Family, ...] = ()
    # whether the two sides' measurements overlap in time (None: no readable timestamps)
    interleaved: bool | None = None

    @property
    def tests(self) -> int:
        return sum(f.tests for f in self.families)

    @property
    def discoveries(self) -> int:
        return sum(f.discoveries for f in self.families)

    @property
    def confidence(self) -> float:
        return min((f.confidence for f in self.families), default=1.0)

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

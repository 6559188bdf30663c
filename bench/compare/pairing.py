"""Ping-pong pairs: the bursts of a cell's baseline and candidate rows that ran back to
back (`effbench run --variant ... --pingpong`, bench.pingpong), lined up for the paired test
(bench.stats.paired).

Two rows pair when they carry the same ``pair_id`` (one session: one cell and repeat, every
arm's worker alive, bursts alternating). Burst i of one pairs with burst i of the other;
each burst's value is the latency statistic of its iterations (``latency_ms_samples`` split
by ``burst_sizes``): their median, or with ``--latency-stat p10`` their 10th percentile. A
pair in which either burst's window was contended (``burst_contended``) is dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_PAIRS = 4  # fewer usable pairs in a cell: no paired verdict
PERCENTILE = {"median": 50.0, "p10": 10.0}


@dataclass(frozen=True, slots=True)
class Pairs:
    """The usable pairs of one cell: per session, the baseline's and the candidate's burst
    values in time order; and how many pairs contention took away."""

    base: tuple[np.ndarray, ...]
    cand: tuple[np.ndarray, ...]
    dropped: int
    total: int

    @property
    def used(self) -> int:
        return sum(len(b) for b in self.base)

    def log_ratios(self) -> list[np.ndarray]:
        return [np.log(c) - np.log(b) for b, c in zip(self.base, self.cand, strict=True)]


def burst_values(row: pd.Series, statistic: str) -> np.ndarray:
    """The latency statistic of each burst of ``row`` (NaN for a burst without samples)."""
    samples = np.asarray(row["latency_ms_samples"], dtype=float)
    sizes = np.asarray(row["burst_sizes"], dtype=int)
    if sizes.sum() != len(samples):
        return np.empty(0)
    q = PERCENTILE[statistic]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return np.array(
        [np.percentile(samples[a:b], q) if b > a else np.nan for a, b in itertools.pairwise(edges)]
    )


def _flags(row: pd.Series, n: int) -> np.ndarray:
    flags = row.get("burst_contended")
    if flags is None or len(flags) != n:
        return np.zeros(n, dtype=bool)
    return np.asarray(flags, dtype=bool)


def _paired_rows(rows: pd.DataFrame) -> dict[str, pd.Series]:
    if "pair_id" not in rows.columns or "burst_sizes" not in rows.columns:
        return {}
    out = {}
    for _, row in rows.iterrows():
        pid, sizes = row["pair_id"], row["burst_sizes"]
        if isinstance(pid, str) and pid and sizes is not None and len(sizes):
            out[pid] = row
    return out


def cell_pairs(base: pd.DataFrame, cand: pd.DataFrame, statistic: str) -> Pairs | None:
    """The pairs of a cell's ok rows on each side, or None when no row of one side shares
    a session with a row of the other (the sides were not measured in ping-pong)."""
    rb, rc = _paired_rows(base), _paired_rows(cand)
    shared = [pid for pid in rb if pid in rc]
    if not shared:
        return None
    kept_b, kept_c, dropped, total = [], [], 0, 0
    for pid in sorted(shared, key=lambda p: str(rb[p].get("timestamp"))):
        vb, vc = burst_values(rb[pid], statistic), burst_values(rc[pid], statistic)
        n = min(len(vb), len(vc))
        vb, vc = vb[:n], vc[:n]
        contended = _flags(rb[pid], len(vb))[:n] | _flags(rc[pid], len(vc))[:n]
        ok = ~contended & np.isfinite(vb) & np.isfinite(vc) & (vb > 0) & (vc > 0)
        total += n
        dropped += int(contended.sum())
        if ok.any():
            kept_b.append(vb[ok])
            kept_c.append(vc[ok])
    return Pairs(tuple(kept_b), tuple(kept_c), dropped, total)

"""Latency probe: per-iteration wall-clock samples of a forward pass.

Method: warm up for at least ``warmup_iters`` iterations *and* ``warmup_time_s`` seconds;
then time single iterations (``sync(); t0 = clock(); fn(); sync(); t1 = clock()``) until
``min_time_s`` has been spent in timed iterations, at least ``min_iters`` samples exist and
the 95% confidence interval of the median lies within ±``target_ci`` of it, or until
``max_time_s`` of timed iterations is spent. Every sample is kept, in milliseconds.

On CUDA ``sync`` is ``torch.cuda.synchronize`` so each sample covers the whole forward
(launch overhead included); on CPU it is a no-op. The clock is a seam for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.probes.base import ProbeContext, Window
from bench.schema import LATENCY, Column
from bench.stats import ci_relative_halfwidth, summarize

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class TimingResult:
    samples_ms: tuple[float, ...]
    warmup_iters: int
    warmup_s: float
    timed_s: float
    converged: bool


def _noop() -> None:
    return None


def measure_latency(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] = _noop,
    warmup_iters: int = 3,
    warmup_time_s: float = 0.2,
    min_time_s: float = 1.0,
    max_time_s: float = 5.0,
    target_ci: float = 0.01,
    min_iters: int = 5,
    before_timed: Callable[[], None] = _noop,
    clock: Clock = time.perf_counter,
) -> TimingResult:
    """Time ``fn`` as described in the module docstring; returns samples in ms.

    ``before_timed`` runs once between warm-up and the timed iterations (peak-memory
    reset, power window start).
    """
    sync()
    start = clock()
    done = 0
    while done < warmup_iters or clock() - start < warmup_time_s:
        fn()
        sync()
        done += 1
    warmup_s = clock() - start
    before_timed()
    sync()

    samples: list[float] = []
    timed = 0.0
    converged = False
    check_at = max(min_iters, 6)
    while True:
        t0 = clock()
        fn()
        sync()
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        timed += t1 - t0
        n = len(samples)
        if timed >= max_time_s:
            converged = n >= min_iters and ci_relative_halfwidth(samples) <= target_ci
            break
        if timed >= min_time_s and n >= check_at:
            if ci_relative_halfwidth(samples) <= target_ci:
                converged = True
                break
            # re-check after ~10% more samples: keeps the sort off the hot path
            check_at = n + max(1, n // 10)
    return TimingResult(tuple(samples), done, warmup_s, timed, converged)


class LatencyWindow:
    """The timing probe's columns: the window's samples summarised (median, spread, CI),
    per image and as throughput. The samples come from :func:`measure_latency`, which
    drives the window; ``cell_wall_s`` is filled by the worker. Unlike the other probes it
    cannot fail on its own: without a latency the cell is an ``error`` row."""

    columns: ClassVar[tuple[Column, ...]] = LATENCY
    note_column: ClassVar[str] = "error"
    min_window_s = 0.0

    @classmethod
    def open(cls, ctx: ProbeContext) -> LatencyWindow:
        return cls()

    def begin(self) -> None:
        return None

    def end(self, window: Window) -> Mapping[str, Any]:
        s = summarize(window.samples_ms)
        b = window.batch_size
        return {
            "latency_ms_median": s.median,
            "latency_ms_mean": s.mean,
            "latency_ms_p10": s.p10,
            "latency_ms_p90": s.p90,
            "latency_ms_iqr": s.iqr,
            "latency_ms_ci_low": s.ci_low,
            "latency_ms_ci_high": s.ci_high,
            "latency_ms_samples": window.samples_ms,
            "n_samples": s.n,
            "converged": window.converged,
            "noisy": s.noisy,
            "time_per_image_ms": s.median / b,
            "throughput_ips": b / (s.median / 1e3),
            "timed_s": window.timed_s,
        }

    def close(self) -> None:
        return None

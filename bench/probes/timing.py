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
from collections.abc import Callable
from dataclasses import dataclass

from bench.stats import ci_relative_halfwidth

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

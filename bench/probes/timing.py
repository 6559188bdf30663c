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
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar

from bench.probes.base import WINDOW_ONLY, Measurement, Window
from bench.sampler import CiTarget, Clock, Sampled, Warmup, sample
from bench.schema import LATENCY, Column
from bench.stats import summarize


def _noop() -> None:
    return None


# The result of :func:`measure_latency`: the shared sampler's (samples kept, in seconds;
# ``samples_ms`` in milliseconds).
TimingResult = Sampled


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
    key: Hashable = None,
) -> Sampled:
    """Time ``fn`` as described in the module docstring (bench.sampler with a
    :class:`~bench.sampler.CiTarget` policy on timed seconds).

    ``before_timed`` runs once between warm-up and the timed iterations (peak-memory
    reset, power window start).
    """
    return sample(
        fn,
        CiTarget(target_ci, min_time_s, max_time_s, min_iters),
        key=key,
        sync=sync,
        warmup=Warmup(warmup_iters, warmup_time_s),
        before_timed=before_timed,
        clock=clock,
    )


class LatencyWindow(Measurement):
    """The timing probe's columns: the window's samples summarised (median, spread, CI),
    per image and as throughput. The samples come from :func:`measure_latency`, which
    drives the window; ``cell_wall_s`` is filled by the worker. Unlike the other probes it
    cannot fail on its own: without a latency the cell is an ``error`` row. First in the
    registry: its window opens first (doing nothing) and closes last (summarising), after
    every other window has closed."""

    columns: ClassVar[tuple[Column, ...]] = LATENCY
    note_column: ClassVar[str] = "error"
    phases = WINDOW_ONLY
    required: ClassVar[bool] = True

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

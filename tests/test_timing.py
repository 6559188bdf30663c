"""The latency probe driven by a fake clock: exact samples, stopping rules."""

from __future__ import annotations

import pytest

from bench.probes.timing import measure_latency


class FakeClock:
    """A clock that advances by a scripted duration each time fn() runs."""

    def __init__(self, durations: list[float]) -> None:
        self.t = 0.0
        self.durations = durations
        self.calls = 0

    def __call__(self) -> float:
        return self.t

    def fn(self) -> None:
        self.t += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_samples_are_exact_and_warmup_excluded() -> None:
    # 3 warm-up iterations of 1 s, then constant 1/128 s iterations (exact in binary).
    step = 1 / 128
    clock = FakeClock([1.0, 1.0, 1.0] + [step] * 1000)
    r = measure_latency(
        clock.fn, clock=clock, warmup_iters=3, warmup_time_s=0, min_time_s=10 * step, max_time_s=5
    )
    assert r.warmup_iters == 3 and r.warmup_s == 3.0
    assert r.samples_ms == (1000 * step,) * 10  # converged as soon as min_time was reached
    assert r.converged


def test_warmup_lasts_at_least_warmup_time() -> None:
    clock = FakeClock([0.1] * 1000)
    r = measure_latency(
        clock.fn, clock=clock, warmup_iters=1, warmup_time_s=0.55, min_time_s=0.5, max_time_s=1
    )
    assert r.warmup_iters == 6


def test_noisy_samples_run_until_max_time() -> None:
    # alternating 5 ms / 15 ms: the median's CI never gets within ±1%
    clock = FakeClock([0.0] + [0.005, 0.015] * 10000)
    r = measure_latency(
        clock.fn, clock=clock, warmup_iters=1, warmup_time_s=0, min_time_s=0.1, max_time_s=2.0
    )
    assert not r.converged
    assert r.timed_s == pytest.approx(2.0, abs=0.016)
    assert len(r.samples_ms) == pytest.approx(200, abs=2)


def test_before_timed_runs_once_between_warmup_and_timing() -> None:
    clock = FakeClock([0.01] * 100)
    marks: list[int] = []
    measure_latency(
        clock.fn,
        clock=clock,
        warmup_iters=4,
        warmup_time_s=0,
        min_time_s=0.05,
        max_time_s=0.2,
        before_timed=lambda: marks.append(clock.calls),
    )
    assert marks == [4]


def test_sync_called_after_each_timed_iteration() -> None:
    clock = FakeClock([0.01] * 100)
    syncs: list[int] = []
    r = measure_latency(
        clock.fn,
        sync=lambda: syncs.append(clock.calls),
        clock=clock,
        warmup_iters=2,
        warmup_time_s=0,
        min_time_s=0.05,
        max_time_s=0.1,
    )
    # one sync before warm-up, one per warm-up iteration, one before timing, one per sample
    assert len(syncs) == 1 + 2 + 1 + len(r.samples_ms)

"""The one measurement loop (bench.sampler) under each stop policy, on a fake clock."""

from __future__ import annotations

from bench.sampler import CiTarget, TimeBudget, Warmup, sample


class Clock:
    """Advances by the next scripted duration each time ``run`` is called."""

    def __init__(self, durations: list[float]) -> None:
        self.t, self.durations, self.calls = 0.0, durations, 0

    def __call__(self) -> float:
        return self.t

    def run(self) -> None:
        self.t += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_a_time_budget_takes_at_least_one_call_and_stops_once_spent() -> None:
    slow = Clock([5.0])
    s = sample(slow.run, TimeBudget(0.001), clock=slow, key="plain")
    assert (s.key, s.samples_s, s.converged, s.ci_rel) == ("plain", (5.0,), True, None)
    quick = Clock([0.25])  # exact in binary
    assert sample(quick.run, TimeBudget(1.0), clock=quick).samples_s == (0.25,) * 4


def test_the_ci_target_budget_counts_timed_or_elapsed_seconds() -> None:
    # 1 s and 3 s alternate: never within ±1%; warm-up 10 s is never counted
    def durations() -> list[float]:
        return [10.0, *[1.0, 3.0] * 100]

    timed = Clock(durations())
    s = sample(timed.run, CiTarget(0.01, max_time_s=8.0, min_samples=2), clock=timed,
               warmup=Warmup(iters=1))  # fmt: skip
    assert s.samples_s == (1.0, 3.0, 1.0, 3.0) and not s.converged  # 8 s of timed calls
    assert (s.warmup_iters, s.warmup_s, s.timed_s) == (1, 10.0, 8.0)
    # elapsed: the same budget, but never before min_samples
    elapsed = Clock(durations())
    e = sample(elapsed.run, CiTarget(0.01, max_time_s=1.0, min_samples=6, elapsed=True),
               clock=elapsed, warmup=Warmup(iters=1))  # fmt: skip
    assert len(e.samples_s) == 6 and not e.converged
    assert e.ci_rel is not None and e.ci_rel > 0.01


def test_the_ci_target_stops_as_soon_as_it_is_met_after_the_minimum_time() -> None:
    c = Clock([0.5] * 100)
    s = sample(c.run, CiTarget(0.01, min_time_s=4.0, max_time_s=100.0, min_samples=2), clock=c)
    assert len(s.samples_s) == 8 and s.converged and s.ci_rel == 0.0  # 4 s of 0.5 s calls
    assert s.median_s == 0.5 and s.samples_ms == (500.0,) * 8

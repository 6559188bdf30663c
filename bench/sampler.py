"""One measurement loop, several stop policies (after torch.utils.benchmark's
``_threaded_measurement_loop`` under ``adaptive_autorange``/``blocked_autorange``).

:func:`sample` warms ``run`` up, calls ``before_timed`` once, then times single calls
(``t0 = clock(); run(); sync(); t1 = clock()``) until its policy says stop, and returns a
:class:`Sampled`: every sample in seconds, how the loop ended and the key it was asked for.
The latency of a cell (``bench.probes.timing``), the device ceilings (``bench.ceilings``)
and the per-layer profile's rounds (``bench.profile``) all use it:

- :class:`CiTarget`: stop once the median's 95% confidence interval (``bench.stats``) is
  within ±``target`` of it, after ``min_time_s`` of timed calls and ``min_samples``
  samples, or when the budget is spent: ``max_time_s`` of *timed* calls (a cell's latency),
  or of *elapsed* time since the first timed call with at least ``min_samples`` taken (a
  ceiling, whose calls must not overrun a fixed budget).
- :class:`TimeBudget`: timed calls for at least ``seconds`` (and at least one): the
  profile's rounds, with no precision asked.

The interval is checked again only after ~10% more samples, which keeps its sort off most
calls. The clock is a seam for tests. Pure: no torch.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from bench.stats import ci_relative_halfwidth

Clock = Callable[[], float]
FIRST_CI_CHECK = 6  # the fewest samples from which the median's CI can be formed


def _noop() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Warmup:
    """Untimed calls before the first sample: at least ``iters`` *and* ``time_s`` seconds."""

    iters: int = 0
    time_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Sampled:
    """What :func:`sample` measured for ``key``: the samples (s), the warm-up, the seconds in
    timed calls, whether the policy's precision target was reached, and the precision
    reached (half-width of the median's 95% CI ÷ median; None where it was not formed)."""

    key: Hashable
    samples_s: tuple[float, ...]
    warmup_iters: int
    warmup_s: float
    timed_s: float
    converged: bool
    ci_rel: float | None

    @property
    def samples_ms(self) -> tuple[float, ...]:
        return tuple(s * 1e3 for s in self.samples_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)


class Policy(Protocol):
    """When the loop may stop: a precision ``target`` (None: none asked), the samples
    before the interval is first checked, and the budget."""

    target: float | None
    min_samples: int

    def may_stop(self, n: int, timed_s: float) -> bool: ...

    def spent(self, n: int, timed_s: float, elapsed_s: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class CiTarget:
    """Stop at ±``target`` (see the module docstring); ``elapsed`` picks the budget's clock."""

    target: float
    min_time_s: float = 0.0
    max_time_s: float = math.inf
    min_samples: int = FIRST_CI_CHECK
    elapsed: bool = False

    def may_stop(self, n: int, timed_s: float) -> bool:
        return timed_s >= self.min_time_s and n >= max(self.min_samples, FIRST_CI_CHECK)

    def spent(self, n: int, timed_s: float, elapsed_s: float) -> bool:
        if self.elapsed:
            return n >= self.min_samples and elapsed_s >= self.max_time_s
        return timed_s >= self.max_time_s


@dataclass(frozen=True, slots=True)
class TimeBudget:
    """Timed calls for at least ``seconds`` (and at least one); no precision asked."""

    seconds: float
    target: float | None = None
    min_samples: int = 1

    def may_stop(self, n: int, timed_s: float) -> bool:
        return False

    def spent(self, n: int, timed_s: float, elapsed_s: float) -> bool:
        return n >= 1 and timed_s >= self.seconds


def settle_heap() -> None:
    """Collect the garbage made so far (the model's build, a compile, the warm-up) and
    freeze what survives, just before a timed window opens, so that no collection of the
    whole heap lands in it. One did in the first cell of every worker: 189 ms inside a
    300 ms window of lenet5 (2026-12-05), in the window's wall time, energy and CPU time
    and in whichever sample it hit. Collections of what the timed forwards allocate still
    run, as in a user's loop; later ones walk only what was made since. What is frozen is
    never collected by the cycle collector again (reference counting still frees it), which
    is bounded by the worker's life: one group, or one ping-pong session. Unfreezing before
    each window would cost a full collection per cell (125-140 ms with resnet18 loaded).
    The worker calls it before each cell's window, ping-pong before each burst, and
    :func:`bench.ceilings.measure.sample_until_precise` before each ceiling's timed calls."""
    gc.collect()
    gc.freeze()


def sample(
    run: Callable[[], object],
    policy: Policy,
    *,
    key: Hashable = None,
    sync: Callable[[], None] = _noop,
    warmup: Warmup = Warmup(),
    before_timed: Callable[[], None] = _noop,
    clock: Clock = time.perf_counter,
) -> Sampled:
    """Warm ``run`` up, then time it until ``policy`` says stop (module docstring)."""
    sync()
    start = clock()
    done = 0
    while done < warmup.iters or clock() - start < warmup.time_s:
        run()
        sync()
        done += 1
    warmup_s = clock() - start
    before_timed()
    sync()
    samples: list[float] = []
    timed = 0.0
    first = clock()
    check_at = max(policy.min_samples, FIRST_CI_CHECK)
    while True:
        t0 = clock()
        run()
        sync()
        t1 = clock()
        samples.append(t1 - t0)
        timed += t1 - t0
        n = len(samples)
        spent = policy.spent(n, timed, t1 - first)
        if policy.target is None:
            if spent:
                return Sampled(key, tuple(samples), done, warmup_s, timed, True, None)
            continue
        if spent or (policy.may_stop(n, timed) and n >= check_at):
            ci = ci_relative_halfwidth(samples)
            converged = n >= policy.min_samples and ci <= policy.target
            if converged or spent:
                ci_rel = None if math.isinf(ci) else ci
                return Sampled(key, tuple(samples), done, warmup_s, timed, converged, ci_rel)
            check_at = n + max(1, n // 10)

"""Speed canary: how fast the host ran a fixed piece of work just before and just after a
cell's timed window.

The contention probe reads what ``/proc`` shows: other processes, waiting for a CPU, steal.
On a virtual machine a neighbour on the same physical cores (SMT siblings) or a lower clock
slows every instruction without a trace there; on this project's 2-core VM such phases
lasted minutes and made whole sweeps 20-50% slower while ``cpu_share`` read 0.99. A small
GEMM (``torch.mm``, :data:`SIZE`² float32, at the cell's threads) run for :data:`BUDGET_S`
at each edge of the window measures that speed directly; over 100 s here its rate tracked
a resnet18 forward's speed with a correlation of 0.78 (docs/noise.md).

``canary_macs_per_s`` is the slower of the two edges. The runner compares it with the
fastest rate this host has given the canary at these threads (``bench.runner``'s
``CanaryRecord``) and ``bench.quality`` calls a cell ``contended`` below
:data:`bench.quality.SLOW_LIMIT` of it. CPU cells only: a CPU GEMM says nothing about a
GPU's clocks (those are the NVML columns). Cost: about 2 × 25 ms per cell, outside the
timed window, never inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from bench.probes.base import WINDOW_ONLY, Measurement, ProbeContext, Window
from bench.schema import CANARY, Column

SIZE = 256  # 256³ = 16.8 M MACs per call: about 0.15 ms at 110 GMAC/s
BUDGET_S = 0.025  # per edge
WARM_CALLS = 2


class SpeedCanary(Measurement):
    """The canary over one timed window (see the module docstring). ``run`` is one call of
    the work (``macs`` multiply-adds), ``clock`` seconds; both are seams for tests."""

    columns: ClassVar[tuple[Column, ...]] = CANARY
    note_column: ClassVar[str] = "canary_source"
    phases = WINDOW_ONLY

    def __init__(
        self,
        run: Callable[[], object] | None,
        macs: float,
        source: str,
        clock: Callable[[], float] = time.perf_counter,
        budget_s: float = BUDGET_S,
    ) -> None:
        self._run = run
        self._macs = macs
        self._source = source
        self._clock = clock
        self._budget_s = budget_s
        self._before: float | None = None

    @classmethod
    def open(cls, ctx: ProbeContext) -> SpeedCanary:
        if ctx.device != "cpu":
            return cls(None, 0.0, "not run: a CPU GEMM says nothing about a GPU's speed")
        import torch

        a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
        c = torch.empty(SIZE, SIZE)
        source = (
            f"torch.mm {SIZE}×{SIZE} float32 at {ctx.threads} thread(s) for "
            f"{BUDGET_S * 1e3:g} ms before and after the window; the slower"
        )
        return cls(lambda: torch.mm(a, b, out=c), float(SIZE**3), source)

    def rate(self) -> float:
        """MACs/s of the work over at least ``budget_s`` (after ``WARM_CALLS`` calls)."""
        assert self._run is not None
        for _ in range(WARM_CALLS):
            self._run()
        calls, start = 0, self._clock()
        while True:
            self._run()
            calls += 1
            elapsed = self._clock() - start
            if elapsed >= self._budget_s:
                return calls * self._macs / elapsed

    def begin(self) -> None:
        self._before = self.rate() if self._run is not None else None

    def end(self, window: Window) -> Mapping[str, Any]:
        if self._run is None or self._before is None:
            return {"canary_macs_per_s": None, "canary_source": self._source}
        return {
            "canary_macs_per_s": min(self._before, self.rate()),
            "canary_source": self._source,
        }

    def close(self) -> None:
        self._run = None

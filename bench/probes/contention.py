"""Contention probe: did the cell get the CPU (or GPU) it asked for during its timed window?

Read at the window's begin and end (``bench.host``, Linux ``/proc``):

- ``cpu_share``: the worker's CPU time (``getrusage``, every thread) ÷ (wall time ×
  threads). Recorded, not judged on: an intra-op pool whose extra threads sleep through
  small operators (lenet5 at 2 threads reads about 0.5 on a quiet host) is not contention.
- ``run_wait_share``: the time the worker's threads spent runnable but waiting for a CPU
  (``/proc/self/task/*/schedstat``, ns) ÷ (wall time × threads); on a GPU, ÷ wall time (the
  launching thread). The most direct sign that another task took the worker's cores.
- ``others_cpu_cores``: busy time of the CPUs the worker may run on (``/proc/stat``'s
  ``cpuN`` lines of its affinity set) less the worker's own CPU time, ÷ wall time, less
  the reading error of clock ticks (two ticks per CPU), never below 0: what other processes
  ran on those cores. On a 2-core host a worker at one thread shares caches and memory
  bandwidth with whatever runs on the other core.
- ``steal_share``: the hypervisor's steal time of those CPUs ÷ their total time.
- ``involuntary_switches``: the worker's involuntary context switches (``getrusage``).
- ``host_runnable_begin``/``_end``: ``procs_running`` at both edges (the reader included).
- ``gpu_other_processes``: on CUDA, the most other processes NVML listed on the device at
  either edge (``bench.probes.gpu_processes.GpuProcesses``; NOT RUN ON REAL NVIDIA HARDWARE).

``bench.quality`` turns this evidence into the row's verdict. The reader is a seam: tests
pass a fake with :class:`bench.host.ProcReader`'s methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from bench.host import HostTimes, HostUnreadable, OwnTimes, ProcReader
from bench.probes.base import WINDOW_ONLY, Measurement, ProbeContext, Window
from bench.schema import CONTENTION, Column

READ_ERROR_TICKS_PER_CPU = 2


class Reader(Protocol):
    tick_s: float

    def host(self, cpus: Sequence[int] = ()) -> HostTimes: ...

    def own(self) -> OwnTimes: ...


class GpuProcessCounter(Protocol):
    def others(self) -> int | None: ...

    def close(self) -> None: ...


def _affinity() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return ()


class ContentionWindow(Measurement):
    """The contention probe over one timed window (see the module docstring)."""

    columns: ClassVar[tuple[Column, ...]] = CONTENTION
    note_column: ClassVar[str] = "contention_source"
    phases = WINDOW_ONLY

    def __init__(
        self,
        reader: Reader,
        threads: int,
        cpus: Sequence[int],
        gpu: GpuProcessCounter | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._reader = reader
        self._threads = max(1, threads)
        self._cpus = tuple(cpus)
        self._gpu = gpu
        self._clock = clock
        self._begin: tuple[float, HostTimes, OwnTimes, int | None] | None = None
        self._unread = ""

    @classmethod
    def open(cls, ctx: ProbeContext) -> ContentionWindow:
        gpu = None
        if ctx.device.startswith("cuda"):
            from bench.probes.gpu_processes import open_gpu_processes

            gpu = open_gpu_processes(ctx.device)
        threads = ctx.threads if ctx.device == "cpu" else 1
        return cls(ProcReader(), threads, _affinity(), gpu)

    def begin(self) -> None:
        self._begin = None
        gpu = self._gpu.others() if self._gpu else None
        try:
            host, own = self._reader.host(self._cpus), self._reader.own()
        except HostUnreadable as e:  # said in the note column when the window ends
            self._unread = str(e)
            return
        self._begin = (self._clock(), host, own, gpu)

    def end(self, window: Window) -> Mapping[str, Any]:
        t1 = self._clock()
        if self._begin is None:
            raise HostUnreadable(self._unread or "the window's begin was not read")
        host, own = self._reader.host(self._cpus), self._reader.own()
        gpu_end = self._gpu.others() if self._gpu else None
        t0, host0, own0, gpu_begin = self._begin
        wall = t1 - t0
        if wall <= 0:
            raise HostUnreadable("the window lasted no time")
        own_cpu = own.cpu_s - own0.cpu_s
        ncpu = len(self._cpus) or (os.cpu_count() or 1)
        error_s = READ_ERROR_TICKS_PER_CPU * ncpu * self._reader.tick_s
        others = max(0.0, host.busy_s - host0.busy_s - own_cpu - error_s) / wall
        total = host.total_s - host0.total_s
        wait = None
        if own.run_wait_s is not None and own0.run_wait_s is not None:
            wait = (own.run_wait_s - own0.run_wait_s) / (wall * self._threads)
        gpus = [g for g in (gpu_begin, gpu_end) if g is not None]
        source = "proc: getrusage, schedstat, /proc/stat"
        if wait is None:
            source += " (no schedstat: run waits unknown)"
        if self._gpu is not None:
            seen = getattr(self._gpu, "seen", "")
            if not gpus:
                source += "; nvml processes unreadable"
            else:
                source += f"; nvml: processes ({seen})" if seen else "; nvml: processes"
        return {
            "cpu_share": own_cpu / (wall * self._threads),
            "run_wait_share": wait,
            "others_cpu_cores": others,
            "steal_share": (host.steal_s - host0.steal_s) / total if total > 0 else None,
            "involuntary_switches": own.involuntary_switches - own0.involuntary_switches,
            "host_runnable_begin": host0.runnable,
            "host_runnable_end": host.runnable,
            "gpu_other_processes": max(gpus) if gpus else None,
            "contention_source": source,
        }

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()

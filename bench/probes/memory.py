"""Peak memory of a cell, two figures (docs/roofline.md, "Memory that means one thing"):

- ``peak_memory_bytes``: the peak of bytes held by the framework's allocator during one
  forward, weights and input included, measured in a forward of its own, never a timed one
  (TorchBench, too, measures memory apart from timing): on CPU the cell's first forward,
  which stands in for the warm-up's first call (the CPU allocator's requests are the same
  in every forward: :attr:`MemoryPass.first_call_exact`); on CUDA after the timed window.

  - CPU: PyTorch's CPU allocator (c10), seen through the profiler's memory events
    (``torch.autograd.profiler.profile(profile_memory=True)``): every allocation and free
    of the forward, in order; the largest running sum is the forward's peak above what was
    held before it, and the weights and the input (held before it) are added. This is what
    ``torch.cuda.max_memory_allocated`` means on a GPU, and it is deterministic: the sizes
    and order of a forward's requests do not depend on what the C allocator below kept from
    earlier forwards (which made the resident set of one cell 0.5-32 MiB apart between
    fresh processes). Not seen: memory allocated outside c10 (oneDNN's own scratchpads and
    primitive caches, OpenMP's), tensors allocated on the intra-op worker threads (the
    profiler's state is per thread), Python objects, and what the C allocator keeps or
    loses to fragmentation: ``peak_rss_bytes`` has those.
  - CUDA: ``torch.cuda.memory_allocated`` before the model is built is the baseline;
    ``reset_peak_memory_stats`` before and ``max_memory_allocated`` after the forward give
    the peak (weights, input and activations are all above the baseline). Not the CUDA
    context or the caching allocator's slack.

- ``peak_rss_bytes`` (CPU, Linux): the process's resident-set high-water mark over the cell
  (``VmHWM``, reset through ``/proc/self/clear_refs`` after the allocator's pass when that
  comes first, else before the cell's first forward; read when its timed window closes)
  above the worker's ``VmRSS`` before the model was built, less the growth of file-backed
  pages (library code paged in on a kernel's first use).
  The footprint a deployment sees, under the allocator the cell ran with: what glibc keeps
  from earlier forwards included, so it moves between processes.

Neither touches what the timed forwards run under: no ``mallopt``, no environment change
(the allocator is a configuration: ``malloc:``, :mod:`bench.allocators`). The profiler is
started once on a tiny op when the pass opens, before the model is built, so its one-off
state (a helper thread that waits on a timer, about 180 KB of heap) sits beneath the model's
memory for every timed window alike, and its start-up cost is in no window; each cell's
profiled forward runs before its warm-up's remaining calls (CPU) or after its timed window
(CUDA), never between a warm-up and the window it warms up.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.errors import BenchError
from bench.probes.base import Cell, Measurement, Phase, ProbeContext
from bench.schema import MEMORY, Column

# Where the pass's forward ran, as ``memory_method`` says it (see MemoryPass.first_call_exact).
FIRST_CALL = "first, as the warm-up's first call"
AFTER_WINDOW = "after the timed window"

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class AllocatorPeak(Protocol):
    """The allocator's peak of one forward (a seam: PyTorch's CPU allocator, CUDA's)."""

    method: str

    def baseline(self) -> None: ...

    def peak_bytes(self, forward: Callable[[], Any], sync: Callable[[], None], held: int) -> int:
        """Peak bytes held during one call of ``forward``; ``held``: bytes the model's
        weights and input already held before it."""
        ...


def _status_kib(field: str, status: Path = PROC_STATUS) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"{field} not found in {status}")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The process's stderr (fd 2) to /dev/null: the profiler's library prints a line when
    it starts and stops (and, on a CUDA build without a GPU, an "ERROR" line), which would
    otherwise be the last lines of the worker's stderr that a crashed row quotes."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def running_peak(deltas: Iterable[int]) -> int:
    """The largest running sum of allocation (+) and free (-) byte counts, in order; 0 if
    it never rises above where it started."""
    held = peak = 0
    for d in deltas:
        held += d
        peak = max(peak, held)
    return peak


class CpuAllocatorPeak:
    """Peak of PyTorch's CPU allocator in one forward, from the profiler's memory events,
    plus the bytes held before it (see the module docstring)."""

    method = "cpu_allocator_peak"

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def _events(self, forward: Callable[[], Any]) -> list[int]:
        """Byte counts of the CPU allocations (+) and frees (-) made during ``forward``."""
        from torch.autograd.profiler import profile

        prof = profile(profile_memory=True, record_shapes=False, use_kineto=True)
        with _quiet_stderr():
            prof.__enter__()
        try:
            forward()
        finally:
            with _quiet_stderr():
                prof.__exit__(None, None, None)
        try:
            events = prof.kineto_results.events()
        except AttributeError as e:  # the profiler's raw events moved in this torch
            raise BenchError(f"no profiler memory events in torch {self._torch.__version__}") from e
        cpu = self._torch.autograd.DeviceType.CPU
        mem = [e for e in events if e.name() == "[memory]" and e.device_type() == cpu]
        mem.sort(key=lambda e: e.start_ns())
        return [int(e.nbytes()) for e in mem]

    def baseline(self) -> None:
        """Start the profiler once, on a tiny op, before the model exists."""
        self._events(lambda: self._torch.ones(4).add_(1))

    def peak_bytes(self, forward: Callable[[], Any], sync: Callable[[], None], held: int) -> int:
        def call() -> None:
            forward()  # the output is dropped inside the profiled window: its free is seen
            sync()

        return held + running_peak(self._events(call))


class CudaAllocatorPeak:
    """Peak of PyTorch's CUDA caching allocator above its pre-model value.

    cuBLAS's workspaces are allocated through the caching allocator the first time a matmul
    runs (the worker warms the runtime first, so they sit in the baseline), and CUDA-graph
    capture (``cudagraphs``: inductor's cudagraph trees) releases them to allocate its own
    inside the graph's pool. The baseline then holds bytes no longer allocated, and the
    first H200 run read peaks below the weights (negative, so empty) for every cudagraphs
    cell. So the pass measures the workspaces: at the baseline, and again before its
    forward, by releasing them (``torch._C._cuda_clearCublasWorkspaces``) and reading how
    much the allocator lost; where they were there, one tiny matmul puts them back as they
    were; where they were not (released by graph capture), the baseline drops by them."""

    method = "cuda_max_memory_allocated"

    def __init__(
        self,
        device: str,
        cuda: Any = None,
        clear_workspaces: Callable[[], None] | None = None,
        rewarm: Callable[[], None] | None = None,
    ) -> None:
        import torch

        self._cuda = cuda if cuda is not None else torch.cuda
        self._device = torch.device(device) if cuda is None else device
        if cuda is None:
            clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)

            def rewarm() -> None:
                a = torch.ones(8, 8, device=self._device)
                (a @ a).sum().item()

        self._clear = clear_workspaces
        self._rewarm = rewarm
        self._baseline_bytes = 0
        self._workspace_bytes = 0
        self.note = ""  # said in the method column when the workspaces were not there

    def _released(self) -> int:
        """Release cuBLAS's workspaces; the bytes the allocator lost."""
        if self._clear is None:
            return 0
        self._cuda.synchronize(self._device)
        before = self._cuda.memory_allocated(self._device)
        self._clear()
        return before - self._cuda.memory_allocated(self._device)

    def baseline(self) -> None:
        self._baseline_bytes = self._cuda.memory_allocated(self._device)
        self._workspace_bytes = self._released()
        if self._workspace_bytes and self._rewarm is not None:
            self._rewarm()  # back as they were: the model's timed forwards find them there

    def peak_bytes(self, forward: Callable[[], Any], sync: Callable[[], None], held: int) -> int:
        # the baseline was read before the model existed: weights and input are above it
        base, self.note = self._baseline_bytes, ""
        if self._released() and self._rewarm is not None:
            self._rewarm()  # they were there, as at the baseline
        elif self._workspace_bytes:
            base -= self._workspace_bytes
            self.note = (
                f"; the baseline less cuBLAS's {self._workspace_bytes} bytes of workspace,"
                " released by CUDA-graph capture"
            )
        self._cuda.synchronize(self._device)
        self._cuda.reset_peak_memory_stats(self._device)
        forward()
        self._cuda.synchronize(self._device)
        return self._cuda.max_memory_allocated(self._device) - base


class UnavailablePeak:
    """Stands in where no method is known (e.g. MPS); the peak is unknown."""

    def __init__(self, why: str) -> None:
        self.method = f"unavailable: {why}"

    def baseline(self) -> None:
        return None

    def peak_bytes(self, forward: Callable[[], Any], sync: Callable[[], None], held: int) -> int:
        return -1


class RssHighWater:
    """The process's resident-set high-water mark above a pre-model baseline (Linux)."""

    def __init__(self, status: Path = PROC_STATUS, clear_refs: Path = PROC_CLEAR_REFS) -> None:
        self._status = status
        self._clear_refs = clear_refs
        self._baseline_bytes = 0
        self._baseline_file_bytes = 0

    def baseline(self) -> None:
        self._baseline_bytes = _status_kib("VmRSS", self._status) * 1024
        self._baseline_file_bytes = _status_kib("RssFile", self._status) * 1024

    def reset_peak(self) -> None:
        """``VmHWM`` back to the current RSS ("5" touches no page table, only the mark)."""
        self._clear_refs.write_text("5")

    def peak_above_baseline(self) -> int:
        # Library code paged in by the model's first use of a kernel is file-backed RSS
        # that stays resident; it is not the model's memory, so its growth is removed.
        code_bytes = _status_kib("RssFile", self._status) * 1024 - self._baseline_file_bytes
        peak = _status_kib("VmHWM", self._status) * 1024 - self._baseline_bytes
        return peak - max(code_bytes, 0)


def allocator_peak_for(device: str) -> AllocatorPeak:
    if device.startswith("cuda"):
        return CudaAllocatorPeak(device)
    if device == "cpu":
        return CpuAllocatorPeak()
    return UnavailablePeak(f"no peak-memory method for {device}")


def rss_for(device: str) -> RssHighWater | None:
    """The resident-set mark for a CPU worker on Linux; None elsewhere."""
    if device == "cpu" and PROC_CLEAR_REFS.exists() and PROC_STATUS.exists():
        return RssHighWater()
    return None


class MemoryPass(Measurement):
    """Both memory figures of every cell of a group. Opened before the model is built (the
    baselines); :meth:`start_cell` before a cell's first forward; :meth:`after_window` after
    the cell's timed window: the resident-set mark of the cell, then one forward of its own
    for the allocator's peak (:meth:`measure`). Where :attr:`first_call_exact`, the pass
    also runs ``BEFORE_WINDOW``: the allocator's peak in the cell's first forward, standing
    in for the warm-up's first call (:meth:`before_window`), then the resident-set mark
    after the window only. A failed pass says so in ``memory_method``; out of memory is the
    cell's."""

    columns: ClassVar[tuple[Column, ...]] = MEMORY
    note_column: ClassVar[str] = "memory_method"
    phases = frozenset({Phase.BEFORE_WINDOW, Phase.AFTER_WINDOW})  # narrowed when opened

    def __init__(self, allocator: AllocatorPeak, rss: RssHighWater | None) -> None:
        """Take the baselines: call before the model exists."""
        self._allocator = allocator
        self._rss = rss
        self.sync: Callable[[], None] = _no_sync
        if rss is not None:
            rss.baseline()
        allocator.baseline()
        if not self.first_call_exact:
            self.phases = frozenset({Phase.AFTER_WINDOW})

    @classmethod
    def open(cls, ctx: ProbeContext) -> MemoryPass:
        opened = cls(allocator_peak_for(ctx.device), rss_for(ctx.device))
        opened.sync = ctx.sync
        return opened

    @property
    def method(self) -> str:
        """``memory_method`` as the worker writes it for every cell of the group."""
        return self.method_when(FIRST_CALL if self.first_call_exact else AFTER_WINDOW)

    def method_when(self, when: str) -> str:
        rss = "; rss: vmhwm over the cell" if self._rss is not None else ""
        return f"{self._allocator.method}; one forward {when}{rss}"

    def begin_cell(self) -> None:
        """Before the cell's first forward: the resident-set mark starts from here."""
        if self._rss is not None:
            self._rss.reset_peak()

    def start_cell(self) -> None:
        self.begin_cell()

    @property
    def first_call_exact(self) -> bool:
        """Whether the allocator's peak in a cell's first forward is that of any later one,
        so the pass's forward can be the warm-up's first call (bench.worker): true of the
        CPU allocator, whose requests do not depend on earlier forwards (the same bytes, to
        the byte, in the first forward and after five more, for resnet18 at batches 1 and
        8, resnet50, mobilenet_v2 at batch 8, mobilenet_v3_large and densenet121 at batch
        1, measured 2026-12-04); not of CUDA, where cuDNN's autotuner and cudagraphs change
        the first calls."""
        return isinstance(self._allocator, CpuAllocatorPeak)

    def before_window(self, cell: Cell) -> Mapping[str, Any]:
        """The allocator's peak as the warm-up's first call; the resident-set mark then
        starts again (the footprint of the cell's own forwards), whether or not it failed."""
        try:
            return self.allocator_peak(cell.forward, self.sync, held_bytes(cell), FIRST_CALL)
        finally:
            self.begin_cell()

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.first_call_exact:
            return self.rss_peak()
        return self.measure_cell(cell, AFTER_WINDOW)

    def measure_cell(self, cell: Cell, when: str) -> dict[str, Any]:
        """:meth:`measure` of the cell's forward (under inference mode), ``when`` said."""
        import torch

        with torch.inference_mode():
            return self.measure(cell.forward, self.sync, held_bytes(cell), when)

    def allocator_peak(
        self, forward: Callable[[], Any], sync: Callable[[], None], held_bytes: int, when: str
    ) -> dict[str, Any]:
        """``peak_memory_bytes`` of one call of ``forward`` with ``held_bytes`` (weights and
        input) held before it, and ``memory_method`` (``when`` says where the call ran)."""
        peak = self._allocator.peak_bytes(forward, sync, held_bytes)
        return {
            "peak_memory_bytes": peak if peak >= 0 else None,
            "memory_method": self.method_when(when) + getattr(self._allocator, "note", ""),
        }

    def rss_peak(self) -> dict[str, Any]:
        """``peak_rss_bytes``: the resident-set mark since :meth:`begin_cell`."""
        return {"peak_rss_bytes": self._rss.peak_above_baseline() if self._rss else None}

    def measure(
        self,
        forward: Callable[[], Any],
        sync: Callable[[], None],
        held_bytes: int,
        when: str = AFTER_WINDOW,
    ) -> dict[str, Any]:
        """``peak_rss_bytes`` (read first: the cell's own forwards, not this pass's), then
        :meth:`allocator_peak`."""
        return {**self.rss_peak(), **self.allocator_peak(forward, sync, held_bytes, when)}


def held_bytes(cell: Cell) -> int:
    """Bytes the weights and the placed input hold before a forward of ``cell``."""
    return (cell.counts.get("weights_bytes") or 0) + cell.x.numel() * cell.x.element_size()


def _no_sync() -> None:
    return None

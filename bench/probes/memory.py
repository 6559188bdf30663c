"""Peak-memory probe: bytes held for a model above the worker's pre-model baseline.

- CUDA: ``torch.cuda.memory_allocated`` before the model is moved to the device is the
  baseline; ``reset_peak_memory_stats`` before and ``max_memory_allocated`` after the
  timed forwards give the peak. Counts tensors from PyTorch's caching allocator
  (weights, input, activations, workspaces), not the CUDA context.
- CPU (Linux): the resident-set high-water mark of the isolated worker. ``VmRSS`` is read
  before the model is built, after the runtime's thread pools have started (baseline);
  writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS just
  before the timed forwards, and ``VmHWM`` after them is the peak. RSS counts touched
  pages, so it measures memory really used, weights included. Growth of file-backed RSS
  (``RssFile``: library code paged in on a kernel's first use, which a worker forked from
  a warm server meets more of) is subtracted. glibc keeps freed activation memory
  resident; batch sizes ascend within a worker, so what an earlier cell left behind is at
  most the current cell's own peak. ``MALLOC_MMAP_THRESHOLD_`` would return it to the OS,
  but it made forwards up to 2x slower here (page faults on every activation), so the
  worker leaves malloc as users run it.

Both report ``peak_bytes - baseline_bytes``; weights are reported separately by the
worker, so activation memory is ``peak_memory_bytes - weights_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.errors import BenchError
from bench.probes.base import ProbeContext, Window
from bench.schema import MEMORY, Column

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class MemoryProbe(Protocol):
    method: str

    def baseline(self) -> None: ...

    def reset_peak(self) -> None: ...

    def peak_above_baseline(self) -> int: ...


def _status_kib(field: str, status: Path = PROC_STATUS) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"{field} not found in {status}")


class CpuRssProbe:
    """Resident-set high-water mark above a pre-model baseline (Linux /proc)."""

    method = "cpu_vmhwm_above_baseline"

    def __init__(self, status: Path = PROC_STATUS, clear_refs: Path = PROC_CLEAR_REFS) -> None:
        self._status = status
        self._clear_refs = clear_refs
        self._baseline_bytes = 0
        self._baseline_file_bytes = 0

    def baseline(self) -> None:
        self._baseline_bytes = _status_kib("VmRSS", self._status) * 1024
        self._baseline_file_bytes = _status_kib("RssFile", self._status) * 1024

    def reset_peak(self) -> None:
        self._clear_refs.write_text("5")

    def peak_above_baseline(self) -> int:
        # Library code paged in by the model's first use of a kernel is file-backed RSS
        # that stays resident; it is not the model's memory, so its growth is removed.
        code_bytes = _status_kib("RssFile", self._status) * 1024 - self._baseline_file_bytes
        peak = _status_kib("VmHWM", self._status) * 1024 - self._baseline_bytes
        return peak - max(code_bytes, 0)


class CudaAllocatorProbe:
    """Peak of PyTorch's CUDA caching allocator above its pre-model value."""

    method = "cuda_max_memory_allocated"

    def __init__(self, device: str) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self._baseline_bytes = 0

    def baseline(self) -> None:
        self._baseline_bytes = self._torch.cuda.memory_allocated(self._device)

    def reset_peak(self) -> None:
        self._torch.cuda.synchronize(self._device)
        self._torch.cuda.reset_peak_memory_stats(self._device)

    def peak_above_baseline(self) -> int:
        self._torch.cuda.synchronize(self._device)
        return self._torch.cuda.max_memory_allocated(self._device) - self._baseline_bytes


class UnavailableProbe:
    """Stands in where no method is known (e.g. MPS, non-Linux CPU); peak is unknown."""

    def __init__(self, why: str) -> None:
        self.method = f"unavailable: {why}"

    def baseline(self) -> None:
        return None

    def reset_peak(self) -> None:
        return None

    def peak_above_baseline(self) -> int:
        return -1


def memory_probe_for(device: str) -> MemoryProbe:
    if device.startswith("cuda"):
        return CudaAllocatorProbe(device)
    if device == "cpu":
        if PROC_CLEAR_REFS.exists() and PROC_STATUS.exists():
            return CpuRssProbe()
        return UnavailableProbe("no /proc/self/clear_refs on this OS")
    return UnavailableProbe(f"no peak-memory method for {device}")


class MemoryWindow:
    """The memory probe: its baseline is read when it opens (before the model is built),
    the peak is reset when the window begins and read when it ends."""

    columns: ClassVar[tuple[Column, ...]] = MEMORY
    note_column: ClassVar[str] = "memory_method"
    min_window_s = 0.0

    def __init__(self, probe: MemoryProbe) -> None:
        self._probe = probe
        probe.baseline()

    @classmethod
    def open(cls, ctx: ProbeContext) -> MemoryWindow:
        return cls(memory_probe_for(ctx.device))

    def begin(self) -> None:
        self._probe.reset_peak()

    def end(self, window: Window) -> Mapping[str, Any]:
        peak = self._probe.peak_above_baseline()
        return {
            "peak_memory_bytes": peak if peak >= 0 else None,
            "memory_method": self._probe.method,
        }

    def close(self) -> None:
        return None

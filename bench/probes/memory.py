"""Peak memory: bytes held for a model above the worker's pre-model baseline, measured in
a pass of its own (two forwards, after warm-up, before the timed forwards, the smaller peak
kept; TorchBench also measures memory apart from timing), so the allocator settings it needs
never slow the timed forwards.

- CUDA: ``torch.cuda.memory_allocated`` before the model is moved to the device is the
  baseline; ``reset_peak_memory_stats`` before and ``max_memory_allocated`` after the
  pass's forward give the peak. Counts tensors from PyTorch's caching allocator
  (weights, input, activations, workspaces), not the CUDA context or the cache's slack.
- CPU (Linux): the resident-set high-water mark of the isolated worker. ``VmRSS`` is read
  before the model is built, after the runtime's thread pools have started (baseline).
  For the pass, glibc is told to return freed memory (``malloc_trim(0)``, then
  ``mallopt`` mmap and trim thresholds of 64 KiB: each activation gets its own mapping,
  unmapped when freed), so RSS follows live memory as CUDA's allocator count does;
  writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, and
  ``VmHWM`` after the forward is its peak. Growth of file-backed RSS (``RssFile``: library
  code paged in on a kernel's first use) is subtracted. Without this, the figure carried
  whatever glibc and oneDNN kept from earlier forwards: 8–28% apart between fresh
  processes at batch 8. After the pass the thresholds are set to where glibc's own dynamic
  adjustment tops out (mmap 32 MiB, trim 64 MiB), where the worker has kept them since
  before the model was built: glibc cannot return to its dynamic thresholds once one is
  set, so every cell's timed forwards run under these fixed ones. This changes what some
  networks time: under the dynamic default, glibc handed freed activation memory back and
  faulted it in again every forward (mobilenet_v2 at batch 8 on the 2-core test machine:
  76–78k minor page faults and 190–211 ms per forward; fixed: 19–28k and 101–114 ms;
  resnet18 unchanged at about 200 ms).

Both report ``peak_bytes - baseline_bytes``, weights included; weights are reported
separately by the worker, and the counted ``activation_peak_bytes`` (bench.probes.traffic)
is the device-independent figure for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench.errors import BenchError
from bench.probes.base import ProbeContext
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


class Malloc(Protocol):
    """The C allocator's knobs the memory pass turns (a seam: glibc, or nothing)."""

    name: str

    def release(self) -> None: ...

    def follow_live(self) -> None: ...

    def steady(self) -> None: ...


# glibc's mallopt parameters (malloc.h) and the values the pass uses.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LIVE_MMAP_THRESHOLD_BYTES = 64 * 1024
STEADY_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for its dynamic threshold
PASSES = 2  # forwards of the memory pass; the smallest peak is kept


class GlibcMalloc:
    """glibc malloc. :meth:`follow_live` returns freed memory to the OS (``malloc_trim``,
    then every block of 64 KiB or more gets its own mapping, unmapped when freed), so RSS
    follows live memory; :meth:`steady` fixes the thresholds at the ceiling of glibc's own
    dynamic adjustment on 64-bit Linux (mmap 32 MiB, trim 64 MiB), so the timed forwards
    reuse memory. glibc cannot go back to its dynamic thresholds once either is set, so the
    worker sets them before the model is built and every cell is timed under them."""

    name = "glibc"

    def __init__(self, libc: Any) -> None:
        self._libc = libc

    def _mallopt(self, param: int, value: int) -> None:
        if self._libc.mallopt(param, value) != 1:
            raise BenchError(f"mallopt({param}, {value}) refused by glibc")

    def release(self) -> None:
        self._libc.malloc_trim(0)

    def follow_live(self) -> None:
        self.release()
        self._mallopt(M_TRIM_THRESHOLD, LIVE_MMAP_THRESHOLD_BYTES)
        self._mallopt(M_MMAP_THRESHOLD, LIVE_MMAP_THRESHOLD_BYTES)

    def steady(self) -> None:
        self._mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD_BYTES)
        self._mallopt(M_TRIM_THRESHOLD, 2 * STEADY_MMAP_THRESHOLD_BYTES)


class UntouchedMalloc:
    """Any other allocator (or a CUDA device): left as it is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def release(self) -> None:
        return None

    def follow_live(self) -> None:
        return None

    def steady(self) -> None:
        return None


def malloc_for(device: str) -> Malloc:
    """glibc's knobs for a CPU worker on glibc; nothing to turn otherwise."""
    import ctypes
    import platform

    if device != "cpu":
        return UntouchedMalloc("device allocator")
    if platform.libc_ver()[0] != "glibc":
        return UntouchedMalloc("not glibc")
    return GlibcMalloc(ctypes.CDLL(None))


class MemoryPass:
    """Peak memory measured in a pass of its own, apart from the timed forwards (as
    TorchBench does): the baseline is read when the pass opens (before the model is built);
    :meth:`measure` lets the allocator return freed memory, resets the peak, runs one
    forward and reads the peak, then puts the allocator back in its steady state.

    On CPU the pass makes RSS follow live memory, so its peak is the live peak plus what
    the runtime keeps (kernel caches), not what glibc happened to keep from earlier
    forwards; the timed forwards never run with those settings."""

    columns: ClassVar[tuple[Column, ...]] = MEMORY
    note_column: ClassVar[str] = "memory_method"

    def __init__(self, probe: MemoryProbe, malloc: Malloc) -> None:
        """Fix the allocator's state and take the baseline: call before the model exists."""
        self._probe = probe
        self._malloc = malloc
        # From here on (before the model exists) the worker's allocator runs in one fixed
        # state, so every timed forward of every cell meets the same malloc.
        malloc.release()
        malloc.steady()
        probe.baseline()

    @classmethod
    def open(cls, ctx: ProbeContext) -> MemoryPass:
        return cls(memory_probe_for(ctx.device), malloc_for(ctx.device))

    @property
    def method(self) -> str:
        return f"{self._probe.method}; own pass, {self._malloc.name} malloc"

    def measure(
        self, forward: Callable[[], Any], sync: Callable[[], None], passes: int = PASSES
    ) -> dict[str, Any]:
        """``peak_memory_bytes``, the smallest peak of ``passes`` calls of ``forward`` (each
        with the peak reset before it), and ``memory_method``. The smallest, because what a
        call can add beyond the network's own memory (a runtime's one-off allocation during
        it) only ever raises a peak."""
        self._malloc.follow_live()
        try:
            peaks = []
            for _ in range(passes):
                self._probe.reset_peak()
                forward()
                sync()
                peaks.append(self._probe.peak_above_baseline())
        finally:
            self._malloc.steady()
        peak = min(peaks)
        return {"peak_memory_bytes": peak if peak >= 0 else None, "memory_method": self.method}

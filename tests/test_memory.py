"""The memory pass (bench/probes/memory.py): the allocator's peak of one forward from the
profiler's memory events, the resident-set mark of a cell, and the order the worker reads
them in (a real sweep's figures against a known network: test_runner)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.probes.memory import CpuAllocatorPeak, MemoryPass, RssHighWater, running_peak

MIB = 2**20


def test_the_running_peak_is_the_largest_running_sum() -> None:
    assert running_peak([4, 2, -4, 3, -5]) == 6
    assert running_peak([-8, 3]) == 0  # frees of blocks from before the forward: no peak
    assert running_peak([]) == 0


def _known_forward() -> torch.Tensor:
    """Holds 4 MiB, then 4 + 2, frees the 4, then 2 + 3: a peak of 6 MiB (float32)."""
    a = torch.ones(MIB)  # 4 MiB
    b = torch.ones(MIB // 2)  # 2 MiB
    del a
    c = torch.ones(3 * MIB // 4)  # 3 MiB
    return b[:1] + c[:1]


def test_the_cpu_allocator_peak_of_a_known_forward_is_exact_and_repeats() -> None:
    probe = CpuAllocatorPeak()
    probe.baseline()
    held = 12_345  # what the weights and input held before the forward
    peaks = [probe.peak_bytes(_known_forward, lambda: None, held) for _ in range(3)]
    # 4 + 2 MiB; the 4-byte result comes later, beside 2 + 3 MiB
    assert peaks == [held + 6 * MIB] * 3
    assert not torch.autograd.profiler._is_profiler_enabled  # nothing left running


def test_a_real_networks_first_forward_peaks_where_every_later_one_does() -> None:
    """What lets the worker take the peak in the cell's first forward (first_call_exact):
    a fresh model's first call, which sets up oneDNN's primitives and grows the heap, asks
    c10 for the same bytes in the same order as the calls after it."""
    from torchvision.models import squeezenet1_1

    probe = CpuAllocatorPeak()
    probe.baseline()
    torch.manual_seed(0)
    model = squeezenet1_1().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        first = probe.peak_bytes(lambda: model(x), lambda: None, 0)
        for _ in range(3):
            model(x)
        later = probe.peak_bytes(lambda: model(x), lambda: None, 0)
    # at least the two largest activations (b x 64 x 31 x 31 floats: a layer's input and
    # output live together; at one thread nothing more, 984,064 bytes) and the same to the byte
    assert first >= 2 * 2 * 64 * 31 * 31 * 4
    assert first == later
    assert MemoryPass(probe, None).first_call_exact


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


def _heap_in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_the_pass_leaves_the_heap_as_it_found_it() -> None:
    """The profiled forward runs in the worker between cells: what it keeps allocated
    afterwards would change the heap the next cell is timed on. Its first call starts the
    profiler (a one-off, done before the model exists); a later one keeps next to nothing."""
    probe = CpuAllocatorPeak()
    probe.baseline()

    def forward() -> None:
        torch.ones(4 * MIB)  # 16 MiB, freed at once

    probe.peak_bytes(forward, lambda: None, 0)
    before = _heap_in_use()
    assert probe.peak_bytes(forward, lambda: None, 0) == 16 * MIB
    assert _heap_in_use() - before < 256 * 1024


class _FakeAllocator:
    method = "fake"

    def __init__(self, log: list[str], peak: int = 1000) -> None:
        self.log, self.peak = log, peak

    def baseline(self) -> None:
        self.log.append("allocator baseline")

    def peak_bytes(self, forward: Callable[[], Any], sync: Callable[[], None], held: int) -> int:
        self.log.append(f"forward held={held}")
        forward()
        return self.peak + held if self.peak >= 0 else -1


class _FakeRss(RssHighWater):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def baseline(self) -> None:
        self.log.append("rss baseline")

    def reset_peak(self) -> None:
        self.log.append("rss reset")

    def peak_above_baseline(self) -> int:
        self.log.append("rss read")
        return 777


def test_the_pass_reads_the_cells_rss_mark_before_its_own_forward() -> None:
    log: list[str] = []
    memory = MemoryPass(_FakeAllocator(log), _FakeRss(log))
    assert log == ["rss baseline", "allocator baseline"]  # both before the model exists
    memory.begin_cell()
    got = memory.measure(lambda: log.append("model"), lambda: None, held_bytes=50)
    # the mark covers the cell's own forwards, not the pass's
    assert log[2:] == ["rss reset", "rss read", "forward held=50", "model"]
    assert got == {
        "peak_memory_bytes": 1050,
        "peak_rss_bytes": 777,
        "memory_method": "fake; one forward after the timed window; rss: vmhwm over the cell",
    }


def test_an_unknown_peak_is_empty_not_negative_and_no_rss_means_none() -> None:
    memory = MemoryPass(_FakeAllocator([], peak=-1), None)
    memory.begin_cell()
    got = memory.measure(lambda: None, lambda: None, 0)
    assert got["peak_memory_bytes"] is None and got["peak_rss_bytes"] is None
    assert got["memory_method"] == "fake; one forward after the timed window"


def _status(rss_kib: int, hwm_kib: int, file_kib: int) -> str:
    return f"Name:\tpython\nVmHWM:\t{hwm_kib} kB\nVmRSS:\t{rss_kib} kB\nRssFile:\t{file_kib} kB\n"


def test_the_rss_mark_is_above_the_baseline_less_library_code(tmp_path: Path) -> None:
    status, clear = tmp_path / "status", tmp_path / "clear_refs"
    status.write_text(_status(rss_kib=1000, hwm_kib=1000, file_kib=300))
    rss = RssHighWater(status, clear)
    rss.baseline()
    rss.reset_peak()
    assert clear.read_text() == "5"  # resets VmHWM only, no page-table bits
    # the cell peaked at 5000 KiB, 100 KiB of it library code paged in meanwhile
    status.write_text(_status(rss_kib=2000, hwm_kib=5000, file_kib=400))
    assert rss.peak_above_baseline() == (5000 - 1000 - 100) * 1024


@pytest.mark.parametrize("shrunk", [True, False])
def test_library_pages_dropped_meanwhile_never_add_to_the_mark(
    tmp_path: Path, shrunk: bool
) -> None:
    status = tmp_path / "status"
    status.write_text(_status(rss_kib=1000, hwm_kib=1000, file_kib=300))
    rss = RssHighWater(status, tmp_path / "clear_refs")
    rss.baseline()
    status.write_text(_status(rss_kib=1500, hwm_kib=3000, file_kib=200 if shrunk else 300))
    assert rss.peak_above_baseline() == (3000 - 1000) * 1024


class _FakeCuda:
    """torch.cuda's allocator counters, as the CUDA peak reads them: cuBLAS's workspace
    (``ws`` bytes) comes and goes with the allocator, as on a real GPU."""

    def __init__(self, ws: int) -> None:
        self.ws, self.allocated, self.peak, self.has_ws = ws, 1_000, 1_000, False

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def matmul(self) -> None:  # the first cuBLAS call allocates the workspace
        if not self.has_ws:
            self.has_ws = True
            self.alloc(self.ws)

    def clear(self) -> None:  # torch._C._cuda_clearCublasWorkspaces
        if self.has_ws:
            self.has_ws = False
            self.allocated -= self.ws

    def synchronize(self, device: object) -> None:
        pass

    def memory_allocated(self, device: object) -> int:
        return self.allocated

    def reset_peak_memory_stats(self, device: object) -> None:
        self.peak = self.allocated

    def max_memory_allocated(self, device: object) -> int:
        return self.peak


@pytest.mark.parametrize("graphs", [False, True])
def test_the_cuda_peak_counts_the_model_whether_or_not_graph_capture_freed_cublas_workspace(
    graphs: bool,
) -> None:
    """The first H200 run left every cudagraphs cell's peak empty: capture released the
    32 MiB of cuBLAS workspace counted in the baseline, so the peak read below it."""
    from bench.probes.memory import CudaAllocatorPeak

    ws, weights, pool, activations = 32 << 20, 23 << 20, 5 << 20, 7 << 20
    cuda = _FakeCuda(ws)
    cuda.matmul()  # the worker warms the runtime before the baseline
    peak = CudaAllocatorPeak("cuda:0", cuda=cuda, clear_workspaces=cuda.clear, rewarm=cuda.matmul)
    peak.baseline()
    assert cuda.has_ws  # put back: the timed forwards find the runtime as it was
    cuda.alloc(weights)
    if graphs:
        cuda.clear()  # capture releases the workspace and keeps its tensors in a pool
        cuda.alloc(pool)

        def forward() -> None:  # a replay allocates nothing
            pass

        expected = weights + pool
    else:

        def forward() -> None:
            cuda.matmul()
            cuda.alloc(activations)
            cuda.alloc(-activations)

        expected = weights + activations
    assert peak.peak_bytes(forward, lambda: None, held=weights) == expected
    assert cuda.has_ws is not graphs  # the pass leaves the workspace as it found it
    assert ("released by CUDA-graph capture" in peak.note) is graphs

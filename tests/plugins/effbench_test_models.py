"""Test-only networks, registered through ``EFFBENCH_PLUGINS=effbench_test_models``
(with ``tests/plugins`` on ``PYTHONPATH``) so that worker processes see them too.

- ``alloc64``: allocates and touches 64 MiB per image (``torch.ones``) in its forward, a
  known activation for validating the CPU peak-memory probe.
- ``crash_at2``: aborts the worker process at batch size >= 2 (a native crash).
- ``hang_at2``: sleeps far beyond any cell timeout at batch size >= 2.
- ``tiny_mlp``: a forward of a few tens of microseconds, for harness-overhead benchmarks.
- ``malloc_state``: a linear layer whose width says which C allocator the worker built it
  under (:func:`malloc_width`), so a row's ``params`` show it.
- ``meta_counted``: a linear layer that appends a line to ``$EFFBENCH_TEST_META_LOG`` each
  time it is built on the ``meta`` device (for counting MACs or traffic).
- ``pid_logged``: a linear layer that appends its process's id and its parent's to
  ``$EFFBENCH_TEST_PID_LOG`` each time a worker builds it (not on ``meta``).
"""

from __future__ import annotations

import ctypes
import os
import time

import torch
from torch import nn

from models.registry import ModelSpec, register_model

ALLOC_BYTES_PER_IMAGE = 64 * 1024 * 1024


class Alloc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        floats = ALLOC_BYTES_PER_IMAGE // 4
        big = torch.ones(x.shape[0], floats, dtype=torch.float32, device=x.device)
        return self.head(x.flatten(1)) + big[:, :10]


class CrashAt2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 2:
            os.abort()
        return self.head(x.flatten(1))


class HangAt2(CrashAt2):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 2:
            time.sleep(3600)
        return self.head(x.flatten(1))


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EnvWidth(nn.Module):
    """A linear layer as wide as ``$EFFBENCH_TEST_WIDTH`` (16 if unset), read when the model
    is built: its parameter count shows which environment a worker built it in."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, int(os.environ.get("EFFBENCH_TEST_WIDTH", "16")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


PROBE_BYTES = 30 * 1024 * 1024  # above glibc's default mmap threshold, below malloc:tuned's


def malloc_width() -> int:
    """16, plus 1 if glibc served a 30 MiB malloc with its own mapping (its default
    thresholds: nobody called mallopt), 2 if jemalloc is mapped, 4 if tcmalloc is."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(PROBE_BYTES)
    mapped = libc.mallinfo2().hblkhd - before >= PROBE_BYTES
    libc.free(block)
    with open("/proc/self/maps") as f:
        maps = f.read()
    return 16 + mapped + 2 * ("libjemalloc" in maps) + 4 * ("libtcmalloc" in maps)


class MallocState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, malloc_width())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class MetaCounted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)
        log = os.environ.get("EFFBENCH_TEST_META_LOG")
        if log and self.head.weight.device.type == "meta":
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class PidLogged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)
        log = os.environ.get("EFFBENCH_TEST_PID_LOG")
        if log and self.head.weight.device.type != "meta":
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {os.getppid()}\n")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


for _name, _cls in {
    "env_width": EnvWidth,
    "alloc64": Alloc,
    "crash_at2": CrashAt2,
    "hang_at2": HangAt2,
    "tiny_mlp": TinyMLP,
    "malloc_state": MallocState,
    "meta_counted": MetaCounted,
    "pid_logged": PidLogged,
}.items():
    register_model(ModelSpec(name=_name, family="test", builder=_cls, image_size=8, origin="test"))

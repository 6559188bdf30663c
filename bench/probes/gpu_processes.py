"""Other processes on a GPU during a timed window (the contention evidence's
``gpu_other_processes``, docs/noise.md): NVML's process lists less this run's own
processes, found through ``/proc``'s parent links. The NVML calls are the seam a test
fakes (``tests/fakes/fake_pynvml.py``); ``/proc`` is a folder a test writes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.probes.nvml import _torch_uuid, device_handle, initialised

RUNNER_PID_ENV = "EFFBENCH_RUNNER_PID"  # set by the executors for every worker


def parent_of(pid: int, proc: Path = Path("/proc")) -> int | None:
    """The parent PID of ``pid`` from ``/proc/PID/stat`` (field 4, after the command name
    in parentheses); None when this PID namespace has no such process."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    try:
        return int(text[text.rindex(")") + 2 :].split()[1])
    except (ValueError, IndexError):
        return None


def thread_group_of(pid: int, proc: Path = Path("/proc")) -> int:
    """The process (``Tgid``) that ``pid`` belongs to, where ``pid`` is a thread's ID;
    ``pid`` itself otherwise or where ``/proc/PID/status`` cannot say."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid


def in_process_tree(pid: int, roots: set[int], proc: Path = Path("/proc")) -> bool | None:
    """Whether ``pid`` (or the process whose thread it is) is one of ``roots`` or descends
    from one; None when ``pid`` is not in this PID namespace (NVML inside a container lists
    host PIDs)."""
    pid = thread_group_of(pid, proc)
    if pid in roots:
        return True
    seen: set[int] = set()
    current: int | None = pid
    while current not in (None, 0, 1) and current not in seen:
        seen.add(current)
        parent = parent_of(current, proc)
        if parent is None:
            return None if current == pid else False
        if parent in roots:
            return True
        current = parent
    return False


def ancestors_to(pid: int, runner: int | None, proc: Path = Path("/proc")) -> set[int]:
    """The processes between ``pid`` and the runner that started it, the runner included
    (a fork server sits between them); only the parent where the runner is unknown or not
    among the ancestors."""
    chain: list[int] = []
    current = parent_of(pid, proc)
    while current is not None and current not in (0, 1) and current not in chain:
        chain.append(current)
        if current == runner:
            return set(chain)
        current = parent_of(current, proc)
    return set(chain[:1])


class GpuProcesses:
    """Counts the processes outside this run that hold the GPU (compute or graphics), from
    ``nvmlDeviceGetComputeRunningProcesses`` and ``...GraphicsRunningProcesses``.

    This run's own processes are not counted: this worker and what it started (the power
    sampler), found by walking ``/proc/PID/stat``'s parent links, and the processes it
    descends from up to the runner (``run_pids``: the fork server and the runner, idle
    while cells run, whatever context they hold). Inside a PID namespace (a container)
    NVML lists host PIDs that no walk resolves; then one unresolved process is taken to be
    this worker. On the first H200
    run (docs/gpu-validation.md) every cell counted 1 other process, listed under a PID of
    this namespace that did not descend from the worker: an ancestor's, or a thread ID of
    this run's (``Tgid`` in ``/proc/PID/status`` maps a thread to its process). NOT RUN ON
    REAL HARDWARE since the walk reached the ancestors and the threads."""

    def __init__(
        self,
        nvml: ModuleType,
        handle: Any,
        own_pid: int,
        run_pids: set[int] | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self._nvml, self._handle, self._own = nvml, handle, own_pid
        self._run = set(run_pids or ())
        self._proc = proc
        self.seen = ""  # the last reading, in words, for the row's source note

    def others(self) -> int | None:
        """Other processes on the device now; None where NVML cannot say."""
        pids: set[int] = set()
        readable = False
        for kind in ("Compute", "Graphics"):
            name = f"nvmlDeviceGet{kind}RunningProcesses"
            fn = getattr(self._nvml, name, None)
            if fn is None:
                continue
            try:
                pids.update(int(p.pid) for p in fn(self._handle))
                readable = True
            except self._nvml.NVMLError:
                continue
        if not readable:
            return None
        tree = {
            pid: True
            if thread_group_of(pid, self._proc) in self._run
            else in_process_tree(pid, {self._own}, self._proc)
            for pid in pids
        }
        ours = sorted(p for p, t in tree.items() if t)
        unresolved = sorted(p for p, t in tree.items() if t is None)
        others = len(pids) - len(ours)
        if self._own not in pids and unresolved:
            others -= 1  # this worker, listed under a PID of another namespace
        self.seen = f"{len(pids)} listed, {len(ours)} of this run" + (
            f", {len(unresolved)} outside this PID namespace" if unresolved else ""
        )
        return max(0, others)

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def open_gpu_processes(
    device: str,
    *,
    module: str = "pynvml",
    uuid_of: Callable[[int], str | None] = _torch_uuid,
    own_pid: int | None = None,
    proc: Path = Path("/proc"),
) -> GpuProcesses | None:
    """A :class:`GpuProcesses` for ``device`` ("cuda" or "cuda:N"), or None where NVML is
    missing or cannot find the device (the contention probe then records no count)."""
    import os

    nvml = initialised(module)
    if nvml is None:
        return None
    try:
        handle, _ = device_handle(nvml, device, uuid_of)
    except nvml.NVMLError:
        nvml.nvmlShutdown()
        return None
    own = os.getpid() if own_pid is None else own_pid
    runner = os.environ.get(RUNNER_PID_ENV, "")
    run_pids = ancestors_to(own, int(runner) if runner.isdigit() else None, proc)
    return GpuProcesses(nvml, handle, own, run_pids, proc)

"""The pre-flight check: is the host quiet enough to measure on, before the first cell?

Over :data:`CHECK_S` (half a second) it reads the busy time of the cores this process may
use (``/proc/stat``), less this process's own and that of the processes it names as its own
(``ours``: the workers' fork server, which ``effbench run`` starts before the check and which
imports torch meanwhile), and which other processes used CPU meanwhile
(``/proc/<pid>/stat``), plus the load averages and the CPU frequency governor where the
kernel shows it. The host is *busy* when other processes kept more than
:data:`bench.quality.OTHERS_CORES_LIMIT` cores busy: the same limit that judges a cell
``contended``. The check never changes the plan; it warns (or, with ``--require-quiet``,
the CLI refuses to start) and its result is recorded in the run's manifest.

Pure standard library; the reader, the clock and the sleep are seams for tests.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import BenchError
from bench.host import HostUnreadable, ProcReader, cpu_governors
from bench.quality import OTHERS_CORES_LIMIT

CHECK_S = 0.5
HEAVY_CORES = 0.1  # a process using more than this share of a core is named
TOP = 3
QUIET_WAIT_S = 30.0  # the longest a re-measurement waits for a quiet host


class HostBusy(BenchError):
    """The host is busy and ``--require-quiet`` was given."""


@dataclass(frozen=True, slots=True)
class HostCheck:
    """What the pre-flight check saw (seconds, cores, processes)."""

    seconds: float
    cores: int  # cores this process may run on
    others_cores: float | None  # cores other processes kept busy on them (None: unreadable)
    heavy: tuple[tuple[int, str, float], ...]  # (pid, command, cores used) of the busiest
    loadavg: tuple[float, float, float] | None
    governors: tuple[str, ...]
    busy: bool
    note: str = ""  # why a reading is missing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: what keeps the host busy, or that it is quiet."""
        if self.others_cores is None:
            return f"host load not readable ({self.note})"
        who = ", ".join(f"{cmd} (pid {pid}) {cores:.2f}" for pid, cmd, cores in self.heavy)
        load = f"; load average {self.loadavg[0]:.2f}" if self.loadavg else ""
        state = "busy" if self.busy else "quiet"
        return (
            f"host {state}: other processes kept {self.others_cores:.2f} of {self.cores} "
            f"cores busy over {self.seconds:.1f} s{' (' + who + ')' if who else ''}{load}"
        )

    def advice(self, threads: int) -> str:
        """What to do about a busy host (empty when quiet); the governor note either way."""
        out = []
        if self.busy:
            free = max(1, self.cores - round(self.others_cores or 0))
            out.append(
                "timings will read slow and their rows will be judged `contended` (and "
                "re-measured). Wait until those processes finish, leave them cores with "
                f"--threads {min(free, threads)} (the plan asks for {threads}), or pin the "
                "sweep to idle cores (taskset -c LIST effbench run ...); --require-quiet "
                "refuses to start on a busy host"
            )
        slow = [g for g in self.governors if g != "performance"]
        if slow:
            out.append(
                f"the CPU frequency governor is {'/'.join(slow)}, so clocks may ramp during "
                "cells; `cpupower frequency-set -g performance` fixes them for the run"
            )
        return "; ".join(out)


def _own_family(pid: int, root: Any) -> set[int]:
    """``pid`` and its descendants (a fork server and its workers are not 'other')."""
    family = {pid}
    # a process or thread that ended while it was read has no children left to count
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in (root / str(pid) / "task").iterdir():
            for child in (task / "children").read_text().split():
                family |= _own_family(int(child), root)
    return family


def check_host(
    reader: ProcReader | None = None,
    *,
    seconds: float = CHECK_S,
    cpus: Sequence[int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    governors: Callable[[], tuple[str, ...]] = cpu_governors,
    ours: Sequence[int] = (),
) -> HostCheck:
    """Read the host over ``seconds``; see the module docstring. The CPU time of ``ours``
    (PIDs) and their descendants is this run's, not another process's load."""
    reader = reader or ProcReader()
    if cpus is None:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            cpus = ()
    ncores = len(cpus) or (os.cpu_count() or 1)
    try:
        load = reader.loadavg()
    except HostUnreadable:
        load = None
    try:
        t0, host0, own0, procs0 = clock(), reader.host(cpus), reader.own(), reader.process_cpu_s()
        sleep(seconds)
        t1, host1, own1, procs1 = clock(), reader.host(cpus), reader.own(), reader.process_cpu_s()
    except HostUnreadable as e:
        return HostCheck(seconds, ncores, None, (), load, governors(), False, str(e))
    wall = max(t1 - t0, 1e-9)
    own = own1.cpu_s - own0.cpu_s
    # this process's other children (a library user's) are load like any other process's
    kin = set().union(*(_own_family(pid, reader.root) for pid in ours)) - {os.getpid()}
    kin_s = sum(cpu - procs0[pid][1] for pid, (_, cpu) in procs1.items()
                if pid in procs0 and pid in kin)  # fmt: skip
    others = max(0.0, host1.busy_s - host0.busy_s - own - kin_s) / wall
    used = sorted(
        (
            (pid, cmd, (cpu - procs0[pid][1]) / wall)
            for pid, (cmd, cpu) in procs1.items()
            if pid in procs0 and pid not in kin and pid != os.getpid()
        ),
        key=lambda p: -p[2],
    )
    heavy = tuple((pid, cmd, round(c, 2)) for pid, cmd, c in used[:TOP] if c > HEAVY_CORES)
    return HostCheck(
        round(wall, 3), ncores, round(others, 3), heavy, load, governors(),
        others > OTHERS_CORES_LIMIT,
    )  # fmt: skip


def wait_for_quiet(
    max_wait_s: float = QUIET_WAIT_S,
    check: Callable[[], HostCheck] = check_host,
    clock: Callable[[], float] = time.monotonic,
) -> HostCheck:
    """Check the host until it is quiet or ``max_wait_s`` has passed; the last check."""
    start = clock()
    while True:
        found = check()
        if not found.busy or clock() - start >= max_wait_s:
            return found

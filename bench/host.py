"""What the host is doing, read from Linux ``/proc``: CPU time by state, runnable tasks, a
process's CPU time, run-queue waits and involuntary switches, and other processes' CPU use.

Pure standard library (no torch, no pandas). :class:`ProcReader` is the seam: it reads a
``/proc``-shaped folder (``root``), so tests point it at a fake one or replace it with an
object that has the same methods. Everything is in seconds (``_s``) or counts; clock ticks
are converted once, here. On a system without ``/proc`` (not Linux) the readers raise
:class:`HostUnreadable`, and callers record why instead of a number.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError


class HostUnreadable(BenchError):
    """``/proc`` (or the part asked for) cannot be read on this system."""


@dataclass(frozen=True, slots=True)
class HostTimes:
    """Cumulative CPU seconds of the whole host (every CPU, from ``/proc/stat``'s ``cpu``
    line) and the tasks runnable at the moment of reading (``procs_running``, the reader
    included)."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user)
    steal_s: float  # time the hypervisor ran something else on our virtual CPUs
    total_s: float  # every state, idle and iowait included
    runnable: int


@dataclass(frozen=True, slots=True)
class OwnTimes:
    """Cumulative figures of this process, every thread: CPU seconds (user + system), the
    seconds its threads waited runnable for a CPU (``schedstat`` run delay), and its
    involuntary context switches (``getrusage``)."""

    cpu_s: float
    run_wait_s: float | None  # None where the kernel keeps no schedstat
    involuntary_switches: int


class ProcReader:
    """Reads ``/proc`` (or a folder shaped like it: the seam for tests)."""

    def __init__(self, root: str | os.PathLike[str] = "/proc") -> None:
        self.root = Path(root)
        try:
            self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        except (ValueError, OSError, AttributeError):
            self._tick_s = 0.01

    @property
    def tick_s(self) -> float:
        """Seconds per clock tick: the resolution of the host's CPU times."""
        return self._tick_s

    def _text(self, *parts: str) -> str:
        try:
            return self.root.joinpath(*parts).read_text()
        except OSError as e:
            raise HostUnreadable(f"cannot read {self.root.joinpath(*parts)}: {e}") from e

    def host(self, cpus: Collection[int] = ()) -> HostTimes:
        """CPU times of ``/proc/stat``: summed over the ``cpuN`` lines of ``cpus``, or the
        all-CPU ``cpu`` line when ``cpus`` is empty; and ``procs_running``."""
        lines = self._text("stat").splitlines()
        want = {f"cpu{n}" for n in cpus} if cpus else {"cpu"}
        rows = [line.split() for line in lines if line.split()[:1] and line.split()[0] in want]
        running = next((line.split()[1] for line in lines if line.startswith("procs_running")), 0)
        if len(rows) != len(want) or any(len(r) < 9 for r in rows):
            raise HostUnreadable(
                f"{self.root / 'stat'} lacks full lines for {', '.join(sorted(want))}"
            )
        ticks = [sum(int(r[i]) for r in rows) for i in range(1, 9)]
        user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
        return HostTimes(
            busy_s=(user + nice + system + irq + softirq) * self._tick_s,
            steal_s=steal * self._tick_s,
            total_s=sum(ticks) * self._tick_s,
            runnable=int(running),
        )

    def run_wait_s(self, pid: str = "self") -> float | None:
        """Seconds the threads of ``pid`` have waited runnable on a run queue (second field
        of each ``task/*/schedstat``, nanoseconds); None without schedstat."""
        task = self.root / pid / "task"
        try:
            tids = os.listdir(task)
        except OSError:
            return None
        total_ns = 0
        found = False
        for tid in tids:
            try:
                fields = (task / tid / "schedstat").read_text().split()
            except OSError:
                continue  # a thread that ended meanwhile
            if len(fields) >= 2:
                total_ns += int(fields[1])
                found = True
        return total_ns / 1e9 if found else None

    def own(self) -> OwnTimes:
        """This process's CPU time, run-queue wait and involuntary switches."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return OwnTimes(
            cpu_s=usage.ru_utime + usage.ru_stime,
            run_wait_s=self.run_wait_s("self"),
            involuntary_switches=int(usage.ru_nivcsw),
        )

    def process_cpu_s(self) -> dict[int, tuple[str, float]]:
        """CPU seconds (user + system) of every process now: pid -> (command, seconds).
        Processes that end while being read are left out."""
        out: dict[int, tuple[str, float]] = {}
        try:
            names = os.listdir(self.root)
        except OSError as e:
            raise HostUnreadable(f"cannot list {self.root}: {e}") from e
        for name in names:
            if not name.isdigit():
                continue
            try:
                text = (self.root / name / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            comm = text[text.find("(") + 1 : text.rfind(")")]
            rest = text[text.rfind(")") + 2 :].split()
            if len(rest) < 13:
                continue
            out[int(name)] = (comm, (int(rest[11]) + int(rest[12])) * self._tick_s)
        return out

    def loadavg(self) -> tuple[float, float, float]:
        """The 1-, 5- and 15-minute load averages."""
        a, b, c = self._text("loadavg").split()[:3]
        return float(a), float(b), float(c)


def cpu_governors(root: str | os.PathLike[str] = "/sys/devices/system/cpu") -> tuple[str, ...]:
    """The distinct cpufreq governors of the CPUs, where the kernel shows them (often not in
    a virtual machine); empty when none can be read."""
    found = []
    for path in sorted(Path(root).glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            found.append(path.read_text().strip())
        except OSError:
            continue
    return tuple(dict.fromkeys(found))

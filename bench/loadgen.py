"""A bounded CPU load, for the contention harness (scripts/contention_harness.py) and the
tests of the verdicts: ``processes`` local processes that each spin on one core, on for
``on_s`` and off for ``off_s`` in turn (always on when ``off_s`` is 0), and that end after
``max_s`` seconds (at most :data:`MAX_S`) whatever happens to the process that started them:
each checks the deadline itself, and ends when its parent process has.

Pure standard library; nothing listens or connects anywhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from types import TracebackType

MAX_S = 60.0
POLL_S = 0.2  # the longest a pausing spinner outlives its parent


def _spin(deadline: float, on_s: float, off_s: float, parent: int) -> None:
    """Busy-loop until ``deadline`` (time.monotonic), pausing ``off_s`` after each ``on_s``;
    return as soon as process ``parent`` is gone (this process is then another's child).
    Polled rather than the kernel's parent-death signal, which fires when the *thread* that
    started the load ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness stops it, not a Ctrl-C
    start = time.monotonic()
    x = 0
    while (now := time.monotonic()) < deadline and os.getppid() == parent:
        phase = (now - start) % (on_s + off_s) if off_s > 0 else 0.0
        if phase < on_s:
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        else:
            time.sleep(min(on_s + off_s - phase, deadline - now, POLL_S))


class CpuLoad:
    """``with CpuLoad(2, max_s=20):`` two spinning processes for at most 20 s."""

    def __init__(
        self, processes: int, *, max_s: float = MAX_S, on_s: float = 1.0, off_s: float = 0.0
    ) -> None:
        if not 1 <= processes <= (os.cpu_count() or 1) * 4:
            raise ValueError(f"processes must be between 1 and 4 per core, not {processes}")
        if not 0 < max_s <= MAX_S or on_s <= 0 or off_s < 0:
            raise ValueError(f"need 0 < max_s <= {MAX_S:g}, on_s > 0, off_s >= 0")
        self.processes, self.max_s, self.on_s, self.off_s = processes, max_s, on_s, off_s
        self._procs: list[mp.process.BaseProcess] = []
        self.started_at: float | None = None

    def start(self) -> CpuLoad:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.started_at = time.monotonic()
        deadline = self.started_at + self.max_s
        for _ in range(self.processes):
            args = (deadline, self.on_s, self.off_s, os.getpid())
            p = ctx.Process(target=_spin, args=args, daemon=True)
            p.start()
            self._procs.append(p)
        return self

    def stop(self) -> None:
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        for p in self._procs:
            p.join(5)
        self._procs = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def __enter__(self) -> CpuLoad:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

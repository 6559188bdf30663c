"""Executors start workers. The runner only needs :class:`Executor`, so the same cells can
later run elsewhere (a Ray cluster, a remote host) behind the same interface.

:class:`LocalExecutor` starts one ``python -m bench.worker`` subprocess per task and runs
one task at a time, so two measurements never share a device.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bench.errors import WorkerProtocolError
from bench.worker import Task

Message = dict[str, Any]
STARTUP_GRACE_S = 120.0


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """How a worker ended: ``ok``, ``crashed`` (non-zero exit or lost) or ``timeout``."""

    status: str
    detail: str = ""


class Executor(Protocol):
    def run(
        self, task: Task, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit: ...


class LocalExecutor:
    """Runs each task in a fresh local subprocess; kills it when a cell overruns."""

    def __init__(self, extra_env: Mapping[str, str] | None = None) -> None:
        self._extra_env = dict(extra_env or {})

    def _env(self, task: Task) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(task.group.threads)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env["EFFBENCH_PARENT_PID"] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._extra_env)
        return env

    def run(
        self, task: Task, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit:
        with tempfile.TemporaryFile(mode="w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self._env(task),
                start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(task.to_json().encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            outcome = self._pump(proc, on_message, cell_timeout_s)
            proc.wait()
            if outcome is None:
                if proc.returncode == 0:
                    return WorkerExit("ok")
                outcome = WorkerExit("crashed", _describe_exit(proc.returncode))
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            detail = outcome.detail + (f"; stderr: {' | '.join(tail)}" if tail else "")
            return WorkerExit(outcome.status, detail)

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        on_message: Callable[[Message], None],
        cell_timeout_s: float,
    ) -> WorkerExit | None:
        """Read messages until EOF; None if the stream ended normally."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        # the first cell also waits for the interpreter, torch and the model to load
        deadline = time.monotonic() + cell_timeout_s + STARTUP_GRACE_S
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    _kill(proc)
                    return WorkerExit(
                        "timeout", f"cell exceeded --cell-timeout {cell_timeout_s:g} s"
                    )
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        msg = json.loads(line)
                    except json.JSONDecodeError as e:
                        _kill(proc)
                        raise WorkerProtocolError(
                            f"worker sent unreadable line {line[:200]!r}"
                        ) from e
                    if msg.get("event") == "start":
                        deadline = time.monotonic() + cell_timeout_s
                    on_message(msg)
        finally:
            sel.close()
            proc.stdout.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"

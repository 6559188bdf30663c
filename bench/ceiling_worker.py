"""The ceilings' worker: measures the device ceilings of one (device, dtype, threads)
(:func:`bench.ceilings.measure_ceilings`) in a fresh process that an executor starts as it
starts a group's worker: forked from the fork server, or a new interpreter running this
module (:class:`bench.executor.LocalExecutor`), watched by the same loop
(:func:`bench.executor.watch`). It sends one ``ceiling`` message per ceiling, an ``error``
message if the measurement failed, then ``done``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.worker import enter_forked_child, subprocess_emitter

MODULE = "bench.ceiling_worker"  # what `python -m` runs in a new interpreter


@dataclass(frozen=True, slots=True)
class CeilingsTask:
    """What the runner asks a ceilings worker to measure: ``kinds`` (all when empty) for up
    to ``budget_s`` of sampling each (the measurement's default when None). ``run_id`` and
    ``env`` are a task's (none here: ceilings belong to the machine, not to an arm)."""

    device: str
    dtype: str
    threads: int
    kinds: tuple[str, ...] = ()
    budget_s: float | None = None
    run_id: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CeilingsTask:
        d = json.loads(text)
        return cls(**{**d, "kinds": tuple(d.get("kinds", ()))})


def run_ceilings_task(task: CeilingsTask, emit: Callable[[dict[str, Any]], None]) -> None:
    """Measure ``task`` and emit its ceilings; a failure is one ``error`` message."""
    try:
        from bench.ceilings.measure import measure_ceilings

        narrowed: dict[str, Any] = {"kinds": task.kinds} if task.kinds else {}
        if task.budget_s is not None:
            narrowed["budget_s"] = task.budget_s
        found = measure_ceilings(task.device, task.dtype, max(task.threads, 1), **narrowed)
    except Exception as e:  # reported to the runner, which notes it and goes on without
        emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
        return
    for c in found:
        emit({"event": "ceiling", "ceiling": c.to_dict()})


def fork_main(task_json: str, conn: Any, stderr_path: str, scratch: str | None = None) -> None:
    """Entry point when forked from the fork server (as :func:`bench.worker.fork_main`)."""
    enter_forked_child(stderr_path, scratch)
    run_ceilings_task(CeilingsTask.from_json(task_json), conn.send)
    conn.send({"event": "done"})
    conn.close()


def main() -> None:
    """Entry point of a new interpreter: the task on stdin, JSON lines on stdout."""
    emit = subprocess_emitter()
    run_ceilings_task(CeilingsTask.from_json(sys.stdin.read()), emit)
    emit({"event": "done"})


if __name__ == "__main__":
    main()

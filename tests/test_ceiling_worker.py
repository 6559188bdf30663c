"""bench/ceiling_worker.py: the run's ceilings are a task the executor runs, like a group
of cells. In this process: the task's JSON, its messages, and the runner's side of it
(``bench.run_ceilings.measure_ceilings_once``) through a fake executor run."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from bench.ceiling_worker import CeilingsTask, run_ceilings_task
from bench.ceilings import Ceiling
from bench.executor import STARTUP_GRACE_S, WorkerExit
from bench.executor_registry import executor_class
from bench.run_ceilings import CEILINGS_TIMEOUT_S, measure_ceilings_once


def _ceiling(kind: str, value: float) -> Ceiling:
    unit = "macs_per_s" if kind == "gemm" else "bytes_per_s"
    return Ceiling("cpu", "A CPU", "float32", 2, kind, value, unit, "measured", "m", 0.01, 9, None)


def test_a_task_survives_its_json() -> None:
    task = CeilingsTask("cpu", "float32", 2, ("gemm", "triad"), 0.5)
    assert CeilingsTask.from_json(task.to_json()) == task


def test_a_failed_measurement_is_one_error_message() -> None:
    sent: list[dict[str, Any]] = []
    run_ceilings_task(CeilingsTask("cpu", "float99", 1), sent.append)
    assert [m["event"] for m in sent] == ["error"]
    assert "unknown dtype 'float99'" in sent[0]["error"]


class _FakeRun:
    """Stands in for the fork-server executor's ``run``: records the task and the allowance, sends
    ``messages`` and returns ``exit``."""

    def __init__(self, messages: list[dict[str, Any]], exit: WorkerExit) -> None:
        self.messages, self.exit = messages, exit
        self.calls: list[tuple[Any, float]] = []

    def __call__(
        self, task: Any, on_message: Callable[[dict[str, Any]], None], timeout_s: float
    ) -> WorkerExit:
        self.calls.append((task, timeout_s))
        for msg in self.messages:
            on_message(msg)
        return self.exit


def _measure(monkeypatch: pytest.MonkeyPatch, fake: _FakeRun, **kw: Any) -> tuple[Any, str]:
    monkeypatch.setattr(executor_class("fork"), "run", lambda _ex, *args: fake(*args))
    stream = io.StringIO()
    return measure_ceilings_once("cpu", "float32", 2, stream, **kw), stream.getvalue()


def test_the_runner_measures_ceilings_through_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = [{"event": "ceiling", "ceiling": _ceiling(k, 1e10).to_dict()} for k in ("gemm", "triad")]
    fake = _FakeRun([*sent, {"event": "done"}], WorkerExit("ok"))
    frame, said = _measure(monkeypatch, fake, kinds=("gemm", "triad"), budget_s=0.5, phase="end")
    (task, allowance), = fake.calls  # fmt: skip
    assert task == CeilingsTask("cpu", "float32", 2, ("gemm", "triad"), 0.5)
    assert allowance + STARTUP_GRACE_S == CEILINGS_TIMEOUT_S
    assert list(frame["kind"]) == ["gemm", "triad"] and set(frame["phase"]) == {"end"}
    assert "closing ceilings of cpu float32 threads=2" in said


@pytest.mark.parametrize(
    ("messages", "exit", "why"),
    [
        ([{"event": "error", "error": "InvalidOption: no"}], WorkerExit("ok"), "InvalidOption: no"),
        ([], WorkerExit("timeout", "cell exceeded"), f"over {CEILINGS_TIMEOUT_S:g} s"),
        ([], WorkerExit("crashed", "worker killed by SIGKILL"), "worker killed by SIGKILL"),
    ],
)
def test_a_failed_ceilings_task_is_a_note_and_no_rows(
    monkeypatch: pytest.MonkeyPatch, messages: list[dict[str, Any]], exit: WorkerExit, why: str
) -> None:
    frame, said = _measure(monkeypatch, _FakeRun(messages, exit))
    assert frame.empty
    assert said.strip() == f"effbench: ceilings of cpu float32 not measured: {why}"

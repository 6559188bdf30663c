"""The executors' one watchdog loop (bench.executor.watch), on a fake clock and a fake
worker stream: the fork server, new-interpreter and Ray executors all time cells with it."""

from __future__ import annotations

import pytest

from bench import executor
from bench.executor import STARTUP_GRACE_S, Received, WorkerExit, watch
from bench.status import CRASHED, TIMEOUT


class FakeWorker:
    """A worker's stream on a fake clock: ``script`` is what it sends, in order, as
    (seconds after the previous, message or end); past its end it stays silent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, script: list[tuple[float, object]]):
        self.now = 0.0
        self.script = list(script)
        self.killed_at: float | None = None
        self.waits: list[float] = []
        monkeypatch.setattr(executor.time, "monotonic", lambda: self.now)

    def receive(self, wait_s: float) -> Received:
        self.waits.append(wait_s)
        if not self.script or self.script[0][0] > wait_s:
            if self.script:
                self.script[0] = (self.script[0][0] - wait_s, self.script[0][1])
            self.now += wait_s
            return []
        after, what = self.script.pop(0)
        self.now += after
        return [what] if isinstance(what, dict) else what  # type: ignore[return-value]

    def kill(self) -> None:
        self.killed_at = self.now


def _start(i: int) -> dict:
    return {"event": "start", "cell": i}


def test_each_cell_gets_its_allowance_and_the_first_the_start_up_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # start-up takes 100 s (within the grace), then two cells of 9 s each at a 10 s limit
    w = FakeWorker(monkeypatch, [(100.0, _start(0)), (9.0, _start(1)), (9.0, {"event": "row"}),
                                 (0.0, None)])  # fmt: skip
    seen: list[dict] = []
    assert watch(w.receive, seen.append, w.kill, cell_timeout_s=10.0) is None
    assert [m.get("cell") for m in seen] == [0, 1, None] and w.killed_at is None
    # the first wait allowed the grace and a cell; later ones what was left of a cell
    assert w.waits[0] == pytest.approx(STARTUP_GRACE_S + 10.0)
    assert w.waits[1] == pytest.approx(10.0) and w.waits[2] == pytest.approx(10.0)


def test_a_cell_that_overruns_is_killed_at_its_limit_and_reads_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = FakeWorker(monkeypatch, [(1.0, _start(0)), (4.0, {"event": "row"}), (30.0, _start(1))])
    seen: list[dict] = []
    end = watch(w.receive, seen.append, w.kill, cell_timeout_s=10.0)
    assert end == WorkerExit(TIMEOUT, "cell exceeded --cell-timeout 10 s")
    assert w.killed_at == pytest.approx(11.0)  # 10 s after the cell's start, not after the row
    assert len(seen) == 2


def test_a_start_up_that_overruns_the_grace_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    w = FakeWorker(monkeypatch, [])
    end = watch(w.receive, lambda m: None, w.kill, cell_timeout_s=5.0)
    assert end is not None and end.status == TIMEOUT
    assert w.killed_at == pytest.approx(STARTUP_GRACE_S + 5.0)


def test_how_the_stream_ended_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = WorkerExit(CRASHED, "the Ray task ended without an exit message")
    w = FakeWorker(monkeypatch, [(1.0, _start(0)), (1.0, lost)])
    seen: list[dict] = []
    assert watch(w.receive, seen.append, w.kill, cell_timeout_s=10.0) == lost
    assert seen == [_start(0)] and w.killed_at is None

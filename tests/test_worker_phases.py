"""The worker walks the measurements' phases (bench.probes.base): measurements registered
in every phase are called in phase order, their columns are merged into the row, a failing
one records its note and keeps the row, and a required one fails the cell."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
import torch

from bench.plan import Group, Timing
from bench.probes import registry
from bench.probes.base import (
    AFTER_ONLY,
    COUNT_ONLY,
    WINDOW_ONLY,
    Cell,
    Measurement,
    Phase,
    ProbeContext,
    Window,
)
from bench.probes.registry import register_measurement
from bench.schema import Column
from bench.worker import Task, measure_cell, prepare

LOG: list[str] = []


def _col(name: str, kind: str = "float?") -> Column:
    return Column(name, kind, "", f"a fake measurement's {name}")


class FakeCount(Measurement):
    columns: ClassVar = (_col("fake_params", "int?"), _col("fake_count_note", "str?"))
    note_column: ClassVar[str] = "fake_count_note"
    phases = COUNT_ONLY

    @classmethod
    def open(cls, ctx: ProbeContext) -> FakeCount:
        LOG.append("open count")
        return cls()

    def count(self, model: Any) -> Mapping[str, Any]:
        LOG.append("count")
        return {"fake_params": sum(p.numel() for p in model.parameters())}


class FakeBefore(Measurement):
    columns: ClassVar = (_col("fake_first_ms"), _col("fake_before_note", "str?"))
    note_column: ClassVar[str] = "fake_before_note"
    phases = frozenset({Phase.BEFORE_WINDOW})

    def start_cell(self) -> None:
        LOG.append("start cell")

    def before_window(self, cell: Cell) -> Mapping[str, Any]:
        LOG.append("before")
        cell.forward()
        return {"fake_first_ms": 1.5}


class _FakeWindow(Measurement):
    name: ClassVar[str]
    phases = WINDOW_ONLY

    def begin(self) -> None:
        LOG.append(f"begin {self.name}")

    def end(self, window: Window) -> Mapping[str, Any]:
        LOG.append(f"end {self.name}")
        return {self.columns[0].name: window.iterations}


class FakeWindowA(_FakeWindow):
    name = "a"
    columns: ClassVar = (_col("fake_a_iters", "int?"), _col("fake_a_note", "str?"))
    note_column: ClassVar[str] = "fake_a_note"


class FakeWindowB(_FakeWindow):
    name = "b"
    columns: ClassVar = (_col("fake_b_iters", "int?"), _col("fake_b_note", "str?"))
    note_column: ClassVar[str] = "fake_b_note"
    min_window_s = 0.02  # longer than the task's min_time_s: the window must last it


class FakeAfter(Measurement):
    columns: ClassVar = (_col("fake_seen"), _col("fake_after_note", "str?"))
    note_column: ClassVar[str] = "fake_after_note"
    phases = AFTER_ONLY

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        LOG.append("after")
        # what the window measured and the group's counts are there to read
        assert measured["fake_a_iters"] == measured["n_samples"]
        return {"fake_seen": measured["latency_ms_median"] + cell.counts["fake_params"]}


class FailingAfter(Measurement):
    columns: ClassVar = (_col("fake_broken"), _col("fake_broken_note", "str?"))
    note_column: ClassVar[str] = "fake_broken_note"
    phases = AFTER_ONLY

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        LOG.append("fail")
        raise OSError("sensor unplugged")


class RequiredAfter(FailingAfter):
    columns: ClassVar = (_col("fake_required"), _col("fake_required_note", "str?"))
    note_column: ClassVar[str] = "fake_required_note"
    required: ClassVar[bool] = True


FAKES = (FakeCount, FakeBefore, FakeWindowA, FakeWindowB, FakeAfter, FailingAfter)
TASK = Task(
    "r",
    Group("lenet5", "cpu", "float32", 32, 1, 1, 0, (2,)),
    Timing(warmup_iters=3, warmup_time_s=0.0, min_time_s=0.01, max_time_s=0.2, min_iters=3),
)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fakes registered after the built-in measurements, as a plugin would."""
    monkeypatch.setattr(registry, "_EXTRA", [])
    for cls in FAKES:
        register_measurement(cls)
    threads = torch.get_num_threads()
    LOG.clear()
    yield
    torch.set_num_threads(threads)


def _measure(task: Task = TASK) -> dict[str, Any]:
    from models import get_spec

    setup = prepare(task, get_spec(task.group.model), torch, torch.float32)
    setup.model.register_forward_hook(lambda *a: LOG.append("forward"))
    try:
        g = task.group
        columns = measure_cell(task, setup, torch.randn(2, g.in_chans, 32, 32))
    finally:
        setup.close()
    return {**setup.fields, **columns}


def test_the_worker_calls_each_phase_in_order_and_merges_the_columns(
    fakes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.probes import macs

    warm = macs.warm_counter
    monkeypatch.setattr(macs, "warm_counter", lambda c: (LOG.append("warm counter"), warm(c))[1])
    row = _measure()
    calls = [c for c in LOG if c != "forward"]
    assert calls == [
        "warm counter",  # the MACs counter's imports, before memory's baselines are taken
        "open count",
        "count",
        "start cell",
        "before",
        "begin a",
        "begin b",
        "end b",
        "end a",
        "after",
        "fail",
    ]
    # forwards before the window: memory's first call (CPU) and the fake's stand in for two
    # of the three warm-up iterations, so one warm-up call is left
    first_begin = LOG.index("begin a")
    assert LOG[:first_begin].count("forward") == 3
    assert LOG[LOG.index("before") + 1] == "forward"
    timed = LOG[first_begin : LOG.index("end b")].count("forward")
    assert row["fake_a_iters"] == row["fake_b_iters"] == row["n_samples"] == timed
    assert sum(row["latency_ms_samples"]) / 1e3 >= FakeWindowB.min_window_s
    assert row["fake_params"] == row["params"] > 0
    assert row["fake_first_ms"] == 1.5
    assert row["fake_seen"] == row["latency_ms_median"] + row["params"]
    # the failing one: its note, nothing else lost
    assert row["fake_broken_note"] == "failed: OSError: sensor unplugged"
    assert "fake_broken" not in row
    assert row["peak_memory_bytes"] > 0 and row["output_ok"] is True
    assert row["bytes_per_image"] > 0 and "error" not in row


def test_a_failing_measurement_keeps_the_row(fakes: None) -> None:
    from bench.worker import run_task

    messages: list[dict[str, Any]] = []
    run_task(TASK, messages.append)
    rows = [m["row"] for m in messages if m["event"] == "row"]
    assert [r["status"] for r in rows] == ["ok"]
    assert rows[0]["fake_broken_note"] == "failed: OSError: sensor unplugged"
    assert rows[0]["fake_seen"] > 0 and rows[0]["latency_ms_median"] > 0


def test_a_required_measurement_that_fails_fails_the_cell(fakes: None) -> None:
    register_measurement(RequiredAfter)
    with pytest.raises(OSError, match="sensor unplugged"):
        _measure()


def test_a_registered_measurement_must_be_one_with_new_columns() -> None:
    class Clash(Measurement):
        columns: ClassVar = (Column("latency_ms_median", "float?", "ms", "taken"),)
        note_column: ClassVar[str] = "latency_ms_median"
        phases = WINDOW_ONLY

    with pytest.raises(ValueError, match="already taken"):
        register_measurement(Clash)

    class NotOne:
        columns = (Column("fresh_value", "float?", "", "new"),)
        note_column = "fresh_value"

    with pytest.raises(TypeError, match="not a measurement"):
        register_measurement(NotOne)  # type: ignore[arg-type]


def test_the_builtin_registry_keeps_the_orders_that_matter() -> None:
    """Memory opens first (its baselines); latency's window opens first and closes last,
    then the canary's; memory's pass after the window precedes the output check, and the
    roofline (which reads the latency and the MACs) comes last."""
    from bench.probes.canary import SpeedCanary
    from bench.probes.memory import MemoryPass
    from bench.probes.output_check import OutputCheck
    from bench.probes.roofline import Roofline
    from bench.probes.timing import LatencyWindow

    builtin = registry.BUILTIN
    assert builtin[0] is MemoryPass
    windows = [m for m in builtin if Phase.WINDOW in m.phases]
    assert windows[:2] == [LatencyWindow, SpeedCanary]
    after = [m for m in builtin if m is not MemoryPass and Phase.AFTER_WINDOW in m.phases]
    assert after == [OutputCheck, Roofline]


class HeapAtBegin(Measurement):
    """Records, as its window opens, what a full collection would walk then."""

    columns: ClassVar = (_col("fake_gen2_at_begin", "int?"), _col("fake_heap_note", "str?"))
    note_column: ClassVar[str] = "fake_heap_note"
    phases = WINDOW_ONLY

    def begin(self) -> None:
        import gc

        self.gen2 = len(gc.get_objects(generation=2))
        self.frozen = gc.get_freeze_count()

    def end(self, window: Window) -> Mapping[str, Any]:
        assert self.frozen > 10_000  # torch's, the model's and this process's objects
        return {"fake_gen2_at_begin": self.gen2}


def test_the_heap_is_collected_and_frozen_before_every_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full collection in a timed window walks none of the objects made before it (the
    build, the warm-up): bench.sampler.settle_heap. Measured before it: 189 ms of lenet5's
    first 300 ms window went to one such collection."""
    import gc

    monkeypatch.setattr(registry, "_EXTRA", [])
    register_measurement(HeapAtBegin)
    threads = torch.get_num_threads()
    try:
        columns = _measure()
    finally:
        torch.set_num_threads(threads)  # the worker set the task's
        gc.unfreeze()  # this test process's objects may be collected again
    assert columns.get("fake_heap_note") is None, columns["fake_heap_note"]
    assert columns["fake_gen2_at_begin"] == 0


def test_a_counter_that_fails_leaves_its_error_in_the_row_not_in_the_warm_up(
    fakes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up before the baselines counts with the run's counter too; its failure is
    the count's to report (the row keeps its latency), not the group's."""
    from bench.probes import macs

    def broken(*args: object, **kwargs: object) -> int:
        raise ImportError("no module named fvcore")

    monkeypatch.setattr(macs, "count_macs", broken)
    row = _measure()
    assert row["error"] == "MACs not counted (torch): ImportError: no module named fvcore"
    assert row["macs"] is None and row["latency_ms_median"] > 0

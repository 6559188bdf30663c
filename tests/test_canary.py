"""The speed canary (bench.probes.canary) through its seams, and the host's record of its
fastest rates (bench.canaries)."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import load_results
from bench.canaries import KEEP, CanaryRecord
from bench.probes.base import ProbeContext, Window
from bench.probes.canary import SpeedCanary


class FakeWork:
    """One call of the work advances a fake clock by ``step_s``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step_s = 0.001
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        self.now += self.step_s

    def clock(self) -> float:
        return self.now


WINDOW = Window(1, (1.0,), 0.001, True)


def test_the_canary_reports_the_slower_edge_of_the_window_in_macs_per_second() -> None:
    work = FakeWork()
    probe = SpeedCanary(work.run, 1e6, "fake", clock=work.clock, budget_s=0.01)
    probe.begin()  # 1 ms per call of 1e6 MACs: 1e9 MACs/s
    assert work.calls == 2 + 10  # the warm calls, then the budget's worth
    work.step_s = 0.004  # the host slowed down four times during the window
    got = probe.end(WINDOW)
    assert got["canary_macs_per_s"] == pytest.approx(0.25e9)
    assert got["canary_source"] == "fake"


def test_on_a_gpu_the_canary_runs_nothing_and_says_why() -> None:
    probe = SpeedCanary.open(ProbeContext("cuda:0", lambda: None, None, 1))
    probe.begin()
    got = probe.end(WINDOW)
    assert got["canary_macs_per_s"] is None
    assert "GPU" in got["canary_source"]


def test_the_record_keeps_the_fastest_rates_per_thread_count_and_judges_by_their_median(
    tmp_path: Path,
) -> None:
    record = CanaryRecord.load(tmp_path)
    assert record.best(2) is None
    for rate in range(1, 21):  # 1..20 GMAC/s at 2 threads
        record.add(2, rate * 1e9)
    record.add(2, None)
    record.add(1, 5e9)
    kept = list(range(20, 20 - KEEP, -1))
    assert record.rates[2] == [r * 1e9 for r in kept]
    assert record.best(2) == pytest.approx(sorted(kept)[KEEP // 2] * 1e9)
    assert record.best(1) == 5e9
    record.save()
    again = CanaryRecord.load(tmp_path)
    assert again.rates == record.rates


def test_another_hosts_entry_survives_and_a_damaged_record_is_empty(tmp_path: Path) -> None:
    (tmp_path / "canary.json").write_text(json.dumps({"other-host": {"2": [1.0]}}))
    record = CanaryRecord.load(tmp_path)
    record.add(2, 3e9)
    record.save()
    data = json.loads((tmp_path / "canary.json").read_text())
    assert data["other-host"] == {"2": [1.0]} and data[record.host] == {"2": [3e9]}
    (tmp_path / "canary.json").write_text("{not json")
    assert CanaryRecord.load(tmp_path).rates == {}


class RowsWithCanary:
    """An executor whose worker reports each cell ok, converged, with the canary rate given
    for its batch size."""

    def __init__(self, rates: dict[int, float]) -> None:
        self.rates = rates

    def run(self, task: Any, on_message: Callable[[dict[str, Any]], None], _t: Any) -> Any:
        from bench.executor import WorkerExit
        from bench.worker import base_row

        for b in task.group.batch_sizes:
            row = base_row(task, b, "ok", spec=None, device_name="fake cpu")
            row = dataclasses.replace(
                row, latency_ms_median=10.0, converged=True, n_samples=50,
                canary_macs_per_s=self.rates[b],
            )  # fmt: skip
            on_message({"event": "row", "row": row.to_dict()})
        return WorkerExit("ok")


def test_a_cell_a_later_faster_canary_shows_was_slowed_is_judged_again_and_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged as it came, the first cell had nothing faster to compare with; once the
    second cell's canary shows the host can run twice as fast, the first is contended and
    queued for its one re-measurement (--remeasure 1); the second is left alone."""
    from bench.plan import Group, Options
    from bench.runner import open_lane, rejudge, run_group, start_run

    monkeypatch.setenv("EFFBENCH_JUDGE_CONTENTION", "1")
    monkeypatch.setenv("EFFBENCH_CACHE_DIR", str(tmp_path / "cache"))
    g = Group("lenet5", "cpu", "float32", 32, 1, 1, 0, (1, 2))
    options = Options(models=("lenet5",), threads=1, remeasure=1)
    run_dir, lock = start_run(tmp_path / "results", "c", options, [g], {}, ["test"])
    lane = open_lane(run_dir, "c", options, [g], lock, io.StringIO(), idle_w={"cpu": None})
    run_group(lane, g, RowsWithCanary({1: 50e9, 2: 100e9}), lambda m: None, lambda d: "cpu")
    assert {r.batch_size: r.quality for r in lane.rows.values()} == {1: "clean", 2: "clean"}
    assert lane.retry == []
    rejudge([lane])
    by_batch = {r.batch_size: r for r in lane.rows.values()}
    assert by_batch[1].quality == "contended" and by_batch[2].quality == "clean"
    assert "67% of this host's best" in (by_batch[1].quality_reason or "")
    assert [(q.batch_sizes, q.attempt) for q in lane.retry] == [((1,), 1)]
    # what was written is what the lane holds
    stored = load_results([run_dir])
    assert dict(zip(stored["batch_size"], stored["quality"], strict=True)) == {
        1: "contended", 2: "clean"}  # fmt: skip
    lock.release()

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


def test_a_session_on_a_slower_host_says_so_and_its_median_joins_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's record says it usually runs the canary at 100 GMAC/s; a session whose
    cells' canaries ran at 50-60 says so when it closes, in the manifest too, and its
    median joins the record; the rows' verdicts are not touched."""
    from bench.plan import Group, Options
    from bench.run_folder import start_run
    from bench.runner import close_lane, open_lane, run_group

    monkeypatch.setenv("EFFBENCH_CACHE_DIR", str(tmp_path / "cache"))
    usual = CanaryRecord.load()
    usual.add(1, 100e9)
    usual.save()
    g = Group("lenet5", "cpu", "float32", 32, 1, 1, 0, (1, 2, 4, 8, 16))
    options = Options(models=("lenet5",), threads=1)
    run_dir, lock = start_run(tmp_path / "results", "c", options, [g], {}, ["test"])
    said = io.StringIO()
    lane = open_lane(run_dir, "c", options, [g], lock, said, idle_w={"cpu": None})
    rates = {1: 50e9, 2: 55e9, 4: 60e9, 8: 58e9, 16: 52e9}
    run_group(lane, g, RowsWithCanary(rates), lambda m: None, lambda d: "cpu")
    close_lane(lane, ["test"])
    assert "ran at 55% of this host's best at 1 thread(s) (55.0 of 100.0 GMAC/s" in said.getvalue()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "55% of this host's best" in json.dumps(manifest)
    assert CanaryRecord.load().rates[1] == [100e9, 55e9]
    assert set(load_results([run_dir])["quality"]) == {"clean"}

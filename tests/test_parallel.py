"""``effbench run --parallel`` (issue 14): one concurrent lane per GPU, tested at the
executor seam with a fake device list (``cuda:0``, ``cuda:1``) and a fake worker that
sleeps instead of measuring (tests/fakes/fake_gpu_worker.py), so two lanes really run at
once on this GPU-less machine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, ROOT, effbench
from procs import alive

from bench import load_results
from bench.cli import main
from bench.errors import Interrupted, InvalidOption
from bench.executor import Cancellable, ForkServerExecutor, LocalExecutor, WorkerExit
from bench.parallel import assign_cpus, run_parallel, split_cores
from bench.plan import Group, Options, Timing
from bench.run_folder import start_run
from bench.runner import open_lane
from bench.session import stop_on_signals
from bench.store import RunLock
from bench.worker import Task

FAKE_WORKER = ROOT / "tests" / "fakes" / "fake_gpu_worker.py"
GPUS = ("cuda:0", "cuda:1")
CORES = sorted(os.sched_getaffinity(0))
KEY = ["model", "device", "dtype", "batch_size", "image_size", "threads", "repeat"]


class FakeGpuExecutor(Cancellable):
    """Runs the fake worker in its own session, as the local executors run the real one;
    cancellable like them (the same :class:`bench.executor.Cancellable` bookkeeping)."""

    def __init__(self, log: Path) -> None:
        self.env = dict(os.environ, FAKE_LOG=str(log), FAKE_CELL_S="0.5")

    def run(
        self, task: Task, on_message: Callable[[dict[str, Any]], None], cell_timeout_s: float
    ) -> WorkerExit:
        env = dict(self.env, OMP_NUM_THREADS=str(task.group.threads))
        proc = subprocess.Popen(
            [sys.executable, str(FAKE_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._track(proc.pid)
        try:
            proc.stdin.write(task.to_json().encode())
            proc.stdin.close()
            for line in proc.stdout:
                on_message(json.loads(line))
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            self._track(None)
            proc.wait()
            proc.stdout.close()
        code = proc.returncode
        return WorkerExit("ok") if code == 0 else WorkerExit("crashed", f"exit {code}")


def _lane(tmp_path: Path, groups: list[Group]) -> Any:
    devices = tuple(dict.fromkeys(g.device for g in groups))
    models = tuple(dict.fromkeys(g.model for g in groups))
    options = Options(models=models, devices=devices, threads=len(CORES), parallel=True)
    planned = assign_cpus(groups, CORES)
    run_dir, lock = start_run(tmp_path / "results", "p", options, planned, {}, ["test"])
    idle = {d: None for d in devices}  # no idle-power measurement of fake devices
    lane = open_lane(run_dir, "p", options, planned, lock, io.StringIO(), idle_w=idle)
    return lane, planned


def _group(model: str, device: str, batch_sizes: tuple[int, ...] = (1, 2)) -> Group:
    return Group(model, device, "float32", 8, 3, len(CORES), 0, batch_sizes)


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_cores_are_split_into_contiguous_disjoint_shares_remainder_first() -> None:
    assert split_cores([0, 1, 2, 3, 4, 5, 6], 3) == [(0, 1, 2), (3, 4), (5, 6)]
    assert split_cores([3, 1, 2, 0], 2) == [(0, 1), (2, 3)]
    with pytest.raises(InvalidOption, match="one core per GPU"):
        split_cores([0], 2)
    groups = [_group("m", "cuda:1"), _group("m", "cpu"), _group("m", "cuda:0")]
    planned = assign_cpus(groups, list(range(8)))
    # lanes in order of first appearance; threads capped at the share; CPU left alone
    assert [(g.device, g.cpus, g.threads) for g in planned] == [
        ("cuda:1", (0, 1, 2, 3), min(len(CORES), 4)),
        ("cpu", (), len(CORES)),
        ("cuda:0", (4, 5, 6, 7), min(len(CORES), 4)),
    ]
    assert Group.from_dict(planned[0].to_dict()) == planned[0]  # the manifest keeps it
    legacy = {k: v for k, v in planned[1].to_dict().items() if k != "cpus"}
    assert Group.from_dict(legacy).cpus == ()


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores for two disjoint lanes")
def test_lanes_run_concurrently_each_cell_once_pinned_to_disjoint_shares(tmp_path: Path) -> None:
    log = tmp_path / "cells.jsonl"
    groups = [_group(m, d) for m in ("m0", "m1") for d in GPUS] + [_group("m0", "cpu")]
    lane, planned = _lane(tmp_path, groups)
    t0 = time.monotonic()
    (summary,) = run_parallel(
        [lane], lambda: FakeGpuExecutor(log), lambda _: None, lambda _: "fake", ["test"]
    )
    wall = time.monotonic() - t0
    cells = _log(log)
    gpu = [c for c in cells if c["device"] in GPUS]
    cpu = [c for c in cells if c["device"] == "cpu"]
    # each cell exactly once, in the run folder and in the workers' log
    df = load_results([lane.run_dir])
    assert len(df) == summary.written == 10 and not df.duplicated(KEY).any()
    assert sorted((c["model"], c["device"], c["batch_size"]) for c in cells) == sorted(
        (c.model, c.device, c.batch_size) for g in planned for c in g.cells()
    )
    # the two GPU lanes overlap in time; the GPU phase took less than its cells in series
    on0 = [c for c in gpu if c["device"] == "cuda:0"]
    on1 = [c for c in gpu if c["device"] == "cuda:1"]
    assert any(_overlap(a, b) for a in on0 for b in on1), cells
    gpu_span = max(c["end"] for c in gpu) - min(c["start"] for c in gpu)
    assert gpu_span < sum(c["end"] - c["start"] for c in gpu), cells
    # within a lane, one cell at a time
    for lane_cells in (on0, on1):
        assert not any(_overlap(a, b) for a in lane_cells for b in lane_cells if a is not b)
    # a CPU cell never runs beside anything, and comes after the GPU lanes
    assert cpu and not any(_overlap(c, g) for c in cpu for g in gpu)
    assert min(c["start"] for c in cpu) >= max(c["end"] for c in gpu)
    # affinity: each lane's workers on its own share; disjoint; CPU groups on every core
    share0, share1 = split_cores(CORES, 2)
    assert {tuple(c["cpus"]) for c in on0} == {share0}
    assert {tuple(c["cpus"]) for c in on1} == {share1}
    assert not set(share0) & set(share1)
    assert {tuple(c["cpus"]) for c in cpu} == {tuple(CORES)}
    assert {c["omp"] for c in on0} == {str(len(share0))}
    assert set(df[df["device"] == "cuda:0"]["threads"]) == {len(share0)}
    # the plan records the pinning, so a resume does the same
    manifest = json.loads((lane.run_dir / "manifest.json").read_text())
    assert manifest["options"]["parallel"] is True
    assert {tuple(g["cpus"]) for g in manifest["plan"] if g["device"] == "cuda:1"} == {share1}
    assert wall < 30


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores for two disjoint lanes")
def test_a_signal_stops_every_lane_kills_every_worker_and_keeps_the_rows(tmp_path: Path) -> None:
    log = tmp_path / "cells.jsonl"
    lane, _ = _lane(tmp_path, [_group("hang", d) for d in GPUS])

    def both_hung() -> bool:
        return len([e for e in _log(log) if "hang" in e]) == 2

    def interrupt_when_hung() -> None:
        deadline = time.monotonic() + 60
        while not both_hung() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_hung, daemon=True).start()
    with stop_on_signals(), pytest.raises(Interrupted):
        try:
            run_parallel(
                [lane], lambda: FakeGpuExecutor(log), lambda _: None, lambda _: "fake", ["t"]
            )
        finally:
            stopped = time.monotonic()
    assert both_hung()
    hung = [e["hang"] for e in _log(log) if "hang" in e]
    deadline = stopped + 5
    while any(alive(p) for p in hung) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in hung), "a lane's worker outlived the interrupt"
    df = load_results([lane.run_dir])  # batch 1 of each lane, nothing for the hung cells
    assert sorted(zip(df["device"], df["batch_size"], strict=True)) == [(d, 1) for d in GPUS]
    manifest = json.loads((lane.run_dir / "manifest.json").read_text())
    assert manifest["sessions"][-1]["interrupted_by"] == "SIGINT"
    RunLock(lane.run_dir).release()  # the lock was released


@pytest.mark.parametrize("make", [ForkServerExecutor, LocalExecutor], ids=["fork", "subprocess"])
def test_cancel_from_another_thread_kills_a_hung_real_worker(make: Any) -> None:
    """The real executors' cancel hook, which the parallel runner calls from the main thread
    while a lane thread waits in ``run``."""
    executor = make()
    getattr(executor, "prepare", lambda: None)()
    timing = Timing(warmup_iters=1, warmup_time_s=0.0, min_time_s=0.05, max_time_s=0.3)
    task = Task("c", Group("hang_at2", "cpu", "float32", 8, 3, 1, 0, (1, 2)), timing)
    seen: list[dict[str, Any]] = []
    cancelled: list[float] = []

    def on_message(msg: dict[str, Any]) -> None:
        seen.append(msg)
        if msg.get("event") == "start" and msg.get("batch_size") == 2:
            threading.Timer(0.3, cancel).start()

    def cancel() -> None:
        cancelled.append(time.monotonic())
        executor.cancel()

    outcome = executor.run(task, on_message, 600)
    assert cancelled and time.monotonic() - cancelled[0] < 5
    assert outcome.status == "crashed" and "SIGKILL" in outcome.detail
    assert [m["row"]["batch_size"] for m in seen if m.get("event") == "row"] == [1]


def test_parallel_on_a_cpu_only_machine_records_the_plan_and_runs_alone(tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", "--parallel", *FAST]
    r = effbench([*args, "--out", str(out), "--run-id", "cpu"])
    assert r.returncode == 0, r.stderr
    run_dir = out / "cpu"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["options"]["parallel"] is True
    assert [g["cpus"] for g in manifest["plan"]] == [[]]  # CPU groups are not pinned
    assert len(load_results([run_dir])) == 2


def test_parallel_with_resume_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--resume", str(tmp_path), "--parallel"]) == 2
    assert "drop --parallel" in capsys.readouterr().err


def test_a_resume_pinned_to_cores_it_may_not_use_is_refused(tmp_path: Path) -> None:
    from bench.errors import DeviceUnavailable
    from bench.run_folder import check_pinned_cores

    check_pinned_cores([_group("m", "cuda:0")])
    pinned = [Group(**{**_group("m", "cuda:0").to_dict(), "cpus": (max(CORES) + 1,)})]
    with pytest.raises(DeviceUnavailable, match="not available to this process"):
        check_pinned_cores(pinned)


def test_a_cluster_deals_its_cuda_groups_to_one_lane_per_gpu(tmp_path: Path) -> None:
    # On Ray the plan's device is "cuda" (any GPU of the cluster): with two GPUs offered,
    # its groups go to two concurrent lanes, each group once, and CPU groups still run alone.
    log = tmp_path / "cells.jsonl"
    groups = [_group(m, "cuda") for m in ("m0", "m1", "m2", "m3")] + [_group("m0", "cpu")]
    lane, _ = _lane(tmp_path, groups)
    t0 = time.monotonic()
    (summary,) = run_parallel(
        [lane],
        lambda: FakeGpuExecutor(log),
        lambda _: None,
        lambda _: "fake",
        ["test"],
        cluster_gpus=2,
    )
    cells = _log(log)
    gpu = [c for c in cells if c["device"] == "cuda"]
    cpu = [c for c in cells if c["device"] == "cpu"]
    assert summary.written == len(cells) == 10
    assert sorted((c["model"], c["batch_size"]) for c in gpu) == sorted(
        (m, b) for m in ("m0", "m1", "m2", "m3") for b in (1, 2)
    )
    # at most two cells at once (one per GPU), and at some moment two
    starts = sorted(c["start"] for c in gpu)
    most = max(sum(1 for c in gpu if c["start"] <= t < c["end"]) for t in starts)
    assert most == 2
    assert not any(_overlap(c, g) for c in cpu for g in gpu)
    assert time.monotonic() - t0 < 30


def _pid_and_threads(n: int) -> tuple[int, int, bool]:
    preloaded = "torch" in sys.modules  # by the fork server, before this call
    import torch

    torch.set_num_threads(n)
    return os.getpid(), torch.get_num_threads(), preloaded


def _fails() -> None:
    raise ValueError("no such ceiling")


def _sleeps() -> None:
    time.sleep(30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's")
def test_a_call_in_a_fresh_process_returns_its_value_or_says_why_not() -> None:
    """The ceilings run this way: forked from the fork server (torch imported, nothing
    run), so they pay no imports and find their own thread pool. (torchvision's zoo is
    there only when this process had imported torchvision: the test asserted it, and
    passed or failed by which tests had run before it in its worker.)"""
    from bench.errors import WorkerProtocolError
    from bench.executor import call_in_fresh_process

    pid, threads, preloaded = call_in_fresh_process(_pid_and_threads, (1,), 60)
    assert pid != os.getpid() and threads == 1 and preloaded
    with pytest.raises(WorkerProtocolError, match="ValueError: no such ceiling"):
        call_in_fresh_process(_fails, (), 60)
    started = time.monotonic()
    with pytest.raises(WorkerProtocolError, match="no answer within 1 s"):
        call_in_fresh_process(_sleeps, (), 1)
    assert time.monotonic() - started < 10  # killed, not waited for

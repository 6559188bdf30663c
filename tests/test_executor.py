"""The executors' one watchdog loop (bench.executor.watch), on a fake clock and a fake
worker stream: the fork server, new-interpreter and Ray executors all time cells with it;
the fork server of a Ray worker, which Ray gives one task after another; a Ray node's
environment record, taken outside the Ray worker where a GPU is present; and the replacement
of the fork server, which must not wait for processes forked since."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from procs import alive

from bench import executor
from bench.executor import STARTUP_GRACE_S, Received, WorkerExit, watch
from bench.loadgen import CpuLoad
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


# ----------------------------------------------------------------- a Ray worker's fork server

# What a Ray worker does across tasks, without Ray: before each task Ray sets the task's
# CUDA_VISIBLE_DEVICES in the worker's environment; the task then makes the fork server ready.
RAY_WORKER = """
import json, os, time
from bench.executor import call_in_fresh_process, fork_server_pid
from bench.ray_executor import _fork_server

out = []
for gpu, model in (("0", "tiny_mlp"), ("0", "lenet5"), ("1", "tiny_mlp"), ("1", "resnet18")):
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _fork_server(model)
    pid = fork_server_pid()  # what its workers get: the environment it started with
    own, environ = open("/proc/self/cmdline", "rb").read(), {}
    while not environ:  # forked, not yet exec'd: /proc shows this process's, or nothing
        time.sleep(0.01)
        if open(f"/proc/{pid}/cmdline", "rb").read() != own:
            text = open(f"/proc/{pid}/environ").read()
            environ = dict(v.split("=", 1) for v in text.split("\\0") if "=" in v)
    call_in_fresh_process(os.getpid, (), 120)  # a fork: the server has done its imports
    zoo = "torchvision/_C" in open(f"/proc/{fork_server_pid()}/maps").read()
    out.append((pid, environ.get("CUDA_VISIBLE_DEVICES"), zoo))
print(json.dumps(out))
"""


@pytest.mark.system
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's")
def test_a_ray_workers_fork_server_follows_each_tasks_gpu_and_loads_the_zoo_when_needed() -> None:
    """bench.ray_executor._fork_server: a server started for one task's GPU is not the one a
    task on another GPU forks from (its workers would measure on the first task's GPU); a
    task with the same environment keeps the server; torchvision's zoo is preloaded only
    once a task of one of its networks comes."""
    r = subprocess.run(
        [sys.executable, "-c", RAY_WORKER], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    (pid0, gpu0, zoo0), (pid1, gpu1, zoo1), (pid2, gpu2, zoo2), (_, gpu3, zoo3) = json.loads(
        r.stdout
    )
    assert (gpu0, gpu1, gpu2, gpu3) == ("0", "0", "1", "1")
    assert pid1 == pid0 and pid2 != pid0
    assert (zoo0, zoo1, zoo2, zoo3) == (False, False, False, True)


def test_a_ray_nodes_record_runs_its_forwards_in_a_forked_process_not_in_the_ray_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench.ray_executor._node_environment runs in a Ray worker, which Ray keeps: with a GPU
    (faked) the record's discovery (a forward on every device and dtype: a CUDA context on a
    GPU) runs in a process forked from the worker's fork server, never in the worker (this
    process), whose patched bench.devices the forked process does not have."""
    from bench import devices, ray_executor

    def forward_here(device: str, dtype: object) -> bool:
        raise AssertionError(f"the Ray worker ran a {dtype} forward on {device} itself")

    monkeypatch.setattr(devices, "has_accelerator", lambda: True)
    monkeypatch.setattr(devices, "_dtype_runs", forward_here)
    record = ray_executor._node_environment()
    assert record["hostname"] == socket.gethostname()
    assert list(record["devices"]) == ["cpu"] and "float32" in record["devices"]["cpu"]


def test_a_ray_nodes_failed_listing_names_the_node_and_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import devices, ray_executor
    from bench.errors import DeviceUnavailable, WorkerProtocolError

    def fails(*args: object) -> None:
        raise WorkerProtocolError("the process ended without an answer")

    monkeypatch.setattr(devices, "has_accelerator", lambda: True)
    monkeypatch.setattr(executor, "call_in_fresh_process", fails)
    with pytest.raises(DeviceUnavailable) as e:
        ray_executor._node_environment()
    said = str(e.value)
    assert f"could not list node {socket.gethostname()}'s devices" in said
    assert "ended without an answer" in said and "effbench env" in said


# ----------------------------------------------------------------- replacing the fork server


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's")
def test_replacing_the_fork_server_does_not_wait_for_processes_forked_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose environment differs replaces this process's fork server. multiprocessing
    stops a server by closing a pipe and waiting for it to exit, which it does only once
    every copy of the pipe is closed, and every process forked from this one since holds a
    copy: a load generator's spinners beside a sweep run in the same process, a user's own
    workers. The replacement must neither wait for them nor end them."""
    executor.ForkServerExecutor().prepare()
    old = executor.fork_server_pid()
    with CpuLoad(1, max_s=20, on_s=0.001, off_s=5) as load:  # mostly asleep, for 20 s
        monkeypatch.setenv("EFFBENCH_TEST_SERVER_GENERATION", str(old))
        start = time.monotonic()
        executor.ForkServerExecutor().prepare()
        took = time.monotonic() - start
        assert executor.fork_server_pid() not in (None, old)
        assert took < 10, f"the old server's stop waited {took:.1f} s for the load to end"
        assert all(alive(pid) for pid in load.pids), "the replacement ended a process of ours"

"""The Ray executor on a local Ray instance (issue 14). Every test runs effbench inside a
private network namespace whose only interface is loopback (`unshare -n`), so nothing Ray
starts can listen on or talk to any address but 127.0.0.1. Skipped where Ray is not
installed or namespaces cannot be made."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import FAST, ROOT, effbench, one_line_error
from procs import alive, descendants

from bench import load_results
from bench.keys import RowKey


def _loopback_only_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed"),
    pytest.mark.skipif(
        not _loopback_only_works(), reason="cannot make a loopback-only network namespace"
    ),
]

# lo up, then the command: inside, 127.0.0.1 is the only address there is
LOOPBACK = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _cmd(args: Sequence[str]) -> list[str]:
    return [*LOOPBACK, sys.executable, "-m", "bench", *args]


def _run(args: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _keys(run_dir: Path) -> list[RowKey]:
    return [RowKey.of(r) for r in load_results([run_dir]).to_dict(orient="records")]


def test_a_ray_sweep_writes_the_cells_the_fork_executor_writes(tmp_path: Path) -> None:
    plan = ["--models", "tiny_mlp,lenet5", "--batch-sizes", "1,2", "--threads", "1", *FAST]
    ray = _run(["run", *plan, "--executor", "ray", "--out", str(tmp_path), "--run-id", "ray"])
    assert ray.returncode == 0, ray.stderr
    fork = effbench(["run", *plan, "--out", str(tmp_path), "--run-id", "fork"])
    assert fork.returncode == 0, fork.stderr
    assert sorted(_keys(tmp_path / "ray")) == sorted(_keys(tmp_path / "fork"))
    df = load_results([tmp_path / "ray"])
    assert set(df["status"]) == {"ok"}
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    nodes = manifest["environment"]["nodes"]
    assert set(df["hostname"]) == set(nodes)  # every row names a node the manifest describes
    assert manifest["environment"]["cluster_gpus"] == []


def _ray_task_pids(runner: int) -> list[int]:
    """Ray worker processes running a group (their process title names the function) of the
    Ray instance that the runner ``runner`` started: those in its network namespace (each
    test's own, `unshare -n`). Never another test's, which may run at the same time."""
    try:
        ours = os.readlink(f"/proc/{runner}/ns/net")
    except OSError:
        return []
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::_group_stream") and (
                os.readlink(cmdline.parent / "ns" / "net") == ours
            ):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_ray_worker_gives_a_crashed_row_and_the_sweep_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "run.err"
    args = ["run", "--executor", "ray", "--models", "hang_at2,tiny_mlp", "--batch-sizes", "1,2"]
    args += ["--cell-timeout", "120", *FAST, "--out", str(tmp_path), "--run-id", "k"]
    with log.open("wb") as err:
        proc = subprocess.Popen(_cmd(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: "hang_at2 cpu float32 bs=2" in log.read_text(), 180, "the hanging cell")
        _wait(lambda: _ray_task_pids(proc.pid), 30, "the Ray task's worker")
        time.sleep(0.5)
        for pid in _ray_task_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=180) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    df = load_results([tmp_path / "k"]).set_index(["model", "batch_size"])
    assert df.loc[("hang_at2", 1), "status"] == "ok"
    assert df.loc[("hang_at2", 2), "status"] == "crashed"
    assert "Ray task failed" in df.loc[("hang_at2", 2), "error"]
    assert set(df.loc["tiny_mlp", "status"]) == {"ok"}  # the sweep went on


def test_sigkill_of_the_driver_then_resume_on_ray_measures_every_cell_once(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "d"
    args = ["run", "--executor", "ray", "--models", "tiny_mlp,lenet5,alloc64"]
    args += ["--batch-sizes", "1,2", "--repeats", "2", "--min-time", "0.3", "--max-time", "0.4"]
    args += ["--warmup-iters", "1", "--warmup-time", "0", "--out", str(tmp_path), "--run-id", "d"]
    proc = subprocess.Popen(
        _cmd(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(lambda: len(list(run_dir.glob("part-*.parquet"))) >= 2, 240, "two rows")
    finally:
        proc.kill()  # SIGKILL: the driver cannot clean anything up
        proc.wait()
    before = len(list(run_dir.glob("part-*.parquet")))
    assert 2 <= before < 12
    resumed = _run(["run", "--resume", str(run_dir), "--executor", "ray"])
    assert resumed.returncode == 0, resumed.stderr
    keys = _keys(run_dir)
    assert len(keys) == len(set(keys)) == 3 * 2 * 2
    assert set(load_results([run_dir])["status"]) == {"ok"}


def test_ctrl_c_cancels_the_ray_task_and_leaves_no_worker(tmp_path: Path) -> None:
    log = tmp_path / "run.err"
    args = ["run", "--executor", "ray", "--models", "hang_at2", "--batch-sizes", "1,2"]
    args += ["--cell-timeout", "120", *FAST, "--out", str(tmp_path), "--run-id", "c"]
    with log.open("wb") as err:
        proc = subprocess.Popen(_cmd(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: "hang_at2 cpu float32 bs=2" in log.read_text(), 180, "the hanging cell")
        _wait(lambda: _ray_task_pids(proc.pid), 30, "the Ray task's worker")
        tasks = _ray_task_pids(proc.pid)
        tasks += [d for t in tasks for d in descendants(t)]  # the measuring processes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "--resume" in log.read_text()
    # the cancelled task's Ray worker and the measuring process under it are gone
    assert len(tasks) >= 2
    _wait(lambda: not any(alive(p) for p in tasks), 15, "the task to end")
    df = load_results([tmp_path / "c"])
    assert list(df["batch_size"]) == [1] and list(df["status"]) == ["ok"]


# --------------------------------------------------------------------------- issue 21


def test_an_unreachable_ray_address_fails_in_one_line_within_the_bound(tmp_path: Path) -> None:
    """Nothing listens at 127.0.0.1:1, and a port that is not Ray's never answers; each is
    one line within $EFFBENCH_RAY_CONNECT_TIMEOUT_S (here 3 s), not minutes of retries.
    No Ray instance is started, so this runs outside the namespace (the listening socket
    is this process's)."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    env = {**os.environ, "EFFBENCH_RAY_CONNECT_TIMEOUT_S": "3"}
    try:
        for address in ("127.0.0.1:1", f"127.0.0.1:{silent.getsockname()[1]}"):
            args = ["run", "--executor", "ray", "--ray-address", address, "--models", "tiny_mlp"]
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, "-m", "bench", *args, "--out", str(tmp_path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=90,
                env=env,
            )
            assert time.monotonic() - t0 < 30, r.stderr
            assert r.returncode == 2, r.stderr
            assert address in one_line_error(r.stderr)
    finally:
        silent.close()
    assert not any(tmp_path.iterdir())


def _connects(trace: Path) -> list[str]:
    """The IPv4 addresses an `strace -e trace=connect` log shows connects to."""
    return re.findall(r'sin_addr=inet_addr\("([0-9.]+)"\)', trace.read_text())


def test_sigterm_on_ray_records_the_session_exits_143_and_nothing_probes_outside(
    tmp_path: Path,
) -> None:
    """docs/scale-out.md: SIGTERM stops a Ray sweep like Ctrl-C. And the local instance
    never probes 8.8.8.8 for "the node's IP" (it takes 127.0.0.1): in this namespace the
    probe finds no route and Ray logs the attempt on the runner's stderr; where strace is
    installed, no connect towards it is traced either (outside a namespace the probe
    connects)."""
    log, trace = tmp_path / "run.err", tmp_path / "connect.trace"
    args = ["run", "--executor", "ray", "--models", "hang_at2", "--batch-sizes", "1,2"]
    args += ["--cell-timeout", "120", *FAST, "--out", str(tmp_path), "--run-id", "t"]
    traced = shutil.which("strace") is not None
    strace = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", str(trace)]
    cmd = [*LOOPBACK, *(strace if traced else []), sys.executable, "-m", "bench", *args]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: "hang_at2 cpu float32 bs=2" in log.read_text(), 180, "the hanging cell")
        _wait(lambda: _ray_task_pids(proc.pid), 30, "the Ray task's worker")
        runner = proc.pid
        if traced:  # strace's child is the runner
            runner = next(
                p for p in descendants(proc.pid)
                if b"bench" in Path(f"/proc/{p}/cmdline").read_bytes()
            )  # fmt: skip
        os.kill(runner, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "stopped by SIGTERM" in text and f"--resume {tmp_path / 't'}" in text
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["sessions"][-1]["interrupted_by"] == "SIGTERM"
    df = load_results([tmp_path / "t"])
    assert list(df["batch_size"]) == [1] and list(df["status"]) == ["ok"]
    assert "8.8.8.8" not in text
    if traced:
        assert "8.8.8.8" not in _connects(trace)

"""The real sweep (CLI -> runner -> worker processes -> parquet) on tiny test models."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, ROOT, effbench
from procs import alive, descendants

from bench import load_results

CELL = ["model", "device", "dtype", "batch_size", "image_size", "threads", "repeat"]


def test_sigkill_mid_run_then_resume_finds_every_cell_once(out_dir: Path) -> None:
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2,3,4", "--repeats", "2"]
    args += ["--out", str(out_dir), "--run-id", "killed", "--min-time", "0.4", "--max-time", "0.5"]
    args += ["--warmup-iters", "1", "--warmup-time", "0"]
    err = (out_dir.parent / "run.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    run_dir = out_dir / "killed"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(run_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sorted(p.name for p in run_dir.glob("part-*.parquet"))
    err.close()
    log = (out_dir.parent / "run.err").read_text()
    assert 3 <= len(before) < 8, f"the kill should land mid-run; runner said:\n{log}"
    assert len(workers) >= 2, "expected a fork server and a worker under the runner"
    # the fork server exits when the runner's end of its pipe closes; its workers follow
    give_up = time.monotonic() + 30
    while any(alive(w) for w in workers) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "a worker outlived the runner"
    assert not list(run_dir.glob(".*.tmp")), "a partial part file was left behind"

    rows_before = load_results([run_dir])
    resumed = effbench(["run", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    df = load_results([run_dir])
    assert len(df) == 4 * 2  # batch sizes x repeats
    assert not df.duplicated(CELL).any()
    assert set(df["status"]) == {"ok"}
    # rows written before the kill are kept as they were
    kept = df.merge(rows_before[[*CELL, "timestamp"]], on=[*CELL, "timestamp"])
    assert len(kept) == len(rows_before)
    # resuming a finished run measures nothing more
    again = effbench(["run", "--resume", str(run_dir)])
    assert again.returncode == 0 and len(load_results([run_dir])) == 8


def test_out_of_memory_gives_oom_then_skipped_rows(out_dir: Path) -> None:
    # alloc64 touches 64 MiB per image: batch 4 (256 MiB) exceeds a 200 MiB cap.
    r = effbench(
        ["run", "--models", "alloc64", "--batch-sizes", "1,2,4,8", "--memory-cap", "200MiB"]
        + ["--out", str(out_dir), "--run-id", "oom", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "oom"]).sort_values("batch_size")
    assert list(df["status"]) == ["ok", "ok", "oom", "skipped"]
    assert "out of memory at batch 4" in df["error"].iloc[2]
    ok = df[df["status"] == "ok"]
    assert ok["latency_ms_median"].notna().all() and (ok["n_samples"] > 0).all()


def test_crash_and_timeout_become_rows_and_the_sweep_goes_on(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "crash_at2,hang_at2,tiny_mlp", "--batch-sizes", "1,2,4"]
        + ["--cell-timeout", "8", "--out", str(out_dir), "--run-id", "bad", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "bad"])
    status = {
        (m, b): s for m, b, s in df[["model", "batch_size", "status"]].itertuples(index=False)
    }
    assert status[("crash_at2", 1)] == "ok"
    assert status[("crash_at2", 2)] == "crashed"
    assert status[("crash_at2", 4)] == "skipped"
    assert status[("hang_at2", 1)] == "ok"
    assert status[("hang_at2", 2)] == "timeout"
    assert status[("hang_at2", 4)] == "skipped"
    assert all(status[("tiny_mlp", b)] == "ok" for b in (1, 2, 4))
    crash_error = df.set_index(["model", "batch_size"]).loc[("crash_at2", 2), "error"]
    assert "SIGABRT" in crash_error
    # batch 1's memory pass started the profiler, whose library prints when it starts and
    # stops: none of that is what the crashed row quotes from the worker's stderr
    assert "profiler" not in crash_error and "gpuGetDeviceCount" not in crash_error


def test_cpu_memory_probe_measures_a_known_activation(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "alloc64", "--batch-sizes", "1,2,4", "--out", str(out_dir)]
        + ["--run-id", "mem", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "mem"]).sort_values("batch_size")
    # weights: Linear(192 -> 10) in float32 = (192 * 10 + 10) * 4 bytes
    assert set(df["weights_bytes"]) == {(192 * 10 + 10) * 4}
    # the allocator's peak, to the byte: weights and the input (b × 3 × 8 × 8 floats) held
    # before the forward; in it, the 64 MiB per image of torch.ones, then the head's and
    # the sum's b × 10 floats while it is alive
    b = df["batch_size"]
    known = df["weights_bytes"] + b * 3 * 8 * 8 * 4 + b * (64 * 2**20 + 2 * 10 * 4)
    assert list(df["peak_memory_bytes"]) == list(known)
    # the pass's forward was the cell's first, standing in for the warm-up's first call
    method = (
        "cpu_allocator_peak; one forward first, as the warm-up's first call; "
        "rss: vmhwm over the cell"
    )
    assert set(df["memory_method"]) == {method}
    # the resident set follows: torch.ones touches every page of its 64 MiB per image
    activation = df["peak_rss_bytes"] - df["weights_bytes"]
    rel = (activation - b * 64 * 2**20).abs() / (b * 64 * 2**20)
    assert (rel < 0.10).all(), list(zip(activation, b, strict=True))


def test_row_contents_of_a_real_model(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "squeezenet1_1", "--batch-sizes", "1,2", "--image-size", "64"]
        + ["--out", str(out_dir), "--run-id", "sq", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "sq"]).sort_values("batch_size")
    from torchvision.models import squeezenet1_1

    ref = sum(p.numel() for p in squeezenet1_1().parameters())
    assert (df["params"] == ref).all()
    assert (df["image_size"] == 64).all()
    # MACs per image do not depend on the batch size and are counted once
    assert df["macs"].nunique() == 1 and df["macs_counter"].iloc[0] == "torch"
    for row in df.itertuples():
        samples = pd.Series(row.latency_ms_samples)
        assert len(samples) == row.n_samples
        assert samples.median() == pytest.approx(row.latency_ms_median)
        assert row.time_per_image_ms == pytest.approx(row.latency_ms_median / row.batch_size)
        assert row.throughput_ips == pytest.approx(1e3 / row.time_per_image_ms)
        assert row.latency_ms_p10 <= row.latency_ms_median <= row.latency_ms_p90
    assert df["top1"].iloc[0] == pytest.approx(58.178)  # torchvision metadata
    assert "SqueezeNet1_1_Weights" in df["accuracy_source"].iloc[0]
    manifest = (out_dir / "sq" / "manifest.json").read_text()
    assert "torch_version" in manifest and "cpu_model" in manifest


@pytest.mark.gpu
def test_cuda_sweep_records_allocator_peak_and_settings(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "alloc64,resnet18", "--batch-sizes", "1,4", "--devices", "cuda"]
        + ["--dtypes", "float32,float16", "--out", str(out_dir), "--run-id", "gpu", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "gpu"])
    assert (df["status"] == "ok").all()
    assert set(df["memory_method"]) == {
        "cuda_max_memory_allocated; one forward after the timed window"
    }
    assert (df["tf32"] == False).all() and (df["cudnn_benchmark"] == True).all()  # noqa: E712
    alloc = df[(df["model"] == "alloc64") & (df["dtype"] == "float32")].sort_values("batch_size")
    activation = alloc["peak_memory_bytes"] - alloc["weights_bytes"]
    expected = alloc["batch_size"] * 64 * 2**20
    assert ((activation - expected).abs() / expected < 0.10).all()


def test_fvcore_counter_is_selectable_and_recorded(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", "--macs-counter", "fvcore"]
        + ["--out", str(out_dir), "--run-id", "fv", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "fv"])
    assert set(df["macs_counter"]) == {"fvcore"}
    assert set(df["macs"]) == {3 * 8 * 8 * 64 + 64 * 10}  # the two Linear layers, per image


def test_subprocess_executor_reports_a_crash_with_its_signal(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "crash_at2", "--batch-sizes", "1,2,4", "--executor", "subprocess"]
        + ["--out", str(out_dir), "--run-id", "sub", *FAST]
    )
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "sub"]).sort_values("batch_size")
    assert list(df["status"]) == ["ok", "crashed", "skipped"]
    assert "SIGABRT" in df["error"].iloc[1]


def test_variants_interleave_their_groups_and_get_their_environment(out_dir: Path) -> None:
    args = ["run", "--models", "env_width,tiny_mlp", "--batch-sizes", "1", "--devices", "cpu",
            "--threads", "1", "--repeats", "2", *FAST, "--out", str(out_dir), "--run-id", "ab",
            "--variant", "narrow", "--variant", "wide:EFFBENCH_TEST_WIDTH=32"]  # fmt: skip
    r = effbench(args)
    assert r.returncode == 0, r.stderr
    narrow, wide = out_dir / "ab-narrow", out_dir / "ab-wide"
    # the arms share one idle-power measurement of the device (or one note that it has none)
    power_lines = ("effbench: idle power of cpu", "effbench: power not measured on cpu")
    assert sum(line.startswith(power_lines) for line in r.stderr.splitlines()) == 1
    rows = load_results([narrow, wide])
    assert len(rows) == 8 and set(rows["status"]) == {"ok"}
    assert set(rows["run_id"]) == {"ab-narrow", "ab-wide"}
    # the variable reached the builder of the wide arm only: nn.Linear(192, w) has 193 * w
    params = rows[rows["model"] == "env_width"].groupby("run_id")["params"].unique()
    assert list(params["ab-narrow"]) == [193 * 16] and list(params["ab-wide"]) == [193 * 32]
    # groups alternate, the arms' order flipping every step: A B, B A, A B, B A
    seq = rows.sort_values("timestamp")[["run_id", "model", "repeat"]].values.tolist()
    assert seq == [
        ["ab-narrow", "env_width", 0], ["ab-wide", "env_width", 0],
        ["ab-wide", "tiny_mlp", 0], ["ab-narrow", "tiny_mlp", 0],
        ["ab-narrow", "env_width", 1], ["ab-wide", "env_width", 1],
        ["ab-wide", "tiny_mlp", 1], ["ab-narrow", "tiny_mlp", 1],
    ]  # fmt: skip
    assert json.loads((wide / "manifest.json").read_text())["options"]["env"] == [
        ["EFFBENCH_TEST_WIDTH", "32"]
    ]
    # both arms resume together, each with its own environment, measuring only what is gone
    for run in (narrow, wide):
        next(run.glob("part-env_width_*_r1-*.parquet")).unlink()
    r = effbench(["run", "--resume", str(narrow), str(wide)])
    assert r.returncode == 0, r.stderr
    again = load_results([narrow, wide])
    assert len(again) == 8
    params = again[again["model"] == "env_width"].groupby("run_id")["params"].unique()
    assert list(params["ab-narrow"]) == [193 * 16] and list(params["ab-wide"]) == [193 * 32]
    # an existing arm is never overwritten, and nothing new is created
    r = effbench([*args[:-4], "--variant", "narrow", "--variant", "third:X=1"])
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert not (out_dir / "ab-third").exists()


@pytest.mark.parametrize("executor", ["fork", "subprocess"])
def test_the_runner_lists_its_devices_in_a_forked_process_not_in_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    """Discovery runs a small forward on every device and dtype, which on a GPU makes a CUDA
    context; with a GPU (faked here) the runner (this process) asks a process forked from
    the fork server, so it never runs one itself, whatever executor runs the workers. The
    forked process's bench.devices is not this patched one, and finds this machine's CPU."""
    from bench import devices

    def forward_here(device: str, dtype: object) -> bool:
        raise AssertionError(f"the runner ran a {dtype} forward on {device} itself")

    monkeypatch.setattr(devices, "has_accelerator", lambda: True)
    monkeypatch.setattr(devices, "_dtype_runs", forward_here)
    r = effbench(["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--threads", "1",
                  "--executor", executor, *FAST, "--out", str(tmp_path),
                  "--run-id", "d"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "d" / "manifest.json").read_text())["environment"]
    assert list(record["devices"]) == ["cpu"] and "float32" in record["devices"]["cpu"]
    assert load_results([tmp_path / "d"])["status"].tolist() == ["ok"]


def test_a_discovery_that_fails_in_the_forked_process_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import devices, executor
    from bench.errors import WorkerProtocolError

    def fails(*args: object) -> None:
        raise WorkerProtocolError("the process ended without an answer")

    monkeypatch.setattr(devices, "has_accelerator", lambda: True)
    monkeypatch.setattr(executor, "call_in_fresh_process", fails)
    r = effbench(["run", "--models", "tiny_mlp", "--out", str(tmp_path)])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("effbench: error: could not list this machine's devices")
    assert "ended without an answer" in last and "effbench env" in last
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_second_run_in_one_process_gives_its_workers_the_environment_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs in this process (bench.cli.main, as a notebook or these tests call it): the
    second's workers build env_width under the variable as it is then, from a new fork
    server, not from the one the first run started under the old value; an unchanged
    environment keeps the server."""
    from bench.executor import fork_server_pid

    widths, servers = [], []
    for width in ("8", "8", "64"):
        monkeypatch.setenv("EFFBENCH_TEST_WIDTH", width)
        run_id = f"w{len(servers)}"
        r = effbench(["run", "--models", "env_width", "--batch-sizes", "1", "--threads", "1",
                      *FAST, "--out", str(tmp_path), "--run-id", run_id])  # fmt: skip
        assert r.returncode == 0, r.stderr
        widths.append(int(load_results([tmp_path / run_id])["params"].item()))
        servers.append(fork_server_pid())
    # a linear layer of 3*8*8 inputs: weights and biases
    assert widths == [192 * 8 + 8, 192 * 8 + 8, 192 * 64 + 64]
    assert servers[0] == servers[1] != servers[2] and not alive(servers[0])

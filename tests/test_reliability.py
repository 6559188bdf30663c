"""The runner's core under signals, races and hostile input (issue 11): each test is named
after the promise it protects (see docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import FAST, ROOT, effbench, one_line_error, run_main
from procs import alive, descendants

from bench import load_results
from bench.store import RunLock

KEY = ["model", "device", "dtype", "batch_size", "image_size", "threads", "repeat"]
HANG = ["--models", "hang_at2", "--batch-sizes", "1,2", "--cell-timeout", "60"]
HANG += ["--max-time", "0.3", "--min-time", "0.1", "--warmup-iters", "1", "--warmup-time", "0"]


# --------------------------------------------------------------------------- helpers


def _group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def _start(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """A real runner in its own process group (as a shell job would be)."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bench", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _hung_runner(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path, list[int]]:
    """A runner whose worker measured batch 1 and now hangs in batch 2."""
    out, log = tmp_path / "results", tmp_path / "run.err"
    proc = _start(["run", *HANG, "--out", str(out), "--run-id", "hung"], log)
    run_dir = out / "hung"
    _wait_for(lambda: any(run_dir.glob("part-*.parquet")), 180, "the first row")
    _wait_for(lambda: "bs=2" in log.read_text(), 30, "the hanging cell to start")
    time.sleep(0.5)
    procs = descendants(proc.pid)
    assert len(procs) >= 2, "expected a fork server and a worker under the runner"
    return proc, run_dir, log, procs


def _assert_nothing_left(pgid: int, procs: Sequence[int], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _group_members(pgid) and not any(alive(p) for p in procs):
            return
        time.sleep(0.1)
    left = [p for p in [*_group_members(pgid), *procs] if alive(p)]
    cmds = [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in left if alive(p)]
    raise AssertionError(f"processes of the sweep outlived it by {within:g} s: {cmds}")


# --------------------------------------------------------------------------- 1, 2: signals


def test_first_ctrl_c_stops_a_hung_cell_keeps_rows_and_says_how_to_resume(tmp_path: Path) -> None:
    proc, run_dir, log, procs = _hung_runner(tmp_path)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole job
    code = proc.wait(timeout=10)
    assert time.monotonic() - t0 < 5, "the first Ctrl-C must stop the sweep within seconds"
    text = log.read_text()
    assert code == 130, text
    assert f"--resume {run_dir}" in text and "Traceback" not in text
    df = load_results([run_dir])
    assert list(df["batch_size"]) == [1] and list(df["status"]) == ["ok"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["sessions"][-1]["interrupted_by"] == "SIGINT"
    _assert_nothing_left(proc.pid, procs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_leave_no_process(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc, run_dir, log, procs = _hung_runner(tmp_path)
    proc.send_signal(sig)  # the runner alone, as a service manager or a closed terminal does
    code = proc.wait(timeout=10)
    text = log.read_text()
    assert code == 128 + sig, text
    assert f"stopped by {sig.name}" in text and f"--resume {run_dir}" in text
    assert len(load_results([run_dir])) == 1
    _assert_nothing_left(proc.pid, procs)


def test_sigkill_of_the_runner_takes_the_fork_server_and_a_hung_worker_with_it(
    tmp_path: Path,
) -> None:
    proc, run_dir, _, procs = _hung_runner(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    _assert_nothing_left(proc.pid, procs)
    assert len(load_results([run_dir])) == 1


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    # The handler of `effbench run`, with the first signal caught and cleanup that hangs.
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        from bench.session import stop_on_signals
        from bench.errors import Interrupted
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except Interrupted:
                print("first", flush=True)
                time.sleep(60)  # a cleanup that never ends
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "first"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - t0 < 3


# --------------------------------------------------------------------------- 4: one identity


COLLIDING = """
from torch import nn
from models.registry import ModelSpec, register_model


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


for name in ("my net", "my-net", "x" * 240):
    register_model(ModelSpec(name=name, family="test", builder=tiny, image_size=8))
"""


def test_models_whose_names_slug_alike_keep_one_row_each_and_resume_measures_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "colliding_models.py").write_text(COLLIDING)
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = "effbench_test_models,colliding_models"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = tmp_path / "results"
    models = ["my net", "my-net", "x" * 240]
    args = ["run", "--models", ",".join(models), "--batch-sizes", "1,2", *FAST]
    r = effbench([*args, "--out", str(out), "--run-id", "c"], env=env)
    assert r.returncode == 0, r.stderr
    run_dir = out / "c"
    parts = sorted(run_dir.glob("part-*.parquet"))
    assert len(parts) == 6
    df = load_results([run_dir])
    assert sorted(df["model"]) == sorted(m for m in models for _ in (1, 2))
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    again = effbench(["run", "--resume", str(run_dir)], env=env)
    assert again.returncode == 0, again.stderr
    assert "0 rows (nothing to do: every cell of the plan has a row)" in again.stderr
    assert "timed iterations" not in again.stderr  # no "100% outside them" of an empty run
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("part-*.parquet")} == stamps


# --------------------------------------------------------------------------- 5: one plan


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-cell run with the machine's default thread count."""
    out = tmp_path_factory.mktemp("complete") / "results"
    r = effbench(["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", *FAST, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    (run_dir,) = out.iterdir()
    return run_dir


def test_the_manifest_records_the_resolved_plan(complete_run: Path) -> None:
    manifest = json.loads((complete_run / "manifest.json").read_text())
    cores = len(os.sched_getaffinity(0))
    assert manifest["options"]["threads"] == cores
    assert manifest["options"]["devices"] == ["cpu"]
    (group,) = manifest["plan"]
    assert group["threads"] == cores and group["image_size"] == 8
    assert group["batch_sizes"] == [1, 2]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to take one away")
def test_resume_on_fewer_cores_refuses_instead_of_mixing_thread_counts(
    complete_run: Path,
) -> None:
    victim = next(complete_run.glob("part-*bs2*.parquet"))
    saved = victim.read_bytes()
    victim.unlink()
    try:
        r = subprocess.run(
            ["taskset", "-c", "0", sys.executable, "-m", "bench", "run", "--resume"]
            + [str(complete_run)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 2
        assert "cores" in one_line_error(r.stderr)
        assert len(load_results([complete_run])) == 1  # nothing measured at 1 thread
    finally:
        victim.write_bytes(saved)


@pytest.mark.parametrize(
    "extra",
    [
        ["--batch-sizes", "4"],
        ["--threads", "1"],
        ["--dtypes", "bfloat16"],
        ["--max-time", "1"],
        ["--repeats", "2"],
        ["--out", "elsewhere"],
    ],
)
def test_plan_options_with_resume_are_refused(
    complete_run: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["run", "--resume", str(complete_run), *extra], capsys)
    assert code == 2
    assert f"drop {extra[0]}" in one_line_error(err)


# --------------------------------------------------------------------------- 6: one writer


def test_a_locked_run_folder_refuses_a_second_runner_naming_the_holder(
    complete_run: Path,
) -> None:
    lock = RunLock(complete_run)
    try:
        r = effbench(["run", "--resume", str(complete_run)])
    finally:
        lock.release()
    assert r.returncode == 2
    assert f"PID {os.getpid()}" in one_line_error(r.stderr)


def test_the_same_folder_given_twice_is_measured_once(complete_run: Path) -> None:
    victim = next(complete_run.glob("part-*bs2*.parquet"))
    victim.unlink()
    relative = os.path.relpath(complete_run, ROOT)
    r = effbench(["run", "--resume", str(complete_run), relative, f"{complete_run}/"])
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("effbench: 1 rows") == 1
    df = load_results([complete_run])
    assert len(df) == 2 and not df.duplicated(KEY).any()


def test_concurrent_resumes_of_one_folder_never_measure_a_cell_twice(tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2,3,4", *FAST]
    r = effbench([*args, "--out", str(out), "--run-id", "r"])
    assert r.returncode == 0, r.stderr
    run_dir = out / "r"
    for part in run_dir.glob("part-*.parquet"):
        part.unlink()
    cmd = [sys.executable, "-m", "bench", "run", "--resume", str(run_dir)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is being written by another effbench process (PID" in refused
    df = load_results([run_dir])
    assert len(df) == 4 and not df.duplicated(KEY).any()


# --------------------------------------------------------------------------- 7, 9, 10: input


@pytest.mark.parametrize(
    "bad",
    [
        ["--max-time", "nan"],
        ["--max-time", "inf", "--min-time", "inf"],
        ["--cell-timeout", "nan"],
        ["--cell-timeout", "inf"],
        ["--cell-timeout", "0"],
        ["--min-time", "-1"],
        ["--warmup-time", "1e12"],
        ["--target-ci", "nan"],
        ["--min-iters", "0"],
        ["--repeats", "0"],
        ["--dtypes", ""],
        ["--batch-sizes", ""],
        ["--batch-sizes", "1,,2"],
        ["--devices", ""],
        ["--models", ""],
        ["--run-id", "r" * 300],
        ["--run-id", ".."],
    ],
)
def test_bad_numbers_and_empty_lists_fail_before_anything_is_written(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--out", str(out)]
    # later flags win in argparse, so the bad value replaces the good default above
    code, err = run_main([*args, *bad], capsys)
    assert code == 2
    one_line_error(err)
    assert not out.exists() or not any(out.iterdir())


def test_inspect_with_a_too_small_image_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main(["inspect", "lenet5", "--image-size", "3"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "--image-size" in line and "32" in line  # LeNet-5's own input (seed notes)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_sizes", "12"),
        ("batch_sizes", [1, "2"]),
        ("models", "tiny_mlp"),
        ("threads", "2"),
        ("timing", {"max_time_s": "fast"}),
        ("repeats", True),
    ],
)
def test_a_manifest_with_fields_of_the_wrong_type_is_a_one_line_error(
    complete_run: Path,
    tmp_path: Path,
    field: str,
    value: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((complete_run / "manifest.json").read_text())
    manifest["options"][field] = value
    del manifest["plan"]  # the options are what an older manifest is resumed from
    (broken / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(["run", "--resume", str(broken)], capsys)
    assert code == 2
    assert "manifest.json" in one_line_error(err)
    assert not list(broken.glob("part-*"))


def test_a_manifest_plan_of_the_wrong_shape_is_a_one_line_error(
    complete_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((complete_run / "manifest.json").read_text())
    manifest["plan"][0]["batch_sizes"] = "12"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(["run", "--resume", str(broken)], capsys)
    assert code == 2
    assert "batch_sizes" in one_line_error(err)


# --------------------------------------------------------------------------- 11: modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    from bench.schema import Row
    from bench.store import write_manifest, write_row

    row = Row(
        run_id="u",
        repeat=0,
        timestamp="2026-01-01T00:00:00Z",
        model="m",
        family="f",
        batch_size=1,
        image_size=8,
        in_chans=3,
        device="cpu",
        device_name="cpu",
        dtype="float32",
        threads=1,
        status="ok",
    )
    old = os.umask(umask)
    try:
        part = write_row(tmp_path, "m", row)
        write_manifest(tmp_path, {"run_id": "u"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(part.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == mode


def test_a_resume_deletes_what_a_killed_write_left_and_keeps_every_part(
    complete_run: Path,
) -> None:
    # what a SIGKILL between a part's temporary write and its rename leaves behind
    stale = complete_run / ".part-x-0123.parquet.abcd.tmp"
    stale.write_bytes(b"PAR1 half a row")
    parts = sorted(p.name for p in complete_run.glob("part-*.parquet"))
    r = effbench(["run", "--resume", str(complete_run)])
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert sorted(p.name for p in complete_run.glob("part-*.parquet")) == parts

"""The second adversarial round (issue 21): ordinary use that broke, writes that went where
they must not, input trusted too much, plugins and odd options. Each test is named after
the promise it protects (docs/reliability.md); the Ray items are in tests/test_ray.py and
the short adversarial script in tests/test_adversarial.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import FAST, ROOT, effbench, one_line_error, run_main
from factories import make_row
from torch import nn

from bench import load_results
from bench.errors import ResultsCorrupt
from bench.store import write_manifest, write_row
from models.registry import ModelSpec

# A network that takes any input size (adaptive pooling): the same model at two sizes.
SIZED = """
from torch import nn
from models.registry import ModelSpec, register_model


def sized() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 4)
    )


register_model(ModelSpec(name="any_size", family="test", builder=sized, image_size=8))
"""


def _plugin_env(tmp_path: Path, module: str, source: str) -> dict[str, str]:
    """The environment of a command that also loads plugin ``module`` (``source``)."""
    (tmp_path / f"{module}.py").write_text(source)
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = f"effbench_test_models,{module}"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def _small_run(folder: Path, n: int = 2) -> Path:
    """A run folder of ``n`` SYNTHETIC rows (factories.make_row), written as the runner
    writes them."""
    folder.mkdir(parents=True)
    write_manifest(folder, {"run_id": folder.name})
    for b in range(1, n + 1):
        write_row(folder, f"m-{b}", make_row("m", b, run_id=folder.name))
    return folder


# --------------------------------------------------------------------------- ordinary use


def test_a_closed_stderr_does_not_stop_the_sweep_and_the_exit_code_tells_the_rows(
    tmp_path: Path,
) -> None:
    """`effbench run ... 2>&1 >/dev/null | head -n 1`: the reader goes away after the
    first line; every cell is still measured and recorded, and the exit code is 0."""
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2,3,4", *FAST]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args, "--out", str(out), "--run-id", "p"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if first.startswith(b"effbench: warning: host busy"):  # the pre-flight check, when it is
        first = proc.stderr.readline()
    assert first.startswith(b"effbench: writing to"), first
    proc.stderr.close()  # what `head -n 1` does after its line
    assert proc.wait(timeout=300) == 0
    df = load_results([out / "p"])
    assert sorted(df["batch_size"]) == [1, 2, 3, 4] and set(df["status"]) == {"ok"}
    manifest = json.loads((out / "p" / "manifest.json").read_text())
    assert [s["rows_written"] for s in manifest["sessions"]] == [4]


def test_show_into_a_full_device_is_a_one_line_error(tmp_path: Path) -> None:
    run = _small_run(tmp_path / "r")
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "bench", "show", str(run)],
            cwd=ROOT,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2
    assert "No space left" in one_line_error(r.stderr)


def test_show_into_a_closed_pipe_stays_quiet_and_exits_0(tmp_path: Path) -> None:
    run = _small_run(tmp_path / "r", n=400)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "show", str(run)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `effbench show ... | head -n 1`
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """Two real runs of one network, at its own input size (8) and at 16 px."""
    top = tmp_path_factory.mktemp("sizes")
    env = _plugin_env(top, "effbench_any_size", SIZED)
    out = top / "results"
    for run_id, size in (("own", []), ("s16", ["--image-size", "16"])):
        args = ["run", "--models", "any_size", "--batch-sizes", "1,2", *FAST, *size]
        r = effbench([*args, "--out", str(out), "--run-id", run_id], env=env)
        assert r.returncode == 0, r.stderr
    return out / "own", out / "s16", env


def test_a_report_of_one_network_at_two_image_sizes_keeps_both_lines(
    two_sizes: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    from bench.report import build_report

    own, s16, _ = two_sizes
    report = build_report([own, s16], tmp_path / "report")
    reading = json.loads((report.out / "report.json").read_text())
    text = json.dumps(reading)
    assert "any_size (8 px)" in text and "any_size (16 px)" in text


def test_a_report_of_old_parts_beside_new_ones_builds(
    two_sizes: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A part from before image_size was a column (it reads as 0, "not recorded") in the
    folder of a run of the same network: same setup, two sizes of one network."""
    import shutil

    from bench.report import build_report

    own, _, _ = two_sizes
    mixed = tmp_path / "mixed"
    shutil.copytree(own, mixed)
    table = {
        "run_id": ["own"] * 2,
        "model": ["any_size"] * 2,
        "batch_size": [1, 2],
        "device": ["cpu"] * 2,
        "dtype": ["float32"] * 2,
        "status": ["ok"] * 2,
        "latency_ms_median": [1.0, 1.5],
        "time_per_image_ms": [1.0, 0.75],
    }
    pq.write_table(pa.table(table), mixed / "part-old.parquet")
    report = build_report([mixed], tmp_path / "report")
    text = json.dumps(json.loads((report.out / "report.json").read_text()))
    assert "any_size (size not recorded)" in text and "any_size (8 px)" in text


# --------------------------------------------------------------------------- writing


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-cell run (tiny_mlp at batch 1 and 2)."""
    out = tmp_path_factory.mktemp("finished") / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", *FAST]
    r = effbench([*args, "--out", str(out), "--run-id", "done"])
    assert r.returncode == 0, r.stderr
    return out / "done"


def _copy_run(run: Path, to: Path, drop_bs2: bool = True) -> Path:
    import shutil

    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    if drop_bs2:
        next(to.glob("part-*bs2*.parquet")).unlink()
    return to


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run / ".lock").symlink_to(victim)
    code, err = run_main(["run", "--resume", str(run)], capsys)
    assert code == 2
    assert ".lock" in one_line_error(err)
    assert victim.read_text() == "precious\n"
    assert len(list(run.glob("part-*.parquet"))) == 1  # nothing measured


def test_a_lock_that_is_not_a_regular_file_is_refused(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    (run / ".lock").mkdir()
    code, err = run_main(["run", "--resume", str(run)], capsys)
    assert code == 2
    assert ".lock" in one_line_error(err)


def test_resuming_a_folder_that_is_not_a_run_creates_nothing_in_it(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    runs = tmp_path / "runs"
    _copy_run(finished_run, runs / "a")
    for folder, says in ((plain, "not an effbench run folder"), (runs, f"--resume {runs / 'a'}")):
        before = sorted(p.name for p in folder.iterdir())
        code, err = run_main(["run", "--resume", str(folder)], capsys)
        assert code == 2
        assert says in one_line_error(err)
        assert sorted(p.name for p in folder.iterdir()) == before  # no .lock


def test_a_new_run_folder_that_is_a_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "results"
    out.mkdir()
    (out / "r").symlink_to(elsewhere, target_is_directory=True)
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--out", str(out)]
    code, err = run_main([*args, "--run-id", "r"], capsys)
    assert code == 2
    assert "link" in one_line_error(err)
    assert not any(elsewhere.iterdir())


SCRATCH_NAMES = ("effbench-ref-", "effbench-worker-", "pymp-", "effbench-scratch-")


def _scratch_left(tmp: Path) -> list[str]:
    """What effbench or its workers left anywhere under the temp folder ``tmp``."""
    return sorted(
        str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.name.startswith(SCRATCH_NAMES)
    )


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A temp folder for the runner with a short path: the fork server's socket lives in
    it, and a socket's path holds 108 bytes at most."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_timed_out_cell_leaves_no_weights_or_scratch_in_the_temp_folder(
    tmp_path: Path, tmp: Path
) -> None:
    """channels_last keeps the eager float32 weights on disk for the output check; the
    cell at batch 2 hangs and is killed after its timeout."""
    args = ["run", "--models", "hang_at2", "--batch-sizes", "1,2", "--configs", "channels_last"]
    args += ["--cell-timeout", "3", *FAST, "--out", str(tmp_path / "results")]
    r = effbench(args, env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr
    df = load_results([tmp_path / "results"])
    assert sorted(df["status"]) == ["ok", "timeout"]
    assert _scratch_left(tmp) == []


def test_what_a_sigkilled_runner_left_in_the_temp_folder_is_removed_by_the_next_runner(
    tmp_path: Path, tmp: Path
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp)}
    log = tmp_path / "run.err"
    args = ["run", "--models", "hang_at2", "--batch-sizes", "1,2", "--configs", "channels_last"]
    args += ["--cell-timeout", "60", *FAST, "--out", str(tmp_path / "results")]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "bs=2" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the worker is in the hanging forward, its weights on disk
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = _scratch_left(tmp)
    assert any("effbench-ref-" in n for n in left), (left, log.read_text())
    again = effbench(
        ["run", "--models", "tiny_mlp", "--batch-sizes", "1", *FAST, "--out", str(tmp_path / "b")],
        env=env,
    )
    assert again.returncode == 0, again.stderr
    assert _scratch_left(tmp) == []


# --------------------------------------------------------------------------- trusted input


def _part_of(run: Path, bs: int) -> Path:
    return next(run.glob(f"part-*bs{bs}_*.parquet"))


def _rewrite(part: Path, **columns: object) -> None:
    """Set ``columns`` of every row of ``part`` (a hostile edit), as a plain parquet file."""
    df = pq.read_table(part).to_pandas()
    for name, value in columns.items():
        df[name] = pd.Series([value] * len(df), dtype=object)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part)


def test_a_part_copied_under_another_name_is_refused_naming_both_files(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = _copy_run(finished_run, tmp_path / "run", drop_bs2=False)
    part = _part_of(run, 1)
    shutil.copy(part, run / "part-copy.parquet")
    with pytest.raises(ResultsCorrupt, match="rows of one cell and repeat") as e:
        load_results([run])
    assert part.name in str(e.value) and "part-copy.parquet" in str(e.value)
    for args in (["show", str(run)], ["compare", str(finished_run), str(run)]):
        code, err = run_main(args, capsys)
        assert code == 2
        assert "part-copy.parquet" in one_line_error(err)


def test_a_part_holding_one_row_many_times_is_refused(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run", drop_bs2=False)
    part = _part_of(run, 1)
    table = pq.read_table(part)
    pq.write_table(pa.concat_tables([table] * 100), part)
    code, err = run_main(["report", str(run), "--out", str(tmp_path / "rep")], capsys)
    assert code == 2
    assert "100 rows of one cell and repeat" in one_line_error(err)
    assert not (tmp_path / "rep").exists()


def test_re_measured_attempts_of_a_cell_are_not_duplicates(tmp_path: Path) -> None:
    """Issue 20 adds an ``attempt`` per row (re-measurements of a contended cell): rows of
    one cell and repeat with attempts 1 and 2 are two rows, not a copy."""
    run = _small_run(tmp_path / "r", n=1)
    _rewrite(_part_of_any(run), attempt=1)
    second = run / "part-again.parquet"
    import shutil

    shutil.copy(_part_of_any(run), second)
    _rewrite(second, attempt=2)
    assert sorted(load_results([run])["attempt"]) == [1, 2]
    _rewrite(second, attempt=1)
    with pytest.raises(ResultsCorrupt, match="rows of one cell and repeat"):
        load_results([run])


def _part_of_any(run: Path) -> Path:
    return sorted(run.glob("part-*.parquet"))[0]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("latency_ms_median", "fast"),
        ("latency_ms_median", float("inf")),
        ("latency_ms_p90", -1.0),
        ("batch_size", -5),
        ("batch_size", 1.5),
        ("threads", 0),
        ("n_samples", "many"),
        ("status", "great"),
        ("model", 7),
        ("noisy", "yes"),
        ("latency_ms_samples", ["a", "b"]),
    ],
)
def test_a_value_of_the_wrong_kind_or_range_is_a_one_line_error_naming_the_file(
    finished_run: Path,
    tmp_path: Path,
    column: str,
    value: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _copy_run(finished_run, tmp_path / "run", drop_bs2=False)
    part = _part_of(run, 1)
    _rewrite(part, **{column: value})
    for args in (
        ["show", str(run)],
        ["report", str(run), "--out", str(tmp_path / "rep")],
        ["compare", str(finished_run), str(run)],
        ["run", "--resume", str(run)],
    ):
        code, err = run_main(args, capsys)
        assert code == 2, args
        line = one_line_error(err)
        assert part.name in line and column in line, line
    assert not (tmp_path / "rep").exists()


MANIFEST_EDITS = {
    "plan batch size -2": lambda m: m["plan"][0].update(batch_sizes=[1, -2]),
    "options batch size -2": lambda m: m["options"].update(batch_sizes=[1, -2]),
    "plan threads 0": lambda m: m["plan"][0].update(threads=0),
    "plan threads -4": lambda m: m["plan"][0].update(threads=-4),
    "plan image size 0": lambda m: m["plan"][0].update(image_size=0),
    "plan repeat -1": lambda m: m["plan"][0].update(repeat=-1),
    "cell timeout -1": lambda m: m["options"].update(cell_timeout_s=-1),
    "cell timeout 1e300": lambda m: m["options"].update(cell_timeout_s=1e300),
    "memory cap -5": lambda m: m["options"].update(memory_cap_bytes=-5),
    "timing 1e12 s": lambda m: m["options"]["timing"].update(min_time_s=1e12, max_time_s=1e12),
    "configs compile:": lambda m: m["plan"][0].update(config="compile:"),
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS)
def test_a_resumed_plan_gets_the_range_checks_of_the_command_line(
    finished_run: Path, tmp_path: Path, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    MANIFEST_EDITS[edit](manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(["run", "--resume", str(run)], capsys)
    assert code == 2
    assert "manifest.json" in one_line_error(err)
    assert len(list(run.glob("part-*.parquet"))) == 1  # nothing measured


EVIL = "#!/bin/sh\necho ran > {marker}\nexit 1\n"


@pytest.mark.parametrize("python", ["script", "/nonexistent/python"])
def test_an_interpreter_in_a_manifest_runs_only_when_named_again(
    finished_run: Path, tmp_path: Path, python: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(EVIL.format(marker=marker))
    script.chmod(0o755)
    recorded = str(script) if python == "script" else python
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["options"].update(python=recorded, variant="arm")
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(["run", "--resume", str(run)], capsys)
    assert code == 2
    assert f"add --variant arm:python={recorded}" in one_line_error(err)
    other = sys.executable
    code, err = run_main(["run", "--resume", str(run), "--variant", f"arm:python={other}"], capsys)
    assert code == 2
    assert f"was measured with {recorded}" in one_line_error(err)
    assert not marker.exists()
    assert len(list(run.glob("part-*.parquet"))) == 1


def _ceilings(**change: object) -> pd.DataFrame:
    """A SYNTHETIC ceilings table (made-up rates, never measured) for one CPU thread count,
    with ``change`` applied to its GEMM row; ``change={"drop": c}`` drops column c."""
    cores = len(os.sched_getaffinity(0))
    rows = [
        {"device": "cpu", "device_name": "cpu", "dtype": "float32", "threads": cores,
         "kind": kind, "value": value, "unit": "MACs/s", "source": "measured",
         "method": "synthetic", "ci_rel": 0.01, "samples": 10, "citation": None,
         "hostname": "h", "measured_at": "2026-01-01T00:00:00+00:00"}
        for kind, value in (("gemm", 1e10), ("triad", 1e10))
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    drop = change.pop("drop", None)
    duplicate = change.pop("duplicate", False)
    for k, v in change.items():
        df[k] = df[k].astype(str if isinstance(v, str) else object)  # parquet: one type
        df.loc[0, k] = v
    if duplicate:
        df = pd.concat([df, df.iloc[[0]].assign(value=1e11)], ignore_index=True)
    return df.drop(columns=[drop] if drop else [])


CEILING_EDITS = {
    "missing value column": {"drop": "value"},
    "value 'big'": {"value": "big"},
    "negative value": {"value": -1e10},
    "infinite value": {"value": float("inf")},
    "threads 1.5": {"threads": 1.5},
    "duplicate key, 10x": {"duplicate": True},
}


@pytest.mark.parametrize("edit", CEILING_EDITS)
def test_a_hostile_ceilings_file_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(finished_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["options"]["ceilings"] = True
    (run / "manifest.json").write_text(json.dumps(manifest))
    pq.write_table(
        pa.Table.from_pandas(_ceilings(**CEILING_EDITS[edit]), preserve_index=False),
        run / "ceilings.parquet",
    )
    for args in (
        ["run", "--resume", str(run)],
        ["report", str(run), "--out", str(tmp_path / "rep")],
    ):
        code, err = run_main(args, capsys)
        assert code == 2, args
        assert "ceilings.parquet" in one_line_error(err)
    assert len(list(run.glob("part-*.parquet"))) == 1


def test_valid_ceilings_are_still_used(finished_run: Path, tmp_path: Path) -> None:
    from bench.store import read_ceilings

    run = _copy_run(finished_run, tmp_path / "run")
    pq.write_table(
        pa.Table.from_pandas(_ceilings(), preserve_index=False), run / "ceilings.parquet"
    )
    assert sorted(read_ceilings(run)["kind"]) == ["gemm", "triad"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--run-id", ""],
        ["--run-id", " "],
        ["--out", ""],
        ["--configs", "compile:"],
        ["--memory-cap", ""],
        ["--run-id", "é" * 101],  # 101 characters, 202 bytes
    ],
)
def test_an_empty_or_oversized_single_value_is_a_one_line_error(
    tmp_path: Path,
    bad: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # `--out ''` was the current folder
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--out", "results"]
    code, err = run_main([*args, *bad], capsys)
    assert code == 2
    one_line_error(err)
    assert not any(tmp_path.iterdir())


def test_an_empty_suite_is_a_one_line_error_not_the_default_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["run", "--suite", "", "--out", "results"], ["models", "--suite", ""]):
        code, err = run_main(args, capsys)
        assert code == 2
        assert "--suite" in one_line_error(err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("metric", ["", ",", "latency,"])
def test_an_empty_metric_is_a_one_line_error(
    finished_run: Path, metric: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(
        ["compare", str(finished_run), str(finished_run), "--metric", metric], capsys
    )
    assert code == 2
    assert "--metric" in one_line_error(err)


def test_a_side_without_memory_method_is_refused_like_another_method(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows from before memory_method was recorded ran without the memory pass's
    allocator settings: another state, refused as when the method differs."""
    run = _copy_run(finished_run, tmp_path / "run", drop_bs2=False)
    for part in run.glob("part-*.parquet"):
        _rewrite(part, memory_method=None)
    code, err = run_main(["compare", str(finished_run), str(run)], capsys)
    assert code == 2
    assert "memory_method" in one_line_error(err) and "not recorded" in err
    code, _ = run_main(["compare", str(finished_run), str(run), "--allow-env-mismatch"], capsys)
    assert code in (0, 1)


# --------------------------------------------------------------------------- plugins

PLUGIN_IMPORTS = {
    "raises": 'raise RuntimeError("boom at import")\n',
    "syntax error": "def broken(:\n",
    "registers a taken name": (
        "from torch import nn\nfrom models.registry import ModelSpec, register_model\n"
        'register_model(ModelSpec(name="tiny_mlp", family="x", builder=nn.Identity, '
        "image_size=8))\n"
    ),
    # torchvision's zoo loads after the plugins (only when needed): refused there
    "registers a torchvision name": (
        "from torch import nn\nfrom models.registry import ModelSpec, register_model\n"
        'register_model(ModelSpec(name="resnet18", family="x", builder=nn.Identity, '
        "image_size=8))\n"
    ),
}


@pytest.mark.parametrize("case", PLUGIN_IMPORTS)
def test_a_plugin_that_fails_at_import_is_a_one_line_error(tmp_path: Path, case: str) -> None:
    env = _plugin_env(tmp_path, "effbench_bad_plugin", PLUGIN_IMPORTS[case])
    r = effbench(["models"], env=env, timeout=120)
    assert r.returncode == 2
    assert "effbench_bad_plugin" in one_line_error(r.stderr)


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward boom")


def _raises() -> nn.Module:
    raise ValueError("builder boom")


BROKEN = {"returns_none": lambda: None, "returns_garbage": lambda: 42, "raises": _raises,
          "Boom": _Boom}  # fmt: skip


@pytest.mark.parametrize("builder", list(BROKEN))
def test_a_broken_builder_or_forward_is_a_one_line_error_in_models_inspect_and_profile(
    builder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered in this process for the test only (the registry, loaded first, gets the
    entry back out after it), and the commands run here: `models` builds every network."""
    from models import registry

    registry.list_models()
    spec = ModelSpec(name="broken", family="test", builder=BROKEN[builder], image_size=8)
    monkeypatch.setitem(registry._REGISTRY, "broken", spec)
    commands = [["inspect", "broken"], ["profile", "broken", "--no-ceilings"]]
    if builder != "Boom":  # its builder works: `models` only builds
        commands.append(["models"])
    for args in commands:
        r = effbench(args)
        assert r.returncode == 2, (args, r.stderr)
        assert "'broken'" in one_line_error(r.stderr), args


def test_profile_refuses_a_batch_size_beyond_max_batch(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.plan import MAX_BATCH

    code, err = run_main(
        ["profile", "tiny_mlp", "--batch-size", "99999999", "--no-ceilings"], capsys
    )
    assert code == 2
    assert str(MAX_BATCH) in one_line_error(err)


# --------------------------------------------------------------------------- odd options


@pytest.mark.parametrize("command", [["profile", "tiny_mlp", "--no-ceilings"], ["peak"]])
def test_threads_beyond_the_cores_are_refused_as_run_refuses_them(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    threads = len(os.sched_getaffinity(0)) + 1
    code, err = run_main([*command, "--threads", str(threads)], capsys)
    assert code == 2
    assert "cores" in one_line_error(err)


def test_tf32_without_a_cuda_device_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--devices", "cpu", "--tf32", "--out", str(out)]
    code, err = run_main(args, capsys)
    assert code == 2
    assert "--tf32" in one_line_error(err)
    assert not out.exists()


@pytest.mark.parametrize(
    "bad", [["--max-time", "1_0"], ["--batch-sizes", "1_0"], ["--threads", "1_0"]]
)
def test_numbers_are_read_strictly(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--out", str(out), *bad]
    code, err = run_main(args, capsys)
    assert code == 2
    assert "1_0" in one_line_error(err)
    assert not out.exists()


def test_out_inside_another_run_folder_is_refused(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in finished_run.iterdir())
    for out in (finished_run, finished_run / "sub"):
        args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--out", str(out)]
        code, err = run_main(args, capsys)
        assert code == 2
        assert "inside the run folder" in one_line_error(err)
    assert sorted(p.name for p in finished_run.iterdir()) == before

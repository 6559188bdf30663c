"""The second adversarial round (issue 21): ordinary use that broke, writes that went where
they must not, input trusted too much, plugins and odd options. Each test is named after
the promise it protects (docs/reliability.md); the Ray items are in tests/test_ray.py and
the short adversarial script in tests/test_adversarial.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FAST, ROOT, effbench
from factories import make_row

from bench import load_results
from bench.cli import main
from bench.store import write_manifest, write_row

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


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("effbench: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _run_main(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


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
    assert proc.stderr.readline().startswith(b"effbench: writing to")
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
    assert "No space left" in _one_line_error(r.stderr)


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

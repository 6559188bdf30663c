"""The roofline columns of a sweep, the run's ceilings, and the `peak` and `profile`
commands end to end (the measurements themselves: test_ceilings, test_traffic,
test_profile; the memory pass: test_memory)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import FAST, effbench

from bench.cli import main
from bench.profile import PROFILE_COLUMNS
from bench.store import CEILINGS, discover, load_profiles, load_results, read_ceilings


def _env_with_ceilings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "EFFBENCH_NO_CEILINGS"}


def test_a_run_measures_ceilings_once_and_places_every_cell_on_them(out_dir: Path) -> None:
    args = ["run", "--models", "lenet5", "--batch-sizes", "1,4", "--threads", "1"]
    r = effbench(
        [*args, "--out", str(out_dir), "--run-id", "roof", *FAST], env=_env_with_ceilings()
    )
    assert r.returncode == 0, r.stderr
    run = out_dir / "roof"
    ceilings = read_ceilings(run)
    measured = ceilings[(ceilings["source"] == "measured") & (ceilings["phase"] == "start")]
    assert set(measured["kind"]) == {"gemm", "conv3x3", "triad", "copy"}
    # the closing canary: GEMM and triad again after the last cell, and their drift said
    end = ceilings[ceilings["phase"] == "end"]
    assert sorted(end["kind"]) == ["gemm", "triad"] and (end["value"] > 0).all()
    assert "ceilings drifted: cpu float32 threads=1: gemm" in r.stderr
    keys = measured[["device", "dtype", "threads"]].drop_duplicates()
    assert [tuple(k) for k in keys.itertuples(index=False)] == [("cpu", "float32", 1)]
    assert (measured["value"] > 0).all() and measured["value"].map(math.isfinite).all()
    gemm = float(measured.set_index("kind").loc["gemm", "value"])
    df = load_results([run]).sort_values("batch_size")
    for row in df.itertuples():
        achieved = row.macs * row.batch_size / (row.latency_ms_median / 1e3)
        assert row.achieved_macs_per_s == pytest.approx(achieved, rel=1e-12)
        assert row.compute_fraction == pytest.approx(achieved / gemm, rel=1e-12)
        assert row.intensity_macs_per_byte == pytest.approx(row.macs / row.bytes_per_image)
    # weights are read once per batch: the bytes per image fall as the batch grows
    assert df["bytes_per_image"].is_monotonic_decreasing
    assert list(df["activation_peak_bytes"]) == [df["activation_peak_bytes"].iloc[0] * b
                                                 for b in (1, 4)]  # fmt: skip

    again = effbench(["run", "--resume", str(run)], env=_env_with_ceilings())
    assert again.returncode == 0, again.stderr
    assert "ceilings of" not in again.stderr  # the folder has them: nothing is re-measured
    pd.testing.assert_frame_equal(read_ceilings(run), ceilings)


def test_traffic_is_counted_once_per_batch_size_in_a_run(out_dir: Path) -> None:
    """One meta build for the MACs and one for every batch size of the first group; the
    second repeat (a new worker) gets the run's counts and builds nothing on meta."""
    log = out_dir.parent / "meta-builds.log"
    args = ["run", "--models", "meta_counted", "--batch-sizes", "1,2,4", "--repeats", "2"]
    r = effbench(
        [*args, "--threads", "1", "--out", str(out_dir), "--run-id", "once", *FAST],
        env={**os.environ, "EFFBENCH_TEST_META_LOG": str(log)},
    )
    assert r.returncode == 0, r.stderr
    assert len(log.read_text().split()) == 2
    df = load_results([out_dir / "once"])
    counted = ["bytes_per_image", "activation_peak_bytes", "intensity_macs_per_byte"]
    by_repeat = [g.sort_values("batch_size")[counted].to_numpy() for _, g in df.groupby("repeat")]
    assert len(by_repeat) == 2 and (by_repeat[0] == by_repeat[1]).all()
    # the counts of the meta model reused across batch sizes are the fresh model's
    from bench.probes.traffic import count_traffic
    from models import get_spec

    build = get_spec("meta_counted").builder
    for row in df[df["repeat"] == 0].itertuples():
        fresh = count_traffic(build, (row.batch_size, 3, 8, 8))
        assert row.bytes_per_image * row.batch_size == fresh.bytes_accessed
        assert row.activation_peak_bytes == fresh.activation_peak_bytes


def test_a_task_carries_the_runs_counts_and_reads_as_before_without_them() -> None:
    from bench.plan import Group, Timing
    from bench.worker import Task

    group = Group("m", "cpu", "float32", 8, 3, 1, 0, (1, 2))
    with_counts = Task("r", group, Timing(), traffic=((2, 4000, 300),))
    assert Task.from_json(with_counts.to_json()) == with_counts
    # an arm of an older effbench (A/B) reads every key of the task: none it does not know
    bare = Task("r", group, Timing())
    assert "traffic" not in json.loads(bare.to_json())
    assert Task.from_json(bare.to_json()) == bare


def test_no_ceilings_leaves_the_fraction_empty(out_dir: Path) -> None:
    args = ["run", "--models", "tiny_mlp", "--no-ceilings", "--out", str(out_dir)]
    r = effbench([*args, "--run-id", "bare", *FAST], env=_env_with_ceilings())
    assert r.returncode == 0, r.stderr
    assert not (out_dir / "bare" / CEILINGS).exists()
    df = load_results([out_dir / "bare"])
    assert df["compute_fraction"].isna().all() and df["achieved_macs_per_s"].notna().all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--models", "tiny_mlp", "--ceilings", "--executor", "ray"], "effbench peak"),
        (["peak", "--dtypes", "float8"], "unknown dtype 'float8'"),
        (["peak", "--precision", "2"], "between 0 and 1"),
        (["peak", "--devices", "cuda:3"], "not present"),
        (["profile", "resnet5O", "--no-ceilings"], "did you mean 'resnet50'"),
        (["profile", "tiny_mlp", "--config", "compile", "--no-ceilings"], "eager"),
        (["profile", "tiny_mlp", "--batch-size", "0", "--no-ceilings"], "--batch-size 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_profile_writes_a_file_the_report_finds(tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    r = effbench(["profile", "squeezenet1_1", "--no-ceilings", "--threads", "1", "--format",
                  "json", "--out", str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    shown: dict[str, Any] = json.loads(r.stdout)
    files = sorted(out.glob("profile-*.parquet"))
    assert len(files) == 1
    assert tuple(pq.read_schema(files[0]).names) == PROFILE_COLUMNS
    found = discover([tmp_path])  # a folder holding only profiles is a valid input
    layers = load_profiles(found)
    assert len(layers) == len(shown["rows"])
    # the layers' multiply-adds add up to torchvision's own figure for the network
    from torchvision.models import SqueezeNet1_1_Weights

    assert round(layers["macs"].sum() / 1e9, 3) == SqueezeNet1_1_Weights.DEFAULT.meta["_ops"]
    assert set(layers["group"]) <= {"conv", "activation", "pool", "other"}
    assert layers["time_ms"].sum() == pytest.approx(shown["sum_layers_ms"])


def test_the_arms_of_an_ab_run_share_one_measurement_of_the_ceilings(out_dir: Path) -> None:
    args = ["run", "--models", "tiny_mlp", "--threads", "1", "--out", str(out_dir)]
    args += ["--run-id", "ab", "--variant", "a:EFFBENCH_ARM=a", "--variant", "b:EFFBENCH_ARM=b"]
    r = effbench([*args, *FAST], env=_env_with_ceilings())
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("effbench: ceilings of cpu float32") == 1  # measured once
    pd.testing.assert_frame_equal(read_ceilings(out_dir / "ab-a"), read_ceilings(out_dir / "ab-b"))

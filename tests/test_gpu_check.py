"""scripts/gpu_check.sh and scripts/gpu_check.py: the GPU check runs through on the CPU in
its dry run, so it cannot rot between the days a GPU is lent (docs/gpu-validation.md); and
its verdicts fail where they should, on rows made up to fail."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
GPU_ONLY = (
    "gpu-marked tests (pytest -m gpu)",
    "cudagraphs rows with compile_s",
    "telemetry columns filled",
    "NVML energy counter vs sampler",
    "ceilings vs datasheet",
)
RUN_HERE = (
    "sweep-dtypes: every planned cell ok",
    "sweep-configs: every planned cell ok",
    "sweep-parallel (--parallel, one lane per GPU): every planned cell ok",
    "peak_memory_bytes >= weights_bytes",
    "peak_memory_bytes increases with batch size",
    "output_ok everywhere",
    "compile rows with compile_s",
    "latency vs Timer",
    "per-layer profile: layers sum to the plain forward",
    "contention evidence and verdicts",
)


def _checker():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _table(stdout: str) -> dict[str, tuple[str, str]]:
    """check name -> (result, detail) from the printed markdown table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3 and cells[1].startswith("**"):
            rows[cells[0]] = (cells[1].strip("*"), cells[2])
    return rows


def _result(rows: dict[str, tuple[str, str]], prefix: str) -> list[str]:
    return [result for name, (result, _) in rows.items() if name.startswith(prefix)]


@pytest.mark.system
def test_dry_run_passes_every_check_it_runs_and_writes_under_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        cwd=tmp_path,  # the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "- mode: dry run" in r.stdout and "- torch " in r.stdout  # the machine record
    rows = _table(r.stdout)
    for prefix in GPU_ONLY:
        assert _result(rows, prefix) == ["skipped (dry run)"], (prefix, rows)
    for prefix in RUN_HERE:
        got = _result(rows, prefix)
        # the profile's sum is timing on a shared CPU: reported, judged only on a GPU
        allowed = {"pass", "not judged (dry run)"} if prefix.startswith("per-layer") else {"pass"}
        assert got and set(got) <= allowed, (prefix, rows)
    assert r.stdout.rstrip().endswith(f"everything is under {out}")
    assert {p.name for p in out.iterdir()} == {
        "gpu_check.log",
        "gpu_check.md",
        "rows.parquet",
        "runs.tar.gz",
    }
    assert _table((out / "gpu_check.md").read_text()) == rows
    assert "| output_ok everywhere | **pass** |" in (out / "gpu_check.log").read_text()
    # sweep-dtypes 2 dtypes x 2 configs x 2 batches, sweep-configs 1, sweep-parallel 2
    assert len(pd.read_parquet(out / "rows.parquet")) == 8 + 1 + 2
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("steps.tsv", "header.md", "gpu-tests.xml"):
        assert f"./{name}" in names
    assert "./results/sweep-configs/manifest.json" in names
    assert "./results/sweep-parallel/manifest.json" in names


def test_usage_errors_exit_2_before_anything_runs(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    r = subprocess.run(
        ["bash", str(SCRIPT), "--dryrun"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "unknown argument '--dryrun'" in r.stderr
    assert not (tmp_path / "out").exists()


def _rows(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "run_id": ["r"] * n,
        "model": ["m"] * n,
        "device": ["cuda:0"] * n,
        "dtype": ["float16"] * n,
        "config": ["eager"] * n,
        "repeat": [0] * n,
        "status": ["ok"] * n,
        "batch_size": [1, 8, 64][:n],
    }
    return pd.DataFrame({**base, **columns})


def test_memory_checks_fail_on_a_flat_peak_or_one_below_the_weights() -> None:
    g = _checker()
    weights = [100, 100, 100]
    # what a CUDA worker writes (bench/probes/memory.py: the method, then how the pass ran)
    method = ["cuda_max_memory_allocated; one forward after the timed window"] * 3
    good = _rows(peak_memory_bytes=[150, 300, 900], weights_bytes=weights, memory_method=method)
    assert g.check_peak_grows(good).result == "pass"
    assert g.check_peak_vs_weights(good, "cuda:0").result == "pass"
    flat = _rows(peak_memory_bytes=[150, 150, 900], weights_bytes=weights, memory_method=method)
    verdict = g.check_peak_grows(flat)
    assert verdict.result == "fail" and "b8: 0.0 MiB" in verdict.detail
    low = _rows(peak_memory_bytes=[50, 300, 900], weights_bytes=weights, memory_method=method)
    assert g.check_peak_vs_weights(low, "cuda:0").result == "fail"
    rss = _rows(peak_memory_bytes=[150, 300, 900], weights_bytes=weights, memory_method=["x"] * 3)
    assert g.check_peak_vs_weights(rss, "cuda:0").result == "fail"  # not the CUDA allocator
    cpu = ["cpu_allocator_peak; one forward after the timed window"] * 3
    on_cpu = _rows(peak_memory_bytes=[150, 300, 900], weights_bytes=weights, memory_method=cpu)
    assert g.check_peak_vs_weights(on_cpu, "cuda:0").result == "fail"


def test_the_sweep_check_counts_cells_not_attempts(tmp_path: Path) -> None:
    """A cell judged contended is measured again (a row per attempt): the H200's first run
    read "14/12 cells ok" and failed a sweep whose every cell was ok."""
    import json

    g = _checker()
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"planned_cells": 2}))
    step = g.Step(rc=0, seconds=30, limit_s=60)
    rows = _rows(
        batch_size=[1, 1, 8],
        attempt=[0, 1, 0],
        image_size=[224] * 3,
        threads=[1] * 3,
        quality=["contended", "noisy", "clean"],
        latency_ms_median=[9.0, 2.0, 3.0],
    )
    verdict = g.check_sweep("sweep-dtypes", run, step, rows)
    assert verdict.result == "pass", verdict.detail
    assert "2/2 cells ok" in verdict.detail and "1 re-measurement" in verdict.detail
    short = rows[rows["batch_size"] == 1]  # the b8 cell never ran
    assert g.check_sweep("sweep-dtypes", run, step, short).result == "fail"


def test_output_compile_and_telemetry_checks_fail_on_what_is_missing() -> None:
    g = _checker()
    bad = _rows(output_ok=[True, False, None], max_rel_err=[0.0, 0.5, None])
    verdict = g.check_outputs(bad)
    assert verdict.result == "fail" and "1/3 rows" in verdict.detail
    compiled = _rows(
        config=["compile", "compile", "cudagraphs"],
        compile_s=[3.0, None, 5.0],
        recompiled=[False, False, True],
        graph_breaks=[0, 0, 0],
    )
    assert g.check_compiled(compiled, "compile", dry_run=False).result == "fail"
    assert g.check_compiled(compiled, "cudagraphs", dry_run=False).result == "fail"
    assert g.check_compiled(compiled.iloc[:1], "compile", dry_run=False).result == "pass"
    assert g.check_compiled(compiled, "cudagraphs", dry_run=True).result == "skipped (dry run)"
    filled = {c: [1.0, 1.0] for c in g.TELEMETRY}
    tele = _rows(**filled, power_source=["nvml:energy-counter"] * 2, throttle_reasons=["", ""])
    assert g.check_telemetry(tele, dry_run=False).result == "pass"
    tele.loc[1, "power_source"] = "nvml:energy-counter; not reported: window 0.5 s < 1 s"
    assert g.check_telemetry(tele, dry_run=False).result == "fail"
    tele.loc[1, "power_source"] = "nvml:energy-counter"
    tele.loc[0, "gpu_temp_c"] = None
    verdict = g.check_telemetry(tele, dry_run=False)
    assert verdict.result == "fail" and "gpu_temp_c 1" in verdict.detail


@pytest.mark.parametrize(
    ("junit", "rc", "dry", "want"),
    [
        ('<testsuite tests="1" failures="0" errors="0" skipped="0"/>', 0, False, "pass"),
        ('<testsuite tests="1" failures="0" errors="0" skipped="1"/>', 0, False, "fail"),
        ('<testsuite tests="1" failures="1" errors="0" skipped="0"/>', 1, False, "fail"),
        (
            '<testsuite tests="1" failures="0" errors="0" skipped="1"/>',
            0,
            True,
            "skipped (dry run)",
        ),
        ('<testsuite tests="1" failures="0" errors="1" skipped="0"/>', 1, True, "fail"),
    ],
)
def test_gpu_tests_verdict_reads_the_junit_counts(
    tmp_path: Path, junit: str, rc: int, dry: bool, want: str
) -> None:
    g = _checker()
    (tmp_path / "gpu-tests.xml").write_text(f"<testsuites>{junit}</testsuites>")
    assert g.check_gpu_tests(tmp_path, g.Step(rc, 3, 70), dry).result == want


def test_ceilings_check_fails_above_the_datasheet_and_on_missing_kinds(tmp_path: Path) -> None:
    gc = _checker()
    run = tmp_path / "sweep-dtypes"
    run.mkdir()

    def write(gemm: float, triad: float | None) -> None:
        rows = [("gemm", gemm), ("datasheet_compute", 100e12), ("datasheet_bandwidth", 4e12)]
        rows += [("triad", triad)] if triad is not None else []
        kinds, values = zip(*rows, strict=True)
        frame = pd.DataFrame({"dtype": "float16", "kind": kinds, "value": values})
        frame.to_parquet(run / "ceilings.parquet")

    assert gc.check_ceilings(run, dry_run=False).result == "fail"  # no file yet
    write(gemm=70e12, triad=3.2e12)  # 70% and 80% of the sheet
    ok = gc.check_ceilings(run, dry_run=False)
    assert ok.result == "pass" and "70% and 80% of the datasheet" in ok.detail
    write(gemm=120e12, triad=3.2e12)  # faster than the datasheet's peak: a timing error
    assert gc.check_ceilings(run, dry_run=False).result == "fail"
    write(gemm=70e12, triad=None)
    assert gc.check_ceilings(run, dry_run=False).result == "fail"


def test_profile_check_compares_the_layer_sum_with_the_forward(tmp_path: Path) -> None:
    gc = _checker()
    folder = tmp_path / "profiles"
    folder.mkdir()
    step = gc.Step(rc=0, seconds=9, limit_s=45)

    def write(summed: float, overhead: float | None = None) -> None:
        frame = pd.DataFrame(
            {"model": "m", "batch_size": 8, "dtype": "float16", "layer": ["a", "b"],
             "time_ms": [summed / 2] * 2, "forward_ms": 10.0, "sum_layers_ms": summed}
        )  # fmt: skip
        if overhead is not None:
            frame["hook_overhead_ms"] = overhead
        frame.to_parquet(folder / "profile-m.parquet")

    assert gc.check_profile(tmp_path, step, 0.15).result == "fail"  # nothing written
    write(9.0)
    assert gc.check_profile(tmp_path, step, 0.15).result == "pass"
    write(7.0)  # 30% short: time outside the layers that the profile cannot place
    assert gc.check_profile(tmp_path, step, 0.15).result == "fail"
    # a dry run on a shared CPU reports the sum but does not fail on timing
    dry = gc.check_profile(tmp_path, step, 0.15, dry_run=True)
    assert dry.result == "not judged (dry run)" and "(0.70x)" in dry.detail
    # the H200's first run: layers 9.747 ms with 1.575 ms of measured hook overhead against
    # a 7.578 ms forward; (9.747 - 1.575) / 7.578 = 1.08
    write(9.747 * 10 / 7.578, overhead=1.575 * 10 / 7.578)
    verdict = gc.check_profile(tmp_path, step, 0.15)
    assert verdict.result == "pass" and "(1.08x)" in verdict.detail
    write(13.0, overhead=0.5)  # 1.25x even after the overhead: fails
    assert gc.check_profile(tmp_path, step, 0.15).result == "fail"


def test_the_contention_check_fails_on_rows_without_evidence_or_a_verdict() -> None:
    gc = _checker()
    row = dict(model="m", batch_size=1, device="cuda:0", dtype="float16", config="eager", repeat=0,
               run_wait_share=0.0, others_cpu_cores=0.0, steal_share=0.0, quality="clean",
               quality_reason="no sign of contention", gpu_other_processes=0)  # fmt: skip
    good = pd.DataFrame(
        [
            row,
            {
                **row,
                "batch_size": 8,
                "gpu_other_processes": 1,
                "quality": "contended",
                "quality_reason": "1 other process",
            },
        ]
    )
    verdict = gc.check_contention(good, dry_run=False)
    assert verdict.result == gc.PASS and "other GPU processes seen: [0, 1]" in verdict.detail
    assert "contended: " in verdict.detail
    bare = good.assign(gpu_other_processes=None)  # NVML listed nothing: a GPU run must say
    assert gc.check_contention(bare, dry_run=False).result == gc.FAIL
    assert gc.check_contention(bare, dry_run=True).result == gc.PASS
    assert gc.check_contention(good.drop(columns="quality"), dry_run=True).result == gc.FAIL

"""How long `effbench report` takes for a 60-cell CPU run (the target: under 60 s).

Input: the run folders named in ``$EFFBENCH_REPORT_PERF_RESULTS`` (e.g. a real default
sweep, `effbench run` with no arguments on a CPU machine: 12 networks x 5 batch sizes), or
``results/`` when it holds at least 60 rows; otherwise a SYNTHETIC 60-cell run made from the
committed CPU fixture (its rows copied under 12 made-up network names x 5 batch sizes; the
report's cost depends on the number of cells, networks and figures, not on the values), with
made-up roofline columns and ceilings so that the roofline figure is drawn and timed too.
Run with `nox -s perf` or `pytest -m perf --benchmark-only tests/test_report_perf.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from test_report import FIXTURE, ceiling_rows, to_plain

from bench.errors import BenchError
from bench.report import build_report
from bench.schema import Row
from bench.store import load_results, read_manifest, write_manifest, write_row

BUDGET_S = 60.0
RESULTS = Path(__file__).resolve().parents[1] / "results"


def _synthetic_60_cells(root: Path) -> Path:
    """SYNTHETIC: 12 made-up networks x batch sizes 1..16 from the fixture's real rows."""
    run = root / "synthetic-60"
    run.mkdir(parents=True)
    manifest = read_manifest(FIXTURE)
    manifest.update(run_id="synthetic-60", argv=["synthetic test data"], synthetic=True)
    write_manifest(run, manifest)
    real = load_results([FIXTURE])
    ok = real[(real["status"] == "ok") & (real["top1"].notna())].sort_values(
        ["model", "batch_size"]
    )
    templates = [{k: to_plain(v) for k, v in r.items()} for r in ok.to_dict("records")]
    for i in range(12):
        for j, b in enumerate((1, 2, 4, 8, 16)):
            r = dict(templates[(i * 5 + j) % len(templates)])
            r.update(model=f"synthetic_net_{i:02d}", batch_size=b, run_id="synthetic-60")
            r.update(intensity_macs_per_byte=2.0 * (i + 1) * b ** 0.5,
                     achieved_macs_per_s=1e9 * (i + 1) * b ** 0.3,
                     activation_peak_bytes=2_000_000 * b)  # fmt: skip
            write_row(run, f"synthetic_net_{i:02d}_bs{b}", Row.from_dict(r))
    first = templates[0]
    ceilings = ceiling_rows(first["device"], first["dtype"], first["threads"],
                            manifest["environment"]["hostname"], gemm=5e10, triad=2e10,
                            conv3x3=3e10, copy=1.5e10)  # fmt: skip
    pd.DataFrame(ceilings).to_parquet(run / "ceilings.parquet")
    return run


def _perf_input(tmp_path: Path) -> tuple[list[Path], str]:
    named = os.environ.get("EFFBENCH_REPORT_PERF_RESULTS")
    if named:
        return [Path(p) for p in named.split(os.pathsep)], f"${named}"
    if RESULTS.is_dir() and any(RESULTS.iterdir()):
        try:
            if len(load_results([RESULTS])) >= 60:
                return [RESULTS], str(RESULTS)
        except BenchError:  # an unreadable results/ falls back to the synthetic input
            pass
    return [_synthetic_60_cells(tmp_path)], "synthetic 60-cell run"


@pytest.mark.perf
def test_report_of_60_cells_takes_under_a_minute(benchmark, tmp_path: Path) -> None:
    inputs, what = _perf_input(tmp_path)
    rows = len(load_results(inputs))
    assert rows >= 60, f"{what} holds {rows} rows; the benchmark needs at least 60"
    out = tmp_path / "report"
    result = benchmark.pedantic(build_report, args=(inputs, out), rounds=3, iterations=1)
    benchmark.extra_info.update(input=what, rows=rows)
    assert (result.out / "index.html").is_file()
    assert benchmark.stats.stats.max < BUDGET_S, f"report of {what} took over {BUDGET_S} s"

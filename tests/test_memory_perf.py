"""Benchmark (`nox -s perf`): the measured CPU peak memory means one thing from process to
process. Issue 22's target: over 6 fresh worker processes of one cell, the first one
included, the allocator peak (``peak_memory_bytes``) spreads (max - min) / median by at
most 1%, for resnet18 at batches 1 and 8, resnet50 at 1, mobilenet_v2 at 8,
mobilenet_v3_large at 1 and densenet121 at 1.

Before (issue 16), the figure was the resident set's mark in a pass whose glibc was told
to follow live memory: 0-0.2% apart without a run's first process, 0.5-8 MiB higher in
that one, cause unknown. The allocator's peak does not depend on what glibc keeps. The
resident set's mark (``peak_rss_bytes``, under glibc's default thresholds) is recorded
beside it, not held to a target: it is the footprint, and it moves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.store import load_results

pytestmark = pytest.mark.perf
REPEATS = 6
TARGET_SPREAD = 0.01
# one run per batch-size set: every cell's group walks only the batches asked of it
RUNS = {
    "b1": ("resnet18,resnet50,mobilenet_v3_large,densenet121", "1"),
    "b8": ("resnet18,mobilenet_v2", "8"),
}


def _spread(values: pd.Series) -> float:
    return float((values.max() - values.min()) / values.median())


def test_cpu_peak_memory_spread_between_fresh_processes(
    benchmark: pytest.FixtureRequest, tmp_path: Path
) -> None:
    def sweeps() -> None:
        for run_id, (models, batches) in RUNS.items():
            args = ["--models", models, "--batch-sizes", batches, "--threads", "2"]
            args += ["--repeats", str(REPEATS), "--min-time", "0.3", "--max-time", "0.6"]
            args += ["--out", str(tmp_path), "--run-id", run_id, "--no-ceilings"]
            subprocess.run(
                [sys.executable, "-m", "bench", "run", *args],
                check=True,
                env={k: v for k, v in os.environ.items() if k != "EFFBENCH_PLUGINS"},
            )

    benchmark.pedantic(sweeps, rounds=1, iterations=1)
    df = load_results([tmp_path / run_id for run_id in RUNS])
    assert len(df) == 6 * REPEATS and (df["status"] == "ok").all()
    cells = df.groupby(["model", "batch_size"])
    assert (cells["repeat"].nunique() == REPEATS).all()
    spread = cells["peak_memory_bytes"].agg(_spread).to_dict()
    rss = cells["peak_rss_bytes"].agg(_spread).to_dict()
    counted = df["weights_bytes"] + df["activation_peak_bytes"]
    mib = {
        "allocator": cells["peak_memory_bytes"].median() / 2**20,
        "counted": counted.groupby([df["model"], df["batch_size"]]).median() / 2**20,
        "rss_min": cells["peak_rss_bytes"].min() / 2**20,
        "rss_max": cells["peak_rss_bytes"].max() / 2**20,
    }
    name = {cell: f"{cell[0]} b{cell[1]}" for cell in spread}
    benchmark.extra_info.update(
        spread={name[c]: v for c, v in spread.items()},
        rss_spread={name[c]: v for c, v in rss.items()},
        **{f"{k}_mib": {name[c]: round(float(v), 2) for c, v in s.items()} for k, s in mib.items()},
    )
    for c, s in sorted(spread.items()):
        rss_mib = f"{mib['rss_min'][c]:.1f}-{mib['rss_max'][c]:.1f} MiB"
        print(f"\n{name[c]}: allocator peak {mib['allocator'][c]:.2f} MiB (counted "
              f"{mib['counted'][c]:.2f}), spread {s:.3%} over {REPEATS} processes; "
              f"resident-set mark {rss_mib}, spread {rss[c]:.1%}")  # fmt: skip
    assert all(s <= TARGET_SPREAD for s in spread.values()), {name[c]: s for c, s in spread.items()}

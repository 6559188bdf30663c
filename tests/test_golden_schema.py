"""The parquet a fixed small sweep writes keeps its columns, arrow types and counted values.

``tests/data/golden_sweep.json`` was written by ``scripts/golden_sweep.py`` from this sweep
run with the code before the probe-window refactor (issue 12); it guards the refactor and
every later change to the row contract (a deliberate change regenerates it and says so:
issue 13 added ``config`` and the configuration columns, issue 14 ``hostname``, issue 16
the counted traffic and activation peak and the roofline columns, issue 20 the contention
evidence, `quality`, `quality_reason`, `attempt` and `variant`, issue 22 ``peak_rss_bytes``,
issue 24 the instruction counts `instructions_per_forward` and `estimated_cycles_per_forward`
and the ping-pong columns `pair_id`, `burst_sizes` and `burst_contended`, issue 20's speed
canary `canary_macs_per_s` and `canary_source`, and the pinned cores `cpus` (the ping-pong
arms' shared cores, a `--parallel` share); every other column,
type and counted value stayed as they were)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import ROOT, effbench

sys.path.insert(0, str(ROOT / "scripts"))
from golden_sweep import describe

GOLDEN = Path(__file__).parent / "data" / "golden_sweep.json"


def test_a_fixed_sweep_writes_the_golden_columns_types_and_counts(tmp_path: Path) -> None:
    args = ["run", "--models", "lenet5,tiny_mlp", "--batch-sizes", "1,2", "--threads", "1"]
    args += ["--min-time", "0.05", "--max-time", "0.2", "--warmup-iters", "1"]
    args += ["--warmup-time", "0", "--out", str(tmp_path), "--run-id", "g"]
    r = effbench(args)
    assert r.returncode == 0, r.stderr
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(describe(tmp_path / "g")))
    assert got["columns"] == golden["columns"]
    assert got["counted"] == golden["counted"]

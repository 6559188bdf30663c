"""Write the golden description of a fixed small sweep (columns, arrow types, counted
values) that tests/test_golden_schema.py compares every later sweep against.

Usage: python scripts/golden_sweep.py RUN_DIR > tests/data/golden_sweep.json
(RUN_DIR from: effbench run --models lenet5,tiny_mlp --batch-sizes 1,2 --threads 1 ...)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

# Counted (not measured) quantities: identical from run to run.
COUNTED = (
    "model",
    "batch_size",
    "image_size",
    "in_chans",
    "dtype",
    "threads",
    "config",
    "status",
    "params",
    "macs",
    "macs_counter",
    "weights_bytes",
    "bytes_per_image",
    "activation_peak_bytes",
    "intensity_macs_per_byte",
    "family",
    "params_ref",
)


def describe(run_dir: Path) -> dict[str, object]:
    parts = sorted(run_dir.glob("part-*.parquet"))
    schema = pq.read_schema(parts[0])
    rows = [pq.read_table(p).to_pylist()[0] for p in parts]
    rows.sort(key=lambda r: (r["model"], r["batch_size"]))
    return {
        "columns": [[f.name, str(f.type)] for f in schema],
        "counted": [{k: r[k] for k in COUNTED} for r in rows],
    }


if __name__ == "__main__":
    print(json.dumps(describe(Path(sys.argv[1])), indent=1))

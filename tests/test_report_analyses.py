"""The numbers and sentences the report's figures draw (bench/report/analyses.py and
readings.py): pure pandas, tested here on SYNTHETIC frames without drawing a figure."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from bench.report.analyses import batching_gains, line_ends
from bench.report.readings import batching_gain


def test_analyses_readings_and_summary_import_no_matplotlib() -> None:
    code = (
        "import sys\n"
        "import bench.report.analyses, bench.report.readings, bench.report.summary\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _cells(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """SYNTHETIC cells of one setup: (network, image size, batch size, ms per image)."""
    return pd.DataFrame(rows, columns=["model", "image_size", "batch_size", "time_per_image_ms"])


def test_batching_gain_keeps_each_input_size_of_a_network_apart() -> None:
    # one network at two sizes (two runs), and one part written before the size was recorded
    cells = _cells([("m", 8, 1, 4.0), ("m", 8, 4, 1.0), ("m", 16, 1, 9.0), ("m", 16, 4, 6.0),
                    ("k", 0, 1, 3.0), ("k", 0, 4, 2.0), ("k", 8, 1, 5.0), ("k", 8, 4, 2.5),
                    ("n", 8, 1, 2.0), ("n", 8, 4, 1.6)])  # fmt: skip
    found = batching_gains(cells)
    assert (found.lo, found.hi) == (1, 4)
    assert found.gains == pytest.approx({"m (8 px)": 4.0, "m (16 px)": 1.5,
                                         "k (size not recorded)": 1.5, "k (8 px)": 2.0,
                                         "n": 1.25})  # fmt: skip
    assert batching_gain(cells, "cpu") == (
        "On cpu, going from batch 1 to 4 divides the time per image by 4.00 for m (8 px) and by "
        "1.25 for n."
    )


def test_line_ends_are_each_lines_largest_batch() -> None:
    cells = _cells([("m", 8, 1, 4.0), ("m", 8, 4, 1.0), ("m", 16, 2, 9.0), ("n", 8, 2, 2.0)])
    ends = line_ends(cells)
    got = list(zip(ends["label"], ends["batch_size"], ends["time_per_image_ms"], strict=True))
    assert got == [("m (8 px)", 4, 1.0), ("m (16 px)", 2, 9.0), ("n", 2, 2.0)]

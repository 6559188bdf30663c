"""An example probe, used only in tests: the process's CPU time per forward. The whole of
what adding a measurement takes is this file and its last line (docs/architecture.md): its
columns reach the parquet files, the report's per-cell table and summary, and the gate."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from bench.probes.base import WINDOW_ONLY, Measurement, Window
from bench.probes.registry import register_measurement
from bench.schema import FIRST, MEDIAN, Column, Gate


class CpuTimeProbe(Measurement):
    """CPU seconds this process spent (user + system, all threads) over the window, per
    forward of one batch, from ``time.process_time``."""

    # agg: how the report summarises a cell's repeats; gate: `effbench compare --metric
    # cpu_time` (both travel with the rows: the report and the gate import no plugin)
    columns: ClassVar[tuple[Column, ...]] = (
        Column(
            "cpu_time_ms",
            "float?",
            "ms",
            "process CPU time per forward of one batch",
            agg=MEDIAN,
            gate=Gate("cpu_time"),
        ),
        Column(
            "cpu_busy_share", "float?", "", "process CPU s per wall s in the window", agg=MEDIAN
        ),
        Column("cpu_time_source", "str?", "", "how CPU time was read, or why not", agg=FIRST),
    )
    note_column: ClassVar[str] = "cpu_time_source"
    phases = WINDOW_ONLY

    def begin(self) -> None:
        self._start = time.process_time()
        self._wall_start = time.perf_counter()

    def end(self, window: Window) -> Mapping[str, Any]:
        spent_ms = (time.process_time() - self._start) * 1e3
        wall_ms = (time.perf_counter() - self._wall_start) * 1e3
        return {
            "cpu_time_ms": spent_ms / window.iterations,
            "cpu_busy_share": spent_ms / wall_ms,
            "cpu_time_source": "process_time",
        }


register_measurement(CpuTimeProbe)

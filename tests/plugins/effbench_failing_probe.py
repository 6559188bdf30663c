"""A probe whose window always fails, used only in tests: its error must land in its own
note column while the latency and the other probes' columns are kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bench.probes.base import WINDOW_ONLY, Measurement, Window
from bench.probes.registry import register_measurement
from bench.schema import Column


class FailingProbe(Measurement):
    columns: ClassVar[tuple[Column, ...]] = (
        Column("flaky_value", "float?", "", "never filled: the probe always fails"),
        Column("flaky_source", "str?", "", "why the flaky probe has no value"),
    )
    note_column: ClassVar[str] = "flaky_source"
    phases = WINDOW_ONLY

    def end(self, window: Window) -> Mapping[str, Any]:
        raise OSError("sensor unplugged")


register_measurement(FailingProbe)

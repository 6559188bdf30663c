"""Power/energy probe: one interface (begin a window, end a window) per device.

This module holds the interface and the null backend; the power issue adds the NVML and
RAPL backends behind ``open_monitor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PowerReading:
    """Energy over one measurement window. ``None`` where no source could measure it."""

    source: str
    duration_s: float | None = None
    energy_j: float | None = None
    power_w_mean: float | None = None
    gpu_clock_mhz: float | None = None
    gpu_temp_c: float | None = None
    throttled: bool | None = None
    throttle_reasons: str | None = None


class PowerMonitor(Protocol):
    source: str
    min_window_s: float

    def begin_window(self) -> None: ...

    def end_window(self) -> PowerReading: ...

    def idle_power_w(self) -> float | None: ...


class NullPowerMonitor:
    """No power source: windows measure nothing and say why in ``source``."""

    min_window_s = 0.0

    def __init__(self, why: str) -> None:
        self.source = f"unavailable: {why}"

    def begin_window(self) -> None:
        return None

    def end_window(self) -> PowerReading:
        return PowerReading(source=self.source)

    def idle_power_w(self) -> float | None:
        return None


def open_monitor(device: str) -> PowerMonitor:
    """The power monitor for ``device`` (currently always the null backend)."""
    return NullPowerMonitor("power measurement not implemented yet")

"""Power types shared by the power backends (NVML, RAPL) and the factory in
:mod:`bench.probes.power`: a reading, the monitor protocol and its null object. Split from
the factory so that the backends import their base types without importing the factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Seconds of idle over which the runner measures each device's idle power at the start of
# a run (Canziani et al. 2016 report power net of idle).
IDLE_WINDOW_S = 3.0


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
    gpu_mem_clock_mhz: float | None = None


class PowerMonitor(Protocol):
    source: str
    min_window_s: float
    note: str | None

    def begin_window(self) -> None: ...

    def end_window(self) -> PowerReading: ...

    def idle_power_w(self, duration_s: float = IDLE_WINDOW_S) -> float | None: ...

    def close(self) -> None: ...


class NullPowerMonitor:
    """No power source: windows measure nothing and say why in ``source``."""

    min_window_s = 0.0

    def __init__(self, why: str, detail: str | None = None) -> None:
        self.source = f"unavailable: {why}"
        self.note: str | None = f"{self.source}: {detail}" if detail else self.source

    def begin_window(self) -> None:
        return None

    def end_window(self) -> PowerReading:
        return PowerReading(source=self.source)

    def idle_power_w(self, duration_s: float = IDLE_WINDOW_S) -> float | None:
        return None

    def close(self) -> None:
        return None


def too_short(source: str, duration_s: float, why: str) -> PowerReading:
    """A flagged reading: the window could not be resolved, so no energy is reported."""
    return PowerReading(
        source=f"{source}; not reported: {why}",
        duration_s=duration_s,
    )

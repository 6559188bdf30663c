"""Power/energy probe: one interface (begin a window, end a window) per device.

Backends, chosen by :func:`open_monitor`:

- ``cuda:N`` -> NVML (:mod:`bench.probes.nvml`): the GPU's total-energy counter, or power
  samples integrated over the window where the counter is not supported;
- ``cpu`` on Linux -> RAPL (:mod:`bench.probes.rapl`): package + DRAM energy counters under
  ``/sys/class/powercap`` (or ``$EFFBENCH_RAPL_ROOT``);
- anything else, or a source that cannot be read -> :class:`NullPowerMonitor`, whose
  ``source`` says why (``"unavailable: no NVML library"``, ``"unavailable: RAPL not
  readable"``) and whose ``note`` adds the detail the runner prints once per run.

A window covers the timed loop of one cell; ``energy_j`` is the energy of the whole window
(joules), ``power_w_mean`` = energy / duration (watts, gross: idle power included).
Where the sensor cannot resolve a window (shorter than ``min_window_s`` or the counter did
not move), the energy stays ``None`` and ``source`` says so: never zero, never made up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
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


def open_monitor(device: str, sync: Callable[[], None] | None = None) -> PowerMonitor:
    """The power monitor for ``device`` ("cpu", "cuda", "cuda:N", "mps").

    ``sync`` waits for the device's queued work; the NVML monitor calls it at both window
    edges so the window covers exactly the work timed.
    """
    if device.startswith("cuda"):
        from bench.probes.nvml import open_nvml_monitor

        return open_nvml_monitor(device, sync=sync)
    if device == "cpu":
        if not sys.platform.startswith("linux"):
            return NullPowerMonitor("RAPL not readable", f"RAPL is Linux-only, not {sys.platform}")
        from bench.probes.rapl import open_rapl_monitor

        return open_rapl_monitor()
    return NullPowerMonitor(f"no power source for {device}")


def describe_sources(devices: Iterable[str]) -> dict[str, str]:
    """For ``effbench env``: each device's power source and method, or why there is none.

    Opens each monitor (no idle measurement) and closes it again.
    """
    out: dict[str, str] = {}
    for dev in devices:
        mon = open_monitor(dev)
        try:
            if isinstance(mon, NullPowerMonitor):
                out[dev] = mon.note or mon.source
            else:
                out[dev] = f"{mon.source} (windows >= {mon.min_window_s:g} s)"
        finally:
            mon.close()
    return out

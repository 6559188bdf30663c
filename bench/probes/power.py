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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from bench.probes.base import WINDOW_ONLY, Measurement, ProbeContext, Window
from bench.probes.nvml import open_nvml_monitor
from bench.probes.power_base import (
    IDLE_WINDOW_S,
    NullPowerMonitor,
    PowerMonitor,
    PowerReading,
    too_short,
)
from bench.probes.rapl import open_rapl_monitor
from bench.schema import POWER, Column

__all__ = [
    "IDLE_WINDOW_S",
    "NullPowerMonitor",
    "PowerMonitor",
    "PowerReading",
    "PowerWindow",
    "describe_sources",
    "open_monitor",
    "too_short",
]


def open_monitor(device: str, sync: Callable[[], None] | None = None) -> PowerMonitor:
    """The power monitor for ``device`` ("cpu", "cuda", "cuda:N", "mps").

    ``sync`` waits for the device's queued work; the NVML monitor calls it at both window
    edges so the window covers exactly the work timed.
    """
    if device.startswith("cuda"):
        return open_nvml_monitor(device, sync=sync)
    if device == "cpu":
        if not sys.platform.startswith("linux"):
            return NullPowerMonitor("RAPL not readable", f"RAPL is Linux-only, not {sys.platform}")
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


class PowerWindow(Measurement):
    """The power probe: the device's monitor over the timed window. Energy is per forward
    of one batch (window energy ÷ iterations) and per image; power is the window's mean."""

    columns: ClassVar[tuple[Column, ...]] = POWER
    note_column: ClassVar[str] = "power_source"
    phases = WINDOW_ONLY

    def __init__(self, monitor: PowerMonitor, idle_power_w: float | None) -> None:
        self._monitor = monitor
        self._idle_w = idle_power_w
        self.min_window_s = monitor.min_window_s

    @classmethod
    def open(cls, ctx: ProbeContext) -> PowerWindow:
        return cls(open_monitor(ctx.device, sync=ctx.sync), ctx.idle_power_w)

    def begin(self) -> None:
        self._monitor.begin_window()

    def end(self, window: Window) -> Mapping[str, Any]:
        reading = self._monitor.end_window()
        energy = reading.energy_j / window.iterations if reading.energy_j is not None else None
        return {
            "power_w_mean": reading.power_w_mean,
            "power_w_idle": self._idle_w,
            "energy_j": energy,
            "energy_per_image_j": energy / window.batch_size if energy is not None else None,
            "power_source": reading.source,
            "gpu_clock_mhz": reading.gpu_clock_mhz,
            "gpu_mem_clock_mhz": reading.gpu_mem_clock_mhz,
            "gpu_temp_c": reading.gpu_temp_c,
            "throttled": reading.throttled,
            "throttle_reasons": reading.throttle_reasons,
        }

    def close(self) -> None:
        self._monitor.close()

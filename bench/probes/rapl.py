"""RAPL energy of the CPU package(s) and DRAM on Linux, through the powercap sysfs tree.

Method: at each window edge read ``energy_uj`` (microjoules, a counter) of every package
zone (``name`` = ``package-N``) and every DRAM sub-zone (``name`` = ``dram``) under
``$EFFBENCH_RAPL_ROOT`` (default ``/sys/class/powercap``); the energy of the window is the
sum of the counters' differences. A counter that wrapped (end < begin) wrapped once at
``max_energy_range_uj``: difference = end + max_energy_range_uj - begin. ``core``,
``uncore`` and ``psys`` zones are left out: the first two lie inside the package, the
last overlaps it. RAPL counts the whole socket, not just the benchmark process.

Limits: a window longer than one full counter range (minutes at hundreds of watts) would
wrap twice and is not detected; idle power is measured by polling every 0.1 s, so it
survives any number of wraps. ``energy_uj`` is root-only since Linux 5.10 and containers
often hide ``/sys/class/powercap``: then the null monitor says so.

Not run on real RAPL hardware here (this machine hides /sys/class/powercap); tested
against a fake powercap tree whose counters a background writer advances.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.probes.power_base import (
    IDLE_WINDOW_S,
    NullPowerMonitor,
    PowerMonitor,
    PowerReading,
    too_short,
)

DEFAULT_ROOT = "/sys/class/powercap"
ROOT_ENV = "EFFBENCH_RAPL_ROOT"
# RAPL counters update about every 1 ms; 0.1 s keeps their quantisation under 1 %.
MIN_WINDOW_S = 0.1
_POLL_S = 0.1
_ZONE_DIR = re.compile(r"^intel-rapl:\d+(:\d+)?$")


@dataclass(frozen=True, slots=True)
class RaplZone:
    name: str
    energy_path: Path
    max_energy_range_uj: int


def _read_text(path: Path) -> str:
    """The one place RAPL files are read (a seam for tests of unreadable files)."""
    return path.read_text()


def rapl_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def find_zones(root: Path) -> list[RaplZone]:
    """Package and DRAM zones under ``root``, sorted by path; raises ``OSError`` when a
    zone's files cannot be read."""
    zones: list[RaplZone] = []
    seen: set[Path] = set()
    # Sub-zones appear both at the top level (symlinks) and inside their package folder.
    for d in sorted(root.glob("intel-rapl*")) + sorted(root.glob("intel-rapl:*/intel-rapl:*")):
        if not _ZONE_DIR.match(d.name) or not (d / "energy_uj").exists():
            continue
        real = d.resolve()
        if real in seen:
            continue
        seen.add(real)
        name = _read_text(d / "name").strip()
        if not (name.startswith("package") or name == "dram"):
            continue
        _read_text(d / "energy_uj")  # fail now if unreadable
        zones.append(RaplZone(name, d / "energy_uj", int(_read_text(d / "max_energy_range_uj"))))
    return zones


def counter_delta_uj(begin_uj: int, end_uj: int, max_range_uj: int) -> int:
    """Difference of a counter that wraps to 0 after ``max_range_uj``."""
    return end_uj - begin_uj if end_uj >= begin_uj else end_uj + max_range_uj - begin_uj


class RaplMonitor:
    """Energy of the CPU package(s) + DRAM over a window, from RAPL counters."""

    min_window_s = MIN_WINDOW_S
    note: str | None = None

    def __init__(
        self,
        zones: list[RaplZone],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not zones:
            raise ValueError("RaplMonitor needs at least one zone")
        self.zones = zones
        self.source = "rapl:" + "+".join(z.name for z in zones)
        self._clock = clock
        self._sleep = sleep
        self._begin: tuple[float, list[int]] | None = None

    def _read(self) -> list[int]:
        return [int(_read_text(z.energy_path)) for z in self.zones]

    def _delta_uj(self, a: list[int], b: list[int]) -> int:
        return sum(
            counter_delta_uj(x, y, z.max_energy_range_uj)
            for x, y, z in zip(a, b, self.zones, strict=True)
        )

    def begin_window(self) -> None:
        self._begin = (self._clock(), self._read())

    def end_window(self) -> PowerReading:
        if self._begin is None:
            raise RuntimeError("end_window() without begin_window()")
        values, t1 = self._read(), self._clock()
        t0, start = self._begin
        self._begin = None
        duration = t1 - t0
        delta = self._delta_uj(start, values)
        if duration < self.min_window_s:
            return too_short(self.source, duration, f"window {duration:.3f} s < {MIN_WINDOW_S} s")
        if delta <= 0:
            return too_short(self.source, duration, "counter did not advance")
        energy = delta / 1e6
        return PowerReading(
            source=self.source, duration_s=duration, energy_j=energy, power_w_mean=energy / duration
        )

    def idle_power_w(self, duration_s: float = IDLE_WINDOW_S) -> float | None:
        """Mean power over ``duration_s`` of idle, polling every 0.1 s (wrap-safe)."""
        t0, prev = self._clock(), self._read()
        total = 0
        while self._clock() - t0 < duration_s:
            self._sleep(_POLL_S)
            cur = self._read()
            total += self._delta_uj(prev, cur)
            prev = cur
        duration = self._clock() - t0
        return total / 1e6 / duration if total > 0 and duration > 0 else None

    def close(self) -> None:
        return None


def open_rapl_monitor(root: Path | None = None) -> PowerMonitor:
    """A :class:`RaplMonitor` for ``root``, or a null monitor saying why not."""
    root = root or rapl_root()
    why = "RAPL not readable"
    if not root.is_dir():
        return NullPowerMonitor(
            why,
            f"{root} does not exist (containers often hide it); set ${ROOT_ENV} to read another",
        )
    try:
        zones = find_zones(root)
    except PermissionError as e:
        return NullPowerMonitor(
            why, f"{e.filename}: permission denied (energy_uj is root-only since Linux 5.10)"
        )
    except (OSError, ValueError) as e:
        return NullPowerMonitor(why, f"cannot read the zones under {root}: {e}")
    if not zones:
        return NullPowerMonitor(why, f"no intel-rapl package zone under {root}")
    return RaplMonitor(zones)

"""GPU energy and telemetry through NVML (``nvidia-ml-py``, imported as ``pynvml``).

Methods, chosen once when the monitor opens and recorded in ``power_source``:

- ``nvml:energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
  driver loaded; Volta and newer) read at both window edges, each edge right after a
  device synchronisation. The counter moves only every ~20-100 ms, so a window must last
  at least ``COUNTER_MIN_WINDOW_S`` (ten update periods: the staleness of the two reads
  then shifts the energy by at most ~10 %, zero on average); a shorter window, or one over
  which the counter did not move, is flagged and reports no energy.
- ``nvml:sampled-instant`` / ``nvml:sampled-average``: where the counter is not supported,
  a separate sampler *process* (so it never holds this interpreter's lock during the timed
  loop) reads power every ``SAMPLE_INTERVAL_S`` -- the ``NVML_FI_DEV_POWER_INSTANT`` field
  where the driver offers it, else ``nvmlDeviceGetPowerUsage`` (milliwatts; a 1-second
  average on Ampere and newer except GA100) -- and the samples are integrated over the
  window with the trapezoidal rule (edges linearly interpolated). The averaged reading
  lags the load by ~0.5 s, hence its longer minimum window (``AVERAGE_MIN_WINDOW_S``).

Telemetry, in every method, from the same sampler process plus reads at both edges:
SM and memory clocks (mean over the window's samples, MHz), GPU temperature (maximum, °C)
and the clock-event reasons (bitwise OR over the window). A cell is ``throttled`` when any
of SW power cap (0x4), HW slowdown (0x8), SW thermal (0x20), HW thermal (0x40) or HW power
brake (0x80) was seen.

The NVML module is a seam: tests pass a fake with pynvml's names, units and error types
(``tests/fakes/fake_pynvml.py``). NOT RUN ON REAL NVIDIA HARDWARE: the development machine
has no GPU; the unit conversions and call sequence follow the NVML documentation and the
``pynvml`` source, and the CUDA-index-to-NVML-handle mapping (by UUID) is unverified.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from bench.probes.power_base import (
    IDLE_WINDOW_S,
    NullPowerMonitor,
    PowerMonitor,
    PowerReading,
    too_short,
)

COUNTER_MIN_WINDOW_S = 1.0
INSTANT_MIN_WINDOW_S = 1.0
AVERAGE_MIN_WINDOW_S = 5.0
SAMPLE_INTERVAL_S = 0.02

METHODS = ("energy-counter", "sampled-instant", "sampled-average")

# Clock-event ("throttle") reason bits of nvmlDeviceGetCurrentClocksEventReasons.
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
# Reasons that are not a slowdown of the work; gpu_idle (0x1) is left out of the record
# because every window edge follows a synchronisation, where the GPU is briefly idle.
OTHER_BITS = {0x2: "applications_clocks", 0x10: "sync_boost", 0x100: "display_clocks"}
_IDLE_BIT = 0x1

_FIELD_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}


def decode_reasons(mask: int) -> tuple[bool, str]:
    """(throttled, comma-separated reason names) for a clock-event reason bit mask."""
    names = [n for bit, n in sorted({**THROTTLE_BITS, **OTHER_BITS}.items()) if mask & bit]
    unknown = mask & ~(_IDLE_BIT | sum(THROTTLE_BITS) | sum(OTHER_BITS))
    if unknown:
        names.append(f"other_0x{unknown:x}")
    return bool(mask & sum(THROTTLE_BITS)), ",".join(names)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampler reading: time (s, CLOCK_MONOTONIC), power (W), clocks (MHz), °C, mask."""

    t_s: float
    power_w: float | None = None
    sm_mhz: float | None = None
    mem_mhz: float | None = None
    temp_c: float | None = None
    reasons: int | None = None


def _field_value(fv: Any) -> float:
    return float(getattr(fv.value, _FIELD_VALUE_ATTR.get(int(fv.valueType), "uiVal")))


def read_power_w(nvml: ModuleType, handle: Any, method: str) -> float | None:
    """Power in watts by ``method`` ("sampled-instant" or "sampled-average")."""
    try:
        if method == "sampled-instant":
            (fv,) = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
            if fv.nvmlReturn != nvml.NVML_SUCCESS:
                return None
            return _field_value(fv) / 1e3
        if method == "sampled-average":
            return nvml.nvmlDeviceGetPowerUsage(handle) / 1e3
    except nvml.NVMLError:
        return None
    return None


def read_sample(
    nvml: ModuleType, handle: Any, power_method: str | None, clock: Callable[[], float]
) -> Sample:
    """One reading of power (if ``power_method``) and telemetry; unsupported parts None."""

    def get(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(handle, *args)
        except nvml.NVMLError:
            return None

    t = clock()
    power = read_power_w(nvml, handle, power_method) if power_method else None
    return Sample(
        t_s=t,
        power_w=power,
        sm_mhz=get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM),
        mem_mhz=get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM),
        temp_c=get(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
        reasons=get(nvml.nvmlDeviceGetCurrentClocksEventReasons),
    )


def integrate_j(points: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Energy (J) over [t0, t1] of power samples ``(t_s, watts)``, trapezoidal rule.

    The power at each edge is interpolated between its neighbouring samples (held from the
    nearest sample where the edge lies outside them). None with fewer than two samples.
    """
    pts = sorted(points)
    if len(pts) < 2 or t1 <= t0:
        return None

    def at(t: float) -> float:
        if t <= pts[0][0]:
            return pts[0][1]
        if t >= pts[-1][0]:
            return pts[-1][1]
        for (ta, pa), (tb, pb) in itertools.pairwise(pts):
            if ta <= t <= tb:
                return pa if tb == ta else pa + (pb - pa) * (t - ta) / (tb - ta)
        raise AssertionError("unreachable")

    inner = [(t, p) for t, p in pts if t0 < t < t1]
    curve = [(t0, at(t0)), *inner, (t1, at(t1))]
    return sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in itertools.pairwise(curve))


class Sampler(Protocol):
    def start(self) -> None: ...

    def stop(self) -> list[Sample]: ...

    def close(self) -> None: ...


def _sampler_main(conn: Any, module: str, key: int | str, method: str | None, every: float) -> None:
    """Child process: sample between "start" and "stop" commands; ends on EOF/"exit"."""
    nvml = importlib.import_module(module)
    nvml.nvmlInit()
    handle = _handle_by_key(nvml, key)
    conn.send("ready")
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd != "start":
            return
        samples = [read_sample(nvml, handle, method, time.monotonic)]
        conn.send("started")
        next_t = samples[0].t_s + every
        while not conn.poll(max(0.0, next_t - time.monotonic())):
            samples.append(read_sample(nvml, handle, method, time.monotonic))
            next_t = max(next_t + every, time.monotonic())
        conn.recv()  # "stop"
        samples.append(read_sample(nvml, handle, method, time.monotonic))
        conn.send([tuple(getattr(s, f) for f in Sample.__slots__) for s in samples])


class ProcessSampler:
    """Samples NVML in a separate (spawned) process; its clock is CLOCK_MONOTONIC, which
    on Linux is shared by all processes, so sample times compare with the window edges."""

    def __init__(
        self, module: str, key: int | str, method: str | None, every_s: float = SAMPLE_INTERVAL_S
    ) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that holds a CUDA context
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_sampler_main, args=(child, module, key, method, every_s), daemon=True
        )
        self._proc.start()
        child.close()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            self.close()
            raise RuntimeError("the NVML sampler process did not start")

    def start(self) -> None:
        self._conn.send("start")
        self._conn.recv()

    def stop(self) -> list[Sample]:
        self._conn.send("stop")
        return [Sample(*values) for values in self._conn.recv()]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("exit")
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()


def _handle_by_key(nvml: ModuleType, key: int | str) -> Any:
    if isinstance(key, str):
        return nvml.nvmlDeviceGetHandleByUUID(key)
    return nvml.nvmlDeviceGetHandleByIndex(key)


def _torch_uuid(index: int) -> str | None:
    """NVML's UUID ("GPU-…") of CUDA device ``index`` as torch sees it (CUDA and NVML
    number devices differently when CUDA_VISIBLE_DEVICES or CUDA_DEVICE_ORDER is set)."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:
        return None
    return None


def device_handle(
    nvml: ModuleType, device: str, uuid_of: Callable[[int], str | None]
) -> tuple[Any, int | str]:
    """NVML's handle of CUDA ``device`` ("cuda" or "cuda:N") and the key it was found by:
    its UUID as torch sees it (``uuid_of``), else its index. Raises ``nvml.NVMLError``
    where neither finds it."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    uuid = uuid_of(index)
    if uuid:
        with contextlib.suppress(nvml.NVMLError):  # unknown by that UUID: by index
            return nvml.nvmlDeviceGetHandleByUUID(uuid), uuid
    return nvml.nvmlDeviceGetHandleByIndex(index), index


def choose_method(nvml: ModuleType, handle: Any) -> str | None:
    """The best supported energy method for ``handle``, or None."""
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return "energy-counter"
    except nvml.NVMLError:
        pass
    if read_power_w(nvml, handle, "sampled-instant") is not None:
        return "sampled-instant"
    if read_power_w(nvml, handle, "sampled-average") is not None:
        return "sampled-average"
    return None


class NvmlMonitor:
    """Energy and telemetry of one GPU over a window (see the module docstring)."""

    note: str | None = None

    def __init__(
        self,
        nvml: ModuleType,
        handle: Any,
        method: str,
        sampler: Sampler,
        *,
        sync: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown NVML method {method!r}; expected one of {METHODS}")
        self._nvml, self._handle, self.method = nvml, handle, method
        self.source = f"nvml:{method}"
        self.min_window_s = {
            "energy-counter": COUNTER_MIN_WINDOW_S,
            "sampled-instant": INSTANT_MIN_WINDOW_S,
            "sampled-average": AVERAGE_MIN_WINDOW_S,
        }[method]
        self._sampler = sampler
        self._sync = sync or (lambda: None)
        self._clock, self._sleep = clock, sleep
        self._begin: tuple[float, int | None, Sample] | None = None

    def _counter_mj(self) -> int | None:
        if self.method != "energy-counter":
            return None
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _edge(self) -> Sample:
        return read_sample(self._nvml, self._handle, None, self._clock)

    def begin_window(self) -> None:
        self._sync()
        self._sampler.start()
        edge = self._edge()
        self._begin = (self._clock(), self._counter_mj(), edge)

    def end_window(self) -> PowerReading:
        if self._begin is None:
            raise RuntimeError("end_window() without begin_window()")
        self._sync()
        t1 = self._clock()
        e1 = self._counter_mj()
        edge1 = self._edge()
        samples = self._sampler.stop()
        t0, e0, edge0 = self._begin
        self._begin = None
        duration = t1 - t0
        telemetry = _telemetry([s for s in samples if t0 <= s.t_s <= t1], [edge0, edge1])
        if duration < self.min_window_s:
            flagged = too_short(
                self.source, duration, f"window {duration:.3f} s < {self.min_window_s:g} s"
            )
            return _with(flagged, telemetry)
        if self.method == "energy-counter":
            assert e0 is not None and e1 is not None
            energy = (e1 - e0) / 1e3 if e1 > e0 else None
            why = "energy counter did not advance"
        else:
            points = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
            energy = integrate_j(points, t0, t1)
            why = "fewer than two power samples"
        if energy is None:
            return _with(too_short(self.source, duration, why), telemetry)
        reading = PowerReading(
            source=self.source,
            duration_s=duration,
            energy_j=energy,
            power_w_mean=energy / duration,
        )
        return _with(reading, telemetry)

    def idle_power_w(self, duration_s: float = IDLE_WINDOW_S) -> float | None:
        """Mean power over ``duration_s`` seconds in which this process does nothing."""
        self.begin_window()
        self._sleep(duration_s)
        return self.end_window().power_w_mean

    def close(self) -> None:
        self._sampler.close()
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def _telemetry(inside: list[Sample], edges: list[Sample]) -> dict[str, Any]:
    """Window telemetry: clocks averaged over the samples inside (the edges, which follow
    a synchronisation, only where there are none), hottest temperature, OR of reasons."""
    every = inside + edges

    def mean(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return sum(got) / len(got) if got else None

    base = inside or edges
    temps = [s.temp_c for s in every if s.temp_c is not None]
    masks = [s.reasons for s in every if s.reasons is not None]
    out: dict[str, Any] = {
        "gpu_clock_mhz": mean([s.sm_mhz for s in base]),
        "gpu_mem_clock_mhz": mean([s.mem_mhz for s in base]),
        "gpu_temp_c": float(max(temps)) if temps else None,
        "throttled": None,
        "throttle_reasons": None,
    }
    if masks:
        mask = 0
        for m in masks:
            mask |= int(m)
        out["throttled"], out["throttle_reasons"] = decode_reasons(mask)
    return out


def _with(reading: PowerReading, telemetry: dict[str, Any]) -> PowerReading:
    from dataclasses import replace

    return replace(reading, **telemetry)


def initialised(module: str = "pynvml") -> Any | None:
    """The NVML module ``module``, initialised (the caller shuts it down), or None where it
    is not installed or cannot start (no library, no driver)."""
    try:
        nvml = importlib.import_module(module)
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    return nvml


def driver_version(module: str = "pynvml") -> str | None:
    """The NVIDIA driver's version through NVML, or None where NVML cannot say (no library,
    no driver). ``module`` is the same seam as :func:`open_nvml_monitor`'s."""
    nvml = initialised(module)
    if nvml is None:
        return None
    try:
        v = nvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except nvml.NVMLError:
        return None
    finally:
        nvml.nvmlShutdown()


def open_nvml_monitor(
    device: str,
    *,
    sync: Callable[[], None] | None = None,
    module: str = "pynvml",
    uuid_of: Callable[[int], str | None] = _torch_uuid,
    sampler_factory: Callable[[str, int | str, str | None], Sampler] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PowerMonitor:
    """An :class:`NvmlMonitor` for ``device`` ("cuda" or "cuda:N"), or a null monitor
    saying why not. ``module`` names the NVML module; it, ``sampler_factory``, ``clock``
    and ``sleep`` are seams for tests."""
    try:
        nvml = importlib.import_module(module)
    except ImportError:
        return NullPowerMonitor(
            "no NVML library", "install nvidia-ml-py: pip install 'effbench[gpu]'"
        )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError_LibraryNotFound:
        return NullPowerMonitor(
            "no NVML library", "libnvidia-ml.so not found; is the NVIDIA driver installed?"
        )
    except nvml.NVMLError as e:
        return NullPowerMonitor("NVML init failed", str(e))
    try:
        handle, key = device_handle(nvml, device, uuid_of)
        method = choose_method(nvml, handle)
    except nvml.NVMLError as e:
        nvml.nvmlShutdown()
        return NullPowerMonitor(f"no NVML device for {device}", str(e))
    if method is None:
        nvml.nvmlShutdown()
        return NullPowerMonitor(
            "GPU reports no power", "energy counter and power readings not supported"
        )
    factory = sampler_factory or (lambda m, k, pm: ProcessSampler(m, k, pm))
    power_method = None if method == "energy-counter" else method
    try:
        sampler = factory(module, key, power_method)
    except (OSError, RuntimeError) as e:
        nvml.nvmlShutdown()
        return NullPowerMonitor("NVML sampler failed", str(e))
    return NvmlMonitor(nvml, handle, method, sampler, sync=sync, clock=clock, sleep=sleep)

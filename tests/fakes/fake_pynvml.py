"""A fake ``pynvml`` for tests: the names, return units and error types of nvidia-ml-py.

Units as in pynvml: energy counter in millijoules (int, since "driver load"), power in
milliwatts (int), clocks in MHz, temperature in °C, clock-event reasons a bit mask.
Errors are ``NVMLError`` instances that map their code to a subclass, as pynvml does
(``NVMLError(3)`` is an ``NVMLError_NotSupported``).

The GPU draws ``P(t) = mean_w + amp_w * sin(2π (t - epoch) / period_s)`` watts, t from
``clock`` (``time.monotonic`` unless a test sets another). The energy counter is the exact
integral of P, advanced only at multiples of ``counter_period_s`` (like real counters that
update every ~20-100 ms); ``nvmlDeviceGetPowerUsage`` is the trailing one-second average
(Ampere behaviour); the instant field is P(t). Clock-event reasons are ``reasons``, OR
``burst_reasons`` while ``burst_from <= t < burst_to``. ``configure(...)`` sets the behaviour; a
spawned process reads it from ``$FAKE_NVML_CONFIG`` (JSON) at import.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12

NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80


class NVMLError(Exception):
    _valClassMapping: ClassVar[dict[int, type]] = {}
    _names: ClassVar[dict[int, str]] = {
        1: "Uninitialized",
        2: "Invalid Argument",
        3: "Not Supported",
        4: "Insufficient Permissions",
        6: "Not Found",
        12: "NVML Shared Library Not Found",
    }

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._names.get(self.value, f"NVML Error with code {self.value}")


def _subclass(name: str, code: int) -> type:
    cls = type(name, (NVMLError,), {"__new__": lambda c, *a: NVMLError.__new__(c, code)})
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _subclass("NVMLError_Uninitialized", 1)
NVMLError_InvalidArgument = _subclass("NVMLError_InvalidArgument", 2)
NVMLError_NotSupported = _subclass("NVMLError_NotSupported", 3)
NVMLError_NoPermission = _subclass("NVMLError_NoPermission", 4)
NVMLError_NotFound = _subclass("NVMLError_NotFound", 6)
NVMLError_LibraryNotFound = _subclass("NVMLError_LibraryNotFound", 12)


@dataclass
class Config:
    library: bool = True
    counter: bool = True
    instant: bool = True
    power_usage: bool = True
    counter_period_s: float = 0.1
    counter_offset_mj: int = 123_456_789
    mean_w: float = 200.0
    amp_w: float = 0.0
    period_s: float = 0.7
    epoch: float = 0.0
    sm_mhz: int = 1410
    mem_mhz: int = 1215
    temp_c: int = 61
    reasons: int = 0
    burst_from: float = 0.0
    burst_to: float = 0.0
    burst_reasons: int = 0
    gpus: int = 1
    processes: tuple[int, ...] = ()  # PIDs holding the GPU (compute)


config = Config()
clock = time.monotonic
_initialized = False


def configure(**kw: Any) -> None:
    """Replace the configuration (unnamed fields reset to their defaults)."""
    global config
    config = Config(**kw)


def config_json(**kw: Any) -> str:
    return json.dumps(asdict(Config(**kw)))


if os.environ.get("FAKE_NVML_CONFIG"):
    config = Config(**json.loads(os.environ["FAKE_NVML_CONFIG"]))


def power_w(t: float) -> float:
    c = config
    return c.mean_w + c.amp_w * math.sin(2 * math.pi * (t - c.epoch) / c.period_s)


def energy_j(t: float) -> float:
    """Exact integral of ``power_w`` from ``epoch`` to ``t``."""
    c, x = config, t - config.epoch
    return c.mean_w * x + c.amp_w * c.period_s / (2 * math.pi) * (
        1 - math.cos(2 * math.pi * x / c.period_s)
    )


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


class _Value:
    def __init__(self, ui: int) -> None:
        self.dVal = float(ui)
        self.uiVal = ui
        self.ulVal = ui
        self.ullVal = ui
        self.sllVal = ui
        self.siVal = ui


class c_nvmlFieldValue_t:
    def __init__(self, field_id: int, ret: int, value: int, t: float) -> None:
        self.fieldId = field_id
        self.scopeId = 0
        self.timestamp = int(t * 1e6)
        self.latencyUsec = 0
        self.valueType = NVML_VALUE_TYPE_UNSIGNED_INT
        self.nvmlReturn = ret
        self.value = _Value(value)


def _check(handle: Any) -> None:
    if not _initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not isinstance(handle, _Handle):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


def nvmlInit() -> None:
    global _initialized
    if not config.library:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _initialized = True


def nvmlShutdown() -> None:
    global _initialized
    if not _initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    _initialized = False


def nvmlDeviceGetCount() -> int:
    return config.gpus


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if not _initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if not 0 <= index < config.gpus:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


def nvmlDeviceGetHandleByUUID(uuid: str) -> _Handle:
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetTotalEnergyConsumption(handle: Any) -> int:
    _check(handle)
    if not config.counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    p = config.counter_period_s
    t = math.floor((clock() - config.epoch) / p) * p + config.epoch
    return config.counter_offset_mj + int(energy_j(t) * 1e3)


def nvmlDeviceGetPowerUsage(handle: Any) -> int:
    _check(handle)
    if not config.power_usage:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    t = clock()
    return int((energy_j(t) - energy_j(t - 1.0)) * 1e3)


def nvmlDeviceGetFieldValues(handle: Any, fieldIds: list[int]) -> list[c_nvmlFieldValue_t]:
    _check(handle)
    t = clock()
    out = []
    for fid in fieldIds:
        if fid == NVML_FI_DEV_POWER_INSTANT and config.instant:
            out.append(c_nvmlFieldValue_t(fid, NVML_SUCCESS, int(power_w(t) * 1e3), t))
        else:
            out.append(c_nvmlFieldValue_t(fid, NVML_ERROR_NOT_SUPPORTED, 0, t))
    return out


def nvmlDeviceGetClockInfo(handle: Any, type: int) -> int:
    _check(handle)
    return {NVML_CLOCK_SM: config.sm_mhz, NVML_CLOCK_MEM: config.mem_mhz}[type]


def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:
    _check(handle)
    return config.temp_c


def nvmlDeviceGetCurrentClocksEventReasons(handle: Any) -> int:
    _check(handle)
    if config.burst_from <= clock() < config.burst_to:
        return config.reasons | config.burst_reasons
    return config.reasons


class _ProcessInfo:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.usedGpuMemory = 0


def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[_ProcessInfo]:
    _check(handle)
    return [_ProcessInfo(p) for p in config.processes]


def nvmlDeviceGetGraphicsRunningProcesses(handle: Any) -> list[_ProcessInfo]:
    _check(handle)
    return []

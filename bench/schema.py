"""The result row: one per (run, cell, repeat). Column names are a contract.

Units live in the names: ``_ms`` milliseconds, ``_bytes`` bytes, ``_w`` watts, ``_j`` joules,
``_mhz``, ``_c`` degrees Celsius; ``macs`` are multiply-adds per image; ``gmacs`` billions.
Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

STATUSES = ("ok", "oom", "skipped", "crashed", "timeout", "error")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured (or failed) cell of a sweep."""

    run_id: str
    repeat: int
    timestamp: str
    model: str
    family: str
    batch_size: int
    image_size: int
    in_chans: int
    device: str
    device_name: str
    dtype: str
    threads: int
    status: str
    error: str | None = None
    # latency, per forward of one batch
    latency_ms_median: float | None = None
    latency_ms_mean: float | None = None
    latency_ms_p10: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_iqr: float | None = None
    latency_ms_ci_low: float | None = None
    latency_ms_ci_high: float | None = None
    latency_ms_samples: tuple[float, ...] = field(default=())
    n_samples: int | None = None
    converged: bool | None = None
    noisy: bool | None = None
    time_per_image_ms: float | None = None
    throughput_ips: float | None = None
    timed_s: float | None = None
    cell_wall_s: float | None = None
    # counts
    params: int | None = None
    macs: int | None = None
    macs_counter: str | None = None
    # memory
    weights_bytes: int | None = None
    peak_memory_bytes: int | None = None
    memory_method: str | None = None
    # power (filled by the power probe where a source exists)
    power_w_mean: float | None = None
    power_w_idle: float | None = None
    energy_j: float | None = None
    energy_per_image_j: float | None = None
    power_source: str | None = None
    gpu_clock_mhz: float | None = None
    gpu_mem_clock_mhz: float | None = None
    gpu_temp_c: float | None = None
    throttled: bool | None = None
    throttle_reasons: str | None = None
    # published reference figures and where they come from
    top1: float | None = None
    top5: float | None = None
    accuracy_source: str | None = None
    params_ref: int | None = None
    gmacs_ref: float | None = None
    # environment of the measurement
    torch_version: str | None = None
    tf32: bool | None = None
    cudnn_benchmark: bool | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["latency_ms_samples"] = list(self.latency_ms_samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["latency_ms_samples"] = tuple(values.get("latency_ms_samples") or ())
        return cls(**values)


_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "str | None": pa.string(),
    "int": pa.int64(),
    "int | None": pa.int64(),
    "float | None": pa.float64(),
    "bool | None": pa.bool_(),
    "tuple[float, ...]": pa.list_(pa.float64()),
}

ARROW_SCHEMA = pa.schema(
    [pa.field(f.name, _ARROW_TYPES[str(f.type)]) for f in dataclasses.fields(Row)],
    metadata={b"effbench_schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
REQUIRED_COLUMNS = ("run_id", "model", "batch_size", "device", "dtype", "status")

"""The result row: one per (run, cell, repeat). Column names are a contract.

Every column is declared once, here, with its type, unit and meaning (:class:`Column`); the
:class:`Row` dataclass, the arrow schema, the README's column table and `effbench show`
are derived from these declarations. Probes fill the groups they declare
(:data:`LATENCY` the timing probe, :data:`MEMORY` the memory probe, :data:`POWER` the power
probe); a new probe brings its own declarations (see ``bench/probes/base.py``).

Units live in the names: ``_ms`` milliseconds, ``_bytes`` bytes, ``_w`` watts, ``_j``
joules, ``_mhz``, ``_c`` degrees Celsius; ``macs`` are multiply-adds per image; ``gmacs``
billions. Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2

# What each version of the row contract changed. A row records the version that wrote it
# (``schema_version``, and the file's arrow metadata); ``bench.store`` migrates rows of an
# older version on read and refuses rows of a newer one. Adding, removing or re-meaning a
# column makes a new version: bump SCHEMA_VERSION, say here what changed, give a new column
# ``since=`` the new version and add the migration of older rows to
# ``bench.store_checks.MIGRATIONS``; tests/data/schema_versions.json keeps each version's
# columns and tests/test_schema.py fails until that is done.
SCHEMA_HISTORY: dict[int, str] = {
    1: "2026-11-22 to 2026-12-04: the first contract, which grew (configurations, ceilings "
    "and the roofline, contention evidence and quality, attempts, variants, instruction "
    "counts, ping-pong bursts, pinned cores) while the version stayed 1. A version-1 row "
    "may lack any column but the required ones (run_id, model, batch_size, device, dtype, "
    "status).",
    2: "2026-12-04 (evening): the version becomes real. Every declared column is in every file; "
    "version-1 rows are migrated on read (their missing key columns filled from the run's "
    "manifest, the other missing columns empty).",
}


# Column kinds: python annotation text (for the Row dataclass) and arrow type.
KINDS: dict[str, tuple[str, pa.DataType]] = {
    "str": ("str", pa.string()),
    "str?": ("str | None", pa.string()),
    "int": ("int", pa.int64()),
    "int?": ("int | None", pa.int64()),
    "float?": ("float | None", pa.float64()),
    "bool?": ("bool | None", pa.bool_()),
    "floats": ("tuple[float, ...]", pa.list_(pa.float64())),
    "ints": ("tuple[int, ...]", pa.list_(pa.int64())),
    "bools": ("tuple[bool, ...]", pa.list_(pa.bool_())),
}
LIST_KINDS = ("floats", "ints", "bools")  # list columns: an empty tuple when not filled


# How the report summarizes a column over the repeats of a cell (``Column.agg``): the
# median of the repeats (a measurement), or the first repeat's value (the same in every
# repeat: counts, references, the setup). Columns with neither are not summarized per cell.
MEDIAN, FIRST = "median", "first"


@dataclass(frozen=True, slots=True)
class Gate:
    """How the regression gate (``bench.compare``) compares a column: the metric's name
    (``effbench compare --metric NAME``), the unit its verdicts print ('' for the column's
    own), the column holding each repeat's raw samples (paired per burst in ping-pong), and
    whether the value is counted (deterministic, exact up to the count floor) rather than
    timed. The gate's metrics are the declared columns that have one, timed ones first."""

    metric: str
    unit: str = ""
    samples: str | None = None
    counted: bool = False


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: name, kind (a key of :data:`KINDS`), unit ('' if none), a
    one-line meaning, whether `effbench show` prints it, how the report summarizes it over
    a cell's repeats (``agg``: :data:`MEDIAN`, :data:`FIRST` or ''), how the regression gate
    compares it (``gate``: a :class:`Gate`, or None), and ``since``, the first contract
    version (:data:`SCHEMA_VERSION`) whose rows all have it."""

    name: str
    kind: str
    unit: str
    meaning: str
    shown: bool = False
    agg: str = ""
    gate: Gate | None = None
    since: int = 2

    @property
    def arrow_type(self) -> pa.DataType:
        return KINDS[self.kind][1]

    @property
    def required(self) -> bool:
        """No default: every row has a value."""
        return not self.kind.endswith("?") and self.kind not in LIST_KINDS


def _c(
    name: str,
    kind: str,
    unit: str,
    meaning: str,
    shown: bool = False,
    *,
    agg: str = "",
    gate: Gate | None = None,
    since: int = 2,
) -> Column:
    return Column(name, kind, unit, meaning, shown, agg, gate, since)


IDENTITY = (
    _c("run_id", "str", "", "run folder name", True),
    _c("repeat", "int", "", "fresh-process repeat index (`--repeats`)", True),
    _c("timestamp", "str", "UTC", "start of the cell (ISO 8601)"),
    _c("model", "str", "", "registered name", True),
    _c("family", "str", "", "architecture family (torchvision module, timm, or ours)", agg=FIRST),
    _c("batch_size", "int", "images", "images per forward", True),
    _c("image_size", "int", "px", "input height = width"),
    _c("in_chans", "int", "", "input channels: input is batch × in_chans × size × size"),
    _c("device", "str", "", "`cpu`, `cuda:N` or `mps`", True, agg=FIRST),
    _c("device_name", "str", "", "CPU model or GPU name", agg=FIRST),
    _c("dtype", "str", "", "`float32`, `float16` or `bfloat16`", True, agg=FIRST),
    _c("threads", "int", "", "intra-op threads", agg=FIRST),
    _c("status", "str", "", "`ok`, `oom`, `skipped`, `crashed`, `timeout` or `error`", True),
    _c("error", "str?", "", "why the cell is not `ok` (or a probe's note)"),
    _c("config", "str", "", "configuration (`eager`, `channels_last+compile`, ...)", True),
)
LATENCY = (
    _c(
        "latency_ms_median",
        "float?",
        "ms",
        "median forward of one batch",
        True,
        agg=MEDIAN,
        gate=Gate("latency", samples="latency_ms_samples"),
    ),
    _c("latency_ms_mean", "float?", "ms", "mean forward of one batch"),
    _c("latency_ms_p10", "float?", "ms", "10th percentile forward", agg=MEDIAN),
    _c("latency_ms_p90", "float?", "ms", "90th percentile forward", agg=MEDIAN),
    _c("latency_ms_iqr", "float?", "ms", "interquartile range of the forwards", True, agg=MEDIAN),
    _c("latency_ms_ci_low", "float?", "ms", "distribution-free 95% CI of the median, low"),
    _c(
        "latency_ms_ci_high",
        "float?",
        "ms",
        "distribution-free 95% CI of the median, high",
        agg=MEDIAN,
    ),
    _c("latency_ms_samples", "floats", "ms", "every timed iteration"),
    _c("n_samples", "int?", "", "iterations timed", True),
    _c("converged", "bool?", "", "whether the median's CI reached ±`--target-ci`"),
    _c("noisy", "bool?", "", "IQR above 10% of the median"),
    _c("time_per_image_ms", "float?", "ms", "median ÷ batch size", agg=MEDIAN),
    _c("throughput_ips", "float?", "images/s", "images per second at the median", True, agg=MEDIAN),
    _c("timed_s", "float?", "s", "seconds spent in timed iterations"),
    _c("cell_wall_s", "float?", "s", "wall time of the cell in the worker"),
)
# Filled by the worker for the row's configuration (docs/configs.md).
CONFIG = (
    _c(
        "compile_s",
        "float?",
        "s",
        "wall time of the compiling calls (never in the latency)",
        agg=MEDIAN,
    ),
    _c("graph_breaks", "int?", "", "graph breaks dynamo reported while compiling"),
    _c("recompiled", "bool?", "", "a recompilation happened inside the timed loop"),
    _c("max_abs_err", "float?", "", "largest |output - eager float32 output|, same input"),
    _c("max_rel_err", "float?", "", "max_abs_err ÷ largest |eager float32 output|"),
    _c("output_ok", "bool?", "", "max_rel_err within the dtype's tolerance"),
)
COUNTS = (
    _c("params", "int?", "", "parameters counted from the built model", True, agg=FIRST),
    _c("macs", "int?", "MACs", "multiply-adds per image", True, agg=FIRST),
    _c(
        "macs_counter", "str?", "", "which counter produced `macs` (`torch` or `fvcore`)", agg=FIRST
    ),
    _c(
        "weights_bytes",
        "int?",
        "bytes",
        "parameters and buffers in the run's dtype",
        True,
        agg=FIRST,
    ),
    _c(
        "bytes_per_image",
        "float?",
        "bytes",
        "bytes read and written by every op of the forward at this batch ÷ batch (counted)",
        agg=FIRST,
    ),
    _c(
        "activation_peak_bytes",
        "int?",
        "bytes",
        "peak live tensor bytes above the weights in one forward at this batch (counted)",
        agg=FIRST,
    ),
)
# Deterministic work counts of CPU cells, `effbench run --count-instructions`
# (bench.instructions, docs/compare.md "Instruction counts").
WORK = (
    _c(
        "instructions_per_forward",
        "float?",
        "instructions",
        "instructions of one forward of one batch, counted under valgrind (callgrind), one "
        "thread, seeded weights and input (`--count-instructions`, CPU cells)",
        gate=Gate("instructions", unit="instr", counted=True),
    ),
    _c(
        "estimated_cycles_per_forward",
        "float?",
        "cycles",
        "Ir + 10 × L1 misses + 100 × last-level misses of that forward (callgrind's cache "
        "simulation; an estimate, not a measurement)",
        gate=Gate("cycles", counted=True),
    ),
)
# Where the cell sits on the device's roofline (docs/roofline.md).
ROOFLINE = (
    _c("achieved_macs_per_s", "float?", "MACs/s", "macs × batch ÷ median latency", agg=MEDIAN),
    _c(
        "compute_fraction",
        "float?",
        "",
        "achieved_macs_per_s ÷ the run's measured GEMM ceiling",
        agg=MEDIAN,
    ),
    _c("intensity_macs_per_byte", "float?", "MACs/byte", "macs ÷ bytes_per_image", agg=FIRST),
)
MEMORY = (
    _c(
        "peak_memory_bytes",
        "int?",
        "bytes",
        "peak held by the framework's allocator in one forward, weights and input included "
        "(CPU: PyTorch's allocator, CUDA: max_memory_allocated; measured)",
        True,
        agg=MEDIAN,
        gate=Gate("memory"),
    ),
    _c(
        "peak_rss_bytes",
        "int?",
        "bytes",
        "the worker's resident-set high-water mark over the cell above its pre-model RSS "
        "(CPU, Linux; measured)",
    ),
    _c("memory_method", "str?", "", "how peak memory was measured, or why not", agg=FIRST),
)
POWER = (
    _c("power_w_mean", "float?", "W", "mean power over the timed window (gross)", agg=MEDIAN),
    _c(
        "power_w_idle",
        "float?",
        "W",
        "the device's idle power, measured at the run's start",
        agg=MEDIAN,
    ),
    _c("energy_j", "float?", "J", "energy per forward of one batch (gross)", gate=Gate("energy")),
    _c("energy_per_image_j", "float?", "J", "energy per image (gross)", agg=MEDIAN),
    _c("power_source", "str?", "", "sensor and method, or why there is none", agg=FIRST),
    _c("gpu_clock_mhz", "float?", "MHz", "mean SM clock during the window"),
    _c("gpu_mem_clock_mhz", "float?", "MHz", "mean memory clock during the window"),
    _c("gpu_temp_c", "float?", "°C", "GPU temperature at the window's end"),
    _c("throttled", "bool?", "", "whether the GPU throttled during the window"),
    _c("throttle_reasons", "str?", "", "NVML's throttle reasons, decoded"),
)
# The host's state during the timed window (bench.probes.contention, docs/noise.md).
CONTENTION = (
    _c("cpu_share", "float?", "", "worker CPU time ÷ (window wall time × threads)"),
    _c(
        "run_wait_share",
        "float?",
        "",
        "time the worker's threads waited runnable for a CPU ÷ (wall time × threads)",
    ),
    _c(
        "others_cpu_cores",
        "float?",
        "cores",
        "CPU cores other processes kept busy on the worker's CPUs during the window",
    ),
    _c("steal_share", "float?", "", "share of the worker's CPUs' time the hypervisor took"),
    _c("involuntary_switches", "int?", "", "the worker's involuntary context switches"),
    _c("host_runnable_begin", "int?", "", "runnable tasks on the host at the window's start"),
    _c("host_runnable_end", "int?", "", "runnable tasks on the host at the window's end"),
    _c("gpu_other_processes", "int?", "", "other processes on the GPU during the window"),
    _c("contention_source", "str?", "", "how contention was read, or why not"),
)
# The host's speed beside the timed window (bench.probes.canary, docs/noise.md): what /proc
# cannot see (a neighbour on the same physical cores, a lower clock) still slows a GEMM.
CANARY = (
    _c(
        "canary_macs_per_s",
        "float?",
        "MACs/s",
        "a fixed small GEMM's rate just before and just after the window (the slower)",
    ),
    _c("canary_source", "str?", "", "how the canary was run, or why not"),
)
# The verdict on a row, given by the runner (bench.quality, docs/noise.md).
QUALITY = (
    _c(
        "quality",
        "str?",
        "",
        "`clean`, `noisy`, `contended` or `implausible`; empty unless `ok`",
        True,
    ),
    _c("quality_reason", "str?", "", "why the row got its quality, in words"),
    _c(
        "attempt",
        "int",
        "",
        "measurement of this cell and repeat (0, then re-measurements)",
        True,
    ),
    _c("variant", "str?", "", "the arm of an interleaved A/B run (`--variant`)", agg=FIRST),
)
# Ping-pong arms (`effbench run --variant ... --pingpong`, bench.pingpong): the row's timed
# iterations came in bursts that alternated with the other arms' bursts of the same cell.
PINGPONG = (
    _c(
        "pair_id",
        "str?",
        "",
        "the ping-pong session of this cell and repeat, shared by every arm's row of it",
    ),
    _c(
        "burst_sizes",
        "ints",
        "iterations",
        "timed iterations of each burst, in order: `latency_ms_samples` split into bursts",
    ),
    _c(
        "burst_contended",
        "bools",
        "",
        "whether the host contended each burst (bench.quality's rules on its window)",
    ),
)
REFERENCE = (
    _c("top1", "float?", "%", "published ImageNet-1K top-1 accuracy", agg=FIRST),
    _c("top5", "float?", "%", "published ImageNet-1K top-5 accuracy", agg=FIRST),
    _c("accuracy_source", "str?", "", "where the accuracy comes from", agg=FIRST),
    _c("params_ref", "int?", "", "published parameter count"),
    _c("gmacs_ref", "float?", "GMACs", "published multiply-adds per image"),
)
SETTINGS = (
    _c("hostname", "str?", "", "the machine (Ray node) the cell ran on", agg=FIRST),
    _c("torch_version", "str?", "", "torch version of the worker"),
    _c(
        "cpus",
        "ints",
        "",
        "cores the worker was pinned to (a `--parallel` share, or the cores every ping-pong "
        "arm shares); empty: not pinned, every core the runner may use",
    ),
    _c("tf32", "bool?", "", "TF32 allowed (CUDA)"),
    _c("cudnn_benchmark", "bool?", "", "cuDNN autotuner on (CUDA)"),
    _c(
        "schema_version",
        "int",
        "",
        "version of the row contract that wrote the row (`bench.schema.SCHEMA_HISTORY`; "
        "rows of older versions are migrated on read)",
    ),
)
DECLARED: tuple[Column, ...] = (
    *IDENTITY,
    *LATENCY,
    *CONFIG,
    *COUNTS,
    *WORK,
    *ROOFLINE,
    *MEMORY,
    *POWER,
    *CONTENTION,
    *CANARY,
    *QUALITY,
    *PINGPONG,
    *REFERENCE,
    *SETTINGS,
)


LISTS: tuple[Column, ...] = tuple(c for c in DECLARED if c.kind in LIST_KINDS)


# ceilings.parquet: one row per measured (or datasheet) ceiling of a run's device, dtype and
# threads (bench.ceilings; the first twelve are the fields of ``bench.ceilings.Ceiling``).
CEILINGS = (
    _c("device", "str", "", "`cpu`, `cuda:N`"),
    _c("device_name", "str", "", "CPU model or GPU name"),
    _c("dtype", "str", "", "`float32`, `float16` or `bfloat16`"),
    _c("threads", "int", "", "intra-op threads (CPU); 0 for GPUs"),
    _c("kind", "str", "", "`gemm`, `conv3x3`, `triad`, `copy` or a datasheet kind"),
    _c("value", "float?", "MACs/s or bytes/s", "the ceiling: median rate over calls"),
    _c("unit", "str", "", "`macs_per_s` or `bytes_per_s`"),
    _c("source", "str", "", "`measured` or `datasheet`"),
    _c("method", "str", "", "op, shape, dtype, samples and precision reached"),
    _c("ci_rel", "float?", "", "half-width of the median's 95% CI ÷ median (measured)"),
    _c("samples", "int?", "", "timed samples (measured)"),
    _c("citation", "str?", "", "datasheet title and URL"),
    _c("hostname", "str", "", "the machine measured"),
    _c("measured_at", "str", "UTC", "when (ISO 8601)"),
    _c("phase", "str", "", "`start` (before the first cell) or `end` (the closing canary)"),
)
# profile-*.parquet (`effbench profile --out`): one row per (profile, layer).
PROFILE = (
    _c("model", "str", "", "registered name"),
    _c("device", "str", "", "`cpu` or `cuda:N`"),
    _c("device_name", "str", "", "CPU model or GPU name"),
    _c("dtype", "str", "", "`float32`, `float16` or `bfloat16`"),
    _c("batch_size", "int", "images", "images per forward"),
    _c("image_size", "int", "px", "input height = width"),
    _c("config", "str", "", "configuration"),
    _c("threads", "int", "", "intra-op threads"),
    _c("layer", "str", "", "the module's qualified name"),
    _c("type", "str", "", "the module's class"),
    _c("group", "str", "", "conv, depthwise conv, linear, norm, activation, pool, ..."),
    _c("calls", "int", "", "calls in one forward"),
    _c("time_ms", "float?", "ms", "median time in one forward"),
    _c("share", "float?", "", "of the layers' summed time"),
    _c("macs", "int?", "MACs", "multiply-adds in one forward (counted)"),
    _c("bytes", "int?", "bytes", "bytes read and written in one forward (counted)"),
    _c("achieved_macs_per_s", "float?", "MACs/s", "macs ÷ time"),
    _c("compute_fraction", "float?", "", "achieved ÷ the compute ceiling (empty above it)"),
    _c("forward_ms", "float?", "ms", "median plain forward"),
    _c("sum_layers_ms", "float?", "ms", "sum of the layers' medians"),
    _c("hook_overhead_ms", "float?", "ms", "hooks' own cost inside the layer times (estimate)"),
    _c("hostname", "str", "", "the machine profiled"),
    _c("timestamp", "str", "UTC", "when (ISO 8601)"),
)


def _row_fields(columns: Sequence[Column]) -> list[tuple[str, str, Any]]:
    fields: list[tuple[str, str, Any]] = []
    for c in columns:
        kind = KINDS[c.kind][0]
        if c.name == "schema_version":
            fields.append((c.name, kind, dataclasses.field(default=SCHEMA_VERSION)))
        elif c.name == "config":
            fields.append((c.name, kind, dataclasses.field(default="eager")))
        elif c.name == "attempt":
            fields.append((c.name, kind, dataclasses.field(default=0)))
        elif c.kind in LIST_KINDS:
            fields.append((c.name, kind, dataclasses.field(default=())))
        elif c.required:
            fields.append((c.name, kind))  # type: ignore[arg-type]
        else:
            fields.append((c.name, kind, dataclasses.field(default=None)))
    return fields


def _to_dict(self: Any) -> dict[str, Any]:
    """Every column, the contract's then the ``extra`` ones (probes outside it)."""
    d = {c.name: getattr(self, c.name) for c in DECLARED}
    for c in LISTS:
        d[c.name] = list(getattr(self, c.name))
    d.update(self.extra)
    return d


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """The inverse of ``to_dict``: names outside the contract go to ``extra``."""
    known = {c.name for c in DECLARED}
    values = {k: v for k, v in d.items() if k in known}
    for c in LISTS:
        v = values.get(c.name)
        values[c.name] = () if v is None else tuple(v)
    values["extra"] = tuple((k, v) for k, v in d.items() if k not in known and k != "extra")
    return cls(**values)


Row = dataclasses.make_dataclass(
    "Row",
    # ``extra``: (name, value) pairs of columns that probes outside the contract fill
    [
        *_row_fields(DECLARED),
        ("extra", "tuple[tuple[str, Any], ...]", dataclasses.field(default=())),
    ],
    frozen=True,
    slots=True,
    namespace={
        "__doc__": "One measured (or failed) cell of a sweep (fields: :data:`DECLARED`).",
        "__module__": __name__,
        "to_dict": _to_dict,
        "from_dict": classmethod(_from_dict),
    },
)


# A field's metadata key holding the declaration of a column outside the contract (a
# plugin measurement's), so that readers (the report, the gate) know its unit, its ``agg``
# and its ``gate`` without importing the plugin.
DECLARATION_KEY = b"effbench_column"


def declaration(c: Column) -> dict[str, Any]:
    """``c`` as JSON-ready data (its ``gate`` a mapping or None)."""
    d = dataclasses.asdict(c)
    d["gate"] = dataclasses.asdict(c.gate) if c.gate is not None else None
    return d


def from_declaration(d: Mapping[str, Any]) -> Column:
    """The :class:`Column` of :func:`declaration`'s data; ValueError if it is not one."""
    try:
        gate = Gate(**d["gate"]) if d.get("gate") is not None else None
        column = Column(**{**d, "gate": gate})
    except (TypeError, KeyError) as e:
        raise ValueError(f"not a column declaration: {d!r} ({e})") from e
    if column.kind not in KINDS or column.agg not in (MEDIAN, FIRST, ""):
        raise ValueError(f"not a column declaration: {d!r} (kind or agg unknown)")
    return column


def arrow_schema(extra: Iterable[Column] = ()) -> pa.Schema:
    """The declared columns, then ``extra`` ones (a measurement outside the contract), each
    of those carrying its declaration in its field's metadata (:data:`DECLARATION_KEY`)."""
    extra = tuple(extra)
    fields = [pa.field(c.name, c.arrow_type) for c in DECLARED]
    fields += [
        pa.field(c.name, c.arrow_type, metadata={DECLARATION_KEY: json.dumps(declaration(c))})
        for c in extra
    ]
    return pa.schema(fields, metadata={b"effbench_schema_version": str(SCHEMA_VERSION).encode()})


def declared_extra(schema: pa.Schema) -> tuple[Column, ...]:
    """The declarations a parquet file's schema carries for its columns outside the
    contract (:func:`arrow_schema`); files written before there were any carry none."""
    out = []
    for f in schema:
        raw = (f.metadata or {}).get(DECLARATION_KEY)
        if raw is not None and f.name not in _CONTRACT_NAMES:
            out.append(from_declaration(json.loads(raw)))
    return tuple(out)


def markdown_table(columns: Sequence[Column] = DECLARED) -> str:
    """The README's column table: one line per declared column."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.unit} | {c.meaning} |" for c in columns]
    return "\n".join(lines) + "\n"


_CONTRACT_NAMES = frozenset(c.name for c in DECLARED)
ARROW_SCHEMA = arrow_schema()
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
SHOWN: tuple[Column, ...] = tuple(c for c in DECLARED if c.shown)
REQUIRED_COLUMNS = ("run_id", "model", "batch_size", "device", "dtype", "status")

if __name__ == "__main__":
    print(markdown_table(), end="")

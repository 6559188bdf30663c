"""A ceiling as recorded: its kinds and units, the :class:`Ceiling` record, the table
of a run's ceilings (``ceilings.parquet``), the roofs read from them, and their text."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from bench.errors import InvalidOption
from bench.plan import DTYPES
from bench.schema import CEILINGS
from bench.units import GIGA

if TYPE_CHECKING:
    import pandas as pd

COMPUTE_KINDS = ("gemm", "conv3x3")
BANDWIDTH_KINDS = ("triad", "copy")
KINDS = COMPUTE_KINDS + BANDWIDTH_KINDS
DATASHEET_KINDS = ("datasheet_compute", "datasheet_bandwidth")
MACS_PER_S = "macs_per_s"
BYTES_PER_S = "bytes_per_s"
FORMATS = ("table", "json")


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One ceiling of one (device, dtype, threads): measured here or read off a datasheet."""

    device: str  # "cpu", "cuda:0"
    device_name: str  # CPU model or GPU name (bench.devices.device_name)
    dtype: str  # "float32" | "float16" | "bfloat16"
    threads: int  # intra-op threads (CPU); 0 for GPUs
    kind: str  # COMPUTE_KINDS, BANDWIDTH_KINDS or DATASHEET_KINDS
    value: float  # MACs/s for compute kinds, bytes/s for bandwidth kinds
    unit: str  # MACS_PER_S | BYTES_PER_S
    source: str  # "measured" | "datasheet"
    method: str  # op, shape, dtype, samples, precision reached (or the datasheet figure)
    ci_rel: float | None  # half-width of the median's 95% CI / median; measured only
    samples: int | None  # timed samples; measured only
    citation: str | None  # datasheet title and URL; None for measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Ceiling:
        """The ceiling of a :meth:`to_dict` (a JSON line); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        extra = set(values) - names
        if extra:
            raise InvalidOption(f"not a ceiling: unknown keys {sorted(extra)}")
        return cls(**values)


CEILING_COLUMNS: tuple[str, ...] = tuple(c.name for c in CEILINGS)  # declared once there
assert CEILING_COLUMNS[: len(fields(Ceiling))] == tuple(f.name for f in fields(Ceiling))
# When in a run the ceilings were measured: before the first cell, or again (briefly, GEMM
# and triad) after the last one, as a canary of how the machine drifted meanwhile.
PHASES = ("start", "end")


def _roof(
    ceilings: Iterable[Ceiling], kind: str, device: str, dtype: str, threads: int
) -> float | None:
    want = threads if device == "cpu" else 0  # GPU ceilings do not depend on CPU threads
    for c in ceilings:
        if (c.source, c.kind, c.device, c.dtype, c.threads) == (
            "measured",
            kind,
            device,
            dtype,
            want,
        ):
            return c.value
    return None


def compute_roof(
    ceilings: Iterable[Ceiling], device: str, dtype: str, threads: int
) -> float | None:
    """The measured gemm ceiling (MACs/s) of (device, dtype, threads); ``threads`` is
    ignored for GPUs. None when none was measured."""
    return _roof(ceilings, "gemm", device, dtype, threads)


def highest_compute_ceiling(
    ceilings: Iterable[Ceiling], device: str, dtype: str, threads: int
) -> Ceiling | None:
    """The highest measured compute ceiling (GEMM or 3x3 convolution) of (device, dtype,
    threads), or None: contention only lowers a ceiling, and a convolution may beat GEMM,
    so this is the roof a plausible rate stays under (bench.quality)."""
    want = threads if device == "cpu" else 0
    found = [
        c
        for c in ceilings
        if c.source == "measured"
        and c.kind in COMPUTE_KINDS
        and (c.device, c.dtype, c.threads) == (device, dtype, want)
    ]
    return max(found, key=lambda c: c.value, default=None)


def bandwidth_roof(
    ceilings: Iterable[Ceiling], device: str, dtype: str, threads: int
) -> float | None:
    """The measured triad ceiling (bytes/s) of (device, dtype, threads); ``threads`` is
    ignored for GPUs. None when none was measured."""
    return _roof(ceilings, "triad", device, dtype, threads)


def ceilings_frame(
    ceilings: Iterable[Ceiling], hostname: str, measured_at: str, phase: str = "start"
) -> pd.DataFrame:
    """One row per ceiling, columns :data:`CEILING_COLUMNS` (``measured_at`` a UTC ISO
    timestamp, ``phase`` one of :data:`PHASES`); ``samples`` is a nullable integer column."""
    import pandas as pd

    if phase not in PHASES:
        raise InvalidOption(f"unknown ceilings phase {phase!r}; one of {', '.join(PHASES)}")
    rows = [
        {**c.to_dict(), "hostname": hostname, "measured_at": measured_at, "phase": phase}
        for c in ceilings
    ]
    df = pd.DataFrame(rows, columns=list(CEILING_COLUMNS))
    df["threads"] = df["threads"].astype("int64")
    df["value"] = df["value"].astype("float64")
    df["ci_rel"] = df["ci_rel"].astype("float64")
    df["samples"] = df["samples"].astype("Int64")
    return df


def _human(c: Ceiling) -> str:
    if c.unit == MACS_PER_S:
        return f"{c.value / GIGA:,.1f} GMAC/s"
    return f"{c.value / GIGA:,.1f} GB/s"


def format_ceilings(ceilings: Iterable[Ceiling], fmt: str = "table") -> str:
    """``table``: aligned columns, rates in GMAC/s (10⁹ MACs/s) and GB/s (10⁹ bytes/s),
    the CI half-width in percent; ``json``: a JSON array of the ceilings' dicts."""
    if fmt not in FORMATS:
        raise InvalidOption(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    items = list(ceilings)
    if fmt == "json":
        return json.dumps([c.to_dict() for c in items], indent=2)
    head = ("device", "name", "dtype", "threads", "kind", "ceiling", "source", "ci", "samples")
    rows = [head] + [
        (
            c.device,
            c.device_name,
            c.dtype,
            str(c.threads),
            c.kind,
            _human(c),
            c.source,
            "-" if c.ci_rel is None else f"±{c.ci_rel:.1%}",
            "-" if c.samples is None else str(c.samples),
        )
        for c in items
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 5, 7, 8}
    lines = [
        "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    notes = sorted({c.citation for c in items if c.citation})
    return "\n".join([line.rstrip() for line in lines] + [f"datasheet: {note}" for note in notes])


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidOption(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")

"""Every measurement a worker runs, in one ordered registry: the built-in ones, then any a
plugin registered. The order is the order of each phase (``bench.probes.base.Phase``):
windows open in it and close in reverse. Importing this module does not import torch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bench.probes.base import Measurement, Phase
from bench.probes.canary import SpeedCanary
from bench.probes.contention import ContentionWindow
from bench.probes.counts import MacsCount, SizeCount
from bench.probes.memory import MemoryPass
from bench.probes.output_check import OutputCheck
from bench.probes.power import PowerWindow
from bench.probes.roofline import Roofline
from bench.probes.timing import LatencyWindow
from bench.schema import DECLARED, Column

# Order that matters: memory opens first (its baselines come before the other measurements
# allocate anything); the latency's window opens first and closes last (it only summarises
# the samples); then the canary, which begins before every other window and ends after
# them all; memory's pass after the window comes before the output check's forward, and the
# roofline last (it reads the latency's median and the group's MACs).
BUILTIN: tuple[type[Measurement], ...] = (
    MemoryPass,
    SizeCount,
    MacsCount,
    LatencyWindow,
    SpeedCanary,
    ContentionWindow,
    PowerWindow,
    OutputCheck,
    Roofline,
)
_EXTRA: list[type[Measurement]] = []


def register_measurement(cls: type[Measurement]) -> type[Measurement]:
    """Add a measurement to every worker of this process tree (call it from a plugin module
    named in ``$EFFBENCH_PLUGINS``, so workers register it too); it runs after the built-in
    ones in each of its phases. Its columns (and their gate metrics) must be new and hold
    its note column. The columns' declarations travel with the rows (``bench.schema.
    arrow_schema``): the report summarises those with an ``agg`` and the gate compares those
    with a ``gate``, without importing the plugin."""
    if not (isinstance(cls, type) and issubclass(cls, Measurement)):
        raise TypeError(
            f"{getattr(cls, '__name__', cls)!r} is not a measurement: subclass "
            "bench.probes.base.Measurement (docs/architecture.md, 'A measurement')"
        )
    taken = {c.name for c in DECLARED} | {c.name for m in registered() for c in m.columns}
    clash = [c.name for c in cls.columns if c.name in taken]
    if clash:
        raise ValueError(f"measurement {cls.__name__} declares columns already taken: {clash}")
    if cls.note_column not in {c.name for c in cls.columns}:
        raise ValueError(f"measurement {cls.__name__}: note_column must be one of its columns")
    known = (*DECLARED, *(c for m in registered() for c in m.columns))
    metrics = {c.gate.metric for c in known if c.gate is not None}
    reused = [c.gate.metric for c in cls.columns if c.gate is not None and c.gate.metric in metrics]
    if reused:
        raise ValueError(f"measurement {cls.__name__}: gate metrics already taken: {reused}")
    if not getattr(cls, "phases", None):
        raise ValueError(f"measurement {cls.__name__}: declare its phases (bench.probes.base)")
    _EXTRA.append(cls)
    return cls


def registered() -> tuple[type[Measurement], ...]:
    return (*BUILTIN, *_EXTRA)


def in_phase(measurements: Iterable[Measurement], phase: Phase) -> Iterator[Measurement]:
    """The opened ``measurements`` that take part in ``phase``, in registry order."""
    return (m for m in measurements if phase in m.phases)


def extra_columns() -> tuple[Column, ...]:
    """Columns of registered measurements outside the row contract (written after it)."""
    return tuple(c for m in _EXTRA for c in m.columns)

"""The window probes every worker runs: the built-in ones, then any registered by a plugin.
(Peak memory is not a window probe: it has a pass of its own, ``bench.probes.memory``.)"""

from __future__ import annotations

from bench.probes.base import Probe
from bench.probes.canary import SpeedCanary
from bench.probes.contention import ContentionWindow
from bench.probes.power import PowerWindow
from bench.schema import DECLARED, Column

# The canary first: it begins before every other window and ends after them all.
BUILTIN: tuple[type[Probe], ...] = (SpeedCanary, ContentionWindow, PowerWindow)
_EXTRA: list[type[Probe]] = []


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Add a probe to every worker of this process tree (call it from a plugin module named
    in ``$EFFBENCH_PLUGINS``, so workers register it too). Its columns must be new."""
    taken = {c.name for c in DECLARED} | {c.name for p in registered() for c in p.columns}
    clash = [c.name for c in cls.columns if c.name in taken]
    if clash:
        raise ValueError(f"probe {cls.__name__} declares columns already taken: {clash}")
    if cls.note_column not in {c.name for c in cls.columns}:
        raise ValueError(f"probe {cls.__name__}: note_column must be one of its columns")
    _EXTRA.append(cls)
    return cls


def registered() -> tuple[type[Probe], ...]:
    return (*BUILTIN, *_EXTRA)


def extra_columns() -> tuple[Column, ...]:
    """Columns of registered probes outside the row contract (written after it)."""
    return tuple(c for p in _EXTRA for c in p.columns)

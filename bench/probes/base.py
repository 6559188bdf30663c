"""The probe window protocol (after Zeus's ``begin_window``/``end_window``).

A probe observes the timed window of a cell: the worker opens every probe's window right
after warm-up (:meth:`Probe.begin`), runs the timed iterations, and closes the windows in
reverse order (:meth:`Probe.end`), merging what each returns into the row. A probe declares
the columns it fills (:class:`bench.schema.Column`: name, kind, unit, meaning) and names
one of them as its ``note_column``: if its ``end`` raises, that column records the error and
its other columns stay empty; the latency and the other probes' columns are kept.

Adding a probe: one file with a class that follows :class:`Probe` and a classmethod
``open(ctx)``, plus one registration line (:func:`register_probe`, or an entry in
:data:`BUILTIN` of ``bench/probes/registry.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bench.schema import Column


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a probe may know when it opens, before the model is built."""

    device: str
    sync: Callable[[], None]
    idle_power_w: float | None = None
    threads: int = 1  # intra-op threads the cell asked for


@dataclass(frozen=True, slots=True)
class Window:
    """The timed iterations a window covered: the batch size, every sample (ms), the seconds
    they took and whether the median's confidence interval reached its target."""

    batch_size: int
    samples_ms: tuple[float, ...]
    timed_s: float
    converged: bool

    @property
    def iterations(self) -> int:
        return len(self.samples_ms)


class Probe(Protocol):
    columns: ClassVar[tuple[Column, ...]]
    note_column: ClassVar[str]
    min_window_s: float  # shortest window the probe can resolve (0: any)

    @classmethod
    def open(cls, ctx: ProbeContext) -> Probe: ...

    def begin(self) -> None: ...

    def end(self, window: Window) -> Mapping[str, Any]: ...

    def close(self) -> None: ...

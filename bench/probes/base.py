"""The measurement protocol: every column a worker measures comes from a :class:`Measurement`.

A measurement declares the columns it fills (:class:`bench.schema.Column`: name, kind,
unit, meaning), one of them (or the row's ``error``) as its ``note_column``, and the
phases it takes part in (:class:`Phase`). The worker opens every registered measurement
(``bench.probes.registry.registered()``, in order) before the model exists and then walks
the phases, calling each measurement's hook for the phases it declares:

- ``COUNT`` (:meth:`Measurement.count`): once per group, on the built and placed model
  (parameters, weights, MACs), before any cell; merged into every ok row of the group;
- ``BEFORE_WINDOW`` (:meth:`Measurement.before_window`): in a cell's warm-up, as one of its
  calls (each such measurement takes one iteration and its time off the warm-up): memory's
  allocator pass on CPU;
- ``WINDOW`` (:meth:`Measurement.begin` / :meth:`Measurement.end`, after Zeus's
  ``begin_window``/``end_window``): right after warm-up every window opens in registry
  order, the timed loop runs, and the windows close in reverse order (latency, the canary,
  contention, power);
- ``AFTER_WINDOW`` (:meth:`Measurement.after_window`): after every window has closed, in
  registry order, with the columns measured so far (memory after the window, the output
  check, traffic and the roofline). A hook that calls the cell's forward runs it under
  ``torch.inference_mode()`` itself.

:meth:`Measurement.start_cell` runs for every measurement before a cell's input is made
(and so before compilation). A hook that raises records ``failed: <error>`` in the
measurement's note column and the row keeps everything else, except for an out-of-memory
error (the cell's ``oom`` row) and a ``required`` measurement (latency, the output check,
the sizes): then the cell fails.

Adding a measurement: one file with a subclass of :class:`Measurement` (its ``columns``,
``note_column``, ``phases`` and the hooks of those phases), plus one registration line:
an entry in ``BUILTIN`` of ``bench/probes/registry.py`` (its columns then belong in the row
contract, ``bench/schema.py``) or :func:`bench.probes.registry.register_measurement` in a
plugin module named by ``$EFFBENCH_PLUGINS``. docs/architecture.md lists the files.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.plan import Group
from bench.schema import DECLARED, Column


class Phase(enum.IntEnum):
    """When a measurement runs, in the order the worker walks them."""

    COUNT = 1  # once per group, on the built model
    BEFORE_WINDOW = 2  # in the cell's warm-up, as one of its calls
    WINDOW = 3  # begin/end around the timed loop
    AFTER_WINDOW = 4  # after every window has closed


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a measurement may know when it opens, before the model is built: the group, its
    device's synchronizer, and what the runner already measured or counted."""

    device: str
    sync: Callable[[], None]
    idle_power_w: float | None = None
    threads: int = 1  # intra-op threads the cell asked for
    group: Group | None = None  # the cells' model, dtype, image size and batch sizes
    builder: Callable[[], Any] | None = None  # the model's builder, for counts on ``meta``
    macs_formulas: Mapping[Any, Callable[..., int]] | None = None  # ModelSpec.macs_formulas
    macs_counter: str = "torch"
    macs: int | None = None  # MACs per image the runner already counted
    ceiling_macs_per_s: float | None = None  # the run's measured GEMM ceiling
    traffic: tuple[tuple[int, int, int], ...] = ()  # (batch, bytes, activation peak) known


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


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell as the hooks around its window see it: its input (``x_f32`` as made, ``x``
    placed for the configuration), its forward (compiled where asked), the group's counts
    (the ``COUNT`` columns) and the eager float32 reference (``reference(x_f32)``, its
    output; None where this cell is the reference)."""

    batch_size: int
    x_f32: Any
    x: Any
    forward: Callable[[], Any]
    counts: Mapping[str, Any]
    reference: Callable[[Any], Any] | None = None


class Measurement:
    """One kind of measurement (see the module docstring). A subclass declares ``columns``,
    ``note_column`` and ``phases`` and overrides the hooks of its phases; the others do
    nothing. ``min_window_s`` is the shortest timed window it can resolve (0: any)."""

    columns: ClassVar[tuple[Column, ...]]
    note_column: ClassVar[str]
    phases: frozenset[Phase]  # a class's, or narrowed by an instance when it opens
    required: ClassVar[bool] = False  # its failure fails the cell
    min_window_s: float = 0.0

    @classmethod
    def open(cls, ctx: ProbeContext) -> Measurement:
        """Open for a group, before the model is built."""
        return cls()

    def count(self, model: Any) -> Mapping[str, Any]:
        """``COUNT``: columns of the built model, shared by the group's cells."""
        return {}

    def start_cell(self) -> None:
        """Before a cell's input is made and its forward compiled."""
        return None

    def before_window(self, cell: Cell) -> Mapping[str, Any]:
        """``BEFORE_WINDOW``: one call of ``cell.forward`` standing in for a warm-up call."""
        return {}

    def begin(self) -> None:
        """``WINDOW``: the timed loop starts next."""
        return None

    def end(self, window: Window) -> Mapping[str, Any]:
        """``WINDOW``: the timed loop has ended."""
        return {}

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        """``AFTER_WINDOW``: ``measured`` holds the cell's columns so far."""
        return {}

    def close(self) -> None:
        return None


# Either phase alone, for the common ``phases`` declarations.
COUNT_ONLY = frozenset({Phase.COUNT})
WINDOW_ONLY = frozenset({Phase.WINDOW})
AFTER_ONLY = frozenset({Phase.AFTER_WINDOW})


def short_error(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, at most ``limit`` characters (for a note column)."""
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def declared(*names: str) -> tuple[Column, ...]:
    """The row contract's declarations of ``names``, in the contract's order."""
    found = tuple(c for c in DECLARED if c.name in names)
    missing = set(names) - {c.name for c in found}
    if missing:
        raise ValueError(f"not declared in bench/schema.py: {sorted(missing)}")
    return found

"""The identity of a cell, written once: every module that keys, names, matches or groups
cells imports it from here. Pure Python: no torch, no pandas.

A *cell* is one measured workload on one setup: the workload (model, batch size, image
size) and the setup (device, dtype, threads). With the fresh-process ``repeat`` index it
identifies one row of a run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from typing import Any, ClassVar

# The longest part-file stem we write; file systems allow 255 bytes per name.
_MAX_READABLE = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True, order=True)
class CellKey:
    """(model, device, dtype, batch size, image size, threads, configuration): one cell."""

    model: str
    device: str
    dtype: str
    batch_size: int
    image_size: int
    threads: int
    config: str = "eager"

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "model",
        "device",
        "dtype",
        "batch_size",
        "image_size",
        "threads",
        "config",
    )
    # Across machines a cell is matched by the device's name (``cuda:0`` on one box may be
    # another GPU than ``cuda:0`` on the next), so compare keys on ``device_name``.
    MATCH_COLUMNS: ClassVar[tuple[str, ...]] = (
        "model",
        "device_name",
        "dtype",
        "batch_size",
        "image_size",
        "threads",
        "config",
    )
    # What is measured, as opposed to the setup it is measured on (device, dtype, threads).
    WORKLOAD_COLUMNS: ClassVar[tuple[str, ...]] = ("model", "batch_size", "image_size")

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> CellKey:
        """The key of a row (a dict or a pandas row), with its numbers as ``int``."""
        return cls(
            str(values["model"]),
            str(values["device"]),
            str(values["dtype"]),
            int(values["batch_size"]),
            int(values["image_size"]),
            int(values["threads"]),
            str(values.get("config") or "eager"),
        )

    def stem(self, repeat: int) -> str:
        """``<readable>-<hash>``, the part-file name of (this cell, ``repeat``): unique per
        (key, repeat), at most 137 characters.

        The readable part maps unsafe characters to ``-`` and is cut to a bound, so two keys
        may share it; the 16 hex digits of SHA-256 over the exact key make the name
        injective (a collision needs 2^32 cells in one run to become likely)."""
        readable = _UNSAFE.sub(
            "-",
            f"{self.model}_{self.device}_{self.dtype}_bs{self.batch_size}"
            f"_{self.image_size}px_t{self.threads}_{self.config}_r{repeat}",
        )[:_MAX_READABLE]
        exact = json.dumps([*astuple(self), repeat], ensure_ascii=False)
        digest = hashlib.sha256(exact.encode()).hexdigest()[:16]
        return f"{readable}-{digest}"


@dataclass(frozen=True, slots=True, order=True)
class RowKey:
    """A cell and the fresh-process repeat that measured it: one row of a run."""

    cell: CellKey
    repeat: int

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> RowKey:
        return cls(CellKey.of(values), int(values["repeat"]))

    @property
    def stem(self) -> str:
        """The part-file stem of this row (see :meth:`CellKey.stem`)."""
        return self.cell.stem(self.repeat)

    def part_stem(self, attempt: int = 0) -> str:
        """The part-file stem of this row's ``attempt``: the first measurement keeps
        :attr:`stem`; a re-measurement adds ``-a<attempt>`` (a :attr:`stem` ends in 16 hex
        digits, so the two kinds of names never meet)."""
        return self.stem if attempt == 0 else f"{self.stem}-a{attempt}"

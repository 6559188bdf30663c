"""The output check: this configuration's output against eager float32 of the same weights
on the same input (``bench.config_apply.output_error``): ``max_abs_err``, ``max_rel_err`` and
``output_ok``. Run after the timed window, on one more call of the cell's forward under
``torch.inference_mode()``; eager float32 itself is the reference (zero error by
definition). A check that raises fails the cell."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bench.probes.base import AFTER_ONLY, Cell, Measurement, ProbeContext, declared


class OutputCheck(Measurement):
    """The cell's output errors (see the module docstring)."""

    columns: ClassVar = declared("max_abs_err", "max_rel_err", "output_ok")
    note_column: ClassVar[str] = "error"
    phases = AFTER_ONLY
    required: ClassVar[bool] = True

    def __init__(self, dtype: str) -> None:
        self._dtype = dtype

    @classmethod
    def open(cls, ctx: ProbeContext) -> OutputCheck:
        return cls(ctx.group.dtype if ctx.group is not None else "float32")

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        if cell.reference is None:
            return {"max_abs_err": 0.0, "max_rel_err": 0.0, "output_ok": True}
        import torch

        from bench.config_apply import output_error

        with torch.inference_mode():
            return output_error(cell.forward(), cell.reference(cell.x_f32), self._dtype)

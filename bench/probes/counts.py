"""The counts of a group's model, once per group after it is built (``Phase.COUNT``):
its size (``bench.probes.sizes``: parameters, bytes of weights in the row's dtype) and its
multiply-adds per image (``bench.probes.macs``, on fresh ``meta`` models). Both are merged
into every ok row of the group. Importing this module does not import torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bench.probes.base import COUNT_ONLY, Measurement, ProbeContext, declared, short_error


class SizeCount(Measurement):
    """``params`` and ``weights_bytes`` of the placed model, once per group."""

    columns: ClassVar = declared("params", "weights_bytes")
    note_column: ClassVar[str] = "error"
    phases = COUNT_ONLY
    required: ClassVar[bool] = True  # a model that cannot be counted is not measured

    def count(self, model: Any) -> Mapping[str, Any]:
        from bench.probes.sizes import count_params, weights_bytes

        return {"params": count_params(model), "weights_bytes": weights_bytes(model)}


class MacsCount(Measurement):
    """``macs`` per image and its ``macs_counter``, once per group, on fresh models (never
    the measured one): not counted where the runner already counted them (``ctx.macs``).
    A failed count leaves ``macs`` empty and says why in ``error``; the row is kept."""

    columns: ClassVar = declared("macs", "macs_counter")
    note_column: ClassVar[str] = "error"
    phases = COUNT_ONLY

    def __init__(self, ctx: ProbeContext) -> None:
        self._ctx = ctx

    @classmethod
    def open(cls, ctx: ProbeContext) -> MacsCount:
        return cls(ctx)

    def count(self, model: Any) -> Mapping[str, Any]:
        ctx, macs = self._ctx, self._ctx.macs
        out: dict[str, Any] = {}
        if macs is None and ctx.builder is not None and ctx.group is not None:
            g = ctx.group
            try:
                shape = (1, g.in_chans, g.image_size, g.image_size)
                from bench.probes.macs import count_macs

                macs = count_macs(ctx.builder, shape, ctx.macs_counter, ctx.macs_formulas)
            except Exception as e:
                out["error"] = f"MACs not counted ({ctx.macs_counter}): {short_error(e)}"
        out.update(macs=macs, macs_counter=ctx.macs_counter if macs is not None else None)
        return out

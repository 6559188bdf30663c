"""Where a cell sits on the roofline: its counted traffic and activation peak at its batch
size (``bench.probes.traffic``: the ``meta`` device, the eager graph, the row's dtype; one
meta model per group, the batch sizes between read off their line; what the runner already
counted, ``ProbeContext.traffic``, is not counted again), the multiply-adds per second it
achieved (``macs`` × batch ÷ median latency, MACs/s), that rate as a share of the run's
measured GEMM ceiling, and its intensity (MACs per byte). Runs after the window, from the
latency's median and the group's ``macs``; a failed count says so in ``error`` and keeps
the achieved rate."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from bench.probes.base import AFTER_ONLY, Cell, Measurement, ProbeContext, declared, short_error

if TYPE_CHECKING:
    from bench.probes.traffic import Traffic


class Roofline(Measurement):
    """The cell's traffic and roofline columns (see the module docstring)."""

    columns: ClassVar = declared(
        "bytes_per_image",
        "activation_peak_bytes",
        "achieved_macs_per_s",
        "compute_fraction",
        "intensity_macs_per_byte",
    )
    note_column: ClassVar[str] = "error"
    phases = AFTER_ONLY

    def __init__(self, ctx: ProbeContext) -> None:
        self._ctx = ctx
        self._meta: Any = None  # the model on meta in the row's dtype, built at first count
        self._counted: dict[int, Traffic] = {}  # by batch size

    @classmethod
    def open(cls, ctx: ProbeContext) -> Roofline:
        return cls(ctx)

    def _count(self, batch_size: int) -> Traffic:
        from bench.probes.traffic import meta_model, traffic_at

        g = self._ctx.group
        assert g is not None and self._ctx.builder is not None
        if self._meta is None:  # one build for every batch size of the group
            self._meta = meta_model(self._ctx.builder, g.dtype)
        return traffic_at(self._meta, (batch_size, g.in_chans, g.image_size, g.image_size), g.dtype)

    def after_window(self, cell: Cell, measured: Mapping[str, Any]) -> Mapping[str, Any]:
        from bench.probes.traffic import Traffic, traffic_by_line

        ctx, b = self._ctx, cell.batch_size
        macs, median_ms = cell.counts.get("macs"), measured["latency_ms_median"]
        out: dict[str, Any] = {}
        if macs is not None and median_ms > 0:
            out["achieved_macs_per_s"] = macs * b / (median_ms / 1e3)
            if ctx.ceiling_macs_per_s:
                out["compute_fraction"] = out["achieved_macs_per_s"] / ctx.ceiling_macs_per_s
        known = {size: Traffic(n, peak) for size, n, peak in ctx.traffic}
        try:
            if b in known:
                traffic = known[b]
            else:
                sizes = ctx.group.batch_sizes if ctx.group is not None else (b,)
                traffic = traffic_by_line(self._count, sizes, b, self._counted)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            return {**out, "error": f"traffic not counted: {short_error(e)}"}
        out["bytes_per_image"] = traffic.bytes_accessed / b
        out["activation_peak_bytes"] = traffic.activation_peak_bytes
        if macs is not None and traffic.bytes_accessed:
            out["intensity_macs_per_byte"] = macs / out["bytes_per_image"]
        return out

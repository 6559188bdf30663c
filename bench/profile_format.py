"""A per-layer profile (``bench.profile``) shown: as a table (slowest layers first, the
group totals and the notes on the sum), JSON or CSV, and as the parquet rows of
``effbench profile --out`` (``PROFILE_COLUMNS``, declared once in ``bench.schema``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from bench.errors import InvalidOption
from bench.profile import FORMATS, PROFILE_COLUMNS, LayerTime, Profile, _ms


def format_profile(profile: Profile, fmt: str = "table") -> str:
    """Render ``profile`` as an aligned text table, JSON (everything) or CSV (the rows)."""
    if fmt == "json":
        return json.dumps(asdict(profile), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [f.name for f in fields(LayerTime)]
        writer.writerow(names)
        for row in profile.rows:
            writer.writerow(["" if getattr(row, n) is None else getattr(row, n) for n in names])
        return buf.getvalue()
    if fmt == "table":
        return _table(profile)
    raise InvalidOption(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]], left: int) -> list[str]:
    """``header`` and ``body`` as aligned lines: the first ``left`` columns to the left."""
    widths = [
        max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(c) for c in body)]


ABOVE_CEILING = "above roof (implausible)"


def _of_ceiling(r: LayerTime) -> str:
    """The table's "of ceiling" cell: a percentage up to 100%, "at ceiling" above it within
    the ceiling's uncertainty, and never a percentage above it."""
    if not r.macs:
        return ""
    if r.above_ceiling:
        return ABOVE_CEILING
    if r.compute_fraction is None:
        return ""
    return f"{r.compute_fraction:.1%}" if r.compute_fraction <= 1 else "at ceiling"


def _above_note(p: Profile) -> str:
    """The totals line's sentence on layers above the ceiling ("" when none)."""
    above = [r for r in p.rows if r.above_ceiling and r.macs]
    if not above or not p.ceiling_macs_per_s:
        return ""
    ci = f" ±{p.ceiling_ci_rel:.1%}" if p.ceiling_ci_rel else ""
    return (
        f"{len(above)} layer(s) ran above the measured compute ceiling "
        f"({p.ceiling_macs_per_s / 1e9:.2f} GMAC/s{ci}): implausible, so shown as "
        f'"{ABOVE_CEILING}", not as a share of it; the ceiling was measured at a busier '
        "moment than the layers (or the count is wrong): measure it again on a quiet machine "
        "(`effbench peak`). "
    )


def _table(p: Profile) -> str:
    """Layers slowest first (the question is where the time goes; ``#`` is the execution
    order and ``cum`` the running share, so the top lines say how few layers matter), then
    the totals and the gap explained, then the groups."""
    position = {r.name: i for i, r in enumerate(p.rows)}
    ranked = sorted(p.rows, key=lambda r: -r.time_ms)
    header = ["layer", "type", "group", "#", "calls", "time_ms", "share", "cum", "macs", "bytes"]
    header += ["GMAC/s"] + (["of ceiling"] if p.ceiling_macs_per_s else [])
    body, cum = [], 0.0
    for r in ranked:
        cum += r.share
        gmacs = (
            ""
            if r.achieved_macs_per_s is None or not r.macs
            else f"{r.achieved_macs_per_s / 1e9:.2f}"
        )
        cells = [r.name, r.type, r.group, str(position[r.name]), str(r.calls), _ms(r.time_ms)]
        cells += [f"{r.share:.1%}", f"{cum:.1%}", f"{r.macs:,}", f"{r.bytes:,}", gmacs]
        if p.ceiling_macs_per_s:
            cells.append(_of_ceiling(r))
        body.append(cells)
    title = (
        f"{p.model} on {p.device} ({p.device_name}), {p.dtype}, batch {p.batch_size}, "
        f"{p.image_size}×{p.image_size}, {p.config}, {p.threads} thread"
        f"{'' if p.threads == 1 else 's'}; layers slowest "
        "first (# = execution order), times are medians per forward"
    )
    gap_pct = p.gap_ms / p.forward_ms if p.forward_ms > 0 else 0.0
    totals = (
        f"total: layers sum {_ms(p.sum_layers_ms)} ms vs plain forward {_ms(p.forward_ms)} ms "
        f"(median of {len(p.forward_samples_ms)}"
        + ("; noisy, IQR above 10%: rerun on a quieter machine or longer" if p.noisy else "")
        + f"); gap {'+' if p.gap_ms >= 0 else '-'}{_ms(abs(p.gap_ms))} ms ({gap_pct:+.1%}). "
        + _above_note(p)
        + p.gap_note
    )
    gbody = [
        [
            g.group,
            _ms(g.time_ms),
            f"{g.time_share:.1%}",
            f"{g.macs_share:.1%}",
            f"{g.macs:,}",
            f"{g.bytes:,}",
        ]
        for g in p.groups
    ]
    groups = _aligned(["group", "time_ms", "time share", "MAC share", "macs", "bytes"], gbody, 1)
    return "\n".join([title, *_aligned(header, body, 3), totals, "", *groups])


def profile_frame(profiles: Sequence[Profile], hostname: str, timestamp: str) -> Any:
    """One row per (profile, layer) with :data:`PROFILE_COLUMNS`, as a pandas DataFrame (what
    ``profile.parquet`` holds)."""
    import pandas as pd

    records = []
    for p in profiles:
        for r in p.rows:
            records.append(
                {
                    "model": p.model,
                    "device": p.device,
                    "device_name": p.device_name,
                    "dtype": p.dtype,
                    "batch_size": p.batch_size,
                    "image_size": p.image_size,
                    "config": p.config,
                    "threads": p.threads,
                    "layer": r.name,
                    "type": r.type,
                    "group": r.group,
                    "calls": r.calls,
                    "time_ms": r.time_ms,
                    "share": r.share,
                    "macs": r.macs,
                    "bytes": r.bytes,
                    "achieved_macs_per_s": r.achieved_macs_per_s,
                    "compute_fraction": r.compute_fraction,
                    "forward_ms": p.forward_ms,
                    "sum_layers_ms": p.sum_layers_ms,
                    "hook_overhead_ms": p.hook_overhead_ms,
                    "hostname": hostname,
                    "timestamp": timestamp,
                }
            )
    frame = pd.DataFrame.from_records(records, columns=list(PROFILE_COLUMNS))
    for column in ("achieved_macs_per_s", "compute_fraction"):  # None -> NaN, a float column
        frame[column] = frame[column].astype("float64")
    return frame

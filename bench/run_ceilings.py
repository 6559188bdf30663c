"""What a run measures of its devices before the first cell: each device's idle power,
and the device ceilings (docs/ceilings.md), measured once per (device, dtype,
threads) in a fresh process at the start, kept in the run folder's ``ceilings.parquet``,
read back as the roofs the rows are judged against, and measured again briefly at the end
(the closing canary; ``bench.runner.closing_ceilings``) to see how far they drifted."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench.errors import WorkerProtocolError
from bench.plan import Group
from bench.quality import Roof
from bench.status import OK, TIMEOUT
from bench.store import CEILINGS, read_ceilings, write_table

CEILINGS_TIMEOUT_S = 300.0  # one (device, dtype, threads) measurement, start-up included


CANARY_KINDS = ("gemm", "triad")
CANARY_BUDGET_S = 0.5  # seconds of sampling per kind: a canary, not a new measurement


def gemm_ceilings(table: pd.DataFrame) -> dict[tuple[str, str, int], float]:
    """The GEMM ceiling measured at the start for each (device, dtype, threads): the
    denominator of ``compute_fraction``."""
    if not len(table):
        return {}
    start = table[table["phase"] == "start"] if "phase" in table.columns else table
    gemm = start[(start["kind"] == "gemm") & (start["source"] == "measured")]
    return {
        ceiling_key(str(r.device), str(r.dtype), int(r.threads)): float(r.value)
        for r in gemm.itertuples(index=False)
    }


def compute_roofs(table: pd.DataFrame) -> dict[tuple[str, str, int], Roof]:
    """The highest compute rate measured for each (device, dtype, threads), GEMM or 3x3
    convolution, at any phase of the run, with its CI: contention only lowers a ceiling,
    so the highest is the best estimate of the roof a plausible cell stays under."""
    out: dict[tuple[str, str, int], Roof] = {}
    if not len(table):
        return out
    measured = table[table["kind"].isin(("gemm", "conv3x3")) & (table["source"] == "measured")]
    for r in measured.itertuples(index=False):
        key = ceiling_key(str(r.device), str(r.dtype), int(r.threads))
        ci = float(r.ci_rel) if pd.notna(r.ci_rel) else 0.0
        if key not in out or float(r.value) > out[key].macs_per_s:
            out[key] = Roof(float(r.value), ci, str(r.kind))
    return out


def ceiling_key(device: str, dtype: str, threads: int) -> tuple[str, str, int]:
    """Ceilings are kept per (device, dtype, intra-op threads); threads only matter on CPU."""
    return (device, dtype, int(threads) if device == "cpu" else 0)


def run_ceilings(
    run_dir: Path,
    pending: Sequence[Group],
    stream: TextIO,
    measured: dict[tuple[str, str, int], pd.DataFrame],
) -> pd.DataFrame:
    """The ceilings of each (device, dtype, threads) of ``pending``: read from the run
    folder, else taken from ``measured`` (this session's) or measured now; what was not in
    the folder is added to its ``ceilings.parquet``. The folder's whole table."""
    stored = read_ceilings(run_dir)
    have = set() if not len(stored) else {
        ceiling_key(str(d), str(t), int(n))
        for d, t, n in stored[["device", "dtype", "threads"]].itertuples(index=False)
    }  # fmt: skip
    frames = [stored] if len(stored) else []
    for key in dict.fromkeys(ceiling_key(g.device, g.dtype, g.threads) for g in pending):
        if key in have:
            continue
        if key not in measured:
            measured[key] = measure_ceilings_once(*key, stream)
        if len(measured[key]):
            frames.append(measured[key])
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    if len(frames) > (1 if len(stored) else 0):
        write_table(run_dir / CEILINGS, table)
    return table


def measure_ceilings_once(
    device: str,
    dtype: str,
    threads: int,
    stream: TextIO,
    *,
    kinds: Sequence[str] = (),
    budget_s: float | None = None,
    phase: str = "start",
) -> pd.DataFrame:
    """Measure the ceilings of one (device, dtype, threads) in a fresh process (its own
    thread pool, nothing else resident), started by the executor path the cells take: a
    :class:`~bench.ceiling_worker.CeilingsTask` run by the fork-server executor (forked
    from its server on Linux, a new interpreter elsewhere), whichever executor runs the
    cells, so that every arm and executor shares this machine's one measurement. An empty
    frame, with a note on ``stream``, if that fails (the rows then have no
    ``compute_fraction``). ``kinds`` and ``budget_s`` narrow it (the closing canary);
    ``phase`` is recorded."""
    import socket

    from bench.ceiling_worker import CeilingsTask
    from bench.ceilings import Ceiling, ceilings_frame
    from bench.executor import STARTUP_GRACE_S, ForkServerExecutor

    started = time.monotonic()
    found: list[Ceiling] = []
    failed: list[str] = []

    def on_message(msg: dict[str, Any]) -> None:
        if msg.get("event") == "ceiling":
            found.append(Ceiling.from_dict(msg["ceiling"]))
        elif msg.get("event") == "error":
            failed.append(str(msg.get("error")))

    task = CeilingsTask(device, dtype, threads, tuple(kinds), budget_s)
    try:  # no cell starts: the watchdog allows the grace and this, CEILINGS_TIMEOUT_S in all
        out = ForkServerExecutor().run(task, on_message, CEILINGS_TIMEOUT_S - STARTUP_GRACE_S)
    except WorkerProtocolError as e:
        failed.append(str(e))
    else:
        if out.status == TIMEOUT:
            failed.append(f"over {CEILINGS_TIMEOUT_S:g} s")
        elif out.status != OK:
            failed.append(out.detail or out.status)
    if failed:
        print(f"effbench: ceilings of {device} {dtype} not measured: {failed[0]}", file=stream)
        return pd.DataFrame()
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if phase != "start":  # the datasheet does not drift
        found = [c for c in found if c.source == "measured"]
    frame = ceilings_frame(found, socket.gethostname(), stamp, phase)
    gemm = frame[frame["kind"] == "gemm"]["value"]
    triad = frame[frame["kind"] == "triad"]["value"]
    print(
        f"effbench: {'closing ' if phase != 'start' else ''}ceilings of {device} {dtype} "
        f"threads={threads} in "
        f"{time.monotonic() - started:.1f} s: GEMM "
        f"{gemm.iloc[0] / 1e9 if len(gemm) else float('nan'):.1f} GMAC/s, triad "
        f"{triad.iloc[0] / 1e9 if len(triad) else float('nan'):.1f} GB/s",
        file=stream,
    )
    return frame


def ceiling_drift(table: pd.DataFrame) -> list[str]:
    """One line per setup with start and end ceilings: each kind's change from the start
    to the end of the run, with the two measurements' CIs."""
    if "phase" not in table.columns:
        return []
    measured = table[table["source"] == "measured"]
    out = []
    for (device, dtype, threads), df in measured.groupby(["device", "dtype", "threads"]):
        parts = []
        for kind in CANARY_KINDS:
            start = df[(df["kind"] == kind) & (df["phase"] == "start")]
            end = df[(df["kind"] == kind) & (df["phase"] == "end")]
            if not len(start) or not len(end):
                continue
            a, b = float(start["value"].iloc[-1]), float(end["value"].iloc[-1])
            unit = "GMAC/s" if kind == "gemm" else "GB/s"
            parts.append(f"{kind} {a / 1e9:.1f} -> {b / 1e9:.1f} {unit} ({b / a - 1:+.1%})")
        if parts:
            out.append(f"{device} {dtype} threads={threads}: {', '.join(parts)}")
    return out


def measure_idle_power(devices: Sequence[str], stream: TextIO) -> dict[str, float | None]:
    """Idle power (W) of each device, measured once at the start of a run; prints one
    note per device without a power source (its rows say why in ``power_source``)."""
    from bench.probes.power import IDLE_WINDOW_S, open_monitor

    idle: dict[str, float | None] = {}
    for dev in devices:
        monitor = open_monitor(dev)
        try:
            if monitor.note:
                print(f"effbench: power not measured on {dev}: {monitor.note}", file=stream)
                idle[dev] = None
                continue
            idle[dev] = monitor.idle_power_w(IDLE_WINDOW_S)
        finally:
            monitor.close()
        got = f"{idle[dev]:.1f} W" if idle[dev] is not None else "not resolved"
        print(
            f"effbench: idle power of {dev} over {IDLE_WINDOW_S:g} s: {got} ({monitor.source})",
            file=stream,
        )
    return idle

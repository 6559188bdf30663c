"""The runner: starts a run folder, sends each group to a worker, writes rows as they come.

Durability: each row is written (atomically) the moment the worker reports it, under a
name derived from its cell, so a sweep killed at any point loses at most the cell in
flight, and ``resume`` measures exactly the cells that have no row yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench.errors import (
    DeviceUnavailable,
    Interrupted,
    InvalidOption,
    ResultsCorrupt,
    WorkerProtocolError,
)
from bench.executor import Executor, Message
from bench.keys import RowKey
from bench.plan import (
    Cell,
    Group,
    Inventory,
    ModelShape,
    Options,
    all_cells,
    check_recorded,
    check_runnable,
    expand_plan,
)
from bench.probes.registry import extra_columns
from bench.schema import SCHEMA_VERSION, Row
from bench.store import (
    CEILINGS,
    MANIFEST,
    RunLock,
    ensure_writable,
    load_run,
    read_ceilings,
    read_manifest,
    remove_partial_writes,
    row_keys,
    validate_run_id,
    write_manifest,
    write_table,
)
from bench.store import write_row as store_row
from bench.worker import Task, base_row, failed_cells

CEILINGS_TIMEOUT_S = 300.0  # one (device, dtype, threads) measurement, start-up included


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class Progress:
    """A one-line progress report with the current cell and an estimate of time left."""

    total: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    label: str = ""

    def _eta(self) -> str:
        if not self.done:
            return "?"
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        return _fmt_s(left)

    def cell(self, cell: Cell) -> None:
        line = (
            f"{self.label}[{self.done + 1:>4}/{self.total}] {cell.model} {cell.device} "
            f"{cell.dtype}{'' if cell.config == 'eager' else ' ' + cell.config} "
            f"bs={cell.batch_size} r{cell.repeat}"
            f"  elapsed {_fmt_s(time.monotonic() - self.started)}  left ~{self._eta()}"
        )
        if self.stream.isatty():
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
        self.stream.flush()


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_dir: Path
    planned: int
    written: int
    statuses: dict[str, int]
    wall_s: float
    timed_s: float

    @property
    def outside_timed_share(self) -> float:
        """Share of the sweep's wall time spent outside timed iterations (start-up, model
        build, MAC counting, warm-up, writing)."""
        return 1 - self.timed_s / self.wall_s if self.wall_s > 0 else 0.0


def start_run(
    out: Path,
    run_id: str | None,
    options: Options,
    groups: Sequence[Group],
    environment: Mapping[str, Any],
    argv: Sequence[str],
) -> tuple[Path, RunLock]:
    """Create ``out/<run_id>``, lock it and write its manifest: the resolved options and the
    plan (every group, as it will be measured), so that a resume runs exactly this plan.
    Refuses a folder that already holds a run."""
    run_id = run_id or new_run_id()
    run_dir = check_new_run(out, run_id)
    ensure_writable(run_dir)
    lock = RunLock(run_dir)
    try:
        check_new_run(out, run_id)  # again under the lock: another runner may have won
        write_manifest(
            run_dir,
            {
                "run_id": run_id,
                "schema_version": SCHEMA_VERSION,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                "argv": list(argv),
                "options": options.to_dict(),
                "plan": [g.to_dict() for g in groups],
                "planned_cells": len(all_cells(tuple(groups))),
                "environment": dict(environment),
                "sessions": [],
            },
        )
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def check_new_run(out: Path, run_id: str) -> Path:
    """``out/<run_id>``, after checking that it can be written and holds no run yet."""
    validate_run_id(run_id)
    run_dir = out / run_id
    for folder in (out.resolve(), *out.resolve().parents):
        if (folder / MANIFEST).is_file():
            raise InvalidOption(
                f"--out {out} is inside the run folder {folder}; a run folder holds one run: "
                "give an --out outside it (e.g. results)"
            )
    if run_dir.is_symlink():
        raise InvalidOption(
            f"{run_dir} is a link to {os.path.realpath(run_dir)}; a new run gets a folder of "
            "its own: choose another --run-id, or give the link's target as --out"
        )
    ensure_writable(out)
    if run_dir.exists() and any(
        p.name == MANIFEST or p.name.startswith("part-") for p in run_dir.iterdir()
    ):
        raise InvalidOption(
            f"{run_dir} already holds a run; continue it with `effbench run --resume {run_dir}` "
            "or choose another --run-id"
        )
    return run_dir


@dataclass(frozen=True, slots=True)
class Resumed:
    """A run folder to finish: its lock (held), id, recorded options and plan."""

    run_dir: Path
    lock: RunLock
    run_id: str
    options: Options
    groups: tuple[Group, ...]


def resume_run(run_dir: Path, catalog: Mapping[str, ModelShape], inventory: Inventory) -> Resumed:
    """Lock ``run_dir`` and read the plan its manifest records; refuse when this machine
    cannot run that plan as recorded (see :func:`bench.plan.check_runnable`)."""
    if not run_dir.is_dir():
        raise InvalidOption(f"cannot resume {run_dir}: no such folder")
    check_run_folder(run_dir)  # before the lock: it creates a file there
    lock = RunLock(run_dir)
    try:
        manifest = read_manifest(run_dir)
        run_id, options, groups = _recorded_plan(run_dir, manifest, catalog, inventory)
        check_runnable(groups, catalog, inventory)
        check_pinned_cores(groups)
    except BaseException:
        lock.release()
        raise
    return Resumed(run_dir, lock, run_id, options, groups)


def check_run_folder(run_dir: Path) -> None:
    """Refuse, before anything is written there, a folder that holds no run: a folder of
    runs (named in the message), ``/``, any other folder."""
    if (run_dir / MANIFEST).is_file():
        return
    with contextlib.suppress(OSError):
        runs = sorted(d for d in run_dir.iterdir() if (d / MANIFEST).is_file())
        if runs:
            more = f" (and {len(runs) - 1} more)" if len(runs) > 1 else ""
            raise InvalidOption(
                f"{run_dir} is a folder of runs, not a run; resume the runs themselves, "
                f"e.g. `effbench run --resume {runs[0]}`{more}"
            )
    read_manifest(run_dir)  # says that it is not a run folder


def check_pinned_cores(groups: Sequence[Group]) -> None:
    """Refuse a plan whose workers are pinned (``--parallel``) to cores this process may
    not use (a resume under ``taskset``, or on another machine): they would measure on
    other cores than recorded."""
    allowed = os.sched_getaffinity(0)
    for g in groups:
        if missing := sorted(set(g.cpus) - allowed):
            raise DeviceUnavailable(
                f"the plan pins the workers of {g.device} to cores {list(g.cpus)}, but cores "
                f"{missing} are not available to this process (taskset/cgroup?); give it "
                "those cores, or start a new run"
            )


def _recorded_plan(
    run_dir: Path,
    manifest: Mapping[str, Any],
    catalog: Mapping[str, ModelShape],
    inventory: Inventory,
) -> tuple[str, Options, tuple[Group, ...]]:
    where = f"{run_dir / MANIFEST}"
    try:
        run_id = validate_run_id(manifest["run_id"])
        options = Options.from_dict(manifest["options"])
        recorded = manifest.get("plan")
        if recorded is not None:
            if not isinstance(recorded, list):
                raise InvalidOption(f"plan must be a list of groups, not {recorded!r}")
            groups = tuple(Group.from_dict(g) for g in recorded)
            check_recorded(options, groups)
            return run_id, options, groups
    except KeyError as e:
        raise ResultsCorrupt(f"{where} lacks {e}; it was not written by `effbench run`") from e
    except (InvalidOption, ResultsCorrupt) as e:
        raise ResultsCorrupt(f"{where} holds an invalid plan: {e}") from e
    # Written before plans were recorded: expand its options, with the thread count its rows
    # were measured at (the machine's default may differ now).
    if options.threads is None:
        threads = set(load_run(run_dir)["threads"].dropna().astype(int))
        if len(threads) > 1:
            raise ResultsCorrupt(
                f"{where} records no thread count and its rows mix {sorted(threads)}; "
                "start a new run with --threads"
            )
        if threads:
            options = dataclasses.replace(options, threads=threads.pop())
    try:
        return run_id, options, expand_plan(options, catalog, inventory)
    except InvalidOption as e:
        raise ResultsCorrupt(f"{where}: cannot run its plan here: {e}") from e


@dataclass
class Lane:
    """One run folder being filled: the groups it still lacks and what has been written."""

    run_dir: Path
    run_id: str
    options: Options
    lock: RunLock
    pending: list[Group]
    progress: Progress
    idle_w: dict[str, float | None]
    macs_cache: dict[tuple[Any, ...], int]
    ceilings: dict[tuple[str, str, int], float]  # (device, dtype, threads) -> GEMM MACs/s
    statuses: dict[str, int] = field(default_factory=dict)
    written: int = 0
    timed_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


def open_lane(
    run_dir: Path,
    run_id: str,
    options: Options,
    groups: Sequence[Group],
    lock: RunLock,
    progress_stream: TextIO | None = None,
    idle_w: dict[str, float | None] | None = None,
    measured: dict[tuple[str, str, int], pd.DataFrame] | None = None,
) -> Lane:
    """Read what ``run_dir`` (locked by ``lock``) already holds; the lane's ``pending``
    groups are the rest.

    ``idle_w`` holds idle powers already measured this session (the lanes of an interleaved
    run share it): only devices not in it are measured, and they are added to it. With
    ``options.ceilings``, the device ceilings of every pending (device, dtype, threads) are
    taken from the run folder, from ``measured`` (this session's, shared the same way) or
    measured now, and written to the run folder's ``ceilings.parquet``."""
    ensure_writable(run_dir)
    remove_partial_writes(run_dir)
    existing = load_run(run_dir)
    done = row_keys(existing)
    pending: list[Group] = []
    for g in groups:
        todo = tuple(c.batch_size for c in g.cells() if c.key not in done)
        if todo:
            pending.append(g.with_batch_sizes(todo))
    total = sum(len(g.batch_sizes) for g in pending)
    label = f"{options.variant}: " if options.variant else ""
    progress = Progress(total, progress_stream or sys.stderr, label=label)
    idle_w = {} if idle_w is None else idle_w
    unmeasured = [d for d in dict.fromkeys(g.device for g in pending) if d not in idle_w]
    idle_w.update(measure_idle_power(unmeasured, progress.stream))
    measured = {} if measured is None else measured
    ceilings = (
        _run_ceilings(run_dir, pending, progress.stream, measured) if options.ceilings else {}
    )
    macs = _macs_cache(existing)
    return Lane(run_dir, run_id, options, lock, pending, progress, idle_w, macs, ceilings)


def ceiling_key(device: str, dtype: str, threads: int) -> tuple[str, str, int]:
    """Ceilings are kept per (device, dtype, intra-op threads); threads only matter on CPU."""
    return (device, dtype, int(threads) if device == "cpu" else 0)


def _run_ceilings(
    run_dir: Path,
    pending: Sequence[Group],
    stream: TextIO,
    measured: dict[tuple[str, str, int], pd.DataFrame],
) -> dict[tuple[str, str, int], float]:
    """The measured GEMM ceiling of each (device, dtype, threads) of ``pending``: read from
    the run folder, else taken from ``measured`` (this session's) or measured now; what was
    not in the folder is added to its ``ceilings.parquet``."""
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
        return {}
    table = pd.concat(frames, ignore_index=True)
    if len(frames) > (1 if len(stored) else 0):
        write_table(run_dir / CEILINGS, table)
    gemm = table[(table["kind"] == "gemm") & (table["source"] == "measured")]
    return {
        ceiling_key(str(r.device), str(r.dtype), int(r.threads)): float(r.value)
        for r in gemm.itertuples(index=False)
    }


def measure_ceilings_once(device: str, dtype: str, threads: int, stream: TextIO) -> pd.DataFrame:
    """Measure the ceilings of one (device, dtype, threads) in a fresh interpreter (its own
    thread pool, nothing else resident), as ``python -m bench.ceilings`` prints them; an
    empty frame, with a note on ``stream``, if that fails (the rows then have no
    ``compute_fraction``)."""
    import json
    import socket
    import subprocess

    from bench.ceilings import Ceiling, ceilings_frame

    cmd = [sys.executable, "-m", "bench.ceilings", "--device", device, "--dtype", dtype]
    cmd += ["--threads", str(max(threads, 1))]
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CEILINGS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"effbench: ceilings of {device} {dtype} not measured: over "
              f"{CEILINGS_TIMEOUT_S:g} s", file=stream)  # fmt: skip
        return pd.DataFrame()
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"effbench: ceilings of {device} {dtype} not measured: {why}", file=stream)
        return pd.DataFrame()
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    found = [Ceiling.from_dict(json.loads(line)) for line in lines]
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    frame = ceilings_frame(found, socket.gethostname(), stamp)
    gemm = frame[frame["kind"] == "gemm"]["value"]
    triad = frame[frame["kind"] == "triad"]["value"]
    print(
        f"effbench: ceilings of {device} {dtype} threads={threads} in "
        f"{time.monotonic() - started:.1f} s: GEMM "
        f"{gemm.iloc[0] / 1e9 if len(gemm) else float('nan'):.1f} GMAC/s, triad "
        f"{triad.iloc[0] / 1e9 if len(triad) else float('nan'):.1f} GB/s",
        file=stream,
    )
    return frame


def run_group(
    lane: Lane,
    g: Group,
    executor: Executor,
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    guard: contextlib.AbstractContextManager[Any] | None = None,
) -> None:
    """Measure group ``g`` of ``lane`` in one worker; write a row per cell as it comes, and
    rows for the cells a crashed or overrunning worker never reported.

    ``guard`` is entered around every write and progress line: ``--parallel`` calls this
    from one thread per GPU, and its guard serializes them (and stops a cancelled lane)."""
    options = lane.options
    guard = guard if guard is not None else contextlib.nullcontext()

    def write(cell: Cell, row: Row) -> None:
        if row.batch_size != cell.batch_size or RowKey.of(row.to_dict()) != cell.key:
            raise WorkerProtocolError(
                f"worker reported a row for {RowKey.of(row.to_dict())}, not for {cell.key}"
            )
        store_row(lane.run_dir, cell.key.stem, row, extra_columns())
        lane.written += 1
        lane.timed_s += row.timed_s or 0.0
        lane.progress.done += 1
        lane.statuses[row.status] = lane.statuses.get(row.status, 0) + 1

    cells = {c.batch_size: c for c in g.cells()}
    seen: set[int] = set()
    mkey = (g.model, g.image_size, g.in_chans, options.macs_counter)

    def on_message(msg: Message) -> None:
        event = msg.get("event")
        with guard:
            if event == "start":
                lane.progress.cell(cells[int(msg["batch_size"])])
            elif event == "row":
                row = Row.from_dict(msg["row"])
                write(cells[row.batch_size], row)
                seen.add(row.batch_size)
                if row.macs is not None:
                    lane.macs_cache[mkey] = row.macs

    task = Task(
        run_id=lane.run_id,
        group=g,
        timing=options.timing,
        macs_counter=options.macs_counter,
        macs=lane.macs_cache.get(mkey),
        tf32=options.tf32,
        memory_cap_bytes=options.memory_cap_bytes,
        idle_power_w=lane.idle_w.get(g.device),
        ceiling_macs_per_s=lane.ceilings.get(ceiling_key(g.device, g.dtype, g.threads)),
        env=dict(options.env),
    )
    outcome = executor.run(task, on_message, options.cell_timeout_s)
    missing = [b for b in g.batch_sizes if b not in seen]
    status = outcome.status if outcome.status != "ok" else "crashed"
    detail = outcome.detail or "worker ended without reporting this cell"
    if not missing:
        return
    spec, name = spec_of(g.model), device_name_of(g.device)
    with guard:
        for i, (b, st, err) in enumerate(failed_cells(missing, status, detail)):
            if i:
                lane.progress.cell(cells[b])
            write(cells[b], base_row(task, b, st, spec=spec, device_name=name, error=err))


def close_lane(lane: Lane, argv: Sequence[str], interrupted: str | None = None) -> RunSummary:
    """Record this session in the lane's manifest (with the signal that stopped it, if
    one did), release the folder's lock and summarise the session."""
    lane.progress.finish()
    wall = time.monotonic() - lane.started
    try:
        _record_session(lane.run_dir, argv, wall, lane.written, lane.timed_s, interrupted)
    finally:
        lane.lock.release()
    total = lane.progress.total
    return RunSummary(lane.run_dir, total, lane.written, lane.statuses, wall, lane.timed_s)


def interleave(lanes: Sequence[Lane]) -> list[tuple[Lane, Group]]:
    """The order in which an interleaved run measures its lanes' groups: group i of every
    lane before group i + 1 of any, the lanes' order reversed on every other step
    (A B, B A, A B, ...), so that neither arm always runs first after the other."""
    order = []
    steps = max((len(lane.pending) for lane in lanes), default=0)
    for i in range(steps):
        for lane in lanes if i % 2 == 0 else reversed(lanes):
            if i < len(lane.pending):
                order.append((lane, lane.pending[i]))
    return order


def run_interleaved(
    lanes: Sequence[Lane],
    executor: Executor,
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    argv: Sequence[str] = (),
) -> list[RunSummary]:
    """Measure several run folders (the variants of an A/B run) group by group in the order
    of :func:`interleave`, so that drift of the machine hits every variant alike. Each
    lane's manifest records the wall time of the whole interleaved session."""
    try:
        for lane, g in interleave(lanes):
            run_group(lane, g, executor, spec_of, device_name_of)
    except Interrupted as e:
        for lane in lanes:
            close_lane(lane, argv, interrupted=signal.Signals(e.signum).name)
        raise
    return [close_lane(lane, argv) for lane in lanes]


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


def _macs_cache(df: pd.DataFrame) -> dict[tuple[Any, ...], int]:
    """MACs already counted in this run, by (model, image size, channels, counter)."""
    df = df[df["macs"].notna()]
    return {
        (r.model, int(r.image_size), int(r.in_chans), r.macs_counter): int(r.macs)
        for r in df.itertuples()
    }


def _record_session(
    run_dir: Path,
    argv: Sequence[str],
    wall_s: float,
    written: int,
    timed_s: float,
    interrupted: str | None = None,
) -> None:
    manifest = read_manifest(run_dir)
    session: dict[str, Any] = {
        "argv": list(argv),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "wall_s": round(wall_s, 3),
        "rows_written": written,
        "timed_s": round(timed_s, 3),
    }
    if interrupted:
        session["interrupted_by"] = interrupted
    manifest.setdefault("sessions", []).append(session)
    write_manifest(run_dir, manifest)

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
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench.canaries import MIN_CELLS, CanaryRecord
from bench.errors import (
    DeviceUnavailable,
    Interrupted,
    InvalidOption,
    ResultsCorrupt,
    WorkerProtocolError,
)
from bench.executor import Executor, Message
from bench.keys import CellKey, RowKey
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
from bench.quality import Roof, host_speed, judge, rank
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
    validate_run_id,
    write_manifest,
    write_table,
)
from bench.store import write_row as store_row
from bench.worker import Task, base_row, failed_cells

# Set to 0 (the test suite does, as the machine is shared while it runs): contention is
# recorded and named in quality_reason, but no row is judged `contended`.
JUDGE_CONTENTION_ENV = "EFFBENCH_JUDGE_CONTENTION"
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
    qualities: dict[str, int] = field(default_factory=dict)  # cells by their best row
    remeasured: int = 0  # rows that re-measured a contended cell
    drift: tuple[str, ...] = ()  # how the ceilings moved between the start and the end

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
    roofs: dict[tuple[str, str, int], Roof] = field(default_factory=dict)  # for verdicts
    # (model, image size, channels, dtype, batch) -> (bytes accessed, activation peak)
    traffic_cache: dict[tuple[Any, ...], tuple[int, int]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    written: int = 0
    timed_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    # re-measurement (bench.quality): the last attempt each cell may get this session, the
    # groups of contended cells still to measure again, and this session's rows by part
    last_attempt: dict[RowKey, int] = field(default_factory=dict)
    retry: list[Group] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    remeasured: int = 0
    drift: list[str] = field(default_factory=list)
    # --count-instructions: (model, batch, image size, channels, dtype, config) -> columns
    counts: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    # the host's fastest speed-canary rates (bench.canaries), kept across runs
    canary: CanaryRecord = field(default_factory=CanaryRecord)


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
    pending = pending_groups(groups, existing, options.remeasure)
    last_attempt = {c.key: g.attempt + options.remeasure for g in pending for c in g.cells()}
    total = sum(len(g.batch_sizes) for g in pending)
    label = f"{options.variant}: " if options.variant else ""
    progress = Progress(total, progress_stream or sys.stderr, label=label)
    idle_w = {} if idle_w is None else idle_w
    unmeasured = [d for d in dict.fromkeys(g.device for g in pending) if d not in idle_w]
    idle_w.update(measure_idle_power(unmeasured, progress.stream))
    measured = {} if measured is None else measured
    table = (
        _run_ceilings(run_dir, pending, progress.stream, measured)
        if options.ceilings
        else pd.DataFrame()
    )
    macs = _macs_cache(existing)
    lane = Lane(run_dir, run_id, options, lock, pending, progress, idle_w, macs, {})
    lane.canary = CanaryRecord.load()
    lane.ceilings, lane.roofs = gemm_ceilings(table), compute_roofs(table)
    lane.last_attempt = last_attempt
    return lane


def pending_groups(
    groups: Sequence[Group], existing: pd.DataFrame, remeasure: int = 1
) -> list[Group]:
    """What a run folder still lacks: per group, the cells with no row (first attempt), and
    (unless the run re-measures nothing, ``remeasure`` 0) the cells whose every row was
    judged ``contended``, measured again with the attempt after their last. A cell with any
    other row (clean, noisy, implausible, or a failure status) is done."""
    acceptable: set[RowKey] = set()
    last: dict[RowKey, int] = {}
    cols = [*CellKey.COLUMNS, "repeat", "attempt", "status", "quality"]
    for values in existing.reindex(columns=cols).to_dict(orient="records"):
        try:
            key = RowKey.of(values)
        except (TypeError, ValueError):
            continue  # a row lacking a key value matches no planned cell
        attempt = values["attempt"]
        last[key] = max(last.get(key, 0), int(attempt) if pd.notna(attempt) else 0)
        if remeasure == 0 or values["status"] != "ok" or values["quality"] != "contended":
            acceptable.add(key)
    pending: list[Group] = []
    for g in groups:
        first = tuple(c.batch_size for c in g.cells() if c.key not in last)
        if first:
            pending.append(g.with_batch_sizes(first))
        again: dict[int, list[int]] = {}
        for c in g.cells():
            if c.key in last and c.key not in acceptable:
                again.setdefault(last[c.key] + 1, []).append(c.batch_size)
        pending += [
            dataclasses.replace(g, batch_sizes=tuple(bs), attempt=a) for a, bs in again.items()
        ]
    return pending


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


def _run_ceilings(
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


def _ceilings_as_dicts(
    device: str, dtype: str, threads: int, kinds: tuple[str, ...], budget_s: float | None
) -> list[dict[str, Any]]:
    """What ``python -m bench.ceilings`` prints, as dicts: run in a fresh process."""
    from bench.ceilings.measure import measure_ceilings
    from bench.ceilings.record import KINDS

    ceilings = measure_ceilings(
        device,
        dtype,
        max(threads, 1),
        precision=0.02,
        budget_s=1.5 if budget_s is None else budget_s,
        kinds=kinds or KINDS,
    )
    return [c.to_dict() for c in ceilings]


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
    thread pool, nothing else resident; on Linux forked from the fork server, elsewhere a
    new ``python -m bench.ceilings``), as that command prints them; an
    empty frame, with a note on ``stream``, if that fails (the rows then have no
    ``compute_fraction``). ``kinds`` and ``budget_s`` narrow it (the closing canary);
    ``phase`` is recorded."""
    import json
    import socket
    import subprocess

    from bench.ceilings import Ceiling, ceilings_frame

    started = time.monotonic()
    if sys.platform.startswith("linux"):  # forked from the fork server: no imports to pay
        from bench.executor import call_in_fresh_process

        try:
            dicts = call_in_fresh_process(
                _ceilings_as_dicts, (device, dtype, threads, tuple(kinds), budget_s),
                CEILINGS_TIMEOUT_S,
            )  # fmt: skip
        except WorkerProtocolError as e:
            print(f"effbench: ceilings of {device} {dtype} not measured: {e}", file=stream)
            return pd.DataFrame()
        found = [Ceiling.from_dict(d) for d in dicts]
    else:
        cmd = [sys.executable, "-m", "bench.ceilings", "--device", device, "--dtype", dtype]
        cmd += ["--threads", str(max(threads, 1))]
        if kinds:
            cmd += ["--kinds", ",".join(kinds)]
        if budget_s is not None:
            cmd += ["--budget-s", str(budget_s)]
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

    contended: list[int] = []

    def write(cell: Cell, row: Row) -> None:
        if row.batch_size != cell.batch_size or RowKey.of(row.to_dict()) != cell.key:
            raise WorkerProtocolError(
                f"worker reported a row for {RowKey.of(row.to_dict())}, not for {cell.key}"
            )
        # the attempt and the arm are the runner's: a worker (perhaps an older effbench of
        # an A/B arm) measures the cell, whichever attempt it is
        row = judged(lane, dataclasses.replace(row, attempt=g.attempt, variant=options.variant))
        stem = cell.key.part_stem(g.attempt)
        store_row(lane.run_dir, stem, row, extra_columns())
        lane.rows[stem] = row
        lane.written += 1
        lane.remeasured += 1 if g.attempt else 0
        lane.timed_s += row.timed_s or 0.0
        lane.progress.done += 1
        lane.statuses[row.status] = lane.statuses.get(row.status, 0) + 1
        if row.quality == "contended" and g.attempt < lane.last_attempt.get(cell.key, 0):
            contended.append(cell.batch_size)

    cells = {c.batch_size: c for c in g.cells()}
    seen: set[int] = set()
    mkey = (g.model, g.image_size, g.in_chans, options.macs_counter)
    tkey = (g.model, g.image_size, g.in_chans, g.dtype)

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
                if row.bytes_per_image is not None and row.activation_peak_bytes is not None:
                    bytes_accessed = round(row.bytes_per_image * row.batch_size)
                    peak = row.activation_peak_bytes
                    lane.traffic_cache[(*tkey, row.batch_size)] = (bytes_accessed, peak)

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
        # an arm with its own interpreter may be an older effbench, which counts for itself
        traffic=()
        if options.python
        else tuple(
            (b, *lane.traffic_cache[(*tkey, b)])
            for b in g.batch_sizes
            if (*tkey, b) in lane.traffic_cache
        ),
        counts=group_counts(lane, g),
    )
    outcome = executor.run(task, on_message, options.cell_timeout_s)
    missing = [b for b in g.batch_sizes if b not in seen]
    status = outcome.status if outcome.status != "ok" else "crashed"
    detail = outcome.detail or "worker ended without reporting this cell"
    if missing:
        spec, name = spec_of(g.model), device_name_of(g.device)
        with guard:
            for i, (b, st, err) in enumerate(failed_cells(missing, status, detail)):
                if i:
                    lane.progress.cell(cells[b])
                write(cells[b], base_row(task, b, st, spec=spec, device_name=name, error=err))
    if contended:
        with guard:
            again = dataclasses.replace(g, batch_sizes=tuple(contended), attempt=g.attempt + 1)
            lane.retry.append(again)
            lane.progress.total += len(contended)


COUNT_TIMEOUT_S = 3600.0  # one run's valgrind process: the import, then every CPU cell


def count_key(g: Group, batch_size: int) -> tuple[Any, ...]:
    """What a cell's work counts depend on (not its repeat, attempt or threads)."""
    return (g.model, batch_size, g.image_size, g.in_chans, g.dtype, g.config)


def group_counts(lane: Lane, g: Group) -> dict[str, dict[str, Any]]:
    """The counts of ``g``'s cells for its worker's Task, by batch size (as text)."""
    found = {str(b): lane.counts.get(count_key(g, b)) for b in g.batch_sizes}
    return {b: c for b, c in found.items() if c}


def count_work(lanes: Sequence[Lane]) -> None:
    """``--count-instructions``: before any cell is timed, count the instructions of every
    pending CPU cell of each lane in one valgrind process per lane (bench.instructions),
    with the lane's interpreter and variables; the processes of several lanes (the arms of
    an A/B run) run at once, since counts do not depend on what else runs. The counts go to
    the workers in their Task, so each row carries them."""
    from bench.instructions import CountCell, finish_counts, start_counts

    jobs = []
    for lane in lanes:
        if not lane.options.count_instructions:
            continue
        keys = [count_key(g, b) for g in lane.pending if g.device == "cpu" for b in g.batch_sizes]
        keys = [k for k in dict.fromkeys(keys) if k not in lane.counts]
        if not keys:
            continue
        cells = {CountCell(*k): k for k in keys}
        job = start_counts(cells, lane.options.python, dict(lane.options.env))
        jobs.append((lane, cells, job, time.monotonic()))
    for lane, cells, job, started in jobs:
        found = finish_counts(job, COUNT_TIMEOUT_S)
        failed, cells_s = 0, 0.0
        for cell, key in cells.items():
            count = found[cell]
            lane.counts[key] = count.columns() or {"error": count.error}
            failed += count.error is not None
            cells_s += count.wall_s or 0.0
        wall = time.monotonic() - started
        _say(lane.progress.stream, f"effbench: counted the instructions of {len(cells) - failed} "
             f"CPU cell(s) of {lane.run_id} under valgrind in {wall:.0f} s: "
             f"{wall - cells_s:.0f} s start-up and imports (once), {cells_s:.0f} s for the cells"
             + (f"; {failed} not counted (their rows say why)" if failed else ""))  # fmt: skip


def judged(lane: Lane, row: Row) -> Row:
    """``row`` with its verdict (bench.quality) against the lane's roof for its setup."""
    roof = lane.roofs.get(ceiling_key(row.device, row.dtype, row.threads))
    contention = os.environ.get(JUDGE_CONTENTION_ENV, "1") != "0"
    verdict = judge(row.to_dict(), roof, lane.options.timing.target_ci, contention=contention)
    return dataclasses.replace(row, quality=verdict.quality, quality_reason=verdict.reason)


def remeasure(
    lanes: Sequence[Lane],
    executor: Executor,
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    wait_for_quiet: Callable[[], Any] | None = None,
) -> None:
    """Measure the lanes' contended cells again, round by round (attempt 1, then 2, ...),
    one group at a time, each round after ``wait_for_quiet`` (a bounded wait for the host
    to calm down; none on a cluster) until no cell is contended or none has attempts
    left (``--remeasure``)."""
    while any(lane.retry for lane in lanes):
        todo = [(lane, g) for lane in lanes for g in lane.retry]
        for lane in lanes:
            lane.retry = []
        cells = sum(len(g.batch_sizes) for _, g in todo)
        attempts = sorted({g.attempt for _, g in todo})
        stream = lanes[0].progress.stream
        _say(stream, f"effbench: re-measuring {cells} contended cell(s) (attempt "
             f"{', '.join(map(str, attempts))}); waiting for a quiet host first")  # fmt: skip
        if wait_for_quiet is not None:
            found = wait_for_quiet()
            _say(stream, f"effbench: {found.describe()}")
        for lane, g in todo:
            run_group(lane, g, executor, spec_of, device_name_of)


def _say(stream: TextIO, text: str) -> None:
    """A notice line; a stream that cannot be written (a closed pipe) does not stop the
    sweep: the rows are the product, not the messages."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=stream, flush=True)


CANARY_KINDS = ("gemm", "triad")
CANARY_BUDGET_S = 0.5  # seconds of sampling per kind: a canary, not a new measurement


def closing_ceilings(
    lanes: Sequence[Lane], measured: dict[tuple[str, str, int], pd.DataFrame] | None = None
) -> None:
    """The canary: after the last cell, measure the GEMM and triad ceilings of every setup
    the session measured again, briefly; add them to each run's ``ceilings.parquet``
    (``phase`` end), say how far they drifted from the start, and judge the session's rows
    again against the highest compute roof now known (a roof measured at a busy start may
    have made quiet cells look ``implausible``). ``measured`` shares the measurements
    between the lanes of an A/B run."""
    measured = {} if measured is None else measured
    for lane in lanes:
        if not lane.options.ceilings or not lane.roofs:
            continue
        setups = {ceiling_key(r.device, r.dtype, r.threads) for r in lane.rows.values()}
        keys = [k for k in lane.roofs if k in setups]
        frames = []
        for key in keys:
            if key not in measured:
                measured[key] = measure_ceilings_once(
                    *key, lane.progress.stream, kinds=CANARY_KINDS,
                    budget_s=CANARY_BUDGET_S, phase="end",
                )  # fmt: skip
            frames.append(measured[key])
        frames = [f for f in frames if len(f)]
        if not frames:
            continue
        stored = read_ceilings(lane.run_dir)
        # one closing measurement per setup: this session's replaces an earlier session's
        # (each session's drift stays in the manifest)
        again = pd.concat(frames)[["device", "dtype", "threads"]].drop_duplicates()
        earlier = stored.merge(again, how="left", indicator=True)["_merge"] == "both"
        stored = stored[~(earlier.to_numpy() & (stored["phase"] == "end").to_numpy())]
        table = pd.concat([stored, *frames], ignore_index=True)
        write_table(lane.run_dir / CEILINGS, table)
        lane.drift = ceiling_drift(table)
        for line in lane.drift:
            _say(lane.progress.stream, f"effbench: ceilings drifted: {line}")
        lane.roofs = compute_roofs(table)
        for stem, row in list(lane.rows.items()):
            again = judged(lane, row)
            if (again.quality, again.quality_reason) != (row.quality, row.quality_reason):
                store_row(lane.run_dir, stem, again, extra_columns())
                lane.rows[stem] = again


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


def cell_qualities(rows: Sequence[Row]) -> dict[str, int]:
    """Cells by the quality of their best row (bench.quality.rank): what a reader keeps."""
    best: dict[RowKey, Row] = {}
    for row in rows:
        key = RowKey.of(row.to_dict())
        if key not in best or rank(row.quality) < rank(best[key].quality):
            best[key] = row
    counts: dict[str, int] = {}
    for row in best.values():
        if row.quality is not None:
            counts[row.quality] = counts.get(row.quality, 0) + 1
    return counts


def session_speed(lane: Lane) -> list[str]:
    """Per thread count, a sentence when this session's speed canaries ran, at their
    median, well below the host's usual (bench.quality.host_speed); then the session's
    median joins the host's record (bench.canaries) if it had enough CPU cells."""
    rates: dict[int, list[float]] = {}
    for row in lane.rows.values():
        if row.device == "cpu" and row.canary_macs_per_s:
            rates.setdefault(row.threads, []).append(row.canary_macs_per_s)
    said = []
    for threads, found in sorted(rates.items()):
        line = host_speed(threads, found, lane.canary.best(threads))
        if line:
            said.append(line)
        if len(found) >= MIN_CELLS:
            lane.canary.add(threads, statistics.median(found))
    return said


def close_lane(lane: Lane, argv: Sequence[str], interrupted: str | None = None) -> RunSummary:
    """Record this session in the lane's manifest (with the signal that stopped it, if
    one did), release the folder's lock and summarise the session."""
    lane.progress.finish()
    wall = time.monotonic() - lane.started
    qualities = cell_qualities(list(lane.rows.values()))
    extra: dict[str, Any] = {"cells_by_quality": qualities, "remeasured": lane.remeasured}
    speed = session_speed(lane)
    for line in speed:
        _say(lane.progress.stream, f"effbench: {line}")
    if speed:
        extra["host_speed"] = speed
    lane.canary.save()
    if lane.drift:
        extra["ceiling_drift"] = lane.drift
    try:
        _record_session(
            lane.run_dir, argv, wall, lane.written, lane.timed_s, interrupted, extra=extra
        )
    finally:
        lane.lock.release()
    total = lane.progress.total
    return RunSummary(
        lane.run_dir, total, lane.written, lane.statuses, wall, lane.timed_s,
        qualities, lane.remeasured, tuple(lane.drift),
    )  # fmt: skip


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
    wait_for_quiet: Callable[[], Any] | None = None,
) -> list[RunSummary]:
    """Measure several run folders (the variants of an A/B run) group by group in the order
    of :func:`interleave`, so that drift of the machine hits every variant alike; then the
    contended cells again (:func:`remeasure`) and the closing ceilings. Each lane's manifest
    records the wall time of the whole interleaved session."""
    try:
        for lane, g in interleave(lanes):
            run_group(lane, g, executor, spec_of, device_name_of)
        remeasure(lanes, executor, spec_of, device_name_of, wait_for_quiet)
        closing_ceilings(lanes)
    except Interrupted as e:
        for lane in lanes:
            close_lane(lane, argv, interrupted=signal.Signals(e.signum).name)
        raise
    return [close_lane(lane, argv) for lane in lanes]


def record_preflight(run_dir: Path, check: Mapping[str, Any]) -> None:
    """Add the pre-flight check of this session (bench.preflight) to the manifest's
    ``preflight`` list, before the first cell."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("preflight", []).append(
        {"at": dt.datetime.now(dt.timezone.utc).isoformat(), **check}
    )
    write_manifest(run_dir, manifest)


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
    extra: Mapping[str, Any] | None = None,
) -> None:
    manifest = read_manifest(run_dir)
    session: dict[str, Any] = {
        "argv": list(argv),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "wall_s": round(wall_s, 3),
        "rows_written": written,
        "timed_s": round(timed_s, 3),
        **(extra or {}),
    }
    if interrupted:
        session["interrupted_by"] = interrupted
    manifest.setdefault("sessions", []).append(session)
    write_manifest(run_dir, manifest)

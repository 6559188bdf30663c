"""The runner: starts a run folder, sends each group to a worker, writes rows as they come.

Durability: each row is written (atomically) the moment the worker reports it, under a
name derived from its cell, so a sweep killed at any point loses at most the cell in
flight, and ``resume`` measures exactly the cells that have no row yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench.canaries import MIN_CELLS, CanaryRecord
from bench.errors import (
    Interrupted,
    WorkerProtocolError,
)
from bench.executor import Executor, Message
from bench.keys import CellKey, RowKey
from bench.plan import Cell, Group, Options, Timing
from bench.probes.registry import extra_columns
from bench.quality import NoisyPrecision, Roof, host_speed, judge, rank, reached_ci
from bench.run_ceilings import (
    CANARY_BUDGET_S,
    CANARY_KINDS,
    ceiling_drift,
    ceiling_key,
    compute_roofs,
    gemm_ceilings,
    measure_ceilings_once,
    measure_idle_power,
    run_ceilings,
)
from bench.run_folder import record_session
from bench.schema import Row
from bench.status import CRASHED, OK
from bench.store import (
    CEILINGS,
    RunLock,
    ensure_writable,
    load_run,
    read_ceilings,
    remove_partial_writes,
    write_table,
)
from bench.store import write_row as store_row
from bench.worker import Task, base_row, failed_cells

# Set to 0 (the test suite does, as the machine is shared while it runs): contention is
# recorded and named in quality_reason, but no row is judged `contended`.
JUDGE_CONTENTION_ENV = "EFFBENCH_JUDGE_CONTENTION"


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
    noisy: NoisyPrecision | None = None  # what its noisy cells reached, for the advice

    @property
    def outside_timed_share(self) -> float:
        """Share of the sweep's wall time spent outside timed iterations (start-up, model
        build, MAC counting, warm-up, writing)."""
        return 1 - self.timed_s / self.wall_s if self.wall_s > 0 else 0.0


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
        run_ceilings(run_dir, pending, progress.stream, measured)
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
        if remeasure == 0 or values["status"] != OK or values["quality"] != "contended":
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


def group_task(lane: Lane, g: Group, traffic: bool = True) -> Task:
    """The worker's task for ``g``: the lane's options and what the lane already knows
    (MACs; with ``traffic``, the counted traffic of earlier repeats; the instruction
    counts). One place for every runner (``run_group``, the ping-pong's workers)."""
    o = lane.options
    mkey = (g.model, g.image_size, g.in_chans, o.macs_counter)
    tkey = (g.model, g.image_size, g.in_chans, g.dtype)
    known = ()
    if traffic and not o.python:  # an arm's own interpreter may be an older effbench
        known = tuple(
            (b, *lane.traffic_cache[(*tkey, b)])
            for b in g.batch_sizes
            if (*tkey, b) in lane.traffic_cache
        )
    return Task(
        run_id=lane.run_id,
        group=g,
        timing=o.timing,
        macs_counter=o.macs_counter,
        macs=lane.macs_cache.get(mkey),
        tf32=o.tf32,
        memory_cap_bytes=o.memory_cap_bytes,
        idle_power_w=lane.idle_w.get(g.device),
        ceiling_macs_per_s=lane.ceilings.get(ceiling_key(g.device, g.dtype, g.threads)),
        env=dict(o.env),
        traffic=known,
        counts=group_counts(lane, g),
    )


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

    task = group_task(lane, g)
    outcome = executor.run(task, on_message, options.cell_timeout_s)
    missing = [b for b in g.batch_sizes if b not in seen]
    status = outcome.status if outcome.status != OK else CRASHED
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


def best_rows(rows: Sequence[Row]) -> list[Row]:
    """Each cell's best row (bench.quality.rank): what a reader keeps."""
    best: dict[RowKey, Row] = {}
    for row in rows:
        key = RowKey.of(row.to_dict())
        if key not in best or rank(row.quality) < rank(best[key].quality):
            best[key] = row
    return list(best.values())


def cell_qualities(kept: Sequence[Row]) -> dict[str, int]:
    """Cells by the quality of their kept row (:func:`best_rows`)."""
    counts: dict[str, int] = {}
    for row in kept:
        if row.quality is not None:
            counts[row.quality] = counts.get(row.quality, 0) + 1
    return counts


def noisy_precision(kept: Sequence[Row], timing: Timing) -> NoisyPrecision:
    """The run's precision target and time budget, and the median CI its noisy cells' kept
    rows (:func:`best_rows`) reached: the closing line's advice."""
    cis = [reached_ci(r.to_dict()) for r in kept if r.quality == "noisy"]
    found = [c for c in cis if c is not None]
    median = statistics.median(found) if found else None
    return NoisyPrecision(timing.target_ci, timing.max_time_s, median)


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
    kept = best_rows(list(lane.rows.values()))
    qualities = cell_qualities(kept)
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
        record_session(
            lane.run_dir, argv, wall, lane.written, lane.timed_s, interrupted, extra=extra
        )
    finally:
        lane.lock.release()
    total = lane.progress.total
    return RunSummary(
        lane.run_dir, total, lane.written, lane.statuses, wall, lane.timed_s,
        qualities, lane.remeasured, tuple(lane.drift),
        noisy_precision(kept, lane.options.timing),
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


def _macs_cache(df: pd.DataFrame) -> dict[tuple[Any, ...], int]:
    """MACs already counted in this run, by (model, image size, channels, counter)."""
    df = df[df["macs"].notna()]
    return {
        (r.model, int(r.image_size), int(r.in_chans), r.macs_counter): int(r.macs)
        for r in df.itertuples()
    }

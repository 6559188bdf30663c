"""Ping-pong arms: the arms of an A/B run (`effbench run --variant ... --pingpong`) measured
in alternating short bursts, from workers that stay alive.

Why: on a shared machine the host's state changes every 0.1 s to tens of seconds (docs/
compare.md), and between fresh processes minutes apart it drifts further. With one worker
per arm kept alive, the model built and the input ready (bench.serve), the runner can give
each arm a burst of about ``--burst-time`` seconds of timed forwards in turn, A B, B A, A B,
..., so every host state of more than a burst or two hits both arms alike, and compare can
use the *ratio of adjacent bursts* (bench.compare.pairing, bench.stats.paired).

Per group (model, device, dtype, size, threads, configuration, repeat) every arm's worker
is started at once and builds its model; then per batch size each arm in turn prepares the
cell (input, compilation, memory pass, warm-up, as the ordinary worker does), and the arms
take ``bursts`` turns, the order reversed every turn; then each arm's row is written: one
ordinary row per cell and repeat (every reader reads it as before), whose
``latency_ms_samples`` holds every burst's iterations in order, ``burst_sizes`` how many
each burst had, ``burst_contended`` the contention verdict on each burst's window (the
rules of bench.quality) and ``pair_id`` the session its arms share. One row per burst would
have made every reader (the report, resume, best attempts) see bursts as repeats; list
columns keep the row what it was.

Workers: an arm without ``python=`` forks its workers from the executor's fork server
(:class:`ForkChannel`); a ``python=`` arm's interpreter starts once per run as a session
server that forks one worker per session (:class:`Sessions`, ``bench.serve.session_server``);
``--executor subprocess`` (or a checkout without session servers) starts a new interpreter
per session (:class:`ProcessChannel`).

An arm whose worker fails gets its failed rows (the one failure policy,
``bench.worker.failed_cells``); the other arms go on alone, their rows unpaired. Contended
cells are not re-measured: compare drops contended bursts pair by pair instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bench.errors import Interrupted, WorkerProtocolError
from bench.executor import STARTUP_GRACE_S, ForkServerExecutor, WorkerExit, _killpg, _worker_exit
from bench.plan import Cell, Group
from bench.probes.gpu_processes import RUNNER_PID_ENV
from bench.probes.registry import extra_columns
from bench.quality import contention_reasons
from bench.runner import (
    Lane,
    RunSummary,
    close_lane,
    closing_ceilings,
    group_task,
    interleave,
    judged,
)
from bench.schema import Row
from bench.status import CRASHED, OK, TIMEOUT
from bench.store import write_row as store_row
from bench.worker import Task, base_row, failed_cells

Message = dict[str, Any]


class Channel(Protocol):
    """A ping-pong worker in flight: requests in, answers out."""

    def send(self, msg: Message) -> None: ...

    def receive(self, timeout_s: float) -> Message | None: ...  # None: it ended

    def close(self, outcome: WorkerExit | None) -> WorkerExit: ...

    def kill(self) -> None: ...


class ForkChannel:
    """A ping-pong worker forked from the fork server (torch already imported), talking over
    a duplex pipe."""

    def __init__(self, task: Task) -> None:
        import multiprocessing as mp

        from bench.serve import fork_main

        ctx = mp.get_context("forkserver")
        # closed in close(): the worker writes to it for as long as it lives
        self._err = tempfile.NamedTemporaryFile(prefix="effbench-pingpong-", suffix=".err")  # noqa: SIM115
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=fork_main, args=(task.to_json(), child, self._err.name))
        self._proc.start()
        child.close()

    def send(self, msg: Message) -> None:
        self._conn.send(msg)

    def receive(self, timeout_s: float) -> Message | None:
        if not self._conn.poll(timeout_s):
            raise TimeoutError
        try:
            msg = self._conn.recv()
        except EOFError:
            return None
        if not isinstance(msg, dict):
            raise WorkerProtocolError(f"ping-pong worker sent {type(msg).__name__}, not a dict")
        return msg

    def kill(self) -> None:
        _killpg(self._proc.pid)

    def close(self, outcome: WorkerExit | None) -> WorkerExit:
        self._conn.close()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self.kill()
            self._proc.join()
        code = self._proc.exitcode if self._proc.exitcode is not None else -signal.SIGKILL
        with open(self._err.name, "rb") as f:
            stderr = f.read()
        self._err.close()
        return _worker_exit(outcome, code, stderr)


class _LineProcess:
    """A new interpreter running ``python -m bench.serve``, one JSON line each way; started
    in a neutral folder when it is another interpreter, so that it does not import the
    runner's checkout."""

    def __init__(self, python: str | None, env_extra: dict[str, str], threads: int) -> None:
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.update(EFFBENCH_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1", **env_extra)
        env[RUNNER_PID_ENV] = str(os.getpid())
        self._err = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [python or sys.executable, "-m", "bench.serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            cwd=tempfile.gettempdir() if python else None,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout.fileno(), selectors.EVENT_READ)
        self._buf = b""

    def send(self, msg: Message) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it ended: its answer says why
            self._proc.stdin.write((json.dumps(msg) + "\n").encode())
            self._proc.stdin.flush()

    def receive(self, timeout_s: float) -> Message | None:
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(timeout=left):
                raise TimeoutError
            chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkerProtocolError(
                f"ping-pong worker sent unreadable line {line[:200]!r}"
            ) from e
        return msg if isinstance(msg, dict) else {}

    def kill(self) -> None:
        _killpg(self._proc.pid)

    def finish(self) -> tuple[int, bytes]:
        """Close its stdin, wait for it (killed after 30 s); its exit code and stderr."""
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            self._proc.wait()
        self._sel.close()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._err.seek(0)
        stderr = self._err.read()
        self._err.close()
        return self._proc.returncode, stderr


class ProcessChannel:
    """A ping-pong worker in a new interpreter of its own (``python -m bench.serve``: with
    ``--executor subprocess``, or a ``python=`` arm whose checkout has no session server)."""

    def __init__(self, task: Task, python: str | None) -> None:
        self._proc = _LineProcess(python, task.env, task.group.threads)
        self._proc.send(json.loads(task.to_json()))

    def send(self, msg: Message) -> None:
        self._proc.send(msg)

    def receive(self, timeout_s: float) -> Message | None:
        return self._proc.receive(timeout_s)

    def kill(self) -> None:
        self._proc.kill()

    def close(self, outcome: WorkerExit | None) -> WorkerExit:
        code, stderr = self._proc.finish()
        return _worker_exit(outcome, code, stderr)


class SessionServer:
    """A ``python=`` arm's interpreter for the whole run (``bench.serve.session_server``):
    torch imported once, one forked worker per session. ``alive`` is False once it has been
    killed or has ended; ``unsupported`` when its checkout predates session servers."""

    def __init__(self, python: str, env: dict[str, str], threads: int) -> None:
        from bench.serve import SESSIONS

        self._proc = _LineProcess(python, env, threads)
        self._proc.send(SESSIONS)
        try:
            hello = self._proc.receive(STARTUP_GRACE_S)
        except TimeoutError:
            hello = None
        self.unsupported = hello != {"event": "sessions"}
        self.alive = not self.unsupported
        if self.unsupported:
            self.close()

    def send(self, msg: Message) -> None:
        self._proc.send(msg)

    def receive(self, timeout_s: float) -> Message | None:
        msg = self._proc.receive(timeout_s)
        if msg is None:
            self.alive = False
        return msg

    def kill(self) -> None:
        self._proc.kill()
        self.alive = False

    def close(self) -> None:
        """End it: its stdin closed ends its loop (killed if it lingers 30 s)."""
        self._proc.finish()
        self.alive = False


class SessionChannel:
    """One session's worker, forked by the arm's :class:`SessionServer`. A timeout kills the
    server with it (a worker killed mid-line would leave the server's stream unreadable);
    the next session starts a new server."""

    def __init__(self, server: SessionServer, task: Task) -> None:
        self._server = server
        # closed in close(): the worker writes to it for as long as it lives
        self._err = tempfile.NamedTemporaryFile(prefix="effbench-session-", suffix=".err")  # noqa: SIM115
        self._code: int | None = None
        server.send({"cmd": "session", "task": task.to_json(), "stderr": self._err.name})

    def send(self, msg: Message) -> None:
        self._server.send(msg)

    def receive(self, timeout_s: float) -> Message | None:
        msg = self._server.receive(timeout_s)
        if msg is not None and msg.get("event") == "exited":
            self._code = int(msg.get("code", 1))
            return None
        return msg

    def kill(self) -> None:
        self._server.kill()

    def close(self, outcome: WorkerExit | None) -> WorkerExit:
        deadline = time.monotonic() + 30
        while self._code is None and self._server.alive and time.monotonic() < deadline:
            try:
                if self.receive(max(0.0, deadline - time.monotonic())) is None:
                    break
            except TimeoutError:
                break
        if self._code is None:
            self._server.kill()
        code = self._code if self._code is not None else -signal.SIGKILL
        with open(self._err.name, "rb") as f:
            stderr = f.read()
        self._err.close()
        return _worker_exit(outcome, code, stderr)


class Sessions:
    """The run's session servers, one per ``python=`` arm, started when first needed and
    restarted after a kill; an arm whose checkout has none gets a new interpreter per
    session (:class:`ProcessChannel`), as before."""

    def __init__(self) -> None:
        self._servers: dict[str, SessionServer] = {}
        self._unsupported: set[str] = set()

    def channel(self, arm: str, task: Task, python: str) -> Channel:
        """A worker for ``task`` from arm ``arm``'s server (each arm has its own: two arms
        of one interpreter must not share one)."""
        if python in self._unsupported:
            return ProcessChannel(task, python)
        server = self._servers.get(arm)
        if server is not None and not server.alive:
            server.close()
            server = None
        if server is None:
            server = SessionServer(python, task.env, task.group.threads)
            if server.unsupported:
                self._unsupported.add(python)
                return ProcessChannel(task, python)
            self._servers[arm] = server
        return SessionChannel(server, task)

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


@dataclass
class _Arm:
    """One arm's worker for the group in service, and what it has reported."""

    lane: Lane
    group: Group
    task: Task
    channel: Channel | None = None
    seen: set[int] = field(default_factory=set)
    ended: bool = False  # the worker failed or ended: no more requests
    outcome: WorkerExit | None = None  # a timeout the runner decided; else from the exit code
    contended: list[bool] = field(default_factory=list)  # the current cell's bursts

    @property
    def live(self) -> bool:
        return self.channel is not None and not self.ended


def pingpong_task(lane: Lane, g: Group) -> Task:
    """The task of ``g``'s ping-pong worker: ``bench.runner.group_task``'s, without the
    traffic of earlier repeats (each arm counts its own)."""
    return group_task(lane, g, traffic=False)


def shared_cpus(groups: Sequence[Group], allowed: Sequence[int]) -> tuple[int, ...]:
    """The cores every arm of a step is pinned to, the same for all: the last ``threads`` of
    the runner's ``allowed`` cores; () when the arms need them all.

    Why: one core of a virtual machine can run slower than another for minutes (its host
    thread shares a physical core with someone else's), and the scheduler keeps each worker
    on its last core. Two unpinned A/A workers of tests/test_gate_recipe.py differed by 30%
    in every burst pair; pinned to one core, adjacent bursts agree (docs/compare.md)."""
    threads = max((g.threads for g in groups), default=len(allowed))
    if threads >= len(allowed):
        return ()
    return tuple(allowed[-threads:])


def steps(lanes: Sequence[Lane]) -> list[list[tuple[Lane, Group]]]:
    """The lanes' pending groups, those of one cell identity (everything but the batch
    sizes) together, in the interleaved order."""
    out: dict[tuple[Any, ...], list[tuple[Lane, Group]]] = {}
    for lane, g in interleave(lanes):
        key = (g.model, g.device, g.dtype, g.image_size, g.in_chans, g.threads, g.repeat,
               g.config, g.attempt)  # fmt: skip
        out.setdefault(key, []).append((lane, g))
    return list(out.values())


def run_pingpong(
    lanes: Sequence[Lane],
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    argv: Sequence[str] = (),
    subprocess_workers: bool = False,
) -> list[RunSummary]:
    """Measure the lanes (the arms) group by group in ping-pong (see the module docstring),
    then the closing ceilings; each lane's manifest records the session."""
    if not subprocess_workers and any(lane.options.python is None for lane in lanes):
        ForkServerExecutor().prepare()  # its signal dispositions: main thread only
    sessions = Sessions()
    try:
        allowed = sorted(os.sched_getaffinity(0))
        for step in steps(lanes):
            cpus = shared_cpus([g for _lane, g in step], allowed)
            arms = [
                _Arm(lane, g, pingpong_task(lane, replace(g, cpus=g.cpus or cpus)))
                for lane, g in step
            ]
            _run_step(arms, spec_of, device_name_of, subprocess_workers, sessions)
        sessions.close()
        closing_ceilings(lanes)
    except Interrupted as e:
        for lane in lanes:
            close_lane(lane, argv, interrupted=signal.Signals(e.signum).name)
        raise
    finally:
        sessions.close()
    return [close_lane(lane, argv) for lane in lanes]


def _run_step(
    arms: list[_Arm],
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    subprocess_workers: bool,
    sessions: Sessions,
) -> None:
    """One group in every arm: start the workers (a ``python=`` arm's forked by its session
    server), then each batch size in ping-pong."""
    try:
        for arm in arms:  # at once: building the models is not timed
            python = arm.lane.options.python
            if python:
                arm.channel = sessions.channel(str(arm.lane.run_dir), arm.task, python)
            elif subprocess_workers:
                arm.channel = ProcessChannel(arm.task, None)
            else:
                arm.channel = ForkChannel(arm.task)
        for arm in arms:
            _expect(arm, "ready", arm.lane.options.cell_timeout_s + STARTUP_GRACE_S)
        for b in sorted({b for arm in arms for b in arm.group.batch_sizes}):
            _pingpong_cell([a for a in arms if b in a.group.batch_sizes], b)
        for arm in arms:
            if arm.live:
                assert arm.channel is not None
                arm.channel.send({"cmd": "quit"})
                _expect(arm, "done", arm.lane.options.cell_timeout_s)
    except BaseException:  # a signal, or a protocol error: no worker outlives it
        for arm in arms:
            if arm.channel is not None:
                arm.channel.kill()
        raise
    finally:
        for arm in arms:
            if arm.channel is not None:
                arm.outcome = arm.channel.close(arm.outcome)
    for arm in arms:
        _write_missing(arm, spec_of, device_name_of)


def _pingpong_cell(arms: list[_Arm], b: int) -> None:
    """Batch size ``b`` in every live arm: prepare each in turn, alternate the bursts,
    write each arm's row with its bursts' contention verdicts and the shared pair id."""
    pair_id = uuid.uuid4().hex
    live = [a for a in arms if a.live]
    for arm in live:
        cell = _cell(arm, b)
        arm.lane.progress.cell(cell)
        arm.contended = []
        assert arm.channel is not None
        arm.channel.send({"cmd": "cell", "batch_size": b})
        _expect(arm, "warm", arm.lane.options.cell_timeout_s)
    live = [a for a in live if a.live]
    options = live[0].lane.options if live else None
    turns = options.bursts if options else 0
    for i in range(turns):
        for arm in live if i % 2 == 0 else live[::-1]:
            if not arm.live:
                continue
            assert arm.channel is not None
            arm.channel.send({"cmd": "burst", "seconds": arm.lane.options.burst_s})
            msg = _expect(arm, "burst", arm.lane.options.cell_timeout_s)
            if msg is not None:
                evidence = {**msg.get("evidence", {}), "device": arm.group.device}
                arm.contended.append(bool(contention_reasons(evidence)))
    paired = sum(a.live for a in live) > 1
    for arm in live:
        if not arm.live:
            continue
        assert arm.channel is not None
        arm.channel.send({"cmd": "row"})
        msg = _expect(arm, "row", arm.lane.options.cell_timeout_s)
        if msg is not None:
            row = replace(
                Row.from_dict(msg["row"]),
                pair_id=pair_id if paired else None,
                burst_contended=tuple(arm.contended),
            )
            _write(arm, row)


def _cell(arm: _Arm, b: int) -> Cell:
    return next(c for c in arm.group.cells() if c.batch_size == b)


def _expect(arm: _Arm, event: str, timeout_s: float) -> Message | None:
    """The arm's next answer if it is ``event``; else the worker failed: its failed rows
    are written (or its exit recorded) and None is returned."""
    assert arm.channel is not None
    try:
        msg = arm.channel.receive(timeout_s)
    except TimeoutError:
        arm.channel.kill()
        arm.ended = True
        arm.outcome = WorkerExit(TIMEOUT, f"cell exceeded --cell-timeout {timeout_s:g} s")
        return None
    if msg is not None and msg.get("event") == event:
        return msg
    while msg is not None and msg.get("event") == "row":  # the worker's failed rows
        _write(arm, Row.from_dict(msg["row"]))
        try:
            msg = arm.channel.receive(timeout_s)
        except TimeoutError:
            break
    arm.ended = True  # its exit code says why (bench.executor._worker_exit)
    if msg is not None and msg.get("event") not in ("done", None):
        arm.channel.kill()
        raise WorkerProtocolError(f"ping-pong worker answered {msg!r}, expected {event!r}")
    return None


def _write(arm: _Arm, row: Row) -> None:
    """Judge and write one row of ``arm`` (as ``bench.runner.run_group`` writes rows)."""
    from bench.keys import RowKey

    lane, g = arm.lane, arm.group
    cells = {c.batch_size: c for c in g.cells()}
    cell = cells.get(row.batch_size)
    if cell is None or RowKey.of(row.to_dict()) != cell.key:
        raise WorkerProtocolError(
            f"ping-pong worker reported a row for {RowKey.of(row.to_dict())}, not for one of "
            f"{[c.key for c in cells.values()]}"
        )
    # the attempt, the arm and the pinning (an older checkout's worker has no column for
    # it) are the runner's to fill, never the worker's
    row = replace(row, attempt=g.attempt, variant=lane.options.variant, cpus=arm.task.group.cpus)
    row = judged(lane, row)
    stem = cell.key.part_stem(g.attempt)
    store_row(lane.run_dir, stem, row, extra_columns())
    lane.rows[stem] = row
    lane.written += 1
    lane.timed_s += row.timed_s or 0.0
    lane.progress.done += 1
    lane.statuses[row.status] = lane.statuses.get(row.status, 0) + 1
    arm.seen.add(row.batch_size)


def _write_missing(
    arm: _Arm, spec_of: Callable[[str], Any], device_name_of: Callable[[str], str]
) -> None:
    """Rows for the cells of ``arm`` its worker never reported (it crashed or overran)."""
    missing = [b for b in arm.group.batch_sizes if b not in arm.seen]
    if not missing:
        return
    outcome = arm.outcome or WorkerExit(CRASHED, "")
    status = outcome.status if outcome.status != OK else CRASHED
    detail = outcome.detail or "worker ended without reporting this cell"
    spec, name = spec_of(arm.group.model), device_name_of(arm.group.device)
    for b, st, err in failed_cells(missing, status, detail):
        _write(arm, base_row(arm.task, b, st, spec=spec, device_name=name, error=err))

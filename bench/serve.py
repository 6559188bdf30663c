"""The ping-pong worker: a worker that keeps its model built and its input ready and times
short bursts on request, so that the runner can alternate bursts between the arms of an A/B
run (`effbench run --variant ... --pingpong`, bench.pingpong).

One process per arm and group (model, device, dtype, size, threads, configuration,
repeat). It reads the task, builds the model once (as ``bench.worker`` does) and answers
requests, one message each way (JSON objects: over the fork server's pipe, or one line each
on stdin/stdout for ``python -m bench.serve``, the worker of a ``python=`` arm):

    runner -> worker                        worker -> runner
    (the task)                              {"event": "ready"}  model built
    {"cmd": "cell", "batch_size": B}        {"event": "warm", "batch_size": B}  input made,
                                            compiled if asked, memory pass, warm-up done
    {"cmd": "burst", "seconds": S}          {"event": "burst", "samples_ms": [...],
                                             "evidence": {contention columns of the burst}}
    {"cmd": "row"}                          {"event": "row", "row": {...}}  every burst's
                                            samples pooled, in order (``burst_sizes``)
    {"cmd": "quit"}                         {"event": "done"}

A cell that cannot be prepared (out of memory, an error) is answered with its failed rows
(``bench.worker.failed_cells``: this batch size, then the larger ones ``skipped``) and
``{"event": "done"}``, and the worker ends. Of the measurements (``bench.probes.base``),
the contention window runs once per burst and the latency's over the pooled samples; the
other window and before-window measurements (the canary, power, plugins) need windows of
their own and are not run (their note columns say so); memory's pass runs before the bursts
and the other after-window ones (the output check, the roofline) when the row is asked for.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from bench.probes.base import Cell, Phase, short_error
from bench.sampler import settle_heap
from bench.status import ERROR, OK, OOM
from bench.worker import (
    Setup,
    Task,
    add_counts,
    after_window,
    base_row,
    cell_forward,
    enter_forked_child,
    failed_cells,
    guarded,
    import_network,
    is_oom,
    now_iso,
    prepare,
    subprocess_emitter,
)

Send = Callable[[dict[str, Any]], None]
Receive = Callable[[], dict[str, Any] | None]  # None: the runner has gone
NOT_IN_PINGPONG = "not measured in ping-pong mode (its bursts are too short for this probe)"


@dataclass
class _Cell:
    """One batch size in service: its forward and every burst timed so far."""

    batch_size: int
    forward: Callable[[], Any]
    cell: Cell  # as the measurements' hooks see it
    started: str
    t0: float
    columns: dict[str, Any]  # memory pass, compile figures
    samples: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    evidence: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (wall, cols)


def serve(task: Task, send: Send, receive: Receive) -> None:
    """Answer the runner's requests for ``task.group`` (see the module docstring)."""
    os.environ.update(task.env)
    from bench.worker import pin_to_cpus

    pin_to_cpus(task.group.cpus)
    import torch

    from bench.devices import device_name, torch_dtype
    from models import get_spec

    g = task.group
    spec = get_spec(g.model)
    cuda = g.device.startswith("cuda")
    row = functools.partial(
        base_row,
        task,
        spec=spec,
        device_name=device_name(g.device),
        torch_version=torch.__version__,
        tf32=task.tf32 if cuda else None,
        cudnn_benchmark=True if cuda else None,
    )
    remaining = list(g.batch_sizes)

    def fail(status: str, detail: str) -> None:
        for b, st, err in failed_cells(remaining, status, detail):
            send({"event": "row", "row": row(b, st, error=err).to_dict()})
        send({"event": "done"})

    try:
        setup = prepare(task, spec, torch, torch_dtype(g.dtype))
    except Exception as e:
        fail(OOM if is_oom(e) else ERROR, f"model build failed: {short_error(e)}")
        return
    send({"event": "ready"})
    gen = torch.Generator().manual_seed(0)
    cell: _Cell | None = None
    try:
        while (msg := receive()) is not None:
            cmd = msg.get("cmd")
            if cmd == "quit":
                break
            try:
                if cmd == "cell":
                    b = int(msg["batch_size"])
                    while remaining and remaining[0] < b:  # the runner skipped a batch size
                        remaining.pop(0)
                    cell = _prepare_cell(task, setup, b, gen)
                    send({"event": "warm", "batch_size": b})
                elif cmd == "burst" and cell is not None:
                    send(_burst(setup, cell, float(msg["seconds"])))
                elif cmd == "row" and cell is not None:
                    columns = _finish(task, setup, cell)
                    send({"event": "row", "row": row(cell.batch_size, OK, **columns).to_dict()})
                    remaining.remove(cell.batch_size)
                    cell = None
                else:
                    raise ValueError(f"unexpected request {msg!r}")
            except Exception as e:
                if cuda:
                    torch.cuda.empty_cache()
                if not is_oom(e):
                    traceback.print_exc(file=sys.stderr)
                status = OOM if is_oom(e) else ERROR
                why = short_error(e)
                fail(status, f"out of memory: {why}" if status == OOM else why)
                return
        send({"event": "done"})
    finally:
        setup.close()


def _prepare_cell(task: Task, setup: Setup, b: int, gen: Any) -> _Cell:
    """Input, compilation (if the configuration asks), memory pass and warm-up of batch
    size ``b``: everything ``bench.worker`` does before its timed loop."""
    import torch

    from bench.probes.memory import MemoryPass

    g, t, cfg = task.group, task.timing, setup.config
    started, t0 = now_iso(), time.perf_counter()
    x_f32 = torch.randn(b, g.in_chans, g.image_size, g.image_size, generator=gen)
    for m in setup.measurements:
        m.start_cell()
    with torch.inference_mode():
        x, forward, columns = cell_forward(task, setup, x_f32)
        cell = setup.cell(x_f32, x, forward)
        if not cfg.compiled:
            forward()
        memory = setup.find(MemoryPass)
        if memory is not None:  # before the bursts, so the arms' turns are not held up by it
            columns.update(guarded(memory, lambda: memory.measure_cell(cell, "before the bursts")))
        begun, done_iters = time.perf_counter(), 0
        while done_iters < t.warmup_iters or time.perf_counter() - begun < t.warmup_time_s:
            forward()
            setup.sync()
            done_iters += 1
    return _Cell(b, forward, cell, started, t0, columns)


def _contention(setup: Setup) -> Any:
    """The setup's contention probe (bench.probes.contention), or None."""
    from bench.probes.contention import ContentionWindow

    return setup.find(ContentionWindow)


def _burst(setup: Setup, cell: _Cell, seconds: float) -> dict[str, Any]:
    """Time forwards for ``seconds`` (at least one) inside a contention window."""
    import torch

    from bench.probes.base import Window

    probe = _contention(setup)
    samples: list[float] = []
    with torch.inference_mode():
        settle_heap()
        if probe is not None:
            probe.begin()
        setup.sync()
        begun = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            cell.forward()
            setup.sync()
            t1 = time.perf_counter()
            samples.append((t1 - t0) * 1e3)
            if t1 - begun >= seconds:
                break
        wall = time.perf_counter() - begun
        evidence: dict[str, Any] = {}
        if probe is not None:
            try:
                evidence = dict(probe.end(Window(cell.batch_size, tuple(samples), wall, True)))
            except Exception as e:
                evidence = {"contention_source": f"failed: {short_error(e)}"}
    cell.samples += samples
    cell.sizes.append(len(samples))
    cell.evidence.append((wall, evidence))
    return {"event": "burst", "samples_ms": samples, "evidence": evidence}


SHARES = ("cpu_share", "run_wait_share", "others_cpu_cores", "steal_share")


def pooled_evidence(bursts: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """The contention columns of a row from its bursts' (wall seconds, columns): shares and
    cores weighted by each burst's wall time, switches summed, the runnable tasks at the
    first burst's start and the last one's end, the most GPU processes seen."""
    known = [(w, e) for w, e in bursts if e and w > 0]
    if not known:
        return {}
    out: dict[str, Any] = {}
    for name in SHARES:
        pairs = [(w, e[name]) for w, e in known if e.get(name) is not None]
        if pairs:
            out[name] = sum(w * v for w, v in pairs) / sum(w for w, _ in pairs)
    switches = [e["involuntary_switches"] for _, e in known if e.get("involuntary_switches")]
    out["involuntary_switches"] = int(sum(switches))
    out["host_runnable_begin"] = known[0][1].get("host_runnable_begin")
    out["host_runnable_end"] = known[-1][1].get("host_runnable_end")
    gpus = [e["gpu_other_processes"] for _, e in known if e.get("gpu_other_processes") is not None]
    out["gpu_other_processes"] = max(gpus) if gpus else None
    source = known[0][1].get("contention_source")
    out["contention_source"] = f"{source}; pooled over {len(known)} bursts" if source else None
    return out


def _finish(task: Task, setup: Setup, cell: _Cell) -> dict[str, Any]:
    """The row's columns: every burst's samples pooled (in order), the pooled contention
    evidence, the ``AFTER_WINDOW`` measurements but memory's (it ran before the bursts:
    the output check, the roofline) and the counts from before the run."""
    from bench.probes.base import Window
    from bench.probes.contention import ContentionWindow
    from bench.probes.memory import MemoryPass
    from bench.probes.registry import in_phase
    from bench.probes.timing import LatencyWindow
    from bench.stats import ci_relative_halfwidth

    samples = tuple(cell.samples)
    timed = sum(samples) / 1e3
    converged = ci_relative_halfwidth(samples) <= task.timing.target_ci
    columns = dict(cell.columns)
    columns.update(LatencyWindow().end(Window(cell.batch_size, samples, timed, converged)))
    columns.update(pooled_evidence(cell.evidence))
    memory = setup.find(MemoryPass)
    for m in in_phase(setup.measurements, Phase.WINDOW):
        if not isinstance(m, ContentionWindow | LatencyWindow):
            columns[m.note_column] = NOT_IN_PINGPONG
    for m in in_phase(setup.measurements, Phase.BEFORE_WINDOW):
        if m is not memory:
            columns[m.note_column] = NOT_IN_PINGPONG
    after_window(setup, cell.cell, columns, skip=[m for m in (memory,) if m is not None])
    columns.update(setup.fields, timestamp=cell.started, burst_sizes=tuple(cell.sizes))
    columns["cell_wall_s"] = time.perf_counter() - cell.t0
    add_counts(columns, task.counts.get(str(cell.batch_size), {}))
    return columns


def fork_main(task_json: str, conn: Any, stderr_path: str) -> None:
    """Entry point of a ping-pong worker forked from the executor's fork server: requests
    and answers over the duplex pipe ``conn``; prints go to ``stderr_path``."""
    task = Task.from_json(task_json)
    enter_forked_child(stderr_path, threads=task.group.threads)

    def receive() -> dict[str, Any] | None:
        try:
            return conn.recv()
        except EOFError:
            return None

    try:
        serve(task, conn.send, receive)
    finally:
        conn.close()


def main(stdin: IO[str] | None = None) -> None:
    """``python -m bench.serve``: the task on the first line of stdin, then one request a
    line; answers one JSON line each on the original stdout. A first line of
    :data:`SESSIONS` instead makes it a session server (:func:`session_server`)."""
    send = subprocess_emitter()
    source = stdin or sys.stdin
    first = source.readline()

    def receive() -> dict[str, Any] | None:
        line = source.readline()
        return json.loads(line) if line.strip() else None

    if first.strip() and json.loads(first) == SESSIONS:
        session_server(send, receive)
    else:
        serve(Task.from_json(first), send, receive)


SESSIONS = {"cmd": "sessions"}


def session_server(send: Send, receive: Receive) -> None:
    """A ``python=`` arm's interpreter for the whole run: it imports torch and the registry
    once (``bench.worker_preload``, as the fork server does; torchvision's zoo at the first
    session whose network is in it, before the fork, so later sessions inherit it), answers
    ``{"event": "sessions"}``, then per ``{"cmd": "session", "task": TASK_JSON, "stderr":
    PATH}`` forks one worker that serves that task over the same stdin/stdout (its prints to
    PATH) and, once it has ended, answers ``{"event": "exited", "code": N}`` (N as
    ``subprocess`` gives it: negative for a signal). A session costs a fork, not a new
    interpreter (3-4 s with torch here), and forked workers carry session offsets of their
    own (docs/compare.md, "Forked sessions"). Ends when stdin does."""
    import bench.worker_preload  # noqa: F401

    send({"event": "sessions"})
    while (msg := receive()) is not None:
        if msg.get("cmd") != "session":
            raise ValueError(f"session server: unexpected request {msg!r}")
        task = Task.from_json(msg["task"])
        import_network(task.group.model)
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the forked worker; its parent reports its exit)
            _session_worker(task, str(msg["stderr"]), send, receive)
        _, status = os.waitpid(pid, 0)
        send({"event": "exited", "code": os.waitstatus_to_exitcode(status)})


def _session_worker(task: Task, stderr_path: str, send: Send, receive: Receive) -> None:
    """The forked worker of one session: its own process group (a timeout kills it and its
    helpers), killed with the server, prints to ``stderr_path``; never returns."""
    code = 0
    try:
        enter_forked_child(stderr_path, threads=task.group.threads)
        serve(task, send, receive)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()

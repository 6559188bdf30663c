"""The worker: a fresh process that measures one group of cells.

It reads a task (JSON) on stdin, builds the model once, walks the batch sizes upward and
writes one JSON message per line to its protocol stream (the original stdout; anything
else the process prints goes to stderr):

    {"event": "start", "batch_size": B}      a cell is in flight
    {"event": "row", "row": {...}}           a finished cell (see bench.schema.Row)
    {"event": "done"}

An out-of-memory error at a batch size gives an ``oom`` row and ``skipped`` rows for the
larger batch sizes. Run as ``python -m bench.worker`` (messages on stdout), or forked
from the executor's fork server through :func:`fork_main` (messages over a pipe).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import json
import os
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, TypeVar

from bench.plan import Group, Timing
from bench.probes.base import Cell, Measurement, Phase, short_error
from bench.sampler import settle_heap
from bench.schema import Row
from bench.status import ERROR, OK, OOM, SKIPPED

# A folder of this worker's own (bench.executor.worker_scratch), removed by the executor
# when the worker has ended, however it ended; the system temp folder when unset.
SCRATCH_ENV = "EFFBENCH_SCRATCH"


@dataclass(frozen=True, slots=True)
class Task:
    """What the runner asks a worker to do."""

    run_id: str
    group: Group
    timing: Timing
    macs_counter: str = "torch"
    macs: int | None = None
    tf32: bool = False
    memory_cap_bytes: int | None = None
    idle_power_w: float | None = None  # measured by the runner at the start of the run
    ceiling_macs_per_s: float | None = None  # the run's measured GEMM ceiling (bench.ceilings)
    env: dict[str, str] = field(default_factory=dict)  # the run's --variant variables
    # (batch size, bytes accessed, activation peak) the run already counted for this model,
    # image size and dtype (another repeat or configuration): not counted again
    traffic: tuple[tuple[int, int, int], ...] = ()
    # batch size (as text) -> columns counted before the run (bench.instructions)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    # Fields a worker of an older checkout (a `python=` arm's base) does not know: left out
    # of the JSON while empty, so such a worker still reads every task that does not use them.
    NEWER: ClassVar[tuple[str, ...]] = ("traffic", "counts")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        # the attempt and the arm of a row are the runner's to fill, never the worker's
        del d["group"]["attempt"]
        for name in self.NEWER:
            if not d[name]:
                del d[name]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Task:
        d = json.loads(text)
        g = d.pop("group")
        g["batch_sizes"] = tuple(g["batch_sizes"])
        g["cpus"] = tuple(g.get("cpus", ()))
        d["traffic"] = tuple(tuple(t) for t in d.get("traffic", ()))
        return cls(group=Group(**g), timing=Timing(**d.pop("timing")), **d)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def base_row(
    task: Task, batch_size: int, status: str, *, spec: Any, device_name: str, **fields: Any
) -> Row:
    """A row for ``batch_size`` of ``task`` with identity and reference columns filled."""
    g = task.group
    ref = getattr(spec, "reference", None)
    values: dict[str, Any] = dict(
        run_id=task.run_id,
        repeat=g.repeat,
        timestamp=now_iso(),
        model=g.model,
        family=getattr(spec, "family", "unknown"),
        batch_size=batch_size,
        image_size=g.image_size,
        in_chans=g.in_chans,
        device=g.device,
        device_name=device_name,
        dtype=g.dtype,
        threads=g.threads,
        cpus=tuple(g.cpus),
        config=g.config,
        hostname=socket.gethostname(),
        status=status,
        top1=getattr(ref, "top1", None),
        top5=getattr(ref, "top5", None),
        accuracy_source=getattr(ref, "source", None) if ref and ref.top1 is not None else None,
        params_ref=getattr(ref, "params", None),
        gmacs_ref=getattr(ref, "gmacs", None),
    )
    values.update(fields)
    return Row.from_dict(values)


def is_oom(exc: BaseException) -> bool:
    """Out of memory on any device: torch.OutOfMemoryError, MemoryError or the CPU
    allocator's 'can't allocate memory'."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def pin_to_cpus(cpus: Sequence[int]) -> None:
    """Pin every thread of this process (and so every thread it starts later) to ``cpus``,
    the worker's share of the cores under ``--parallel``; nothing when ``cpus`` is empty."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


def _apply_memory_cap(cap_bytes: int) -> None:
    """Limit this process's address space to its current size plus ``cap_bytes``."""
    vm_kib = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                vm_kib = int(line.split()[1])
    limit = vm_kib * 1024 + cap_bytes
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def failed_cells(
    batch_sizes: Sequence[int], status: str, detail: str
) -> list[tuple[int, str, str]]:
    """The one failure policy: the first remaining cell gets ``status`` and ``detail``; the
    larger batch sizes of the group become ``skipped`` (they would fail the same way, and
    measuring them could take down the machine). Used by the worker and by the runner."""
    return [
        (b, status, detail)
        if i == 0
        else (b, SKIPPED, f"skipped: {status} at batch {batch_sizes[0]}")
        for i, b in enumerate(batch_sizes)
    ]


M = TypeVar("M", bound=Measurement)


@dataclass
class Setup:
    """What a worker prepares once per group: the model, its counts, its measurements."""

    model: Any  # placed for the configuration, not compiled (compilation is per cell)
    fields: dict[str, Any]  # the COUNT columns, shared by every ok row of the group
    measurements: list[Measurement]  # opened, in registry order
    sync: Callable[[], None]
    config: Any  # bench.configs.Config
    dtype: Any  # torch dtype of the row
    reference: Any  # bench.config_apply.OutputReference, or None where this is the reference

    def find(self, kind: type[M]) -> M | None:
        """The opened measurement of class ``kind``, or None."""
        return next((m for m in self.measurements if isinstance(m, kind)), None)

    def cell(self, x_f32: Any, x: Any, forward: Callable[[], Any]) -> Cell:
        """A cell of this group as the measurements' hooks see it."""
        ref = self.reference.output if self.reference is not None else None
        return Cell(x.shape[0], x_f32, x, forward, self.fields, ref)

    def close(self) -> None:
        for m in self.measurements:
            m.close()
        if self.reference is not None:
            self.reference.close()


def run_task(task: Task, emit: Callable[[dict[str, Any]], None]) -> None:
    """Measure every cell of ``task.group``, emitting messages as they happen: build the
    model once and count it; per batch size walk the measurements' phases (warm up, open
    every window, time, close the windows, the passes after them) and merge their columns
    into one row."""
    os.environ.update(task.env)  # before anything reads them (the model's builder, say)
    pin_to_cpus(task.group.cpus)  # before torch starts its thread pools
    import torch

    from bench.devices import device_name, torch_dtype
    from models import get_spec

    g = task.group
    spec = get_spec(g.model)
    cuda = g.device.startswith("cuda")
    settings = dict(
        torch_version=torch.__version__,
        tf32=task.tf32 if cuda else None,
        cudnn_benchmark=True if cuda else None,
    )
    row = functools.partial(
        base_row, task, spec=spec, device_name=device_name(g.device), **settings
    )
    remaining = list(g.batch_sizes)

    def fail(status: str, detail: str, in_flight: bool) -> None:
        for i, (b, st, err) in enumerate(failed_cells(remaining, status, detail)):
            if i or not in_flight:
                emit({"event": "start", "batch_size": b})
            emit({"event": "row", "row": row(b, st, error=err).to_dict()})

    dtype = torch_dtype(g.dtype)
    try:
        setup = prepare(task, spec, torch, dtype)
    except Exception as e:
        fail(OOM if is_oom(e) else ERROR, f"model build failed: {short_error(e)}", False)
        return
    gen = torch.Generator().manual_seed(0)
    try:
        while remaining:
            b = remaining[0]
            emit({"event": "start", "batch_size": b})
            started, t0 = now_iso(), time.perf_counter()
            try:
                x = torch.randn(b, g.in_chans, g.image_size, g.image_size, generator=gen)
                columns = measure_cell(task, setup, x)
            except Exception as e:
                if cuda:
                    torch.cuda.empty_cache()
                if is_oom(e):
                    fail(OOM, f"out of memory at batch {b}: {short_error(e)}", True)
                else:
                    traceback.print_exc(file=sys.stderr)
                    fail(ERROR, short_error(e), True)
                return
            columns.update(setup.fields, timestamp=started, cell_wall_s=time.perf_counter() - t0)
            add_counts(columns, task.counts.get(str(b), {}))
            emit({"event": "row", "row": row(b, OK, **columns).to_dict()})
            remaining.pop(0)
    finally:
        setup.close()


def add_counts(columns: dict[str, Any], counts: dict[str, Any]) -> None:
    """The cell's counts from before the run (``--count-instructions``); why it has none
    goes to ``error`` unless that already holds a note."""
    for name, value in counts.items():
        if name == "error":
            columns["error"] = columns.get("error") or value
        else:
            columns[name] = value


def prepare(task: Task, spec: Any, torch: Any, dtype: Any) -> Setup:
    """Set the allocator and the runtime up, open every measurement (memory's baselines are
    taken here, before the model exists), build the model and run the ``COUNT`` phase.
    Raises what the build raises."""
    from bench.allocators import apply_malloc
    from bench.config_apply import OutputReference, place_model
    from bench.configs import parse_config
    from bench.devices import synchronizer, use_device
    from bench.probes.base import ProbeContext
    from bench.probes.macs import warm_counter
    from bench.probes.registry import in_phase, registered
    from bench.stats.summary import ci_relative_halfwidth

    g = task.group
    config = parse_config(g.config)
    apply_malloc(config.malloc)  # nothing unless the configuration names an allocator
    torch.set_num_threads(g.threads)
    use_device(g.device, task.tf32)
    _warm_runtime(torch, g.device, dtype)
    warm_counter(task.macs_counter)  # its imports before the baselines: not the model's
    # the sampler's stop check runs between timed calls; its first call imports (numpy.ma:
    # 7-9 ms, measured in every worker's first window) happen here instead
    ci_relative_halfwidth([1.0, 1.1, 0.9] * 4)
    sync = synchronizer(g.device)
    ctx = ProbeContext(
        g.device,
        sync,
        task.idle_power_w,
        g.threads,
        group=g,
        builder=spec.builder,
        macs_formulas=spec.macs_formulas,
        macs_counter=task.macs_counter,
        macs=task.macs,
        ceiling_macs_per_s=task.ceiling_macs_per_s,
        traffic=task.traffic,
    )
    measurements = [cls.open(ctx) for cls in registered()]
    if task.memory_cap_bytes and not g.device.startswith("cuda"):
        _apply_memory_cap(task.memory_cap_bytes)
    model = spec.build()
    reference = None
    if not (config.is_reference and g.dtype == "float32"):
        reference = OutputReference(spec.build, model, g.device, os.environ.get(SCRATCH_ENV))
    model = place_model(model, config, g.device, dtype)
    fields: dict[str, Any] = {}
    for m in in_phase(measurements, Phase.COUNT):
        fields.update(guarded(m, functools.partial(m.count, model)))
    return Setup(model, fields, measurements, sync, config, dtype, reference)


def guarded(m: Measurement, hook: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """The columns ``hook`` (one of ``m``'s) returns; if it raises, ``failed: <error>`` in
    ``m``'s note column and the row keeps the rest, unless the error is out of memory or
    ``m`` is required: then it propagates and the cell fails."""
    try:
        return dict(hook())
    except Exception as e:
        if m.required or is_oom(e):
            raise
        traceback.print_exc(file=sys.stderr)
        return {m.note_column: f"failed: {short_error(e)}"}


def after_window(
    setup: Setup, cell: Cell, columns: dict[str, Any], skip: Sequence[Measurement] = ()
) -> None:
    """The ``AFTER_WINDOW`` phase, in registry order, into ``columns`` (each hook reads the
    columns measured before it); ``skip``: measurements that already ran."""
    from bench.probes.registry import in_phase

    for m in in_phase(setup.measurements, Phase.AFTER_WINDOW):
        if m not in skip:
            columns.update(guarded(m, functools.partial(m.after_window, cell, columns)))


def cell_forward(task: Task, setup: Setup, x_f32: Any) -> tuple[Any, Any, dict[str, Any]]:
    """A cell's input (``x_f32`` placed for the configuration), its forward, compiled where
    the configuration says so, and the compile columns: what every worker (this one and
    ``bench.serve``'s) does before warming up. Call under ``torch.inference_mode``."""
    from bench.config_apply import compile_for_cell, forward_of, make_input

    g, cfg = task.group, setup.config
    x = make_input(x_f32, cfg, g.device, setup.dtype)
    columns: dict[str, Any] = {}
    forward = forward_of(setup.model, cfg, g.device, setup.dtype, x)
    if cfg.compiled:
        done = compile_for_cell(
            setup.model,
            cfg,
            lambda m: forward_of(m, cfg, g.device, setup.dtype, x),
            setup.sync,
        )
        forward = done.forward
        columns.update(compile_s=done.compile_s, graph_breaks=done.graph_breaks)
    return x, forward, columns


def measure_cell(task: Task, setup: Setup, x_f32: Any) -> dict[str, Any]:
    """Compile if the configuration says so, warm up (``BEFORE_WINDOW`` measurements stand
    in for the warm-up's first calls, their time taken off it), time one batch with every
    ``WINDOW`` measurement open over the timed loop (closed in reverse order), then run the
    ``AFTER_WINDOW`` ones. A measurement that fails records why in its note column and
    leaves the rest of the row (``guarded``)."""
    import torch

    from bench.config_apply import compile_events
    from bench.probes.base import Window
    from bench.probes.registry import in_phase
    from bench.probes.timing import measure_latency

    t, cfg = task.timing, setup.config
    for m in setup.measurements:
        m.start_cell()
    with torch.inference_mode():
        x, forward, columns = cell_forward(task, setup, x_f32)
        cell = setup.cell(x_f32, x, forward)
        events = compile_events() if cfg.compiled else 0
        windows = list(in_phase(setup.measurements, Phase.WINDOW))
        min_time = max([t.min_time_s, *(m.min_window_s for m in windows)])
        warmup_iters, warmup_s = t.warmup_iters, t.warmup_time_s
        for m in in_phase(setup.measurements, Phase.BEFORE_WINDOW):
            started = time.perf_counter()
            columns.update(guarded(m, functools.partial(m.before_window, cell)))
            warmup_iters = max(0, warmup_iters - 1)
            warmup_s = max(0.0, warmup_s - (time.perf_counter() - started))

        def begin() -> None:
            settle_heap()
            for m in windows:
                m.begin()

        timing = measure_latency(
            forward,
            sync=setup.sync,
            warmup_iters=warmup_iters,
            warmup_time_s=warmup_s,
            min_time_s=min_time,
            max_time_s=max(t.max_time_s, min_time),
            target_ci=t.target_ci,
            min_iters=t.min_iters,
            before_timed=begin,
        )
        window = Window(x.shape[0], timing.samples_ms, timing.timed_s, timing.converged)
        for m in reversed(windows):
            columns.update(guarded(m, functools.partial(m.end, window)))
        if cfg.compiled:
            columns["recompiled"] = compile_events() != events
    after_window(setup, cell, columns)
    return columns


def _warm_runtime(torch: Any, device: str, dtype: Any) -> None:
    """Start the runtime's thread pools and kernels libraries with a small conv and
    matmul, so their one-off memory counts in the baseline, not against the model."""
    with torch.inference_mode():
        x = torch.ones(2, 3, 32, 32, device=device, dtype=dtype)
        w = torch.ones(8, 3, 3, 3, device=device, dtype=dtype)
        y = torch.nn.functional.conv2d(x, w).flatten(1)
        (y @ y.T).sum().item()


def _protocol_stream() -> IO[str]:
    """Keep the original stdout for messages; send every other print to stderr."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return proto


def _die_with_parent(check_parent: bool = True) -> None:
    """Ask Linux to SIGKILL this worker when its parent (the runner, or the fork server,
    which exits with the runner) dies, so a killed sweep leaves no orphan measuring beside
    the resumed one."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = os.environ.get("EFFBENCH_PARENT_PID")
    if check_parent and parent and os.getppid() != int(parent):
        os._exit(3)


def _release_fork_server() -> None:
    """Close this worker's copy of the runner's keep-alive pipe to the fork server.

    multiprocessing hands every forked child that descriptor; while a hung worker holds it,
    the fork server never sees the runner's end close, so a SIGKILLed runner would leave
    both behind (the worker's PDEATHSIG waits on the fork server). Without it, the fork
    server exits with the runner and the worker follows. A no-op where this process holds
    no such descriptor (a ``python=`` arm's session server)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        os.close(fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def subprocess_emitter() -> Callable[[dict[str, Any]], None]:
    """The start of every worker that is a new interpreter (``python -m bench.worker``,
    ``bench.ceiling_worker``, ``bench.serve``): killed with its parent; returns the function
    that writes one JSON message a line on the original stdout, while every other print
    goes to stderr. Its exit skips collecting torch's objects (see ``bench.cli.entry``)."""
    atexit.register(gc.freeze)
    _die_with_parent()
    proto = _protocol_stream()

    def emit(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    return emit


def enter_forked_child(
    stderr_path: str, scratch: str | None = None, threads: int | None = None
) -> None:
    """The start of every forked worker (from the fork server or a session server): its own
    process group, so a timeout kills its helpers too; killed with its parent; the fork
    server's keep-alive pipe released; everything it prints appended to ``stderr_path``;
    ``scratch`` as its own folder (:data:`SCRATCH_ENV`); ``threads`` as the OpenMP and MKL
    thread counts."""
    os.setsid()
    if scratch is not None:
        os.environ[SCRATCH_ENV] = scratch
    _release_fork_server()
    _die_with_parent(check_parent=False)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.stderr
    if threads is not None:
        os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def import_network(model: str) -> None:
    """Look ``model`` up in the registry, which imports the stage that holds it
    (torchvision's zoo for its networks): a process that forks workers calls this first, so
    that the import happens once there and not in every worker. A name the registry cannot
    give is left to the worker, which reports it in the group's rows."""
    from bench.errors import BenchError
    from models import get_spec

    with contextlib.suppress(BenchError):
        get_spec(model)


def fork_main(task_json: str, conn: Any, stderr_path: str, scratch: str | None = None) -> None:
    """Entry point of a worker forked from the executor's fork server (which has torch and
    the registry imported, torchvision's zoo when the run needs it, but has run nothing):
    messages go over ``conn``; everything the worker prints goes to ``stderr_path``."""
    task = Task.from_json(task_json)
    enter_forked_child(stderr_path, scratch, task.group.threads)
    run_task(task, conn.send)
    conn.send({"event": "done"})
    conn.close()


def main() -> None:
    emit = subprocess_emitter()
    run_task(Task.from_json(sys.stdin.read()), emit)
    emit({"event": "done"})


if __name__ == "__main__":
    main()

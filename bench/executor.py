"""Executors start workers. The runner only needs :class:`Executor`, so the same cells can
later run elsewhere (a Ray cluster, a remote host) behind the same interface.

Both local executors run one task at a time, so two measurements never share a device:
:class:`ForkServerExecutor` (the default on Linux) forks each worker from a server that
has torch imported; :class:`LocalExecutor` starts a new ``python -m bench.worker``
interpreter per task. A task whose configuration preloads an allocator
(``malloc:jemalloc``, ``malloc:tcmalloc``) always gets a new interpreter, started with
``LD_PRELOAD`` (:func:`bench.allocators.preload_env`): a forked worker already runs the fork
server's malloc (chosen in :meth:`ForkServerExecutor.run` only).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bench import ceiling_worker
from bench.allocators import preload_env
from bench.configs import parse_config
from bench.errors import WorkerProtocolError
from bench.probes.gpu_processes import RUNNER_PID_ENV
from bench.status import CRASHED, OK, TIMEOUT
from bench.worker import SCRATCH_ENV, Task

Message = dict[str, Any]
STARTUP_GRACE_S = 120.0
# What a local executor runs: a group of cells, or a device's ceilings (the same path).
Job = Task | ceiling_worker.CeilingsTask


@dataclass(frozen=True, slots=True)
class _WorkerOf:
    """The worker module of a job (``python -m`` runs it; its ``fork_main`` is forked),
    its intra-op threads and its configuration (an allocator to preload)."""

    module: str
    threads: int
    config: str


def _worker_of(job: Job) -> _WorkerOf:
    if isinstance(job, ceiling_worker.CeilingsTask):
        return _WorkerOf(ceiling_worker.MODULE, max(job.threads, 1), "eager")
    return _WorkerOf("bench.worker", job.group.threads, job.group.config)


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """How a worker ended: ``ok``, ``crashed`` (non-zero exit or lost) or ``timeout``."""

    status: str
    detail: str = ""


# What a receiver gives the watchdog: the messages that came (none within the wait), or how
# the stream ended (None: it ended normally; a WorkerExit: as the executor saw it).
Received = list[Message] | WorkerExit | None


def watch(
    receive: Callable[[float], Received],
    on_message: Callable[[Message], None],
    kill: Callable[[], None],
    cell_timeout_s: float,
) -> WorkerExit | None:
    """The one watchdog loop of every executor: pass a worker's messages to ``on_message``
    until its stream ends, allowing ``cell_timeout_s`` per cell (the first also
    :data:`STARTUP_GRACE_S` for the interpreter, torch and the model); each ``start`` message
    starts a cell's allowance again. ``receive(seconds)`` waits at most that long. On an
    overrun ``kill()`` ends the worker and a ``timeout`` exit is returned; else what the
    stream's end was (None: it ended normally)."""
    deadline = time.monotonic() + cell_timeout_s + STARTUP_GRACE_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            kill()
            return WorkerExit(TIMEOUT, f"cell exceeded --cell-timeout {cell_timeout_s:g} s")
        got = receive(left)
        if not isinstance(got, list):
            return got
        for msg in got:
            if msg.get("event") == "start":
                deadline = time.monotonic() + cell_timeout_s
            on_message(msg)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an executor can do, declared once on its class; the run session asks these
    (``bench.session``) instead of naming executors.

    - ``local``: its workers run on this machine, so the session measures ceilings, counts
      instructions, applies ``malloc:`` configurations and waits for a quiet host here.
    - ``parallel``: ``--parallel`` (one lane per local GPU) may use it.
    - ``interpreters``: ``--variant NAME:python=PATH`` arms may run beside it.
    - ``pingpong``: ``--pingpong`` may use it.
    - ``cluster``: it reaches machines elsewhere through ``cls.connect(address) ->``
      :class:`Cluster` (``--ray-address``); its lanes are the cluster's GPUs.
    - ``fork_server``: its workers fork from this process's fork server (the session's first act).
    - ``new_interpreter``: every worker is a new interpreter (the ping-pong workers too).
    """

    local: bool = True
    parallel: bool = True
    interpreters: bool = True
    pingpong: bool = True
    cluster: bool = False
    fork_server: bool = False
    new_interpreter: bool = False


class Executor(Protocol):
    """Starts workers (docs/architecture.md, "An executor"). ``prepare`` runs in the main
    thread before any ``run`` (which lane threads may call); ``cancel`` kills every worker
    it runs now or later, from another thread."""

    capabilities: ClassVar[Capabilities]

    def prepare(self) -> None: ...

    def cancel(self) -> None: ...

    def run(
        self, task: Task, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit: ...


@dataclass(frozen=True, slots=True)
class Cluster:
    """The machines a ``cluster`` executor reached: the executor every lane shares, what
    they can run (a ``bench.plan.Inventory``), each node's environment record by hostname,
    their GPUs, and the device name of a row the runner writes itself (a task that died
    before saying where it ran)."""

    executor: Executor
    inventory: Any
    nodes: dict[str, Any]
    gpus: list[dict[str, Any]]
    device_name: Callable[[str], str]


_CANCEL_LOCK = threading.Lock()


class Cancellable:
    """What lets another thread stop an executor (``--parallel`` runs one executor per GPU
    lane in its own thread, and a signal arrives in the main thread only): :meth:`cancel`
    SIGKILLs the worker in flight and any worker this executor starts later. The executor's
    ``run`` then returns as for a crashed worker; the caller decides to write nothing.
    Its ``prepare`` starts nothing (an executor with something to start overrides it)."""

    _worker_pid: int | None = None
    _cancelled: bool = False

    def prepare(self) -> None:
        pass

    def cancel(self) -> None:
        with _CANCEL_LOCK:
            self._cancelled = True
            pid = self._worker_pid
        _killpg(pid)

    def _track(self, pid: int | None) -> None:
        """Record the worker in flight (None: it ended and is about to be reaped)."""
        with _CANCEL_LOCK:
            self._worker_pid = pid
            cancelled = self._cancelled
        if cancelled and pid is not None:
            _killpg(pid)


# --------------------------------------------------------------------------- scratch

SCRATCH_PREFIX = "effbench-scratch-"  # in the system temp folder, one per runner process
_NEW_SCRATCH = ".effbench-new-"  # a scratch folder before its lock is taken
_SCRATCH_GUARD = threading.Lock()
_scratch: tuple[Path, int, int] | None = None  # (folder, its lock's descriptor, owner PID)


def scratch_folder() -> Path:
    """This process's scratch folder, ``$TMPDIR/effbench-scratch-*``: the workers' own
    folders (stderr, the output check's reference weights) and multiprocessing's folder
    (the fork server's socket) go in it. The process holds an exclusive ``flock`` on its
    ``.lock`` for its lifetime and removes the folder when it exits; a folder whose lock is
    free belonged to a process that died without cleaning up (a SIGKILL), and the next
    process that makes its own removes it (:func:`remove_stale_scratch`)."""
    global _scratch
    import atexit
    import fcntl

    with _SCRATCH_GUARD:
        if _scratch is None or _scratch[2] != os.getpid():
            top = Path(tempfile.gettempdir())
            remove_stale_scratch(top)
            new = Path(tempfile.mkdtemp(prefix=_NEW_SCRATCH, dir=top))
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(new / ".lock", flags, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            folder = top / (SCRATCH_PREFIX + new.name.removeprefix(_NEW_SCRATCH))
            os.rename(new, folder)  # named for the sweep only once it is locked
            _scratch = (folder, fd, os.getpid())
            atexit.register(_remove_scratch, folder, os.getpid())
        return _scratch[0]


def _remove_scratch(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the handler
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_scratch(top: Path) -> list[Path]:
    """Remove the scratch folders under ``top`` that are this user's and whose lock no
    process holds (their process died); returns them."""
    import fcntl

    removed = []
    for folder in [*top.glob(SCRATCH_PREFIX + "*"), *top.glob(_NEW_SCRATCH + "*")]:
        try:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or not ours to judge (no lock in it)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its process is alive
            os.close(fd)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def worker_scratch() -> Iterator[Path]:
    """A folder of one worker's own in :func:`scratch_folder`, removed when the worker has
    ended, however it ended (killed at a timeout or by a signal included)."""
    folder = Path(tempfile.mkdtemp(prefix="worker-", dir=scratch_folder()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _own_multiprocessing_folder() -> None:
    """Put multiprocessing's temporary folder (``pymp-*``, the fork server's socket) in
    :func:`scratch_folder`, to go with it. Reads a private attribute (checked: a no-op if it
    moves, or if the socket path would not fit in a socket address's 108 bytes; the folder
    is then multiprocessing's ``pymp-*`` in the temp folder, removed at a normal exit only)."""
    import multiprocessing as mp

    config = getattr(mp.current_process(), "_config", None)
    # the socket's path, scratch/pymp-XXXXXXXX/listener-XXXXXXXX, must fit in sun_path
    fits = len(os.fsencode(scratch_folder())) + len("/pymp-12345678/listener-12345678") < 100
    if isinstance(config, dict) and config.get("tempdir") is None and fits:
        config["tempdir"] = tempfile.mkdtemp(prefix="pymp-", dir=scratch_folder())


class LocalExecutor(Cancellable):
    """Runs each task in a fresh local subprocess; kills it when a cell overruns.

    With ``python`` (an arm's ``--variant NAME:python=PATH``) the worker is that interpreter,
    started in a neutral folder: ``python -m`` puts the current folder first on
    ``sys.path``, and the runner's folder is usually its own checkout, whose code the other
    interpreter must not import."""

    capabilities = Capabilities(new_interpreter=True)

    def __init__(
        self, extra_env: Mapping[str, str] | None = None, python: str | None = None
    ) -> None:
        self._extra_env = dict(extra_env or {})
        self._python = python

    def _env(self, task: Job) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(_worker_of(task).threads)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env["EFFBENCH_PARENT_PID"] = str(os.getpid())
        env[RUNNER_PID_ENV] = str(os.getpid())  # its GPU context is this run's (nvml.py)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(task.env)  # at start-up too, for variables read when a library loads
        env.update(self._extra_env)
        env.update(preload_env(parse_config(_worker_of(task).config).malloc, env))
        return env

    def run(
        self, task: Job, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit:
        with tempfile.TemporaryFile(mode="w+b") as err, worker_scratch() as scratch:
            proc = subprocess.Popen(
                [self._python or sys.executable, "-m", _worker_of(task).module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**self._env(task), SCRATCH_ENV: str(scratch)},
                cwd=tempfile.gettempdir() if self._python else None,
                start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            self._track(proc.pid)
            try:
                proc.stdin.write(task.to_json().encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                outcome = self._pump(proc, on_message, cell_timeout_s)
            except BaseException:  # a signal, or a protocol error: no worker outlives it
                _killpg(proc.pid)
                raise
            finally:
                self._track(None)
                proc.wait()
            err.seek(0)
            return _worker_exit(outcome, proc.returncode, err.read())

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        on_message: Callable[[Message], None],
        cell_timeout_s: float,
    ) -> WorkerExit | None:
        """Read JSON lines until EOF under :func:`watch`; None if the stream ended normally."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""

        def receive(wait_s: float) -> Received:
            nonlocal buf
            if not sel.select(timeout=wait_s):
                return []
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            *lines, buf = (buf + chunk).split(b"\n")
            messages = []
            for line in filter(bytes.strip, lines):
                try:
                    messages.append(json.loads(line))
                except json.JSONDecodeError as e:
                    _killpg(proc.pid)
                    raise WorkerProtocolError(f"worker sent unreadable line {line[:200]!r}") from e
            return messages

        try:
            return watch(receive, on_message, lambda: _killpg(proc.pid), cell_timeout_s)
        finally:
            sel.close()
            proc.stdout.close()


class ForkServerExecutor(Cancellable):
    """Runs each task in a fresh process forked from a fork server that has imported torch
    and the registry (``bench.worker_preload``), and torchvision and its zoo once this
    process imported torchvision, or with ``preload_all`` (``bench.worker_preload_all``).

    Each worker is still a new process that has run nothing before its task; it saves the
    3-5 s of imports a new interpreter pays. Messages come over a pipe; a worker overrunning
    a cell is SIGKILLed with its process group. Off Linux every worker is a new interpreter
    (:class:`LocalExecutor`). The server is this process's (multiprocessing's one): a later
    run reuses it while its environment and imports are what the run needs, and replaces it
    otherwise, since its workers get the environment it started with.
    """

    capabilities = Capabilities(fork_server=True)

    def __init__(self, preload_all: bool = False) -> None:
        import multiprocessing as mp

        self._forks = sys.platform.startswith("linux")
        self._ctx = mp.get_context("forkserver" if self._forks else None)
        self._preload_all = preload_all
        self._started = False
        self._fresh = LocalExecutor()  # for tasks that preload an allocator

    def cancel(self) -> None:
        super().cancel()
        self._fresh.cancel()

    def prepare(self) -> None:
        """Start the fork server now: it sets signal dispositions, which only the main
        thread may do (``--parallel`` calls ``run`` from lane threads)."""
        if self._forks and not self._started:
            self._start_server()

    def _start_server(self) -> None:
        """Start the fork server (and multiprocessing's resource tracker) with SIGINT
        ignored (from the main thread), which they keep across exec: a Ctrl-C reaches the
        whole job and the runner decides what it means (not a traceback of the imports)."""
        from multiprocessing import forkserver

        global _SERVER
        _own_multiprocessing_folder()
        # what its workers get from it: the environment (but the runner's PID), the imports
        env = {k: v for k, v in os.environ.items() if k != RUNNER_PID_ENV}
        preload, zoo = ("bench.worker_preload",), "bench.worker_preload_all"
        # this process imported torchvision (the registry's zoo, a plugin building on it):
        # its workers will too, so the server does it once (and keeps it)
        if self._preload_all or "torchvision" in sys.modules or (_SERVER and zoo in _SERVER[1]):
            preload += (zoo,)
        if _SERVER is not None and (env, preload) != _SERVER:
            # killed first: multiprocessing's stop would wait for every process forked since
            if (old := fork_server_pid()) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGKILL)
            forkserver._forkserver._stop()  # type: ignore[attr-defined]  # CPython 3.8-3.13
        self._ctx.set_forkserver_preload(list(preload))
        os.environ[RUNNER_PID_ENV] = str(os.getpid())
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            forkserver.ensure_running()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        _SERVER = (env, preload)
        self._started = True

    def run(
        self, task: Job, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit:
        import importlib

        worker = _worker_of(task)
        if parse_config(worker.config).preloaded or not self._forks:
            return self._fresh.run(task, on_message, cell_timeout_s)
        fork_main = importlib.import_module(worker.module).fork_main
        if not self._started:
            self._start_server()
        with (
            worker_scratch() as scratch,
            tempfile.NamedTemporaryFile(
                prefix="effbench-worker-", suffix=".err", dir=scratch
            ) as err,
        ):
            recv, send = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(
                target=fork_main, args=(task.to_json(), send, err.name, str(scratch)), daemon=False
            )
            proc.start()
            self._track(proc.pid)
            send.close()

            def receive(wait_s: float) -> Received:
                if not recv.poll(wait_s):
                    return []
                try:
                    msg = recv.recv()
                except EOFError:
                    return None
                if not isinstance(msg, dict):
                    _killpg(proc.pid)
                    raise WorkerProtocolError(f"worker sent {type(msg).__name__}, not a dict")
                return [msg]

            try:
                outcome = watch(receive, on_message, lambda: _killpg(proc.pid), cell_timeout_s)
            except BaseException:  # a signal, or a protocol error: no worker outlives it
                _killpg(proc.pid)
                raise
            finally:
                recv.close()
                self._track(None)
                proc.join()
            code = proc.exitcode if proc.exitcode is not None else -signal.SIGKILL
            with open(err.name, "rb") as f:
                return _worker_exit(outcome, code, f.read())


class ArmExecutor:
    """Runs the tasks of the run folders whose arm has its own interpreter (run id ->
    interpreter, from ``--variant NAME:python=PATH``) in new processes of that interpreter
    (:class:`LocalExecutor`), and every other task with ``default``: a fork server cannot
    change interpreter. ``prepare`` and ``cancel`` reach every executor behind it; its
    capabilities are the default's."""

    def __init__(self, default: Executor, interpreters: Mapping[str, str]) -> None:
        self._default = default
        self._arms = {run_id: LocalExecutor(python=py) for run_id, py in interpreters.items()}
        self.capabilities = default.capabilities  # type: ignore[misc]

    def prepare(self) -> None:
        self._default.prepare()

    def cancel(self) -> None:
        for executor in (self._default, *self._arms.values()):
            executor.cancel()

    def run(
        self, task: Task, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit:
        executor = self._arms.get(task.run_id, self._default)
        return executor.run(task, on_message, cell_timeout_s)


def _call_in_child(fn: Callable[..., Any], args: tuple[Any, ...], conn: Any) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as e:  # sent to the caller, which raises it there
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def call_in_fresh_process(fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
    """``fn(*args)`` in a process forked from the executor's fork server, which has torch
    imported and has run nothing: its own thread pool, nothing else resident, as a new
    interpreter would be, without the 2-3 s of imports. ``fn`` and its result must
    pickle; nothing is watched or cancellable (the run's ceilings are a task that
    :meth:`ForkServerExecutor.run` runs instead: ``bench.ceiling_worker``). Starts the
    server if need be: call from the main thread. Raises :class:`WorkerProtocolError`
    when the child fails or overruns ``timeout_s`` (killed)."""
    server = ForkServerExecutor()
    server.prepare()
    recv, send = server._ctx.Pipe(duplex=False)
    proc = server._ctx.Process(target=_call_in_child, args=(fn, args, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            raise WorkerProtocolError(f"no answer within {timeout_s:g} s")
        try:
            status, value = recv.recv()
        except EOFError as e:
            raise WorkerProtocolError("the process ended without an answer") from e
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status != "ok":
        raise WorkerProtocolError(value)
    return value


_SERVER: tuple[dict[str, str], tuple[str, ...]] | None = None  # this process's: env, preload


def fork_server_pid() -> int | None:
    """The PID of this process's fork server (:class:`ForkServerExecutor`), if it runs."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # CPython 3.8-3.13
    return pid if isinstance(pid, int) else None


def default_executor() -> Executor:
    """The fork-server executor (on Linux; plain subprocesses elsewhere)."""
    return ForkServerExecutor()


def _killpg(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _worker_exit(outcome: WorkerExit | None, code: int, stderr: bytes) -> WorkerExit:
    """The worker's ending: ``outcome`` if the runner already decided it (a timeout), else
    from its exit code; a failure carries the last lines the worker printed."""
    if outcome is None:
        if code == 0:
            return WorkerExit(OK)
        outcome = WorkerExit(CRASHED, _describe_exit(code))
    tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
    return WorkerExit(
        outcome.status, outcome.detail + (f"; stderr: {' | '.join(tail)}" if tail else "")
    )


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"

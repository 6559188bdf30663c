"""Deterministic work counts of CPU cells: instructions, and an estimate of cycles, per forward.

`effbench run --count-instructions` runs, before the timed cells, one process per run
folder (per arm of an A/B run)::

    valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no --cache-sim=yes \\
        PYTHON -m bench.instructions

It reads the cells as JSON on stdin and prints one JSON line per cell. The import of torch,
which under valgrind costs tens of seconds of CPU however little is counted, is paid once per
run; every cell of the run is counted inside that one process. Per cell the driver builds
the model with seeded weights (``torch.manual_seed(0)``) at one thread, makes a seeded input,
runs one forward uninstrumented (lazy initialisation), switches callgrind's instrumentation
on, runs :data:`WARM` forward(s) uncollected (they fill the simulated caches), then counts
:data:`FORWARDS` forwards one by one: before each, uncollected, glibc is asked to return
its free memory (``malloc_trim``: the heap starts every counted forward in the same state),
then the counters are zeroed, collection is switched on around the forward and off again,
and the counters are dumped under a label. The cyclic garbage collector is off meanwhile.
Each dump's ``summary`` line gives the events of exactly one forward, and the median over
the forwards is kept:

- ``instructions_per_forward``: ``Ir``;
- ``estimated_cycles_per_forward``: ``Ir + 10 (I1mr + D1mr + D1mw) + 100 (ILmr + DLmr + DLmw)``:
  KCachegrind's "cycle estimation" (``CEst``) without branch simulation, a rough
  rule its author (Josef Weidendorfer, valgrind and libreoffice lists, 2012) says to check
  against real time; CodSpeed gates on a formula of the same kind.

Why a compiled helper: callgrind's client requests (start instrumentation, toggle
collection, dump) are magic instruction sequences that valgrind recognises in the machine
code it runs; Python cannot emit them, ``callgrind_control`` acts asynchronously from
outside, and ``--toggle-collect=FUNCTION`` still needs a native function around the forward.
The smallest exact thing is five one-line C functions over ``<valgrind/callgrind.h>``, which
:func:`helper_library` compiles once with ``gcc`` into a cache folder (``$EFFBENCH_CACHE``,
else ``$XDG_CACHE_HOME/effbench`` or ``~/.cache/effbench``), named by a hash of its source and
of the header, and the driver loads with ctypes.

The allocator's internals are left out: collection is switched off inside glibc's
``_int_malloc`` and ``_int_free`` (``--toggle-collect``; valgrind names these static
functions from libc's debug symbols, ``libc6-dbg``, which the run therefore requires). How
many instructions they take depends on the heap's history, not on the work asked: anything
that allocated before (down to the length of a printed number) changes bins, consolidation
and splits. With them counted, the median of one cell differed by up to 0.35% between
processes with the same request; left out, the counts of two processes were identical and
consecutive forwards of one process within 0.05% (they were 10-12% of a forward of these
small networks). The calls themselves, ``malloc``, ``free``, ``posix_memalign`` and the
thread cache's fast path, are counted, so a change in the number of allocations shows.

Only the main thread's counts are read (``--separate-threads=yes``): importing effbench
imports pyarrow, whose jemalloc starts a background thread that wakes on a timer, and
callgrind otherwise adds whatever it runs inside the window to the forward.

Why each step: the garbage collector runs in whichever forward crosses its allocation
threshold, and glibc's malloc takes paths that depend on the heap's state (consolidation,
bins). Measured on probe_mobilenet_v3_small at 64 px (batch 1): with the collector on,
single forwards of separate builds differed by 0.15%; with it off, consecutive forwards of
one process still differed by up to 0.14% (the differences were in glibc's ``_int_malloc``,
``_int_free`` and ``malloc_consolidate``) and the medians of two processes by 0.09%; with
the trim as well, 0.10% and 0.04%.

What counts cannot see: parallel efficiency (one thread; the row's ``threads`` is not what
was counted), memory bandwidth and real cache latencies (the cycle estimate is a fixed rule
over a simulated cache), and anything on a GPU. valgrind does not offer AVX-512 to the
program, so the kernels counted may not be the ones a native run picks (on this project's
AVX-512 machine MKL ran its AVX2 kernels under valgrind).
Compiled configurations are not counted (their rows say so in ``error``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchError, ToolMissing

FORWARDS = 3  # forwards counted per cell, each on its own; the median is kept
WARM = 1  # instrumented, uncollected forwards before them: they fill the simulated caches
INSTALL = "install it with `apt-get install valgrind` (Debian, Ubuntu)"
HEADER = Path("/usr/include/valgrind/callgrind.h")
COLUMNS = ("instructions_per_forward", "estimated_cycles_per_forward")
L1_MISSES = ("I1mr", "D1mr", "D1mw")
LL_MISSES = ("ILmr", "DLmr", "DLmw")
L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100
VALGRIND_ARGS = (
    "--tool=callgrind",
    "--instr-atstart=no",
    "--collect-atstart=no",
    "--cache-sim=yes",
    # one dump per thread: only the thread that runs the forward (one intra-op thread) is
    # read, not a library's timer thread that wakes up inside the window
    "--separate-threads=yes",
    # glibc's allocator internals, whose length depends on the heap's history, not on the
    # work asked: collection is toggled off on entry and on again on exit (they do not
    # call each other, so the toggles do not nest); needs libc's debug symbols
    *(f"--toggle-collect={f}" for f in ("_int_malloc", "_int_free")),
)
MAIN_THREAD = 1  # callgrind numbers the main thread 1
DEBUG_ROOT = Path("/usr/lib/debug/.build-id")
DEBUG_INSTALL = "install libc's debug symbols (`apt-get install libc6-dbg`)"
HELPER_SOURCE = """\
#include <valgrind/valgrind.h>
#include <valgrind/callgrind.h>
int eb_running_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void eb_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }
void eb_stop_instrumentation(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void eb_zero_stats(void) { CALLGRIND_ZERO_STATS; }
void eb_toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }
void eb_dump_stats_at(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""


@dataclass(frozen=True, slots=True)
class CountCell:
    """What one count depends on: the network and its input. Not the repeat (counts do not
    vary between repeats) nor the threads (counted at one)."""

    model: str
    batch_size: int
    image_size: int
    in_chans: int
    dtype: str = "float32"
    config: str = "eager"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CountCell:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True, slots=True)
class WorkCount:
    """The counts of one cell, or why it was not counted."""

    cell: CountCell
    instructions_per_forward: float | None = None
    estimated_cycles_per_forward: float | None = None
    error: str | None = None
    per_forward: tuple[int, ...] = ()  # instructions of each counted forward, in order
    wall_s: float | None = None  # seconds the driver spent on the cell, model build included

    def columns(self) -> dict[str, float]:
        """The row columns this count fills (none when it failed)."""
        if self.error is not None:
            return {}
        return {
            "instructions_per_forward": float(self.instructions_per_forward or 0.0),
            "estimated_cycles_per_forward": float(self.estimated_cycles_per_forward or 0.0),
        }

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkCount:
        return cls(
            CountCell.from_dict(d["cell"]),
            d.get("instructions_per_forward"),
            d.get("estimated_cycles_per_forward"),
            d.get("error"),
            tuple(d.get("per_forward") or ()),
            d.get("wall_s"),
        )


def estimated_cycles(events: Mapping[str, int]) -> float:
    """``Ir + 10 L1m + 100 LLm`` (KCachegrind's cycle estimation without branch events)."""
    l1 = sum(events.get(e, 0) for e in L1_MISSES)
    ll = sum(events.get(e, 0) for e in LL_MISSES)
    return float(events.get("Ir", 0) + L1_MISS_CYCLES * l1 + LL_MISS_CYCLES * ll)


@dataclass(frozen=True, slots=True)
class Dump:
    """One callgrind dump file: its trigger label, its thread and its ``summary`` events."""

    label: str | None
    thread: int | None
    events: dict[str, int]


def parse_dump(text: str) -> Dump:
    """The trigger label, the thread and the ``summary`` events of one callgrind dump."""
    label, thread, names, summary = None, None, [], []
    for line in text.splitlines():
        if line.startswith("desc: Trigger: Client Request: "):
            label = line.removeprefix("desc: Trigger: Client Request: ").strip()
        elif line.startswith("thread:"):
            thread = int(line.split(":", 1)[1])
        elif line.startswith("events:"):
            names = line.split(":", 1)[1].split()
        elif line.startswith("summary:"):
            summary = [int(v) for v in line.split(":", 1)[1].split()]
    return Dump(label, thread, dict(zip(names, summary, strict=False)))


# ------------------------------------------------------------------ the runner's side


def check_tools() -> str:
    """The path of valgrind; :class:`ToolMissing` (one line, with the install command) when
    it, glibc's debug symbols or the C compiler the client-request helper needs is
    missing."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ToolMissing(f"--count-instructions needs valgrind, which is not installed; {INSTALL}")
    if not libc_debug_symbols():
        raise ToolMissing(
            "--count-instructions needs glibc's debug symbols to leave the allocator's "
            f"internals out of the counts; {DEBUG_INSTALL}"
        )
    if shutil.which("gcc") is None and not _cached_helper().exists():
        raise ToolMissing(
            "--count-instructions needs a C compiler (gcc) once, to build its callgrind "
            "helper; install it with `apt-get install gcc`"
        )
    return valgrind


def elf_build_id(path: Path) -> str | None:
    """The GNU build id (hex) of a 64-bit little-endian ELF file, from its PT_NOTE
    segments; None when there is none or the file is not such an ELF."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        return None
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    for i in range(int.from_bytes(data[56:58], "little")):
        ph = phoff + i * phentsize
        if int.from_bytes(data[ph : ph + 4], "little") != 4:  # PT_NOTE
            continue
        at = int.from_bytes(data[ph + 8 : ph + 16], "little")
        end = at + int.from_bytes(data[ph + 32 : ph + 40], "little")
        while at + 12 <= end:
            namesz, descsz, kind = (
                int.from_bytes(data[at + k : at + k + 4], "little") for k in (0, 4, 8)
            )
            name_at = at + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            if kind == 3 and data[name_at : name_at + namesz] == b"GNU\x00":  # NT_GNU_BUILD_ID
                return data[desc_at : desc_at + descsz].hex()
            at = desc_at + (descsz + 3) // 4 * 4
    return None


def libc_path() -> Path | None:
    """The C library this process runs (from ``/proc/self/maps``), if it is glibc's."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1]
            if path.startswith("/") and Path(path).name.startswith("libc.so"):
                return Path(path)
    return None


def libc_debug_symbols() -> bool:
    """Whether valgrind will find glibc's debug symbols (``/usr/lib/debug/.build-id``), by
    which it names the allocator's internal functions that the counts leave out."""
    libc = libc_path()
    build_id = elf_build_id(libc) if libc is not None else None
    if build_id is None:
        return False
    return (DEBUG_ROOT / build_id[:2] / f"{build_id[2:]}.debug").exists()


def _cache_dir() -> Path:
    if env := os.environ.get("EFFBENCH_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "effbench"


def _cached_helper() -> Path:
    digest = hashlib.sha256(HELPER_SOURCE.encode())
    if HEADER.exists():
        digest.update(HEADER.read_bytes())
    return _cache_dir() / f"callgrind-client-{digest.hexdigest()[:12]}.so"


def helper_library() -> Path:
    """The compiled client-request helper, built with gcc on first use (atomically, so two
    runs starting together do not read a half-written library)."""
    lib = _cached_helper()
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src, out = Path(tmp) / "helper.c", Path(tmp) / lib.name
        src.write_text(HELPER_SOURCE)
        try:
            done = subprocess.run(
                ["gcc", "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except FileNotFoundError as e:
            raise ToolMissing(
                "--count-instructions needs a C compiler (gcc) once; install it with "
                "`apt-get install gcc`"
            ) from e
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise ToolMissing(
                f"cannot build the callgrind helper ({first}); it needs valgrind's headers "
                f"({HEADER}); {INSTALL}"
            )
        os.replace(out, lib)
    return lib


@dataclass(frozen=True, slots=True)
class CountJob:
    """One valgrind process in flight: it counts ``cells`` with ``python``."""

    cells: tuple[CountCell, ...]
    proc: subprocess.Popen[str]
    out_dir: tempfile.TemporaryDirectory[str]
    stderr: IO[str]


def start_counts(
    cells: Iterable[CountCell],
    python: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CountJob:
    """Start one valgrind process that counts every cell of ``cells`` with the interpreter
    ``python`` (default: this one) and ``env`` added to this process's environment; read
    its answers with :func:`finish_counts`. Several jobs may run at once (one per arm):
    counts do not depend on what else runs."""
    valgrind = check_tools()
    helper = helper_library()
    cells = tuple(dict.fromkeys(cells))
    out_dir = tempfile.TemporaryDirectory(prefix="effbench-callgrind-")
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [valgrind, *VALGRIND_ARGS, f"--callgrind-out-file={out_dir.name}/cg.%p"]
    cmd += [python or sys.executable, "-m", "bench.instructions"]
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by finish_counts)
    request = {
        "cells": [dataclasses.asdict(c) for c in cells],
        "forwards": FORWARDS,
        "out_dir": out_dir.name,
        "helper": str(helper),
    }
    # the request from a file, not a pipe: the driver reads to its end at once, whatever
    # the runner does next (it starts the other arms' processes before waiting for any)
    request_path = Path(out_dir.name) / "request.json"
    request_path.write_text(json.dumps(request))
    with open(request_path) as stdin:
        proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=full_env,
            # another interpreter must not import this checkout from the current folder
            cwd=tempfile.gettempdir() if python else None,
            start_new_session=True,
        )
    return CountJob(cells, proc, out_dir, stderr)


def finish_counts(job: CountJob, timeout_s: float) -> dict[CountCell, WorkCount]:
    """Wait for ``job`` and read one :class:`WorkCount` per cell; a cell the process never
    reported (it crashed or overran ``timeout_s``) gets an error saying why."""
    try:
        try:
            out, _ = job.proc.communicate(timeout=timeout_s)
            why = f"valgrind exited with code {job.proc.returncode}"
        except subprocess.TimeoutExpired:
            _kill(job.proc)
            out, _ = job.proc.communicate()
            why = f"counting took over {timeout_s:g} s"
        except BaseException:  # a signal: no valgrind outlives the run
            _kill(job.proc)
            raise
        found: dict[CountCell, WorkCount] = {}
        for line in out.splitlines():
            if line.strip().startswith("{"):
                count = WorkCount.from_dict(json.loads(line))
                found[count.cell] = count
        job.stderr.seek(0)
        # the driver's own last words, not valgrind's summary (lines "==PID== ...")
        said = [x for x in job.stderr.read().splitlines() if x.strip()]
        tail = ([x for x in said if not x.startswith(("==", "--"))] or said)[-2:]
        detail = why + (f"; stderr: {' | '.join(tail)}" if tail else "")
        for cell in job.cells:
            found.setdefault(cell, WorkCount(cell, error=f"not counted: {detail}"))
        return found
    finally:
        job.stderr.close()
        job.out_dir.cleanup()


def _kill(proc: subprocess.Popen[str]) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------ the driver (under valgrind)


class _Callgrind:
    """The client requests, through the compiled helper."""

    def __init__(self, helper: str, out_dir: str) -> None:
        import ctypes

        self._lib = ctypes.CDLL(helper)
        self._lib.eb_dump_stats_at.argtypes = [ctypes.c_char_p]
        self._out_dir = Path(out_dir)
        if not self._lib.eb_running_on_valgrind():
            raise BenchError(
                "python -m bench.instructions counts only under valgrind: run it as "
                f"`valgrind {' '.join(VALGRIND_ARGS)} python -m bench.instructions`"
            )

    def count(
        self, label: str, forward: Any, warm: int, forwards: int, reset: Any
    ) -> list[dict[str, int]]:
        """Events of each of ``forwards`` calls of ``forward`` (one dump each), after
        ``warm`` instrumented, uncollected calls; the cyclic garbage collector off, and
        ``reset`` (the allocator's) called uncollected before each counted call."""
        lib = self._lib
        # the collector runs when allocations cross a threshold, in whichever forward that
        # happens to be: tens of thousands of instructions that vary from call to call
        gc.collect()
        gc.disable()
        lib.eb_start_instrumentation()
        labels = [f"{label}-{i}" for i in range(forwards)]
        try:
            for _ in range(warm):
                forward()
            for one in labels:
                reset()
                lib.eb_zero_stats()
                lib.eb_toggle_collect()
                forward()
                lib.eb_toggle_collect()
                lib.eb_dump_stats_at(one.encode())
        finally:
            lib.eb_stop_instrumentation()
            gc.enable()
        return [self._events(one) for one in labels]

    def _events(self, label: str) -> dict[str, int]:
        return main_thread_events(self._out_dir, label)


def main_thread_events(out_dir: Path, label: str) -> dict[str, int]:
    """The events of the main thread in the dump labelled ``label`` in ``out_dir``; every
    file of that dump (one per thread with ``--separate-threads=yes``) is removed."""
    found: dict[str, int] | None = None
    for path in sorted(out_dir.glob("cg.*")):
        with contextlib.suppress(OSError):
            dump = parse_dump(path.read_text(errors="replace"))
            if dump.label != label:
                continue
            path.unlink()
            if dump.thread in (MAIN_THREAD, None):
                found = dump.events
    if found is None:
        raise BenchError(f"callgrind wrote no dump for {label} in {out_dir}")
    return found


def _trim_heap() -> None:
    """Return glibc's free memory to the system (``malloc_trim(0)``), so that each counted
    forward starts from the same heap; nothing on other C libraries."""
    from bench.allocators import is_glibc

    if is_glibc():
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def count_cell(cell: CountCell, callgrind: _Callgrind, label: str, forwards: int) -> WorkCount:
    """Count one cell (see the module docstring)."""
    import torch

    from bench.config_apply import prepare_cell
    from bench.configs import parse_config
    from bench.devices import torch_dtype
    from models import get_spec

    config = parse_config(cell.config)
    if config.compiled:
        return WorkCount(cell, error="not counted: compiled configurations are not counted")
    dtype = torch_dtype(cell.dtype)
    torch.manual_seed(0)
    shape = (cell.batch_size, cell.in_chans, cell.image_size, cell.image_size)
    forward = prepare_cell(get_spec(cell.model).build().eval(), shape, config, "cpu", dtype).forward
    with torch.inference_mode():
        forward()  # lazy initialisation, uninstrumented
        events = callgrind.count(label, forward, WARM, forwards, _trim_heap)
    return WorkCount(
        cell,
        instructions_per_forward=statistics.median(e.get("Ir", 0) for e in events),
        estimated_cycles_per_forward=statistics.median(estimated_cycles(e) for e in events),
        per_forward=tuple(e.get("Ir", 0) for e in events),
    )


def main(stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    """Count the cells of the JSON request on stdin; one JSON line per cell on stdout."""
    request = json.loads(stdin.read())
    callgrind = _Callgrind(request["helper"], request["out_dir"])
    import torch

    torch.set_num_threads(1)
    # glibc's allocator as the worker times under it: its defaults (bench.allocators); a
    # cell's malloc: part is not applied here, and the allocator's internals are not
    # counted anyway (see VALGRIND_ARGS)
    _trim_heap()
    forwards = int(request.get("forwards", FORWARDS))
    for i, d in enumerate(request["cells"]):
        cell = CountCell.from_dict(d)
        started = time.perf_counter()
        try:
            count = count_cell(cell, callgrind, f"effbench-cell-{i}", forwards)
        except Exception as e:  # one cell's failure is its row's note; the others go on
            count = WorkCount(cell, error=f"not counted: {type(e).__name__}: {e}"[:300])
        count = dataclasses.replace(count, wall_s=time.perf_counter() - started)
        print(count.to_json(), file=stdout, flush=True)
    return 0


def count_cells(
    cells: Sequence[CountCell],
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 3600.0,
) -> dict[CountCell, WorkCount]:
    """:func:`start_counts` and :func:`finish_counts` in one call."""
    return finish_counts(start_counts(cells, python, env), timeout_s)


if __name__ == "__main__":
    raise SystemExit(main())

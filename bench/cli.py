"""`effbench`: argument parsing and exit codes, nothing else.

Exit codes: 0 success; 1 a command ran but found a problem it reports (e.g. a regression);
2 bad input or an error, with a one-line message saying what to do; 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import io
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import commands
from bench.errors import BenchError, Interrupted, InvalidOption, OutputNotWritable
from bench.executor_registry import DEFAULT as EXECUTOR_DEFAULT
from bench.executor_registry import entries as executor_entries
from bench.executor_registry import executor_names
from bench.plan import (
    BURST_S,
    BURSTS,
    DTYPES,
    MACS_COUNTERS,
    Timing,
)
from bench.session import (
    CPU_DEFAULT_TIMING,
    NO_CEILINGS_ENV,
    run_command,
    stop_on_signals,
)

# (flag, Timing field, unit) of the timing options, for their table in the README
TIMING_FLAGS = (
    ("--warmup-iters", "warmup_iters", ""),
    ("--warmup-time", "warmup_time_s", " s"),
    ("--min-time", "min_time_s", " s"),
    ("--max-time", "max_time_s", " s"),
    ("--min-iters", "min_iters", ""),
    ("--target-ci", "target_ci", ""),
)


def timing_table() -> str:
    """The README's table of timing defaults: a named model or suite, and the default CPU
    sweep (``effbench run`` with no selection on a machine without a GPU)."""
    lines = [
        "| option | default | default CPU sweep | meaning |",
        "|---|---|---|---|",
    ]
    meaning = {
        "--warmup-iters": "warm-up iterations (at least)",
        "--warmup-time": "warm-up seconds (at least)",
        "--min-time": "timed seconds before the cell may stop",
        "--max-time": "timed seconds after which the cell stops",
        "--min-iters": "timed iterations before the cell may stop",
        "--target-ci": "stop once the median's 95% CI is within ± this fraction",
    }
    for flag, name, unit in TIMING_FLAGS:
        default, cpu = getattr(Timing(), name), getattr(CPU_DEFAULT_TIMING, name)
        lines.append(f"| `{flag}` | {default:g}{unit} | {cpu:g}{unit} | {meaning[flag]} |")
    return "\n".join(lines) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidOption(f"{message} (see `{self.prog} --help`)")


def _strict(cast: Any) -> Any:
    """``cast`` (int or float) without the digit separators Python accepts: ``1_0`` reads
    as 10 there, and as a typo here."""

    def parse(text: str) -> Any:
        if "_" in text:
            raise ValueError(f"{text!r} holds '_'")
        return cast(text)

    return parse


def _csv(cast: Any) -> Any:
    cast = _strict(cast) if cast in (int, float) else cast

    def parse(text: str) -> tuple[Any, ...]:
        items = [t.strip() for t in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError("is empty; give one or more comma-separated values")
        if not all(items):
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item; remove the extra comma")
        try:
            return tuple(cast(t) for t in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read {text!r} as a comma list") from None

    return parse


def _number(cast: Any) -> Any:
    """A finite int or float: argparse's ``float`` accepts 'nan' and 'inf'."""

    def parse(text: str) -> Any:
        try:
            value = _strict(cast)(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read {text!r} as a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value

    return parse


def _text(text: str) -> str:
    """A single value that must not be empty: an empty one would silently mean the default
    (``--suite ''`` ran the whole default suite)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a value or leave the option out")
    return text


def _path(text: str) -> Path:
    """A path that must not be empty (``Path('')`` is the current folder)."""
    return Path(_text(text))


def build_parser() -> argparse.ArgumentParser:
    from bench import __version__
    from bench.cli_help import epilog

    p = _Parser(prog="effbench", description="Efficiency benchmarks for image classifiers.")
    p.add_argument("--version", action="version", version=f"effbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    _add_info_commands(sub)
    _add_profiling_commands(sub)
    _add_compare(sub)
    rep = sub.add_parser("report", help="figures, index.html and summary tables from runs")
    rep.add_argument(
        "results", nargs="+", type=_path, metavar="RESULTS", help="run folders or results/"
    )
    rep.add_argument("--out", type=_path, help="report folder (default: reports/<run id>)")
    for name, command in sub.choices.items():  # examples under each command's help
        command.epilog = epilog(name)
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="sweep models x batch sizes x devices x dtypes into parquet")
    sel = run.add_mutually_exclusive_group()
    sel.add_argument("--suite", type=_text, help="a named suite (see `effbench models --suites`)")
    sel.add_argument(
        "--models",
        type=_csv(str),
        help="comma-separated model names or patterns (timm:NAME, timm:PATTERN* with timm)",
    )
    run.add_argument("--batch-sizes", type=_csv(int), help="e.g. 1,2,4,8 (default per device)")
    run.add_argument("--devices", type=_csv(str), help="cpu, cuda (every GPU), cuda:N, mps")
    run.add_argument("--dtypes", type=_csv(str), help=", ".join(DTYPES) + " (default float32)")
    run.add_argument(
        "--configs",
        type=_csv(str),
        help="configurations (default eager): channels_last, autocast, compile, "
        "compile-max-autotune, compile:BACKEND, cudagraphs, joined by '+' (docs/configs.md)",
    )
    run.add_argument("--image-size", type=_number(int), help="override each model's input size")
    run.add_argument("--threads", type=_number(int), help="intra-op threads (default: all cores)")
    run.add_argument("--repeats", type=_number(int), help="fresh-process repeats of each cell (1)")
    run.add_argument(
        "--remeasure",
        type=_number(int),
        metavar="N",
        help="measure a cell judged `contended` again, up to N times, later in the sweep "
        "after waiting for a quiet host (default 2; 0 turns it off; docs/noise.md)",
    )
    run.add_argument(
        "--require-quiet",
        action="store_true",
        help="refuse to start (exit 2) when the pre-flight check finds the host busy (for CI)",
    )
    run.add_argument("--out", type=_path, help="results folder (default: results)")
    run.add_argument(
        "--run-id", type=_text, help="name of the run folder (default: time stamp + random)"
    )
    run.add_argument(
        "--resume",
        type=_path,
        nargs="+",
        metavar="RUN_DIR",
        help="finish an interrupted run (several: the variant folders of an A/B run, "
        "interleaved again)",
    )
    run.add_argument(
        "--variant",
        action="append",
        metavar="NAME[:VAR=VALUE]",
        help="an arm of an interleaved A/B run (two or more), each in its own run folder "
        "<run-id>-<NAME>, their groups alternating: NAME:VAR=VALUE,... sets environment "
        "variables for the arm's workers; NAME:python=PATH runs them with another "
        "interpreter (another virtualenv or checkout; docs/compare.md)",
    )
    run.add_argument(
        "--pingpong",
        action="store_const",
        const=True,
        help="with --variant: keep one worker per arm alive per group and alternate short "
        "bursts of timed forwards between the arms (A B, B A, ...); compare pairs adjacent "
        "bursts (docs/compare.md)",
    )
    run.add_argument(
        "--bursts", type=_number(int), help=f"with --pingpong: bursts per arm and cell ({BURSTS})"
    )
    run.add_argument(
        "--burst-time",
        type=_number(float),
        help=f"with --pingpong: seconds of timed forwards per burst ({BURST_S:g})",
    )
    run.add_argument(
        "--macs-counter",
        "--flops-counter",  # its first name, kept for scripts that use it
        dest="macs_counter",
        choices=MACS_COUNTERS,
        help="how multiply-adds are counted: torch (default) or fvcore",
    )
    run.add_argument(
        "--count-instructions",
        action="store_const",
        const=True,
        help="count instructions (and estimate cycles) per forward of every CPU cell under "
        "valgrind before the timed cells: deterministic, for the regression gate "
        "(`compare --metric instructions`; docs/compare.md)",
    )
    _add_timing_flags(run)
    run.add_argument(
        "--cell-timeout", type=_number(float), help="seconds before a hung cell is killed (600)"
    )
    run.add_argument(
        "--memory-cap", type=_text, help="limit each CPU worker's extra memory, e.g. 2GiB"
    )
    run.add_argument(
        "--tf32", action="store_const", const=True, help="allow TF32 on CUDA (off by default)"
    )
    run.add_argument(
        "--ceilings",
        action=argparse.BooleanOptionalAction,
        help="measure each device's GEMM, conv and bandwidth ceilings at the start (a few "
        "seconds per device, dtype and thread count) for the roofline columns; default on "
        f"unless ${NO_CEILINGS_ENV} is set",
    )
    run.add_argument(
        "--parallel",
        action="store_const",
        const=True,
        help="measure every GPU at once, one lane per GPU pinned to its share of the cores "
        "(CPU groups still run alone); default: one group at a time (see README)",
    )
    run.add_argument(
        "--executor",
        choices=executor_names(),
        default=EXECUTOR_DEFAULT,
        help="how workers run: "
        + "; ".join(f"{e.name}: {e.summary}" for e in executor_entries())
        + f" (default {EXECUTOR_DEFAULT})",
    )
    run.add_argument(
        "--ray-address",
        type=_text,
        metavar="ADDR",
        help="with --executor ray: join this cluster (auto or HOST:PORT); default: start a "
        "local Ray instance",
    )


def _add_timing_flags(run: Any) -> None:
    """How long each cell warms up and is timed."""
    run.add_argument("--warmup-iters", type=_number(int), help="warm-up iterations (at least)")
    run.add_argument("--warmup-time", type=_number(float), help="warm-up seconds (at least)")
    run.add_argument(
        "--min-time", type=_number(float), help="timed seconds before stopping is allowed"
    )
    run.add_argument(
        "--max-time", type=_number(float), help="timed seconds after which a cell stops"
    )
    run.add_argument(
        "--min-iters", type=_number(int), help="timed iterations before stopping is allowed"
    )
    run.add_argument(
        "--target-ci",
        type=_number(float),
        help="stop when the median's 95%% CI is within ±this (0.01)",
    )


_FORMAT_TABLE: dict[str, Any] = {
    "choices": ("table", "json", "csv"),
    "default": "table",
    "help": "table: aligned text for a terminal (default); json; csv",
}
_FORMAT_RECORD: dict[str, Any] = {
    "choices": ("table", "json"),
    "default": "table",
    "help": "table: aligned text for a terminal (default); json",
}


def _add_info_commands(sub: Any) -> None:
    """`models`, `inspect`, `show` and `env`."""
    models = sub.add_parser("models", help="list registered models and their reference figures")
    models.add_argument("--suite", type=_text, help="only this suite")
    models.add_argument("--suites", action="store_true", help="list the suites instead")
    models.add_argument("--format", **_FORMAT_TABLE)

    insp = sub.add_parser(
        "inspect", help="per-layer shapes, params, MACs and receptive fields, with totals"
    )
    insp.add_argument("model", help="a registered network (see `effbench models`)")
    insp.add_argument("--image-size", type=_number(int), help="override its input size")
    insp.add_argument("--format", **_FORMAT_TABLE)

    show = sub.add_parser("show", help="print a summary table of results (folders or files)")
    show.add_argument(
        "results", nargs="+", type=_path, help="run folders, results/ or parquet files"
    )
    show.add_argument("--format", **_FORMAT_TABLE)

    env = sub.add_parser("env", help="print this machine's environment record")
    env.add_argument("--format", **_FORMAT_RECORD)


def _add_profiling_commands(sub: Any) -> None:
    """`peak` and `profile`: what the device can do, and where a network's time goes."""
    peak = sub.add_parser(
        "peak",
        help="measure device ceilings: GEMM and 3x3-conv MACs/s, triad and copy bytes/s",
    )
    peak.add_argument("--devices", type=_csv(str), help="cpu, cuda (every GPU), cuda:N (cpu)")
    peak.add_argument("--dtypes", type=_csv(str), help=", ".join(DTYPES) + " (float32)")
    peak.add_argument("--threads", type=_number(int), help="CPU threads (default: all cores)")
    peak.add_argument(
        "--precision", type=_number(float), default=0.02, help="target 95%% CI of each (0.02)"
    )
    peak.add_argument("--format", **_FORMAT_RECORD)

    prof = sub.add_parser(
        "profile", help="time every layer of a network: where its forward's time goes"
    )
    prof.add_argument(
        "models", nargs="+", metavar="MODEL", help="registered networks (see `effbench models`)"
    )
    prof.add_argument("--device", default="cpu", help="cpu or cuda:N (cpu)")
    prof.add_argument("--dtype", default="float32", help=", ".join(DTYPES) + " (float32)")
    prof.add_argument("--batch-size", type=_number(int), default=1, help="images per forward (1)")
    prof.add_argument("--config", default="eager", help="eager, channels_last or autocast (eager)")
    prof.add_argument("--threads", type=_number(int), help="CPU threads (default: all cores)")
    prof.add_argument("--image-size", type=_number(int), help="override the model's input size")
    prof.add_argument("--format", **_FORMAT_TABLE)
    prof.add_argument(
        "--out",
        type=_path,
        help="also write each profile as profile-*.parquet in this folder (for the report)",
    )
    prof.add_argument(
        "--ceilings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the device's GEMM and 3x3-conv ceilings first, for compute fractions (on)",
    )


def _add_compare(sub: Any) -> None:
    from bench.gate_choices import LATENCY_STATISTICS, TESTS

    cmp = sub.add_parser(
        "compare", help="regression gate: is CANDIDATE worse than BASELINE, cell by cell?"
    )
    cmp.add_argument("baseline", type=_path, help="baseline run folder (or folder of runs)")
    cmp.add_argument("candidate", type=_path, help="candidate run folder (or folder of runs)")
    cmp.add_argument(
        "--metric",
        action="append",
        help="latency, memory, energy, instructions or cycles (counted: `run "
        "--count-instructions`), or a plugin measurement's gate metric; repeat or "
        "comma-separate (default: all with data)",
    )
    cmp.add_argument("--threshold", default="5%", help="smallest change that matters (5%%)")
    cmp.add_argument(
        "--count-threshold",
        default="0.5%",
        help="smallest change of a counted metric (instructions, cycles) that matters (0.5%%)",
    )
    cmp.add_argument("--alpha", type=float, default=0.01, help="false discovery rate (0.01)")
    cmp.add_argument(
        "--format",
        choices=("md", "json", "junit"),
        default="md",
        help="md: a Markdown table (default); json; junit: a test case per cell and metric, for CI",
    )
    cmp.add_argument("--out", type=_path, help="write the report here instead of stdout")
    cmp.add_argument(
        "--fail-on-inconclusive", action="store_true", help="exit 2 on inconclusive cells"
    )
    cmp.add_argument(
        "--allow-env-mismatch", action="store_true", help="compare across torch/CUDA/device"
    )
    cmp.add_argument(
        "--latency-stat",
        choices=tuple(LATENCY_STATISTICS),
        default="median",
        help="per-repeat latency value: the median of its iterations, or their 10th "
        "percentile (steadier on a shared machine; see docs/compare.md)",
    )
    cmp.add_argument(
        "--test",
        choices=tuple(TESTS),
        default="welch",
        help="how repeats are compared: welch (geometric means, from 2 repeats per side) or "
        "rank (Hodges-Lehmann / Mann-Whitney: fewer repeats on a noisy machine, 5+ per side)",
    )
    cmp.add_argument(
        "--drift-floor",
        default="20%",
        help="assumed drift between two sides measured at different times, not interleaved (20%%)",
    )
    cmp.add_argument(
        "--session-spread",
        default="3%",
        help="assumed offset between ping-pong sessions' workers, which their burst pairs "
        "cannot see (3%%; sessions of --repeats 2+ measure it themselves when larger)",
    )
    cmp.add_argument(
        "--single-run-floor",
        default="100%",
        help="assumed run-to-run noise when each side has one repeat (100%%: a factor of 2)",
    )


class _GuardedStream(io.TextIOBase):
    """A text stream that survives its reader going away. ``tolerant`` (a sweep's progress
    and notices, which are not the product): a failed write or flush is dropped, and so is
    every later one. Otherwise (a command's output, which is): a closed pipe is still
    :class:`BrokenPipeError` (``effbench show | head``), any other failure
    :class:`OutputNotWritable`. Either way the file descriptor is pointed at /dev/null
    after a failure, so that the interpreter's own flush at exit cannot fail again."""

    def __init__(self, stream: Any, what: str, tolerant: bool) -> None:
        self._stream = stream
        self._what = what
        self._tolerant = tolerant
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                self._stream.write(text)
            except OSError as e:
                self._fail(e)
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self._stream.flush()
            except OSError as e:
                self._fail(e)

    def isatty(self) -> bool:
        try:
            return self.failed is None and bool(self._stream.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def _fail(self, e: OSError) -> None:
        self.failed = e
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # may not be a file (pytest's capture)
            os.close(devnull)
        if self._tolerant:
            return
        if isinstance(e, BrokenPipeError):
            raise e
        raise OutputNotWritable(
            f"cannot write to {self._what}: {e.strerror or e}; write it somewhere with room "
            "(another file or a pipe)"
        ) from e


@contextlib.contextmanager
def _guarded_output(tolerant: bool) -> Iterator[None]:
    """Standard output and error as :class:`_GuardedStream` while a command runs; the
    streams come back afterwards. ``effbench run`` is tolerant of both (progress is not the
    product: a sweep whose reader left goes on, and its exit code says how it ended);
    other commands are tolerant of standard error only."""
    streams = sys.stdout, sys.stderr
    sys.stdout = _GuardedStream(streams[0], "standard output", tolerant)  # type: ignore[assignment]
    sys.stderr = _GuardedStream(streams[1], "standard error", True)  # type: ignore[assignment]
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout, sys.stderr = streams


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _guarded_output(tolerant=bool(argv[:1] == ["run"])):
            return _dispatch(argv)
    except BenchError as e:
        _say(f"effbench: error: {e}")
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


def _say(line: str) -> None:
    """One line on standard error, if it can still be written (its reader may be gone)."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _dispatch(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            with stop_on_signals():
                return run_command(args, ["effbench", *argv])
        if args.command == "models":
            return commands.models_command(args)
        if args.command == "inspect":
            return commands.inspect_command(args)
        if args.command == "peak":
            return commands.peak_command(args)
        if args.command == "profile":
            return commands.profile_command(args)
        if args.command == "show":
            return commands.show_command(args)
        if args.command == "env":
            return commands.env_command(args)
        if args.command == "compare":
            return commands.compare_command(args)
        if args.command == "report":
            from bench.report import build_report

            report = build_report(args.results, args.out)
            print(f"effbench: report -> {report.out / 'index.html'}", file=sys.stderr)
            return 0
        raise InvalidOption(f"unknown command {args.command!r}")
    except BenchError as e:
        print(f"effbench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("effbench: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:  # before a run folder was written
        print(f"effbench: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum


def entry() -> None:
    """Console-script entry point."""
    # The interpreter's last collections at exit walk every object torch and torchvision
    # made (0.8-0.9 s here); frozen objects are skipped. Atexit handlers still run.
    atexit.register(gc.freeze)
    sys.exit(main())

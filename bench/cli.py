"""`effbench`: argument parsing and exit codes, nothing else.

Exit codes: 0 success; 1 a command ran but found a problem it reports (e.g. a regression);
2 bad input or an error, with a one-line message saying what to do; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError, Interrupted, InvalidOption, OutputNotWritable
from bench.plan import (
    BURST_S,
    BURSTS,
    DTYPES,
    MACS_COUNTERS,
    REMEASURE,
    Options,
    Timing,
    parse_size_bytes,
)

NO_CEILINGS_ENV = "EFFBENCH_NO_CEILINGS"  # set: `effbench run` skips ceilings unless asked
# Defaults a harness (CI, the test suite) may set: re-measurements of contended cells when
# --remeasure is not given, and the seconds of the pre-flight check (bench.preflight).
REMEASURE_ENV = "EFFBENCH_REMEASURE"
PREFLIGHT_ENV = "EFFBENCH_PREFLIGHT_S"

# The default sweeps of `effbench run` with no model selection (and of `nox -s bench`).
GPU_DEFAULT = {"suite": "canziani", "batch_sizes": (1, 2, 4, 8, 16, 32, 64), "devices": ("cuda",)}
CPU_DEFAULT = {"suite": "cpu-default", "batch_sizes": (1, 2, 4, 8, 16), "devices": ("cpu",)}
# Timing of the default CPU sweep: 60 cells in under 10 minutes on 2 cores.
CPU_DEFAULT_TIMING = Timing(warmup_iters=1, warmup_time_s=0.1, min_time_s=2.0, max_time_s=4.0)


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
        help="an arm of an interleaved A/B run (two or more; repeat for more variables); "
        "each gets its own run folder <run-id>-<NAME>, and their groups alternate",
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
        choices=("fork", "subprocess", "ray"),
        default="fork",
        help="fork workers from a server with torch imported (default), start a new "
        "interpreter per worker, or run each group as a Ray task (docs/scale-out.md)",
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


def _add_info_commands(sub: Any) -> None:
    """`models`, `inspect`, `show` and `env`."""
    models = sub.add_parser("models", help="list registered models and their reference figures")
    models.add_argument("--suite", type=_text, help="only this suite")
    models.add_argument("--suites", action="store_true", help="list the suites instead")
    models.add_argument("--format", choices=("table", "json", "csv"), default="table")

    insp = sub.add_parser(
        "inspect", help="per-layer shapes, params, MACs and receptive fields, with totals"
    )
    insp.add_argument("model")
    insp.add_argument("--image-size", type=_number(int))
    insp.add_argument("--format", choices=("table", "json", "csv"), default="table")

    show = sub.add_parser("show", help="print a summary table of results (folders or files)")
    show.add_argument(
        "results", nargs="+", type=_path, help="run folders, results/ or parquet files"
    )
    show.add_argument("--format", choices=("table", "json", "csv"), default="table")

    env = sub.add_parser("env", help="print this machine's environment record")
    env.add_argument("--format", choices=("table", "json"), default="table")


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
    peak.add_argument("--format", choices=("table", "json"), default="table")

    prof = sub.add_parser(
        "profile", help="time every layer of a network: where its forward's time goes"
    )
    prof.add_argument("models", nargs="+", metavar="MODEL")
    prof.add_argument("--device", default="cpu", help="cpu or cuda:N (cpu)")
    prof.add_argument("--dtype", default="float32", help=", ".join(DTYPES) + " (float32)")
    prof.add_argument("--batch-size", type=_number(int), default=1, help="images per forward (1)")
    prof.add_argument("--config", default="eager", help="eager, channels_last or autocast (eager)")
    prof.add_argument("--threads", type=_number(int), help="CPU threads (default: all cores)")
    prof.add_argument("--image-size", type=_number(int), help="override the model's input size")
    prof.add_argument("--format", choices=("table", "json", "csv"), default="table")
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
    from bench.compare import LATENCY_STATISTICS, TESTS

    cmp = sub.add_parser(
        "compare", help="regression gate: is CANDIDATE worse than BASELINE, cell by cell?"
    )
    cmp.add_argument("baseline", type=_path, help="baseline run folder (or folder of runs)")
    cmp.add_argument("candidate", type=_path, help="candidate run folder (or folder of runs)")
    cmp.add_argument(
        "--metric",
        action="append",
        help="latency, memory, energy, instructions or cycles (counted: `run "
        "--count-instructions`); repeat or comma-separate (default: all with data)",
    )
    cmp.add_argument("--threshold", default="5%", help="smallest change that matters (5%%)")
    cmp.add_argument(
        "--count-threshold",
        default="0.5%",
        help="smallest change of a counted metric (instructions, cycles) that matters (0.5%%)",
    )
    cmp.add_argument("--alpha", type=float, default=0.01, help="false discovery rate (0.01)")
    cmp.add_argument("--format", choices=("md", "json", "junit"), default="md")
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
        "--single-run-floor",
        default="100%",
        help="assumed run-to-run noise when each side has one repeat (100%%: a factor of 2)",
    )


def _timing(args: argparse.Namespace, base: Timing) -> Timing:
    overrides = {
        "warmup_iters": args.warmup_iters,
        "warmup_time_s": args.warmup_time,
        "min_time_s": args.min_time,
        "max_time_s": args.max_time,
        "min_iters": args.min_iters,
        "target_ci": args.target_ci,
    }
    values = {k: getattr(base, k) for k in Timing.__slots__}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Timing(**values)


# Options that make the plan: recorded in the manifest, so refused with --resume.
PLAN_FLAGS = {
    "suite": "--suite",
    "models": "--models",
    "batch_sizes": "--batch-sizes",
    "devices": "--devices",
    "dtypes": "--dtypes",
    "configs": "--configs",
    "image_size": "--image-size",
    "threads": "--threads",
    "repeats": "--repeats",
    "remeasure": "--remeasure",
    "out": "--out",
    "run_id": "--run-id",
    "variant": "--variant",
    "macs_counter": "--macs-counter",
    "warmup_iters": "--warmup-iters",
    "warmup_time": "--warmup-time",
    "min_time": "--min-time",
    "max_time": "--max-time",
    "min_iters": "--min-iters",
    "target_ci": "--target-ci",
    "cell_timeout": "--cell-timeout",
    "memory_cap": "--memory-cap",
    "tf32": "--tf32",
    "parallel": "--parallel",
    "ceilings": "--ceilings/--no-ceilings",
    "count_instructions": "--count-instructions",
    "pingpong": "--pingpong",
    "bursts": "--bursts",
    "burst_time": "--burst-time",
}


class _Catalog(Mapping[str, Any]):
    """Model name -> :class:`bench.plan.ModelShape`, looked up in the registry on demand (so
    that names outside ``list_models()``, such as ``timm:NAME``, resolve too)."""

    def __init__(self) -> None:
        self._shapes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        from bench.errors import UnknownModel
        from bench.plan import ModelShape
        from models import get_spec

        if name not in self._shapes:
            try:
                spec = get_spec(name)
            except UnknownModel:
                raise KeyError(name) from None
            self._shapes[name] = ModelShape(spec.image_size, spec.in_chans)
        return self._shapes[name]

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Any:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def _new_options(args: argparse.Namespace, has_gpu: bool) -> Options:
    """The options of a new run from the command line and the defaults for this machine."""
    from models import resolve_model_names, suite_models

    default = GPU_DEFAULT if has_gpu else CPU_DEFAULT
    if args.models:
        # patterns (timm:PATTERN*) expand here; unknown names fail with suggestions
        names = resolve_model_names(args.models)
    else:
        names = suite_models(args.suite or default["suite"])
    base_timing = Timing() if (has_gpu or args.models or args.suite) else CPU_DEFAULT_TIMING
    return Options(
        models=tuple(names),
        batch_sizes=args.batch_sizes or default["batch_sizes"],
        devices=args.devices or default["devices"],
        dtypes=args.dtypes or ("float32",),
        configs=args.configs or ("eager",),
        image_size=args.image_size,
        threads=args.threads,
        repeats=1 if args.repeats is None else args.repeats,
        remeasure=(
            _env_number(REMEASURE_ENV, REMEASURE, int) if args.remeasure is None else args.remeasure
        ),
        macs_counter=args.macs_counter or "torch",
        timing=_timing(args, base_timing),
        cell_timeout_s=600.0 if args.cell_timeout is None else args.cell_timeout,
        memory_cap_bytes=parse_size_bytes(args.memory_cap) if args.memory_cap else None,
        tf32=bool(args.tf32),
        ceilings=_ceilings_wanted(args),
        count_instructions=bool(args.count_instructions),
        pingpong=bool(args.pingpong),
        bursts=BURSTS if args.bursts is None else args.bursts,
        burst_s=BURST_S if args.burst_time is None else args.burst_time,
    )


def _ceilings_wanted(args: argparse.Namespace) -> bool:
    """``--ceilings``/``--no-ceilings``; by default on, unless ``$EFFBENCH_NO_CEILINGS`` is
    set (test suites) or the groups run on a Ray cluster (its nodes are not this machine)."""
    if args.ceilings is not None:
        return bool(args.ceilings)
    if getattr(args, "executor", None) == "ray":
        print(
            "effbench: ceilings not measured (their nodes are not this machine; run "
            "`effbench peak` there); rows get no compute_fraction",
            file=sys.stderr,
        )
        return False
    return not os.environ.get(NO_CEILINGS_ENV)


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench import devices
    from bench.runner import count_work, open_lane, record_preflight

    if args.ray_address is not None and args.executor != "ray":
        raise InvalidOption("--ray-address needs --executor ray")
    if args.ceilings and args.executor == "ray":
        raise InvalidOption(
            "--ceilings measures this machine, not the Ray cluster's nodes; drop it, and run "
            "`effbench peak` on each node"
        )
    if args.count_instructions:
        if args.executor == "ray":
            raise InvalidOption(
                "--count-instructions counts on this machine, not the Ray cluster's nodes; "
                "drop one of them"
            )
        from bench.instructions import check_tools

        check_tools()  # before anything is written
    _check_pingpong(args)
    cluster = _ray_cluster(args) if args.executor == "ray" else None
    inventory = cluster.inventory if cluster else devices.discover()
    host: dict[str, Any] = {}

    def preflight(threads: int) -> None:  # after the plan is checked, before anything is written
        host.update(_preflight(args, threads))

    lanes = (
        _resumed_lanes(args, inventory, preflight)
        if args.resume is not None
        else _new_lanes(args, argv, inventory, cluster, preflight)
    )
    for run_dir, *_ in lanes:
        print(f"effbench: writing to {run_dir}", file=sys.stderr)
        record_preflight(run_dir, host)
    try:
        idle_w: dict[str, float | None] = {}  # measured once per device, shared by the lanes
        measured: dict[Any, Any] = {}  # ceilings too: once per (device, dtype, threads)
        opened = [open_lane(*lane, idle_w=idle_w, measured=measured) for lane in lanes]
        count_work(opened)  # --count-instructions: before any cell is timed
        summaries = _measure(args, argv, lanes, opened, cluster)
    except Interrupted as e:
        folders = " ".join(str(lane[0]) for lane in lanes)
        print(
            f"\neffbench: stopped by {signal.Signals(e.signum).name}; every row written so far "
            f"is kept; finish the run with `effbench run --resume {folders}`",
            file=sys.stderr,
        )
        return 128 + e.signum
    for summary in summaries:
        counts = (
            ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing to do"
        )
        print(
            f"effbench: {summary.written} rows ({counts}) in {summary.wall_s:.1f} s "
            f"-> {summary.run_dir}\n"
            f"effbench: {summary.timed_s:.1f} s in timed iterations; "
            f"{summary.outside_timed_share:.0%} of the sweep's time was spent outside them "
            "(start-up, model build, MAC counting, warm-up, writing)",
            file=sys.stderr,
        )
        if summary.qualities:
            print(f"effbench: {_quality_line(summary)}", file=sys.stderr)
    return 0


def _check_pingpong(args: argparse.Namespace) -> None:
    """``--pingpong`` needs arms and one box; ``--bursts``/``--burst-time`` need it."""
    if not args.pingpong:
        if args.bursts is not None or args.burst_time is not None:
            raise InvalidOption("--bursts and --burst-time go with --pingpong")
        return
    if len(args.variant or ()) < 2:
        raise InvalidOption(
            "--pingpong alternates bursts between the arms of an A/B run; give two or more "
            "--variant arms (e.g. --variant base:python=PATH --variant pr:python=PATH)"
        )
    if args.executor == "ray" or args.parallel:
        raise InvalidOption("--pingpong runs the arms on this machine, one group at a time; "
                            "drop --executor ray and --parallel")  # fmt: skip


def _quality_line(summary: Any) -> str:
    """The verdicts of a session's cells (their best attempts) and what to do about them."""
    from bench.quality import summary as quality_summary

    q = summary.qualities
    cells = sum(q.values())
    again = f", after {summary.remeasured} re-measurement(s)" if summary.remeasured else ""
    text = f"{cells} cells: {quality_summary(q)}{again}"
    todo = []
    if q.get("contended"):
        todo.append(
            "contended cells ran while other processes took their CPUs (or GPU) and read "
            "slow; measure them again on a quiet host with `effbench run --resume "
            f"{summary.run_dir}`, or leave cores free with a lower --threads (docs/noise.md)"
        )
    if q.get("implausible"):
        todo.append(
            "implausible cells beat the measured compute ceiling (measured at a busier "
            "moment?); see their quality_reason"
        )
    if q.get("noisy"):
        todo.append("noisy cells missed the precision target (raise --max-time)")
    if not todo:
        return f"{text}: every cell clean"
    return f"{text} — " + "; ".join(todo)


def _env_number(name: str, default: Any, cast: Any) -> Any:
    """A number from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        raise InvalidOption(f"${name}={text!r} is not a number; unset it or fix it") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidOption(f"${name}={text!r} must be a finite number >= 0")
    return value


def _preflight(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """The pre-flight check (bench.preflight): warn on a busy host, refuse it with
    ``--require-quiet``; the check, for the manifest."""
    from bench.preflight import CHECK_S, HostBusy, check_host

    check = check_host(seconds=min(_env_number(PREFLIGHT_ENV, CHECK_S, float), 1.0))
    advice = check.advice(threads)
    if check.busy and args.require_quiet:
        raise HostBusy(
            f"{check.describe()}; --require-quiet refuses a busy host: wait until it is quiet "
            f"(or give fewer --threads, or pin idle cores with taskset), then run again"
        )
    if advice:
        print(f"effbench: warning: {check.describe()}; {advice}", file=sys.stderr)
    return {**check.to_dict(), "required_quiet": bool(args.require_quiet)}


Lanes = list[tuple[Path, str, Options, Any, Any]]  # (run folder, id, options, groups, lock)


def _resumed_lanes(args: argparse.Namespace, inventory: Any, preflight: Any) -> Lanes:
    """The run folders of ``--resume``, each locked, with the plan its manifest records."""
    from bench.runner import resume_run

    given = [
        flag
        for key, flag in PLAN_FLAGS.items()
        if getattr(args, key) is not None and key != "variant"
    ]
    if given:
        raise InvalidOption(
            f"--resume runs the plan recorded in the run folder; drop {', '.join(given)} "
            "(start a new run to change the plan)"
        )
    named = _interpreters_named(args.variant or ())
    lanes: Lanes = []
    try:
        for run_dir in {os.path.realpath(p): p for p in args.resume}.values():
            r = resume_run(run_dir, _Catalog(), inventory)
            lanes.append((r.run_dir, r.run_id, r.options, r.groups, r.lock))
            _check_interpreter_named(r.run_dir, r.options, named)
        unused = set(named) - {lane[2].variant for lane in lanes if lane[2].python}
        if unused:
            raise InvalidOption(
                f"--variant {sorted(unused)[0]}:python=...: no resumed run folder is an arm "
                "with its own interpreter of that name; drop it"
            )
        preflight(max(g.threads for lane in lanes for g in lane[3]) if lanes else 1)
    except BaseException:
        for lane in lanes:
            lane[4].release()
        raise
    return lanes


def _interpreters_named(texts: Sequence[str]) -> dict[str, str]:
    """``--variant NAME:python=PATH`` given with ``--resume``: arm name -> interpreter (an
    absolute path). With --resume, --variant may only name an arm's interpreter again."""
    from bench.plan import INTERPRETER, check_interpreter

    named: dict[str, str] = {}
    for text in texts:
        name, _, assignment = text.partition(":")
        var, eq, value = assignment.partition("=")
        if var != INTERPRETER or not eq:
            raise InvalidOption(
                f"--variant {text!r}: with --resume, --variant only names an arm's interpreter "
                "again (NAME:python=PATH); the rest of the plan is recorded in the run folder"
            )
        named[name] = check_interpreter(value, f"--variant {text!r}")
    return named


def _check_interpreter_named(run_dir: Path, options: Options, named: Mapping[str, str]) -> None:
    """A manifest's interpreter (``options.python``) runs only when this command names it
    too: a manifest is a file anyone who can write the folder can edit, and the
    interpreter is a program effbench executes."""
    if options.python is None:
        return
    again = f"--variant {options.variant}:python={options.python}"
    if options.variant not in named:
        raise InvalidOption(
            f"{run_dir} runs its workers with {options.python} (recorded in its manifest); "
            f"effbench runs a recorded interpreter only when it is named again: add {again}"
        )
    if named[options.variant] != options.python:
        raise InvalidOption(
            f"--variant {options.variant}:python={named[options.variant]}: {run_dir} was "
            f"measured with {options.python}; resume it with {again}, or start a new run"
        )


def _new_lanes(
    args: argparse.Namespace, argv: Sequence[str], inventory: Any, cluster: Any, preflight: Any
) -> Lanes:
    """Plan a new run and start its run folder (one per ``--variant`` arm), each locked."""
    from bench import devices
    from bench.configs import parse_config
    from bench.plan import expand_plan, parse_variants, resolve
    from bench.runner import check_new_run, new_run_id, start_run

    catalog = _Catalog()
    out = args.out if args.out is not None else Path("results")
    has_gpu = any(d.startswith("cuda:") for d in inventory.devices)
    options = resolve(_new_options(args, has_gpu), catalog, inventory)
    if cluster and any(parse_config(c).malloc for c in options.configs):
        raise InvalidOption(
            "malloc: configurations set the allocator of this machine's workers; drop them "
            "with --executor ray"
        )
    if options.tf32 and not any(d.startswith("cuda") for d in options.devices):
        raise InvalidOption(
            f"--tf32 allows TF32 on CUDA GPUs, and this run measures none "
            f"({', '.join(options.devices)}); drop --tf32"
        )
    groups = expand_plan(options, catalog, inventory)
    if args.parallel:  # recorded in the plan, so a resume runs the same lanes
        from bench.parallel import assign_cpus

        if cluster:
            raise InvalidOption("--parallel is for one box; drop it with --executor ray")
        options = dataclasses.replace(options, parallel=True)
        groups = assign_cpus(groups, sorted(os.sched_getaffinity(0)))
    env = devices.environment(devices.discover()).to_dict()
    if cluster:
        env.update(nodes=cluster.nodes, cluster_gpus=cluster.gpus)
    variants = parse_variants(args.variant or ())
    preflight(options.threads or 1)
    if not variants:
        run_dir, lock = start_run(out, args.run_id, options, groups, env, argv)
        return [(run_dir, run_dir.name, options, groups, lock)]
    stem = args.run_id or new_run_id()
    ids = [f"{stem}-{v.name}" for v in variants]
    for run_id in ids:  # refuse before any folder is created
        check_new_run(out, run_id)
    if cluster and any(v.python for v in variants):
        raise InvalidOption("--variant NAME:python=PATH runs locally; drop --executor ray")
    arms = [_variant_arm(v, options, env) for v in variants]  # probes python= arms
    lanes: Lanes = []
    for (opts, arm_env), run_id in zip(arms, ids, strict=True):
        run_dir, lock = start_run(out, run_id, opts, groups, arm_env, argv)
        lanes.append((run_dir, run_id, opts, groups, lock))
    return lanes


def _measure(
    args: argparse.Namespace, argv: Sequence[str], lanes: Lanes, opened: Any, cluster: Any
) -> Any:
    """Run the opened lanes: one group at a time, one lane per local GPU (``--parallel``),
    or one lane per GPU of a Ray cluster."""
    from bench import devices
    from bench.executor import ArmExecutor, LocalExecutor, default_executor
    from bench.preflight import wait_for_quiet
    from bench.runner import run_interleaved
    from models import get_spec

    interpreters = {lane[1]: lane[2].python for lane in lanes if lane[2].python}
    device_name_of = cluster.device_name if cluster else devices.device_name

    def make_executor() -> Any:  # one per lane; python= arms' workers get their interpreter
        if cluster:
            return cluster.executor
        local = LocalExecutor() if args.executor == "subprocess" else default_executor()
        return ArmExecutor(local, interpreters) if interpreters else local

    if any(lane[2].pingpong for lane in lanes):  # recorded, so a resume ping-pongs too
        from bench.pingpong import run_pingpong

        return run_pingpong(opened, get_spec, device_name_of, argv, args.executor == "subprocess")
    cluster_gpus = len(cluster.gpus) if cluster else 0
    on_cluster_gpus = cluster_gpus and any(g.device == "cuda" for lane in lanes for g in lane[3])
    # re-measurements wait for this host to calm down; a cluster's nodes are elsewhere
    wait = None if cluster else wait_for_quiet
    if any(lane[2].parallel for lane in lanes) or on_cluster_gpus:
        from bench.parallel import run_parallel

        return run_parallel(
            opened, make_executor, get_spec, device_name_of, argv,
            cluster_gpus=cluster_gpus, wait_for_quiet=wait,
        )  # fmt: skip
    return run_interleaved(opened, make_executor(), get_spec, device_name_of, argv, wait)


def _variant_arm(
    variant: Any, options: Options, environment: dict[str, Any]
) -> tuple[Options, dict[str, Any]]:
    """The options and environment record of one arm of an interleaved run. An arm with its
    own interpreter (``NAME:python=PATH``) records it, with the ``PYTHONPATH`` its workers
    get, and the environment record that interpreter reports (its torch, torchvision and
    effbench commit), after checking that it sees the run's devices."""
    from bench import devices

    if variant.python is None:
        return dataclasses.replace(options, variant=variant.name, env=variant.env), environment
    own_checkout = str(Path(__file__).resolve().parent.parent)
    env = variant.worker_env(os.environ.get("PYTHONPATH"), own_checkout)
    record = devices.probe_environment(variant.python, dict(env))
    missing = [d for d in options.devices if d not in (record.get("devices") or {})]
    if missing:
        raise InvalidOption(
            f"--variant {variant.name}: {variant.python} cannot run {', '.join(missing)} "
            f"(its torch {record.get('torch_version')} sees {sorted(record.get('devices') or {})})"
        )
    opts = dataclasses.replace(options, variant=variant.name, env=env, python=variant.python)
    return opts, record


@dataclasses.dataclass(frozen=True)
class _RayCluster:
    """The cluster `--executor ray` reached: its executor, what it can run, its nodes."""

    executor: Any
    inventory: Any
    nodes: dict[str, Any]
    gpus: list[dict[str, Any]]

    @staticmethod
    def device_name(device: str) -> str:
        # for rows the runner writes itself (a task that died): the node is not known
        return "unknown (the Ray task ended before reporting)"


def _ray_cluster(args: argparse.Namespace) -> _RayCluster:
    """Connect to Ray (`--ray-address`, or a local instance), read every node's environment
    and resolve the devices before anything runs."""
    from bench import ray_executor as rx

    executor = rx.RayExecutor(args.ray_address)
    nodes = rx.node_environments()
    return _RayCluster(executor, rx.cluster_inventory(nodes), nodes, rx.cluster_gpus(nodes))


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP stop a sweep: the first raises :class:`Interrupted` where
    the runner is (the executor then kills the worker's process group, and the rows already
    written stay); a second one ends the process at once. The previous handlers come back
    afterwards."""
    stopping = False

    def handler(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if stopping:
            os._exit(128 + signum)
        stopping = True
        raise Interrupted(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _emit(rows: list[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(columns))
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False))


def _cmd_models(args: argparse.Namespace) -> int:
    from bench.catalog import model_rows
    from models import list_models, list_suites, suite_models

    if args.suites:
        rows = [
            {"suite": s, "models": len(suite_models(s)), "description": d}
            for s, d in list_suites().items()
        ]
        _emit(rows, args.format, ["suite", "models", "description"])
        return 0
    names = suite_models(args.suite) if args.suite else tuple(list_models())
    rows = model_rows(names)
    _emit(rows, args.format, list(rows[0]) if rows else [])
    return 0


def _checked_devices(requested: Sequence[str]) -> tuple[str, ...]:
    from bench import devices
    from bench.plan import expand_devices

    return expand_devices(tuple(requested), devices.discover())


def _threads(value: int | None) -> int:
    from bench.devices import default_threads

    if value is not None and value < 1:
        raise InvalidOption(f"--threads {value} must be >= 1")
    if value is not None and value > default_threads():  # as `run` refuses them
        raise InvalidOption(
            f"--threads {value}: only {default_threads()} cores are available to this process "
            "(taskset/cgroup?); give at most that many"
        )
    return default_threads() if value is None else value


def _cmd_peak(args: argparse.Namespace) -> int:
    from bench.ceilings import format_ceilings, measure_ceilings

    if not 0 < args.precision < 1:
        raise InvalidOption(f"--precision {args.precision} must be between 0 and 1, e.g. 0.02")
    dtypes = args.dtypes or ("float32",)
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise InvalidOption(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    threads = _threads(args.threads)
    found = []
    for device in _checked_devices(args.devices or ("cpu",)):
        for dtype in dtypes:
            found += measure_ceilings(device, dtype, threads, precision=args.precision)
    print(format_ceilings(found, args.format))
    for line in imprecise_ceilings(found, args.precision):
        print(f"effbench: warning: {line}", file=sys.stderr)
    return 0


def imprecise_ceilings(found: Sequence[Any], precision: float) -> list[str]:
    """A warning per measured ceiling whose median missed the precision target."""
    out = []
    for c in found:
        if c.source != "measured" or (c.ci_rel is not None and c.ci_rel <= precision):
            continue
        reached = "no interval" if c.ci_rel is None else f"±{c.ci_rel:.1%}"
        out.append(
            f"{c.kind} on {c.device} {c.dtype} reached {reached}, not the ±{precision:.0%} "
            "asked for: the host was probably busy (other processes, or a noisy neighbour); "
            "measure again on a quiet host, or with fewer --threads"
        )
    return out


def _cmd_profile(args: argparse.Namespace) -> int:
    import datetime as dt
    import socket

    from bench.ceilings import highest_compute_ceiling, measure_ceilings
    from bench.keys import CellKey
    from bench.profile import format_profile, profile_frame, profile_model
    from bench.store import ensure_writable, write_table

    if args.dtype not in DTYPES:
        raise InvalidOption(f"unknown dtype {args.dtype!r}; choose from {', '.join(DTYPES)}")
    from bench.plan import MAX_BATCH, MAX_IMAGE

    if not 1 <= args.batch_size <= MAX_BATCH:
        raise InvalidOption(
            f"--batch-size {args.batch_size} must be an integer in [1, {MAX_BATCH}]"
        )
    if args.image_size is not None and not 1 <= args.image_size <= MAX_IMAGE:
        raise InvalidOption(
            f"--image-size {args.image_size} must be an integer in [1, {MAX_IMAGE}]"
        )
    device = _checked_devices((args.device,))[0]  # `cuda`: the first GPU
    threads = _threads(args.threads)
    if args.out is not None:
        ensure_writable(args.out)
    roof = None
    if args.ceilings:
        found = measure_ceilings(device, args.dtype, threads, kinds=("gemm", "conv3x3"))
        roof = highest_compute_ceiling(found, device, args.dtype, threads)
        for line in imprecise_ceilings(found, 0.02):
            print(f"effbench: warning: {line}", file=sys.stderr)
    for name in args.models:
        prof = profile_model(
            name,
            device=device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            config=args.config,
            threads=threads,
            image_size=args.image_size,
            ceiling_macs_per_s=roof.value if roof else None,
            ceiling_ci_rel=(roof.ci_rel or 0.0) if roof else 0.0,
        )
        print(format_profile(prof, args.format))
        if args.out is not None:
            key = CellKey(
                name, device, args.dtype, args.batch_size, prof.image_size, threads, prof.config
            )
            stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            path = args.out / f"profile-{key.stem(0)}.parquet"
            write_table(path, profile_frame([prof], socket.gethostname(), stamp))
            print(f"effbench: profile -> {path}", file=sys.stderr)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bench.layers import format_inspection, inspect_model

    if args.image_size is not None and args.image_size < 1:
        raise InvalidOption(f"--image-size {args.image_size} must be >= 1")
    print(format_inspection(inspect_model(args.model, args.image_size), args.format))
    return 0


def _shown() -> list[tuple[str, str, Any]]:
    """`effbench show`'s columns, from the schema's declarations: (source column, shown
    name, conversion); bytes are shown in MiB and multiply-adds in billions."""
    from bench.schema import SHOWN
    from bench.units import to_gmacs, to_mib

    out: list[tuple[str, str, Any]] = []
    for c in SHOWN:
        if c.unit == "bytes":
            out.append((c.name, c.name.removesuffix("_bytes") + "_mib", to_mib))
        elif c.unit == "MACs":
            out.append((c.name, "g" + c.name, to_gmacs))
        else:
            out.append((c.name, c.name, None))
    return out


def _cmd_show(args: argparse.Namespace) -> int:
    from bench.store import load_results

    df = load_results(args.results).sort_values(
        ["run_id", "model", "device", "dtype", "repeat", "batch_size"]
    )
    shown = _shown()
    df = df.assign(**{name: convert(df[src]) for src, name, convert in shown if convert})
    columns = [name for _, name, _ in shown]
    rows = df[columns].round(3).to_dict(orient="records")
    _emit(rows, args.format, columns)
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    from bench import devices
    from bench.probes.power import describe_sources

    env = devices.environment().to_dict()
    power_devices = list(env["devices"])
    if not any(d.startswith("cuda") for d in power_devices):
        power_devices.append("cuda")  # say why NVML is not usable here
    env["power_sources"] = describe_sources(power_devices)
    if args.format == "json":
        print(json.dumps(env, indent=2, default=str))
    else:
        width = max(len(k) for k in env)
        for k, v in env.items():
            print(f"{k:<{width}}  {v}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench import compare

    settings = compare.Settings(
        metrics=compare.parse_metrics(args.metric),
        threshold=compare.Threshold.parse(args.threshold),
        alpha=args.alpha,
        single_run_floor=compare.Threshold.parse(
            args.single_run_floor, upper=10.0, allow_zero=True
        ).log_bound,
        latency_statistic=args.latency_stat,
        test=args.test,
        drift_floor=compare.Threshold.parse(
            args.drift_floor, upper=10.0, allow_zero=True
        ).log_bound,
        count_threshold=compare.Threshold.parse(args.count_threshold),
    )
    result = compare.compare_paths(
        args.baseline, args.candidate, settings, allow_env_mismatch=args.allow_env_mismatch
    )
    text = compare.render(result, args.format)
    if args.out is None:
        print(text, end="")
    else:
        try:
            args.out.write_text(text)
        except OSError as e:
            raise OutputNotWritable(f"cannot write {args.out}: {e.strerror or e}") from e
    print(f"effbench compare: {compare.summary_line(result)}", file=sys.stderr)
    return result.exit_code(args.fail_on_inconclusive)


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
            with _stop_on_signals():
                return _cmd_run(args, ["effbench", *argv])
        if args.command == "models":
            return _cmd_models(args)
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "peak":
            return _cmd_peak(args)
        if args.command == "profile":
            return _cmd_profile(args)
        if args.command == "show":
            return _cmd_show(args)
        if args.command == "env":
            return _cmd_env(args)
        if args.command == "compare":
            return _cmd_compare(args)
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
    sys.exit(main())

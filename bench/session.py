"""The run session of `effbench run`: options and defaults resolved from the command
line, the pre-flight check, the lanes (run folders) new or resumed, the arms of
`--variant`, the executor (asked for its capabilities, ``bench.executor_registry``) and
its cluster, and the measurement through ``bench.runner``,
``bench.parallel`` or ``bench.pingpong`` with signals turned into ``Interrupted``. The CLI
(``bench.cli``) parses and exits; this module never calls ``sys.exit``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import Interrupted, InvalidOption
from bench.plan import BURST_S, BURSTS, REMEASURE, Options, Timing
from bench.variants import parse_size_bytes

if TYPE_CHECKING:
    from bench.executor import Cluster
    from bench.preflight import HostCheck

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
    set (test suites) or the executor's workers are not on this machine (a cluster's)."""
    from bench.executor_registry import DEFAULT, capabilities

    if args.ceilings is not None:
        return bool(args.ceilings)
    name = getattr(args, "executor", None) or DEFAULT
    if not capabilities(name).local:
        print(
            f"effbench: ceilings not measured (--executor {name} runs the workers elsewhere, "
            "not on this machine; run `effbench peak` there); rows get no compute_fraction",
            file=sys.stderr,
        )
        return False
    return not os.environ.get(NO_CEILINGS_ENV)


_COMPLETE = "nothing to do: every cell of the plan has a row"


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from bench.executor_registry import capabilities, executor_class

    caps = capabilities(args.executor)
    check = _check_host(args) if args.require_quiet else None  # before anything starts
    if caps.fork_server and not any("python=" in v for v in args.variant or ()):
        # a suite is listed, which imports torchvision's zoo: the server imports it as well
        _start_fork_server(with_zoo=not args.models and args.resume is None)
    check = check if check is not None else _check_host(args)  # the server imports meanwhile
    from bench.run_folder import record_preflight
    from bench.runner import count_work, open_lane

    _check_executor(args)
    if args.count_instructions:
        from bench.instructions import check_tools

        check_tools()  # before anything is written
    _check_pingpong(args)
    cluster = _connect(executor_class(args.executor), args.ray_address) if caps.cluster else None
    inventory = cluster.inventory if cluster else _local_inventory()
    host: dict[str, Any] = {}

    def preflight(threads: int) -> None:  # after the plan is checked, before anything is written
        host.update(_preflight(args, check, threads))

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
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
        print(
            f"effbench: {summary.written} rows ({counts or _COMPLETE}) in {summary.wall_s:.1f} s "
            f"-> {summary.run_dir}",
            file=sys.stderr,
        )
        if counts:  # a resumed run that was complete has no share of nothing to report
            print(
                f"effbench: {summary.timed_s:.1f} s in timed iterations; "
                f"{summary.outside_timed_share:.0%} of the sweep's time was spent outside them "
                "(start-up, model build, MAC counting, warm-up, writing)",
                file=sys.stderr,
            )
        if summary.qualities:
            from bench.quality import session_line

            line = session_line(
                summary.qualities, summary.remeasured, summary.run_dir, summary.noisy
            )
            print(f"effbench: {line}", file=sys.stderr)
    return 0


def _start_fork_server(with_zoo: bool) -> None:
    """Start the workers' fork server first, so that its imports (torch, the registry and,
    ``with_zoo``, torchvision's zoo: about 3 s here) run while this process imports its own
    (about 2 s) instead of after them. Without the zoo, a run whose networks turn out to
    need it replaces the server once (bench.executor). The pre-flight check does not count
    it as another process's load."""
    if sys.platform.startswith("linux"):
        from bench.executor import ForkServerExecutor

        ForkServerExecutor(preload_all=with_zoo).prepare()


def _local_inventory() -> Any:
    """This machine's devices, listed outside the runner where a GPU is present: their
    forwards would leave a CUDA context in it for the whole sweep (bench.discovery)."""
    from bench import devices
    from bench.discovery import without_context

    return without_context(devices.discover, "this machine's")


def _check_executor(args: argparse.Namespace) -> None:
    """The options this run's executor cannot serve, refused by its capabilities."""
    from bench.executor_registry import capabilities, names_where

    name, caps = args.executor, capabilities(args.executor)
    if args.ray_address is not None and not caps.cluster:
        raise InvalidOption(f"--ray-address needs --executor {' or '.join(names_where('cluster'))}")
    where = f"--executor {name}'s workers (not on this machine)"
    if args.ceilings and not caps.local:
        raise InvalidOption(
            f"--ceilings measures this machine, not {where}; drop it, and run "
            "`effbench peak` on each node"
        )
    if args.count_instructions and not caps.local:
        raise InvalidOption(
            f"--count-instructions counts on this machine, not on {where}; drop one of them"
        )


def _connect(cls: Any, address: str | None) -> Cluster:
    """The cluster a ``cluster`` executor (its class ``cls``) reaches at ``address``."""
    cluster: Cluster = cls.connect(address)
    return cluster


def _check_pingpong(args: argparse.Namespace) -> None:
    """``--pingpong`` needs arms and one box; ``--bursts``/``--burst-time`` need it."""
    from bench.executor_registry import capabilities, names_where

    if not args.pingpong:
        if args.bursts is not None or args.burst_time is not None:
            raise InvalidOption("--bursts and --burst-time go with --pingpong")
        return
    if len(args.variant or ()) < 2:
        raise InvalidOption(
            "--pingpong alternates bursts between the arms of an A/B run; give two or more "
            "--variant arms (e.g. --variant base:python=PATH --variant pr:python=PATH)"
        )
    if not capabilities(args.executor).pingpong or args.parallel:
        bad = [args.executor] if not capabilities(args.executor).pingpong else []
        drop = " or ".join(bad or names_where("pingpong", False))
        raise InvalidOption("--pingpong runs the arms on this machine, one group at a time; "
                            f"drop --executor {drop} and --parallel")  # fmt: skip


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


def _check_host(args: argparse.Namespace) -> HostCheck:
    """The pre-flight check (bench.preflight), before the plan is read (which imports torch,
    ~10 s on a busy 2-core host): ``--require-quiet`` refuses a busy host in a second. This
    run's fork server, which may be importing torch meanwhile, is not another's load."""
    from bench.executor import fork_server_pid
    from bench.preflight import CHECK_S, HostBusy, check_host

    server = fork_server_pid()
    check = check_host(
        seconds=min(_env_number(PREFLIGHT_ENV, CHECK_S, float), 1.0),
        ours=(server,) if server is not None else (),
    )
    if check.busy and args.require_quiet:
        raise HostBusy(
            f"{check.describe()}; --require-quiet refuses a busy host: wait until it is quiet "
            f"(or give fewer --threads, or pin idle cores with taskset), then run again"
        )
    return check


def _preflight(args: argparse.Namespace, check: HostCheck, threads: int) -> dict[str, Any]:
    """Warn about what the pre-flight ``check`` saw, once the plan's ``threads`` are known;
    the check, for the manifest."""
    advice = check.advice(threads)
    if advice:
        print(f"effbench: warning: {check.describe()}; {advice}", file=sys.stderr)
    return {**check.to_dict(), "required_quiet": bool(args.require_quiet)}


Lanes = list[tuple[Path, str, Options, Any, Any]]  # (run folder, id, options, groups, lock)


def _resumed_lanes(args: argparse.Namespace, inventory: Any, preflight: Any) -> Lanes:
    """The run folders of ``--resume``, each locked, with the plan its manifest records."""
    from bench.run_folder import resume_run

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
    from bench.variants import INTERPRETER, check_interpreter

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
    from bench.executor_registry import capabilities
    from bench.plan import expand_plan, resolve
    from bench.run_folder import check_new_run, new_run_id, start_run
    from bench.variants import parse_variants

    catalog = _Catalog()
    out = args.out if args.out is not None else Path("results")
    has_gpu = any(d.startswith("cuda:") for d in inventory.devices)
    options = resolve(_new_options(args, has_gpu), catalog, inventory)
    caps = capabilities(args.executor)
    if not caps.local and any(parse_config(c).malloc for c in options.configs):
        raise InvalidOption(
            "malloc: configurations set the allocator of this machine's workers; drop them "
            f"with --executor {args.executor}"
        )
    if options.tf32 and not any(d.startswith("cuda") for d in options.devices):
        raise InvalidOption(
            f"--tf32 allows TF32 on CUDA GPUs, and this run measures none "
            f"({', '.join(options.devices)}); drop --tf32"
        )
    groups = expand_plan(options, catalog, inventory)
    if args.parallel:  # recorded in the plan, so a resume runs the same lanes
        from bench.parallel import assign_cpus

        if not caps.parallel:
            raise InvalidOption(
                f"--parallel is for one box; drop it with --executor {args.executor}"
            )
        options = dataclasses.replace(options, parallel=True)
        groups = assign_cpus(groups, sorted(os.sched_getaffinity(0)))
    # this machine's record: a cluster's inventory is its nodes', so look here again
    env = devices.environment(None if cluster else inventory).to_dict()
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
    if not caps.interpreters and any(v.python for v in variants):
        raise InvalidOption(
            f"--variant NAME:python=PATH runs locally; drop --executor {args.executor}"
        )
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
    or one lane per GPU of a cluster (an executor with the ``cluster`` capability)."""
    from bench import devices
    from bench.executor import ArmExecutor, Executor
    from bench.executor_registry import executor_class
    from bench.preflight import wait_for_quiet
    from bench.runner import run_interleaved
    from models import get_spec

    interpreters = {lane[1]: lane[2].python for lane in lanes if lane[2].python}
    device_name_of = cluster.device_name if cluster else devices.device_name
    cls = executor_class(args.executor)

    def make_executor() -> Executor:  # one per lane; python= arms' workers get theirs
        if cluster:
            return cluster.executor
        local = cls()
        return ArmExecutor(local, interpreters) if interpreters else local

    if any(lane[2].pingpong for lane in lanes):  # recorded, so a resume ping-pongs too
        from bench.pingpong import run_pingpong

        fresh = cls.capabilities.new_interpreter
        return run_pingpong(opened, get_spec, device_name_of, argv, fresh)
    cluster_gpus = len(cluster.gpus) if cluster else 0
    on_cluster_gpus = cluster_gpus and any(g.device == "cuda" for lane in lanes for g in lane[3])
    # re-measurements wait for this host to calm down; elsewhere they cannot be seen
    wait = wait_for_quiet if cls.capabilities.local else None
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
    record = devices.interpreter_environment(variant.python, dict(env))
    missing = [d for d in options.devices if d not in (record.get("devices") or {})]
    if missing:
        raise InvalidOption(
            f"--variant {variant.name}: {variant.python} cannot run {', '.join(missing)} "
            f"(its torch {record.get('torch_version')} sees {sorted(record.get('devices') or {})})"
        )
    opts = dataclasses.replace(options, variant=variant.name, env=env, python=variant.python)
    return opts, record


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
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

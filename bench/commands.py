"""The subcommands of `effbench` other than `run` (``bench.session``): models, peak,
profile, inspect, show, env and compare. Each takes the parsed arguments and returns the
exit code; ``bench.cli`` parses, dispatches and exits."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bench.errors import InvalidOption, OutputNotWritable
from bench.plan import (
    DTYPES,
)


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


def models_command(args: argparse.Namespace) -> int:
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


def peak_command(args: argparse.Namespace) -> int:
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


def profile_command(args: argparse.Namespace) -> int:
    import datetime as dt
    import socket

    from bench.ceilings import highest_compute_ceiling, measure_ceilings
    from bench.keys import CellKey
    from bench.profile import profile_model
    from bench.profile_format import format_profile, profile_frame
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


def inspect_command(args: argparse.Namespace) -> int:
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


def show_command(args: argparse.Namespace) -> int:
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


def env_command(args: argparse.Namespace) -> int:
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


def compare_command(args: argparse.Namespace) -> int:
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
        session_spread=compare.Threshold.parse(
            args.session_spread, upper=1.0, allow_zero=True
        ).log_bound,
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

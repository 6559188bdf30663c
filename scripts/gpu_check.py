"""The checks of the GPU check (``scripts/gpu_check.sh``; docs/gpu-validation.md).

Two subcommands, run by the shell script:

- ``header --work DIR [--dry-run]``: print the machine record (date, GPU, driver, torch)
  and save it as ``DIR/header.md``; exit 3 when a GPU run finds no CUDA device.
- ``check --work DIR --out DIR --device DEV [--dry-run] [--timer-cells ...]``: read the
  sweeps the script ran (``DIR/results/<run>``, ``DIR/steps.tsv``, the gpu tests' JUnit
  file), measure what needs this process (latency against ``torch.utils.benchmark.Timer``,
  interleaved; the NVML energy counter against a power sampler over one busy window), print
  the verdicts as a markdown table and write it to ``OUT/gpu_check.md`` with every row of
  the sweeps in ``OUT/rows.parquet``. Exit 1 when a check that ran failed.

A dry run (``--dry-run``) does the same on the CPU with tiny models; the checks that only
mean something on a GPU (gpu tests, NVML, CUDA graphs, GPU telemetry) say
``skipped (dry run)``. Module-level imports are the standard library only: the NVML sampler
is a spawned process, which imports this module again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASS, FAIL, DRY = "pass", "fail", "skipped (dry run)"
NOT_JUDGED = "not judged (dry run)"  # timing on the dry run's shared CPU
TIMER_TOLERANCE = 0.03
NVML_TOLERANCE = 0.05
MATMUL_N = 8192  # the busy window's bfloat16 products: ~1.5 ms each on an H100/H200
STEPS = {
    "gpu-tests": "gpu-marked tests (pytest -m gpu)",
    "sweep-dtypes": "sweep-dtypes: every planned cell ok",
    "sweep-configs": "sweep-configs: every planned cell ok",
    "sweep-parallel": "sweep-parallel (--parallel, one lane per GPU): every planned cell ok",
    "profile": "per-layer profile: layers sum to the plain forward",
}
CEILINGS_CHECK = "ceilings vs datasheet (gemm 30-105%, triad 50-105%)"
PROFILE_TOLERANCE = 0.15
COMPILER_PARTS = {
    "compile": ("compile", "compile-max-autotune"),  # compile:BACKEND is "compile" here
    "cudagraphs": ("cudagraphs",),
}
TELEMETRY = (
    "power_w_mean",
    "energy_j",
    "gpu_clock_mhz",
    "gpu_mem_clock_mhz",
    "gpu_temp_c",
    "throttled",
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the table: what was checked, the verdict and what was seen."""

    name: str
    result: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the shell script: its exit status and seconds against its limit."""

    rc: int
    seconds: int
    limit_s: int

    @property
    def timed_out(self) -> bool:
        return self.rc in (124, 137)

    def describe(self) -> str:
        how = "stopped at its time limit" if self.timed_out else f"exit {self.rc}"
        return f"{how} after {self.seconds} s (limit {self.limit_s} s)"


@dataclass(frozen=True, slots=True)
class TimerCell:
    model: str
    batch_size: int
    dtype: str
    config: str

    @classmethod
    def parse(cls, text: str) -> TimerCell:
        """``model:batch:dtype:config``, e.g. ``resnet50:64:float16:eager``."""
        model, batch, dtype, config = text.split(":", 3)
        return cls(model, int(batch), dtype, config)

    def __str__(self) -> str:
        return f"{self.model} b{self.batch_size} {self.dtype} {self.config}"


# --- header --------------------------------------------------------------------------


def header_lines(dry_run: bool) -> list[str]:
    """The machine record: date, GPU, driver, torch, CUDA and cuDNN versions, commit."""
    import torch

    from bench.devices import cpu_model, git_commit

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"- date: {now}",
        f"- mode: {'dry run (cpu, tiny models)' if dry_run else 'gpu'}",
    ]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        from bench.probes.nvml import driver_version

        lines += [
            f"- GPU: {torch.cuda.get_device_name(0)} (cuda:0 of {torch.cuda.device_count()}, "
            f"{p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor})",
            f"- NVIDIA driver: {driver_version() or 'unknown (NVML not readable)'}",
        ]
    else:
        lines.append("- GPU: none visible")
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    lines += [
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn}), "
        f"torchvision {_version_of('torchvision')}, Python {platform.python_version()}",
        f"- nvidia-ml-py: {_version_of('nvidia-ml-py')}",
        f"- CPU: {cpu_model()}, {len(_affinity())} cores available",
        f"- effbench commit: {git_commit() or 'unknown'}",
    ]
    return lines


def _version_of(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _affinity() -> set[int]:
    import os

    try:
        return os.sched_getaffinity(0)
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def header(work: Path, dry_run: bool) -> int:
    import torch

    lines = ["# effbench GPU check", "", *header_lines(dry_run)]
    text = "\n".join(lines) + "\n"
    print(text)
    work.mkdir(parents=True, exist_ok=True)
    (work / "header.md").write_text(text)
    if not dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible; run `bash scripts/gpu_check.sh --dry-run` "
            "on a machine without a GPU",
            file=sys.stderr,
        )
        return 3
    return 0


# --- checks of the sweeps ---------------------------------------------------------------


def read_steps(work: Path) -> dict[str, Step]:
    steps: dict[str, Step] = {}
    path = work / "steps.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps[name] = Step(int(rc), int(seconds), int(limit))
    return steps


def check_gpu_tests(work: Path, step: Step | None, dry_run: bool) -> Check:
    """Pass: the JUnit file counts tests, none failed, errored or was skipped."""
    name = STEPS["gpu-tests"]
    if step is None:
        return Check(name, FAIL, "the step did not run")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    junit = work / "gpu-tests.xml"
    if junit.exists():
        root = ET.parse(junit).getroot()
        for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    seen = ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {step.describe()}"
    broken = counts["failures"] or counts["errors"] or step.rc not in (0, 5)
    if dry_run:
        if broken:
            return Check(name, FAIL, seen)
        return Check(name, DRY, f"collected and skipped without CUDA: {seen}")
    ok = step.rc == 0 and counts["tests"] > 0 and not counts["skipped"] and not broken
    return Check(name, PASS if ok else FAIL, seen)


def check_sweep(name: str, run_dir: Path, step: Step | None, df: Any) -> Check:
    """Pass: the sweep exited 0 and wrote one ``ok`` row for every planned cell."""
    from bench.store import best_attempts

    title = STEPS[name]
    if step is None:
        return Check(title, FAIL, "the step did not run")
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return Check(title, FAIL, f"no run folder ({step.describe()})")
    planned = int(json.loads(manifest.read_text()).get("planned_cells", 0))
    rows = df[df["run_id"] == run_dir.name]
    attempts = len(rows)
    rows = best_attempts(rows)  # a cell judged contended is measured again: one row per try
    bad = rows[rows["status"] != "ok"]
    detail = f"{len(rows) - len(bad)}/{planned} cells ok; {step.describe()}"
    if attempts > len(rows):
        detail += f"; {attempts - len(rows)} re-measurement(s) of contended cells"
    if len(bad):
        detail += "; not ok: " + _listed(
            f"{_cell(r)} {r['status']} ({str(r['error'])[:80]})" for _, r in bad.iterrows()
        )
    ok = step.rc == 0 and planned > 0 and len(rows) == planned and not len(bad)
    return Check(title, PASS if ok else FAIL, detail)


def check_ceilings(run_dir: Path, dry_run: bool) -> Check:
    """Pass: the sweep measured ceilings for every dtype, and where the GPU has a cited
    datasheet, the measured GEMM is 30-105% of its peak and the triad 50-105% of its
    bandwidth (a measured rate above the sheet means the sheet or the timing is wrong)."""
    import pandas as pd

    if dry_run:
        return Check(CEILINGS_CHECK, DRY, "the dry run's sweeps skip ceilings (seconds each)")
    path = run_dir / "ceilings.parquet"
    if not path.exists():
        return Check(CEILINGS_CHECK, FAIL, f"no {path.name} in {run_dir.name}")
    c = pd.read_parquet(path)
    seen, ok = [], True
    for dtype, rows in c.groupby("dtype"):
        value = dict(zip(rows["kind"], rows["value"], strict=True))
        gemm, triad = value.get("gemm"), value.get("triad")
        if gemm is None or triad is None:
            ok = False
            seen.append(f"{dtype}: gemm or triad missing")
            continue
        text = f"{dtype}: gemm {gemm / 1e12:.1f} TMAC/s, triad {triad / 1e12:.2f} TB/s"
        sheet_c, sheet_b = value.get("datasheet_compute"), value.get("datasheet_bandwidth")
        if sheet_c and sheet_b:
            rc, rb = gemm / sheet_c, triad / sheet_b
            ok &= 0.3 <= rc <= 1.05 and 0.5 <= rb <= 1.05
            text += f" ({rc:.0%} and {rb:.0%} of the datasheet)"
        else:
            text += " (no datasheet entry)"
        seen.append(text)
    return Check(CEILINGS_CHECK, PASS if ok else FAIL, "; ".join(seen))


def check_profile(work: Path, step: Step | None, tolerance: float, dry_run: bool = False) -> Check:
    """Pass: `effbench profile` ran and its layers, less the hook overhead it measured
    (``hook_overhead_ms``: leaf calls × an empty hooked layer's time), add up to its plain
    forward's median within ``tolerance`` (work outside leaf layers, and on a GPU the launch
    latency that per-layer synchronisation stops hiding). In a dry run
    (a shared CPU) a sum outside it is reported, not failed: other jobs delay the plain
    forward more than any one layer (the profile says so itself)."""
    import pandas as pd

    title = f"{STEPS['profile']} within {tolerance:.0%}"
    if step is None:
        return Check(title, FAIL, "the step did not run")
    files = sorted((work / "profiles").glob("profile-*.parquet"))
    if step.rc != 0 or not files:
        return Check(title, FAIL, f"no profile written ({step.describe()})")
    layers = pd.read_parquet(files[0])
    forward, summed = float(layers["forward_ms"].iloc[0]), float(layers["sum_layers_ms"].iloc[0])
    # the hooks' own cost, timed by the profile on an empty hooked layer (older files: 0)
    overhead = float(layers["hook_overhead_ms"].iloc[0]) if "hook_overhead_ms" in layers else 0.0
    top = layers.sort_values("time_ms", ascending=False).head(3)
    ratio = (summed - overhead) / forward
    less = f" less {overhead:.3f} ms of hook overhead" if overhead else ""
    detail = (
        f"{layers['model'].iloc[0]} b{layers['batch_size'].iloc[0]} "
        f"{layers['dtype'].iloc[0]}: layers {summed:.3f} ms{less}, forward {forward:.3f} ms "
        f"({ratio:.2f}x); slowest: "
        + ", ".join(f"{r.layer} {r.time_ms:.3f} ms" for r in top.itertuples())
    )
    if abs(ratio - 1) <= tolerance:
        return Check(title, PASS, detail)
    if dry_run:
        return Check(title, NOT_JUDGED, detail + "; a shared CPU's timing is not judged")
    return Check(title, FAIL, detail)


def _cell(r: Any) -> str:
    return f"{r['model']} b{r['batch_size']} {r['dtype']} {r['config']} r{r['repeat']}"


def _listed(items: Any, most: int = 4) -> str:
    items = list(items)
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def check_peak_vs_weights(ok: Any, device: str) -> Check:
    """Pass: every ok row has a peak of at least its weights, by the device's method."""
    name = "peak_memory_bytes >= weights_bytes"
    if ok.empty:
        return Check(name, FAIL, "no ok rows")
    want = "cuda_max_memory_allocated" if device.startswith("cuda") else None
    low = ok[~(ok["peak_memory_bytes"] >= ok["weights_bytes"])]
    # the method, then how the pass ran ("; one forward after the timed window")
    by_want = ok["memory_method"].astype(str).str.split(";").str[0] == want
    wrong = ok[~by_want] if want else ok.iloc[0:0]
    methods = ", ".join(sorted(set(map(str, ok["memory_method"]))))
    ratio = (ok["peak_memory_bytes"] / ok["weights_bytes"]).min()
    detail = f"{len(ok) - len(low)}/{len(ok)} rows; smallest peak/weights {ratio:.2f}; {methods}"
    if len(low):
        detail += "; below: " + _listed(
            f"{_cell(r)} {r['peak_memory_bytes']} < {r['weights_bytes']}" for _, r in low.iterrows()
        )
    if len(wrong):
        detail += f"; {len(wrong)} rows not measured by {want}"
    return Check(name, PASS if not len(low) and not len(wrong) else FAIL, detail)


def check_peak_grows(ok: Any) -> Check:
    """Pass: within each worker's group (same run, model, dtype, config, repeat), the peak
    rises strictly from one batch size to the next."""
    name = "peak_memory_bytes increases with batch size"
    keys = ["run_id", "model", "device", "dtype", "config", "repeat"]
    groups = [g.sort_values("batch_size") for _, g in ok.groupby(keys) if len(g) > 1]
    if not groups:
        return Check(name, FAIL, "no group has two ok batch sizes")
    flat = []
    for g in groups:
        peaks = list(g["peak_memory_bytes"])
        if not all(b > a for a, b in itertools.pairwise(peaks)):
            r = g.iloc[0]
            shown = ", ".join(
                f"b{b}: {p / 2**20:.1f} MiB" for b, p in zip(g["batch_size"], peaks, strict=True)
            )
            flat.append(f"{r['model']} {r['dtype']} {r['config']} r{r['repeat']} ({shown})")
    detail = f"{len(groups) - len(flat)}/{len(groups)} groups rise"
    if flat:
        detail += "; not rising: " + _listed(flat)
    return Check(name, FAIL if flat else PASS, detail)


def check_outputs(ok: Any) -> Check:
    """Pass: ``output_ok`` is true on every ok row (against eager float32)."""
    name = "output_ok everywhere"
    if ok.empty:
        return Check(name, FAIL, "no ok rows")
    bad = ok[ok["output_ok"] != True]  # noqa: E712 (None and NaN are failures too)
    worst = ok.groupby("dtype")["max_rel_err"].max()
    detail = f"{len(ok) - len(bad)}/{len(ok)} rows; largest max_rel_err " + ", ".join(
        f"{d} {v:.2g}" for d, v in worst.items()
    )
    if len(bad):
        detail += "; failing: " + _listed(
            f"{_cell(r)} max_rel_err {r['max_rel_err']:.3g}" for _, r in bad.iterrows()
        )
    return Check(name, FAIL if len(bad) else PASS, detail)


def _config_parts(config: str) -> list[str]:
    return [p.split(":")[0] for p in str(config).split("+")]


def check_compiled(rows_all: Any, kind: str, dry_run: bool) -> Check:
    """Pass: rows of the ``kind`` configurations ("compile" or "cudagraphs") exist, are
    ok, and carry ``compile_s`` > 0 and ``recompiled`` false."""
    name = f"{kind} rows with compile_s"
    if kind == "cudagraphs" and dry_run:
        return Check(name, DRY, "CUDA graphs need CUDA")
    parts = COMPILER_PARTS[kind]
    rows = rows_all[rows_all["config"].map(lambda c: any(p in parts for p in _config_parts(c)))]
    if rows.empty:
        return Check(name, FAIL, "no rows")
    ok = rows[rows["status"] == "ok"]
    good = ok[(ok["compile_s"] > 0) & (ok["recompiled"] == False)]  # noqa: E712
    times = ", ".join(
        f"b{r['batch_size']} r{r['repeat']} {r['compile_s']:.1f} s" for _, r in ok.iterrows()
    )
    breaks = sorted({int(b) for b in ok["graph_breaks"].dropna()})
    detail = (
        f"{len(good)}/{len(rows)} rows ok with compile_s and no recompilation; "
        f"compile_s {times or '-'}; graph_breaks {breaks or '-'}"
    )
    return Check(name, PASS if len(good) == len(rows) else FAIL, detail)


def check_telemetry(ok: Any, dry_run: bool) -> Check:
    """Pass: every ok CUDA row has NVML power, energy, clocks, temperature and throttle
    state, from an ``nvml:`` source that reported its window."""
    name = "telemetry columns filled"
    if dry_run:
        return Check(name, DRY, "NVML telemetry needs a GPU")
    if ok.empty:
        return Check(name, FAIL, "no ok rows")
    missing = {c: int(ok[c].isna().sum()) for c in TELEMETRY}
    source = ok["power_source"].astype(str)
    unreported = ok[~source.str.startswith("nvml:") | source.str.contains("not reported")]
    throttled = ok[ok["throttled"] == True]  # noqa: E712
    reasons = sorted({r for v in ok["throttle_reasons"].dropna() for r in str(v).split(",") if r})
    detail = (
        f"{len(ok)} rows; sources {sorted(set(source))}; empty: "
        + (", ".join(f"{c} {n}" for c, n in missing.items() if n) or "none")
        + f"; throttled {len(throttled)} rows; reasons seen {reasons or '-'}"
        + f"; SM clock {ok['gpu_clock_mhz'].min():.0f}-{ok['gpu_clock_mhz'].max():.0f} MHz"
        + f"; temperature up to {ok['gpu_temp_c'].max():.0f} °C"
    )
    if len(unreported):
        detail += "; not reported: " + _listed(
            f"{_cell(r)}: {r['power_source']}" for _, r in unreported.iterrows()
        )
    good = not any(missing.values()) and not len(unreported)
    return Check(name, PASS if good else FAIL, detail)


def check_contention(ok: Any, dry_run: bool) -> Check:
    """Pass: every ok row carries its contention evidence (run waits, other processes'
    cores, steal; on a GPU the other processes NVML lists) and a verdict (issue 20). The
    verdicts are reported, not judged: a lent GPU box may be shared."""
    name = "contention evidence and verdicts"
    if ok.empty:
        return Check(name, FAIL, "no ok rows")
    columns = ["run_wait_share", "others_cpu_cores", "steal_share", "quality"]
    if not dry_run:
        columns.append("gpu_other_processes")  # NVML's process list: never run before
    missing = {c: int(ok[c].isna().sum()) if c in ok else len(ok) for c in columns}
    verdicts = ok["quality"].value_counts().to_dict() if "quality" in ok else {}
    detail = f"{len(ok)} rows; verdicts {verdicts or '-'}; empty: " + (
        ", ".join(f"{c} {n}" for c, n in missing.items() if n) or "none"
    )
    if not dry_run and "gpu_other_processes" in ok:
        others = ok["gpu_other_processes"].dropna()
        detail += f"; other GPU processes seen: {sorted(set(others.astype(int)))}"
    contended = ok[ok.get("quality") == "contended"] if "quality" in ok else ok.iloc[:0]
    if len(contended):
        detail += "; contended: " + _listed(
            f"{_cell(r)}: {r['quality_reason']}" for _, r in contended.iterrows()
        )
    return Check(name, PASS if not any(missing.values()) else FAIL, detail)


# --- measurements in this process ----------------------------------------------------------


def _pair_ratios(
    suite: Callable[[], float], reference: Callable[[], float], pairs: int
) -> list[float]:
    return [suite() / reference() for _ in range(pairs)]


def timer_check_name(cell: TimerCell, tolerance: float) -> str:
    return f"latency vs Timer: {cell} ({tolerance:.0%})"


def check_timer(
    cell: TimerCell,
    device: str,
    df: Any,
    seconds: float,
    pairs: int,
    threads: int | None,
    tolerance: float = TIMER_TOLERANCE,
) -> Check:
    """The suite's median (``bench.probes.timing.measure_latency``, as the worker calls it)
    against ``torch.utils.benchmark.Timer.blocked_autorange``'s, interleaved ``pairs``
    times on one model in this process; pass when the median of the pair ratios is within
    ``tolerance`` (3%) of 1. The Timer's statement synchronises after each forward as the
    suite does, so both time the same thing (a forward including its launch); the row's
    median from the sweep is shown beside them."""
    import torch
    from torch.utils.benchmark import Timer

    from bench.config_apply import prepare_cell
    from bench.configs import parse_config
    from bench.devices import torch_dtype
    from bench.probes.timing import measure_latency
    from models import get_spec

    name = timer_check_name(cell, tolerance)
    if threads:
        torch.set_num_threads(threads)
    spec = get_spec(cell.model)
    shape = (cell.batch_size, spec.in_chans, spec.image_size, spec.image_size)
    prepared = prepare_cell(
        spec.build(), shape, parse_config(cell.config), device, torch_dtype(cell.dtype)
    )
    forward, sync = prepared.forward, prepared.sync

    def synced() -> None:
        forward()
        sync()

    def suite_ms() -> float:
        r = measure_latency(
            forward,
            sync=sync,
            warmup_iters=1,
            warmup_time_s=0.0,
            min_time_s=seconds,
            max_time_s=seconds,
        )
        return statistics.median(r.samples_ms)

    def timer_ms() -> float:
        t = Timer("synced()", globals={"synced": synced}, num_threads=torch.get_num_threads())
        return t.blocked_autorange(min_run_time=seconds).median * 1e3

    with torch.inference_mode():
        measure_latency(forward, sync=sync, warmup_iters=3, warmup_time_s=0.3, max_time_s=0.2)
        ratios = _pair_ratios(suite_ms, timer_ms, pairs)
        suite_now = suite_ms()
    ratio = statistics.median(ratios)
    row = df[
        (df["model"] == cell.model)
        & (df["batch_size"] == cell.batch_size)
        & (df["dtype"] == cell.dtype)
        & (df["config"] == cell.config)
        & (df["status"] == "ok")
    ]
    swept = (
        f"; the sweep's row: {row['latency_ms_median'].median():.3f} ms"
        if len(row)
        else "; no row of this cell in the sweeps"
    )
    detail = (
        f"suite/Timer median ratio {ratio:.4f} over {pairs} interleaved pairs "
        f"(range {min(ratios):.4f}-{max(ratios):.4f}); suite {suite_now:.3f} ms{swept}"
    )
    ok = abs(ratio - 1) <= tolerance
    return Check(name, PASS if ok else FAIL, detail)


def check_nvml(device: str, window_s: float, dry_run: bool) -> tuple[Check, list[str]]:
    """The NVML monitor the worker uses (energy counter) against a power sampler process
    (``ProcessSampler``, instant power where the driver has it, else the averaged reading)
    over the same busy window of bfloat16 matrix products; pass when their mean powers
    (each energy over its own window) agree within 5%. Also measures how often the energy
    counter moves, for docs/power.md."""
    name = f"NVML energy counter vs sampler, {window_s:g} s busy window (5%)"
    if dry_run:
        return Check(name, DRY, "NVML needs a GPU"), []
    from bench.devices import synchronizer
    from bench.probes.nvml import NvmlMonitor, ProcessSampler, open_nvml_monitor, read_power_w

    sync = synchronizer(device)
    monitor = open_nvml_monitor(device, sync=sync)
    if not isinstance(monitor, NvmlMonitor):
        return Check(name, FAIL, f"no NVML monitor: {monitor.note}"), []
    import pynvml

    notes: list[str] = []
    pynvml.nvmlInit()  # counted: the monitor's own init and shutdown stay paired
    try:
        if monitor.method != "energy-counter":
            return Check(name, FAIL, f"energy counter not supported ({monitor.source})"), []
        handle, key = _nvml_handle(pynvml, device, notes)
        method = (
            "sampled-instant"
            if read_power_w(pynvml, handle, "sampled-instant") is not None
            else "sampled-average"
        )
        sampler = ProcessSampler("pynvml", key, method)
        try:
            verdict = _nvml_window(
                name, monitor, (pynvml, handle), sampler, method, device, window_s
            )
            notes.extend(verdict[1])
            return verdict[0], notes
        finally:
            sampler.close()
    finally:
        monitor.close()
        pynvml.nvmlShutdown()


def _nvml_handle(nvml: Any, device: str, notes: list[str]) -> tuple[Any, int | str]:
    """NVML's handle of CUDA ``device`` by its UUID, as the worker's monitor finds it (the
    mapping docs/power.md lists as unverified), else by index; ``notes`` says which."""
    import torch

    index = torch.device(device).index or 0
    uuid = f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError as e:
        notes.append(f"CUDA {device} has UUID {uuid}, which NVML does not know ({e}); by index")
        return nvml.nvmlDeviceGetHandleByIndex(index), index
    named = nvml.nvmlDeviceGetName(handle)
    named = named.decode() if isinstance(named, bytes) else str(named)
    notes.append(
        f"CUDA {device} ({torch.cuda.get_device_name(index)}) -> NVML by UUID {uuid} ({named})"
    )
    return handle, uuid


def _nvml_window(
    name: str,
    monitor: Any,
    nvml_handle: tuple[Any, Any],
    sampler: Any,
    method: str,
    device: str,
    window_s: float,
) -> tuple[Check, list[str]]:
    import torch

    from bench.probes.nvml import integrate_j

    n = MATMUL_N
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize

    def burst(k: int) -> None:
        for _ in range(k):
            torch.mm(a, b, out=c)

    burst(5)
    sync()
    t = time.perf_counter()
    burst(20)
    sync()
    per_mm_s = (time.perf_counter() - t) / 20
    chunk = max(1, min(200, int(0.05 / per_mm_s)))
    # Warm the board up for ~2 s (so power is steady at both edges; the averaged reading
    # lags) while polling the energy counter to see how often it moves.
    nvml, handle = nvml_handle
    notes: list[str] = []
    burst(max(1, min(1000, int(2.0 / per_mm_s))))
    changes, last = [], nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    while not torch.cuda.current_stream().query():
        now = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if now != last:
            changes.append(time.monotonic())
            last = now
        time.sleep(0.0005)
    periods = [y - x for x, y in itertools.pairwise(changes)]
    if periods:
        notes.append(
            f"energy counter moved every {statistics.median(periods) * 1e3:.1f} ms "
            f"(median of {len(periods)}; {min(periods) * 1e3:.1f}-{max(periods) * 1e3:.1f} ms)"
        )
    sampler.start()
    t0 = time.monotonic()
    monitor.begin_window()
    end = t0 + window_s
    while time.monotonic() < end:
        burst(chunk)
        sync()
    reading = monitor.end_window()
    t1 = time.monotonic()
    samples = sampler.stop()
    points = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
    sampled_j = integrate_j(points, t0, t1)
    steps = [y - x for (x, _), (y, _) in itertools.pairwise(points)]
    notes.append(
        f"sampler ({method}): {len(points)} power samples, median interval "
        f"{statistics.median(steps) * 1e3 if steps else math.nan:.1f} ms; window telemetry: "
        f"SM {reading.gpu_clock_mhz} MHz, memory {reading.gpu_mem_clock_mhz} MHz, "
        f"{reading.gpu_temp_c} °C, throttled {reading.throttled} ({reading.throttle_reasons})"
    )
    if reading.energy_j is None or reading.duration_s is None or not sampled_j:
        return Check(name, FAIL, f"counter: {reading.source}; sampler: {sampled_j} J"), notes
    counter_w = reading.energy_j / reading.duration_s
    sampled_w = sampled_j / (t1 - t0)
    diff = counter_w / sampled_w - 1
    detail = (
        f"counter {reading.energy_j:.0f} J over {reading.duration_s:.2f} s = {counter_w:.1f} W; "
        f"sampler ({method}) {sampled_j:.0f} J over {t1 - t0:.2f} s = {sampled_w:.1f} W; "
        f"difference {diff:+.2%}"
    )
    return Check(name, PASS if abs(diff) <= NVML_TOLERANCE else FAIL, detail), notes


# --- the table -----------------------------------------------------------------------


def table(checks: Sequence[Check]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {cell(c.name)} | **{c.result}** | {cell(c.detail)} |" for c in checks]
    return "\n".join(lines)


def _guarded(name: str, run: Callable[[], Check]) -> Check:
    """A check that raises is a failed check (with the error), not a lost table."""
    try:
        return run()
    except Exception as e:
        import traceback

        traceback.print_exc()
        return Check(name, FAIL, f"raised {type(e).__name__}: {str(e)[:200]}")


def check(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.store import best_attempts, load_results

    work, out, device, dry = args.work, args.out, args.device, args.dry_run
    steps = read_steps(work)
    names = ("sweep-dtypes", "sweep-configs", "sweep-parallel")
    runs = [work / "results" / name for name in names]
    present = [r for r in runs if (r / "manifest.json").exists()]
    checks = [check_gpu_tests(work, steps.get("gpu-tests"), dry)]
    df = pd.DataFrame(columns=["run_id", "status"])
    try:
        if present:
            df = load_results(present)
            df.to_parquet(out / "rows.parquet")
    except Exception as e:  # a run killed mid-write, say: report it, check the rest
        checks.append(Check("results readable", FAIL, f"{type(e).__name__}: {e}"[:300]))
    # of a cell measured again (judged contended), the attempt the report would read
    ok = best_attempts(df)
    ok = ok[ok["status"] == "ok"]
    checks += [check_sweep(r.name, r, steps.get(r.name), df) for r in runs]
    checks.append(_guarded(CEILINGS_CHECK, lambda: check_ceilings(runs[0], dry)))
    checks.append(
        _guarded(
            STEPS["profile"],
            lambda: check_profile(work, steps.get("profile"), args.profile_tolerance, dry),
        )
    )
    measured: list[tuple[str, Callable[[], Check]]] = [
        ("peak_memory_bytes >= weights_bytes", lambda: check_peak_vs_weights(ok, device)),
        ("peak_memory_bytes increases with batch size", lambda: check_peak_grows(ok)),
        ("output_ok everywhere", lambda: check_outputs(ok)),
        ("compile rows with compile_s", lambda: check_compiled(df, "compile", dry)),
        ("cudagraphs rows with compile_s", lambda: check_compiled(df, "cudagraphs", dry)),
        ("telemetry columns filled", lambda: check_telemetry(ok, dry)),
        ("contention evidence and verdicts", lambda: check_contention(ok, dry)),
    ]
    checks += [_guarded(n, f) for n, f in measured]
    for text in args.timer_cells.split(","):
        cell = TimerCell.parse(text)
        checks.append(
            _guarded(
                timer_check_name(cell, args.timer_tolerance),
                lambda c=cell: check_timer(
                    c,
                    device,
                    df,
                    args.timer_seconds,
                    args.pairs,
                    args.threads,
                    args.timer_tolerance,
                ),
            )
        )
    notes: list[str] = []

    def nvml() -> Check:
        verdict, seen = check_nvml(device, args.nvml_window_s, dry)
        notes.extend(seen)
        return verdict

    checks.append(_guarded("NVML energy counter vs sampler", nvml))
    head = (work / "header.md").read_text() if (work / "header.md").exists() else ""
    body = table(checks)
    extra = "\n".join(f"- {n}" for n in notes)
    failed = [c.name for c in checks if c.result == FAIL]
    verdict = f"{len(failed)} of {len(checks)} checks failed" if failed else "no check failed"
    text = f"{head}\n## Checks\n\n{body}\n\n{verdict}\n" + (
        f"\n## Notes\n\n{extra}\n" if extra else ""
    )
    print("\n" + text)
    (out / "gpu_check.md").write_text(text)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("header", help="print and save the machine record")
    h.add_argument("--work", type=Path, required=True)
    h.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("check", help="read the sweeps, measure, print the table")
    c.add_argument("--work", type=Path, required=True, help="the script's working folder")
    c.add_argument("--out", type=Path, required=True, help="where gpu_check.md goes")
    c.add_argument("--device", required=True, help="cuda:0, or cpu for a dry run")
    c.add_argument("--dry-run", action="store_true")
    c.add_argument(
        "--timer-cells",
        required=True,
        help="model:batch:dtype:config cells timed against Timer, comma-separated",
    )
    c.add_argument("--timer-seconds", type=float, default=0.3, help="per side of each pair")
    c.add_argument("--pairs", type=int, default=7, help="interleaved suite/Timer pairs")
    c.add_argument(
        "--timer-tolerance",
        type=float,
        default=TIMER_TOLERANCE,
        help="largest |suite/Timer - 1| that passes (0.03)",
    )
    c.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    c.add_argument(
        "--profile-tolerance",
        type=float,
        default=PROFILE_TOLERANCE,
        help="largest |layers/forward - 1| of the profile that passes (0.15)",
    )
    c.add_argument("--nvml-window-s", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.command == "header":
        return header(args.work, args.dry_run)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())

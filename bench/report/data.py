"""Load run folders into the tidy tables the report draws from.

Everything here is read from parquet (``bench.store.load_results``) and ``manifest.json``
(``bench.store.read_manifest``); nothing is measured here and no figure is typed in.

A *setup* is what a measurement depends on besides the network and the batch size: the
machine, the device, the dtype, (on CPUs) the thread count and the configuration (eager,
compile, ...). Setups are never averaged together; rows of the same cell and setup (repeats,
or the same cell in several runs of one machine) are summarized by their median, and
``n_repeats`` says how many there were. The configuration is named in the setup's label
when the data holds a configuration other than eager (so eager-only reports read as they
always did); ``base_setup`` is the label without it, the panel of the speed-up figure.

A cell whose output differed from eager float32 beyond its dtype's tolerance
(``output_ok`` false in any repeat) is not a measurement of the network: it is kept out of
``cells`` (so out of every figure and of the summary's timings) and listed in
``wrong_output``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsCorrupt
from bench.keys import CellKey
from bench.store import Discovery, Loaded, discover, load_discovered, run_id_problem
from bench.units import ms_to_s, to_gmacs, to_mib, to_millions

# Per-cell columns summarized by the median of repeats.
MEDIAN_COLUMNS = (
    "time_per_image_ms",
    "latency_ms_median",
    "latency_ms_p10",
    "latency_ms_p90",
    "latency_ms_iqr",
    "throughput_ips",
    "peak_memory_bytes",
    "power_w_mean",
    "power_w_idle",
    "energy_per_image_j",
    "compile_s",
)
# Per-cell columns that do not change between repeats (counts, references, setup).
FIRST_COLUMNS = (
    "family",
    "params",
    "macs",
    "macs_counter",
    "weights_bytes",
    "memory_method",
    "power_source",
    "top1",
    "top5",
    "accuracy_source",
    "host",
    "device",
    "device_name",
    "dtype",
    "threads",
    "base_setup",
)
CELL_COLUMNS = ("setup", "config", *CellKey.WORKLOAD_COLUMNS)
EAGER = "eager"  # the configuration every other one is compared with (bench/configs.py)
# Shown in the report, and the columns of ``wrong_output``.
WRONG_OUTPUT_COLUMNS = (
    "setup",
    "model",
    "batch_size",
    "config",
    "max_abs_err",
    "max_rel_err",
    "time_per_image_ms",
)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run folder the report read: where it is and what its manifest says."""

    path: str
    run_id: str
    manifest: dict[str, Any]
    rows: int


@dataclass(frozen=True, slots=True)
class LineFit:
    """Least-squares line ``y = slope * x + intercept`` over ``n`` points; ``r2`` is the
    coefficient of determination (NaN when ``y`` is constant)."""

    slope: float
    intercept: float
    r2: float
    n: int


@dataclass(frozen=True, slots=True)
class ReportData:
    """The report's inputs: every row, the per-cell medians of ``ok`` rows, the failures."""

    runs: tuple[RunInfo, ...]
    rows: pd.DataFrame
    cells: pd.DataFrame
    failures: pd.DataFrame
    setups: tuple[str, ...]
    models: tuple[str, ...]
    colors: dict[str, tuple[float, float, float]]
    notes: tuple[str, ...] = ()  # what the loader filled in for older files
    configs: tuple[str, ...] = (EAGER,)  # eager first, then the others sorted
    # per-cell medians of the cells whose output was wrong (see the module docstring)
    wrong_output: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def measured_cells(self) -> pd.DataFrame:
        """``cells`` and ``wrong_output`` together: every cell that ran (for what a wrong
        output does not change, such as the compile time)."""
        if self.wrong_output.empty:
            return self.cells
        return pd.concat([self.cells, self.wrong_output], ignore_index=True)

    @property
    def shows_config(self) -> bool:
        """Whether setup labels name the configuration (any configuration but eager)."""
        return self.configs != (EAGER,)


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Ordinary least squares in closed form (centred sums); needs two distinct ``x``."""
    xs = [float(v) for v in x]
    ys = [float(v) for v in y]
    n = len(xs)
    if n != len(ys) or n < 2:
        raise ValueError("a line fit needs at least two (x, y) points")
    mx = math.fsum(xs) / n
    my = math.fsum(ys) / n
    sxx = math.fsum((a - mx) ** 2 for a in xs)
    if sxx == 0:
        raise ValueError("a line fit needs at least two distinct x values")
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True))
    syy = math.fsum((b - my) ** 2 for b in ys)
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_res = math.fsum((b - (slope * a + intercept)) ** 2 for a, b in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / syy if syy > 0 else float("nan")
    return LineFit(slope, intercept, r2, n)


def pareto_front(names: Sequence[str], ops: Sequence[float], acc: Sequence[float]) -> list[str]:
    """Names not dominated on (fewer operations, higher accuracy): no other network has
    at most the operations and at least the accuracy, with one of the two strictly."""
    front = []
    for i, name in enumerate(names):
        dominated = any(
            ops[j] <= ops[i] and acc[j] >= acc[i] and (ops[j] < ops[i] or acc[j] > acc[i])
            for j in range(len(names))
            if j != i
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: ops[list(names).index(n)])


def _runs(found: Discovery, loaded: Loaded) -> list[RunInfo]:
    """One entry per run folder read, and one per folder of loose part files (a folder
    without a manifest: its environment is unknown and its run id is the folder's name)."""
    runs = [
        RunInfo(str(r.path), str(r.manifest.get("run_id") or r.path.resolve().name),
                dict(r.manifest), loaded.rows_of(r.parts))
        for r in found.runs
    ]  # fmt: skip
    by_folder: dict[Path, list[Path]] = {}
    for f in found.loose:
        by_folder.setdefault(f.parent, []).append(f)
    runs += [
        RunInfo(str(folder), folder.resolve().name or str(folder), {}, loaded.rows_of(parts))
        for folder, parts in by_folder.items()
    ]
    return runs


def _setup_labels(rows: pd.DataFrame) -> pd.Series:
    """A readable label per setup; the host is named only where it tells setups apart."""
    base = rows["device_name"].fillna(rows["device"]).astype(str) + " · " + rows["dtype"]
    is_cpu = rows["device"].astype(str).str.startswith("cpu")
    threads = rows["threads"].astype("Int64").astype(str)
    base = base.where(~is_cpu, base + " · " + threads + " thr")
    base = base.where(is_cpu, rows["device"].astype(str) + " " + base)
    hosts_per_label = rows.groupby(base, dropna=False)["host"].nunique()
    ambiguous = base.map(hosts_per_label) > 1
    return base.where(~ambiguous, base + " @ " + rows["host"].astype(str))


def config_order(configs: Sequence[str]) -> tuple[str, ...]:
    """Configurations in report order: eager first (the reference), then sorted."""
    return tuple(sorted(set(configs), key=lambda c: (c != EAGER, c)))


def _with_config(rows: pd.DataFrame, base: pd.Series, show: bool) -> pd.Series:
    """The setup label: ``base`` and, when ``show``, `` · <configuration>``."""
    return base + " · " + rows["config"] if show else base


def model_colors(models: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per network, the same in every figure (sorted names → a fixed palette)."""
    import seaborn as sns

    n = len(models)
    palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
    return {m: tuple(c) for m, c in zip(sorted(models), palette, strict=True)}


def load_report_data(paths: Sequence[str | Path]) -> ReportData:
    """Read ``paths`` and build the per-cell table (median of repeats) and failure table."""
    found = discover(paths)
    loaded = load_discovered(found)
    rows = loaded.rows
    if rows.empty:
        raise ResultsCorrupt(
            f"{', '.join(map(str, paths))} hold no result rows; run `effbench run` first"
        )
    runs = _runs(found, loaded)
    host_of: dict[str, str] = {}
    for run in runs:
        env = run.manifest.get("environment")
        host = env.get("hostname") if isinstance(env, dict) else None
        host_of[run.run_id] = str(host or "unknown host")
    rows = rows.copy()
    rows["host"] = rows["run_id"].map(host_of).fillna("unknown host")
    raw_config = rows["config"] if "config" in rows.columns else pd.Series(EAGER, rows.index)
    rows["config"] = raw_config.fillna(EAGER).astype(str).replace("", EAGER)
    configs = config_order(rows["config"].unique())
    rows["base_setup"] = _setup_labels(rows)
    rows["setup"] = _with_config(rows, rows["base_setup"], configs != (EAGER,))

    failed = rows[rows["status"] != "ok"]
    failures = failed[
        ["setup", "model", "batch_size", "status", "error", "run_id", "repeat"]
    ].sort_values(["setup", "model", "batch_size", "repeat"], kind="stable")

    ok = rows[rows["status"] == "ok"]
    cells = _cells(ok)
    wrong = cells["output_ok"].eq(False).fillna(False)
    wrong_output = cells[wrong].sort_values(["setup", "model", "batch_size"], kind="stable")
    cells = cells[~wrong].reset_index(drop=True)
    setups = tuple(sorted(rows["setup"].unique()))
    models = tuple(sorted(rows["model"].unique()))
    return ReportData(
        runs=tuple(runs),
        rows=rows,
        cells=cells,
        failures=failures.reset_index(drop=True),
        setups=setups,
        models=models,
        colors=model_colors(models),
        notes=loaded.notes,
        configs=configs,
        wrong_output=wrong_output.reset_index(drop=True),
    )


def _cells(ok: pd.DataFrame) -> pd.DataFrame:
    keys = list(CELL_COLUMNS)
    numeric = ok[[*keys, *MEDIAN_COLUMNS]].copy()
    for c in MEDIAN_COLUMNS:
        numeric[c] = pd.to_numeric(numeric[c], errors="coerce")
    # dropna=False: a row is never lost to an empty key (the loader fills older files' keys)
    grouped = numeric.groupby(keys, sort=True, dropna=False)
    med = grouped[list(MEDIAN_COLUMNS)].median()
    first = ok.groupby(keys, sort=True, dropna=False)[list(FIRST_COLUMNS)].first()
    extra = ok.groupby(keys, sort=True, dropna=False).agg(
        n_repeats=("status", "size"),
        noisy=("noisy", lambda s: bool(s.fillna(False).astype(bool).any())),
    )
    checks = ok[[*keys, "max_abs_err", "max_rel_err"]].copy()
    for c in ("max_abs_err", "max_rel_err"):
        checks[c] = pd.to_numeric(checks[c], errors="coerce")
    errors = checks.groupby(keys, sort=True, dropna=False)[["max_abs_err", "max_rel_err"]].max()
    verdict = ok.groupby(keys, sort=True, dropna=False)["output_ok"].agg(_all_ok)
    cells = pd.concat([med, first, extra, errors, verdict], axis=1).reset_index()
    cells["output_ok"] = cells["output_ok"].astype("boolean")
    b = cells["batch_size"].astype(float)
    cells["time_per_image_ms_p10"] = cells["latency_ms_p10"] / b
    cells["time_per_image_ms_p90"] = cells["latency_ms_p90"] / b
    cells["gmacs"] = to_gmacs(pd.to_numeric(cells["macs"], errors="coerce"))
    cells["params_m"] = to_millions(pd.to_numeric(cells["params"], errors="coerce"))
    cells["peak_memory_mib"] = to_mib(cells["peak_memory_bytes"])
    cells["weights_mib"] = to_mib(pd.to_numeric(cells["weights_bytes"], errors="coerce"))
    cells["top1"] = pd.to_numeric(cells["top1"], errors="coerce")
    cells["top5"] = pd.to_numeric(cells["top5"], errors="coerce")
    return _net_of_idle(cells)


def _all_ok(values: pd.Series) -> bool | None:
    """A cell's output check over its repeats: false if any repeat was wrong, true if every
    checked repeat was right, ``None`` when none was checked (rows written before it)."""
    checked = [bool(v) for v in values if v is not None and not pd.isna(v)]
    return all(checked) if checked else None


def _net_of_idle(cells: pd.DataFrame) -> pd.DataFrame:
    """Power and energy net of idle, and the one choice of what the report shows.

    ``power_net_w`` and ``energy_net_per_image_j`` subtract the idle power measured before
    the run (idle power times the time per image is the idle share of each image's
    energy); they are NaN where no idle power was measured. ``power_plot_w`` and
    ``energy_plot_per_image_j`` are what every figure and table shows: net where it is
    known, else gross; ``power_is_net`` and ``energy_is_net`` say which, per cell.
    """
    cells["power_net_w"] = cells["power_w_mean"] - cells["power_w_idle"]
    cells["energy_net_per_image_j"] = cells["energy_per_image_j"] - ms_to_s(
        cells["power_w_idle"] * cells["time_per_image_ms"]
    )
    cells["power_is_net"] = np.isfinite(cells["power_net_w"].astype(float))
    cells["power_plot_w"] = cells["power_net_w"].where(cells["power_is_net"], cells["power_w_mean"])
    cells["energy_is_net"] = np.isfinite(cells["energy_net_per_image_j"].astype(float))
    cells["energy_plot_per_image_j"] = cells["energy_net_per_image_j"].where(
        cells["energy_is_net"], cells["energy_per_image_j"]
    )
    return cells


def report_name(runs: Sequence[RunInfo]) -> str:
    """The default report folder name: the run id for one run (when it is a plain folder
    name, as :func:`bench.store.read_manifest` checks), else a short digest."""
    ids = sorted({r.run_id for r in runs})
    if len(ids) == 1 and run_id_problem(ids[0]) is None:
        return ids[0]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:8]
    return f"{len(ids)}-runs-{digest}"


def models_with(cells: pd.DataFrame, column: str) -> tuple[list[str], list[str]]:
    """(models with a value in ``column``, models without) among plotted cells."""
    has = cells.groupby("model")[column].apply(lambda s: bool(np.isfinite(s.astype(float)).any()))
    return sorted(has[has].index), sorted(has[~has].index)

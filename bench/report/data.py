"""Load run folders into the tidy tables the report draws from.

Everything here is read from parquet (``bench.store.load_results``) and ``manifest.json``
(``bench.store.read_manifest``); nothing is measured here and no figure is typed in.

A *setup* is what a measurement depends on besides the network and the batch size: the
machine, the device, the dtype, (on CPUs) the thread count, the arm of an A/B run
(``variant``, ``effbench run --variant``) and the configuration (eager, compile, ...).
Setups are never averaged together: the arms of an A/B run are setups, like dtypes, never
repeats of one cell. Of the attempts of a cell (the runner re-measures contended cells) the
best is read (``bench.store.best_attempts``). Where several runs measured the same cell on
the same setup, the rows of the most recent run (by the rows' timestamps) are kept and the
older ones are listed in ``superseded``: runs made at different times (other code, another
load on the machine) are not repeats of one measurement, and pooling them would hide a
change; ``effbench compare`` sets two runs against each other. The repeats of the kept run
are summarized by their median, and ``n_repeats`` says how many there were. The
configuration is named in the setup's label when the data holds a configuration other than
eager (so eager-only reports read as they always did); ``base_setup`` is the label without
it, the panel of the speed-up figure.

Each cell has a ``quality`` (bench.quality): the worst verdict among its repeats, and
``implausible`` where its achieved rate, at the slow end of its latency's confidence
interval, is above the setup's compute roof (:func:`setup_roofs`) beyond the roof's
uncertainty (contended stays contended); ``quality_reason`` says why. ``roof_fraction`` is
the achieved rate ÷ that roof (the rows' own ``compute_fraction`` where no roof matched).

A cell whose output differed from eager float32 beyond its dtype's tolerance
(``output_ok`` false in any repeat) is not a measurement of the network: it is kept out of
``cells`` (so out of every figure and of the summary's timings) and listed in
``wrong_output``.

Besides the result rows, a report reads each run's measured ceilings (``ceilings.parquet``,
``bench.store.load_ceilings``: the roofs of the roofline figure, matched to setups by
:func:`setup_roofs`) and per-layer profiles (``profile-*.parquet`` written by ``effbench
profile``, ``bench.store.load_profiles``) into ``ceilings`` and ``layers``; both are empty
frames with their columns when there are none.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ResultsCorrupt
from bench.keys import CellKey
from bench.quality import QUALITIES, Roof, above_roof, rank
from bench.report.colors import network_colors
from bench.schema import CEILINGS, DECLARED, FIRST, MEDIAN, PROFILE, Column
from bench.status import OK
from bench.store import (
    Discovery,
    Loaded,
    best_attempts,
    discover,
    load_ceilings,
    load_discovered,
    load_profiles,
)
from bench.units import MS_PER_S, ms_to_s, to_gmacs, to_mib, to_millions

# Per-cell columns summarized by the median of repeats, and those that do not change
# between repeats (counts, references, setup): the roles declared in bench/schema.py, plus
# the two setup columns the report derives (``host`` from the run's environment record).
MEDIAN_COLUMNS = tuple(c.name for c in DECLARED if c.agg == MEDIAN)
FIRST_COLUMNS = (*(c.name for c in DECLARED if c.agg == FIRST), "host", "base_setup")
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
# ceilings.parquet, one row per measured (or datasheet) ceiling of a run's device, dtype and
# threads; `kind` is one of the kinds below.
CEILING_COLUMNS = tuple(c.name for c in CEILINGS)
COMPUTE_ROOF, BANDWIDTH_ROOF = "gemm", "triad"  # the measured roofs of the roofline
START, END = "start", "end"  # ceilings' phase: before the first cell, the closing canary
# Qualities that make a cell's number untrustworthy: drawn hollow, named in the banner.
UNTRUSTED = ("contended", "implausible")
CONV_CEILING, COPY_CEILING = "conv3x3", "copy"
DATASHEET_COMPUTE, DATASHEET_BANDWIDTH = "datasheet_compute", "datasheet_bandwidth"
# profile-*.parquet (`effbench profile`), one row per (profile, layer).
LAYER_COLUMNS = tuple(c.name for c in PROFILE)
# What identifies one profile (a profile repeated later replaces the earlier one).
PROFILE_KEY = ("model", "device", "device_name", "dtype", "batch_size", "image_size", "config",
               "threads", "hostname")  # fmt: skip
LAYER_GROUPS = ("conv", "depthwise conv", "linear", "norm", "activation", "pool", "attention",
                "other")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run folder the report read: where it is and what its manifest says."""

    path: str
    run_id: str
    manifest: dict[str, Any]
    rows: int


@dataclass(frozen=True, slots=True)
class Superseded:
    """A run whose rows of ``cells`` cells (``rows`` rows) are not shown because a more
    recent run, ``by``, measured the same cells on the same setups."""

    run_id: str
    cells: int
    rows: int
    by: tuple[str, ...]


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
    # the runs' ceilings (CEILING_COLUMNS) and per-layer profiles (LAYER_COLUMNS)
    ceilings: pd.DataFrame = field(default_factory=lambda: _frame(CEILING_COLUMNS))
    layers: pd.DataFrame = field(default_factory=lambda: _frame(LAYER_COLUMNS))
    # older runs' rows of cells a more recent run measured again (not shown), and how many
    # attempts of re-measured cells were read but not kept (a better attempt was)
    superseded: tuple[Superseded, ...] = ()
    attempts_not_kept: int = 0
    # columns outside the contract that the files declare with an ``agg`` (plugin
    # measurements): ``cells`` summarises them, the summary table shows them at batch 1
    extra: tuple[Column, ...] = ()

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


@dataclass(frozen=True, slots=True)
class Drift:
    """A ceiling measured at a run's start and again by its closing canary (the highest of
    each phase over the setup's runs), in its unit."""

    kind: str
    start: float
    end: float

    @property
    def change(self) -> float:
        """end ÷ start − 1 (negative: the machine got busier, or slower)."""
        return self.end / self.start - 1


@dataclass(frozen=True, slots=True)
class Roofs:
    """The ceilings of one setup, each the highest measured by the runs that make the setup
    (NaN where none did): contention only lowers a measured ceiling, so of a run's start
    and closing measurements, and of several runs', the highest is the machine's. The
    measured GEMM rate is the compute roof (``compute_ci_rel``: the relative half-width of
    its 95% confidence interval, 0 when unknown) and the measured triad bandwidth the
    bandwidth roof; the 3×3-convolution rate and the datasheet peaks are drawn beside them.
    ``drift`` holds the roofs measured both at the start and at the end. MACs per second
    and bytes per second."""

    compute_macs_per_s: float = math.nan
    bandwidth_bytes_per_s: float = math.nan
    conv3x3_macs_per_s: float = math.nan
    datasheet_compute_macs_per_s: float = math.nan
    datasheet_bandwidth_bytes_per_s: float = math.nan
    datasheet_citation: str = ""
    compute_ci_rel: float = 0.0
    drift: tuple[Drift, ...] = ()

    @property
    def measured(self) -> bool:
        """Whether both measured roofs are known (the roofline can be drawn)."""
        return _positive(self.compute_macs_per_s) and _positive(self.bandwidth_bytes_per_s)

    @property
    def ridge_macs_per_byte(self) -> float:
        """The intensity where the roofs meet: compute ÷ bandwidth (MACs per byte)."""
        return self.compute_macs_per_s / self.bandwidth_bytes_per_s

    def bound_macs_per_s(self, intensity: Any) -> Any:
        """The roofline at ``intensity`` (MACs per byte): min(compute, bandwidth × intensity)."""
        return np.minimum(self.compute_macs_per_s, self.bandwidth_bytes_per_s * intensity)

    @property
    def compute_roof(self) -> Roof | None:
        """The compute roof as :func:`bench.quality.above_roof` takes it; None unmeasured."""
        if not _positive(self.compute_macs_per_s):
            return None
        return Roof(self.compute_macs_per_s, self.compute_ci_rel, COMPUTE_ROOF)


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


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


def setup_labels(rows: pd.DataFrame) -> pd.Series:
    """A readable label per setup of ``rows`` (columns device, device_name, dtype, threads,
    host, and ``variant`` where there is one: `` · arm NAME`` for an A/B run's arms); the
    host is named only where it tells setups apart."""
    base = rows["device_name"].fillna(rows["device"]).astype(str) + " · " + rows["dtype"]
    is_cpu = rows["device"].astype(str).str.startswith("cpu")
    threads = rows["threads"].astype("Int64").astype(str)
    base = base.where(~is_cpu, base + " · " + threads + " thr")
    base = base.where(is_cpu, rows["device"].astype(str) + " " + base)
    if "variant" in rows.columns:
        arm = rows["variant"].astype(object)
        named = arm.notna() & arm.astype(str).ne("")
        base = base.where(~named, base + " · arm " + arm.astype(str))
    hosts_per_label = rows.groupby(base, dropna=False)["host"].nunique()
    ambiguous = base.map(hosts_per_label) > 1
    return base.where(~ambiguous, base + " @ " + rows["host"].astype(str))


def config_order(configs: Sequence[str]) -> tuple[str, ...]:
    """Configurations in report order: eager first (the reference), then sorted."""
    return tuple(sorted(set(configs), key=lambda c: (c != EAGER, c)))


def _with_config(rows: pd.DataFrame, base: pd.Series, show: bool) -> pd.Series:
    """The setup label: ``base`` and, when ``show``, `` · <configuration>``."""
    return base + " · " + rows["config"] if show else base


def _frame(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _with_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` with every column of ``columns`` (missing ones empty: files written
    before the column existed)."""
    df = df.copy()
    for c in columns:
        if c not in df.columns:
            df[c] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df


def _ceilings_table(raw: pd.DataFrame) -> pd.DataFrame:
    df = _with_columns(raw, CEILING_COLUMNS)
    df = df[[*CEILING_COLUMNS, *(c for c in ("run_id",) if c in df.columns)]]
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["threads"] = pd.to_numeric(df["threads"], errors="coerce")
    df["ci_rel"] = pd.to_numeric(df["ci_rel"], errors="coerce").astype(float)
    # files written before the closing canary measured their ceilings at the start only
    df["phase"] = df["phase"].where(df["phase"].notna() & df["phase"].ne(""), START)
    order = [c for c in ("run_id", "hostname", "device", "dtype", "threads", "kind",
                         "measured_at", "value") if c in df.columns]  # fmt: skip
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def _layers_table(raw: pd.DataFrame) -> pd.DataFrame:
    df = _with_columns(raw, LAYER_COLUMNS)[list(LAYER_COLUMNS)]
    for c in ("batch_size", "image_size", "threads", "calls", "time_ms", "share", "macs",
              "bytes", "achieved_macs_per_s", "compute_fraction", "forward_ms",
              "sum_layers_ms", "hook_overhead_ms"):  # fmt: skip
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["config"] = df["config"].fillna(EAGER).astype(str).replace("", EAGER)
    df["group"] = df["group"].fillna("other").astype(str)
    return df.reset_index(drop=True)


def setup_roofs(data: ReportData) -> dict[str, Roofs]:
    """The :class:`Roofs` of every setup of ``data.cells``: the ceilings of the same device,
    dtype and threads (on CPUs) measured by the runs whose rows make the setup (by the
    ceilings' ``run_id``; by their machine, ``hostname``, where they carry no run id: one
    that names no machine matches any, and when the setup's machine is unknown, ceilings
    match only if they come from one machine), the highest of each kind. The configuration
    (eager, compile, ...) does not change the hardware's roofs."""
    out: dict[str, Roofs] = {}
    run_ids = data.rows.groupby("setup")["run_id"].agg(lambda s: {str(v) for v in s})
    for setup, g in data.cells.groupby("setup", sort=True):
        c = _matching_ceilings(data.ceilings, g.iloc[0], run_ids.get(setup, set()))
        out[str(setup)] = _roofs(c)
    return out


def _roofs(c: pd.DataFrame) -> Roofs:
    """:class:`Roofs` from the matching ceilings ``c``: the highest value of each kind (with
    the GEMM's uncertainty), and the drift of the kinds measured at both ends of a run."""
    c = c[c["value"] > 0]
    top = c.sort_values("value", kind="stable").drop_duplicates("kind", keep="last")
    top = top.set_index("kind")

    def get(kind: str) -> float:
        return float(top.loc[kind, "value"]) if kind in top.index else math.nan

    ci = float(top.loc[COMPUTE_ROOF, "ci_rel"]) if COMPUTE_ROOF in top.index else math.nan
    drift = []
    for kind in (COMPUTE_ROOF, BANDWIDTH_ROOF):
        phases = c[c["kind"] == kind].groupby("phase")["value"].max()
        if START in phases.index and END in phases.index:
            drift.append(Drift(kind, float(phases[START]), float(phases[END])))
    cites = c.loc[c["kind"].isin([DATASHEET_COMPUTE, DATASHEET_BANDWIDTH]), "citation"]
    return Roofs(
        get(COMPUTE_ROOF),
        get(BANDWIDTH_ROOF),
        get(CONV_CEILING),
        get(DATASHEET_COMPUTE),
        get(DATASHEET_BANDWIDTH),
        "; ".join(sorted({str(x) for x in cites.dropna() if str(x)})),
        compute_ci_rel=ci if math.isfinite(ci) and ci > 0 else 0.0,
        drift=tuple(drift),
    )


def _known_host(v: object) -> str | None:
    return None if v is None or pd.isna(v) or str(v) in ("", "unknown host") else str(v)


def _matching_ceilings(ceilings: pd.DataFrame, cell: pd.Series, run_ids: set[str]) -> pd.DataFrame:
    c = ceilings[ceilings["value"].notna()]
    c = c[(c["device"].astype(str) == str(cell["device"])) & (c["dtype"] == cell["dtype"])]
    if str(cell["device"]).startswith("cpu"):
        c = c[c["threads"] == pd.to_numeric(cell["threads"], errors="coerce")]
    if "run_id" in c.columns and c["run_id"].notna().all():
        return c[c["run_id"].astype(str).isin(run_ids)]  # the runs that measured the setup
    hosts = {h for h in (_known_host(cell["host"]), _known_host(cell.get("hostname"))) if h}
    named = c["hostname"].map(_known_host).notna()
    if hosts:
        return c[~named | c["hostname"].isin(hosts)]
    if c.loc[named, "hostname"].nunique() > 1:
        return c.iloc[0:0]  # several machines and no way to tell which one ran the cells
    return c


def load_report_data(paths: Sequence[str | Path]) -> ReportData:
    """Read ``paths`` and build the per-cell table (median of repeats) and failure table:
    the best attempt of each cell and repeat, of the most recent run of each cell and setup
    (see the module docstring)."""
    found = discover(paths)
    loaded = load_discovered(found)
    rows = best_attempts(loaded.rows)
    if rows.empty:
        raise ResultsCorrupt(
            f"{', '.join(map(str, paths))} hold no result rows; run `effbench run` first"
        )
    attempts_not_kept = len(loaded.rows) - len(rows)
    runs = _runs(found, loaded)
    host_of = {run.run_id: _hostname(run.manifest) for run in runs}
    measured = [c for c in (*MEDIAN_COLUMNS, *FIRST_COLUMNS) if c != "base_setup"]
    rows = _with_columns(rows, [*measured, "quality", "quality_reason"])  # older stores
    rows["host"] = rows["run_id"].map(host_of).fillna("unknown host")
    raw_config = rows["config"] if "config" in rows.columns else pd.Series(EAGER, rows.index)
    rows["config"] = raw_config.fillna(EAGER).astype(str).replace("", EAGER)
    configs = config_order(rows["config"].unique())
    rows["base_setup"] = setup_labels(rows)
    rows["setup"] = _with_config(rows, rows["base_setup"], configs != (EAGER,))
    rows, superseded = latest_runs(rows)

    failed = rows[rows["status"] != OK]
    failures = failed[
        ["setup", "model", "batch_size", "status", "error", "run_id", "repeat"]
    ].sort_values(["setup", "model", "batch_size", "repeat"], kind="stable")

    ok = rows[rows["status"] == OK]
    cells = _cells(ok, loaded.extra)
    setups = tuple(sorted(rows["setup"].unique()))
    models = tuple(sorted(rows["model"].unique()))
    data = ReportData(
        runs=tuple(runs),
        rows=rows,
        cells=cells,
        failures=failures.reset_index(drop=True),
        setups=setups,
        models=models,
        colors=network_colors(models),
        notes=loaded.notes,
        configs=configs,
        ceilings=_ceilings_table(load_ceilings(found)),
        layers=_layers_table(load_profiles(found)),
        superseded=superseded,
        attempts_not_kept=attempts_not_kept,
        extra=tuple(c for c in loaded.extra if c.agg),
    )
    cells = _judged_against_roofs(cells, setup_roofs(data))
    wrong = cells["output_ok"].eq(False).fillna(False)
    wrong_output = cells[wrong].sort_values(["setup", "model", "batch_size"], kind="stable")
    return dataclasses.replace(
        data,
        cells=cells[~wrong].reset_index(drop=True),
        wrong_output=wrong_output.reset_index(drop=True),
    )


def _hostname(manifest: dict[str, Any]) -> str:
    env = manifest.get("environment")
    host = env.get("hostname") if isinstance(env, dict) else None
    return str(host or "unknown host")


def latest_runs(rows: pd.DataFrame) -> tuple[pd.DataFrame, tuple[Superseded, ...]]:
    """The rows of the most recent run of each cell and setup (the run whose rows of that
    cell have the latest ``timestamp``; the larger run id among equals), whatever their
    status, and the runs whose rows were left out, with what superseded them."""
    key = ["setup", *CellKey.WORKLOAD_COLUMNS]
    runs = rows.assign(_stamp=rows["timestamp"].astype(str), _run=rows["run_id"].astype(str))
    per = runs.groupby([*key, "_run"], sort=False, dropna=False)["_stamp"].max().reset_index()
    if len(per) == per[key].drop_duplicates().shape[0]:
        return rows, ()  # every cell and setup measured by one run
    per = per.sort_values([*key, "_stamp", "_run"], kind="stable")
    newest = per.drop_duplicates(key, keep="last").rename(columns={"_run": "_newest"})
    runs = runs.merge(newest[[*key, "_newest"]], on=key, how="left", sort=False)
    runs.index = rows.index
    keep = (runs["_run"] == runs["_newest"]).to_numpy()
    old = runs[~keep]
    superseded = tuple(
        Superseded(
            str(run_id),
            int(g[key].drop_duplicates().shape[0]),
            len(g),
            tuple(sorted(set(g["_newest"].astype(str)))),
        )
        for run_id, g in old.groupby("_run", sort=True)
    )
    return rows[keep], superseded


def _judged_against_roofs(cells: pd.DataFrame, roofs: dict[str, Roofs]) -> pd.DataFrame:
    """``roof_fraction`` (achieved ÷ the setup's compute roof; the rows' own
    ``compute_fraction`` where none matched) and the verdict ``implausible`` where the
    cell's rate is above that roof beyond its uncertainty (bench.quality.above_roof, the
    rule the runner applies to each row against its own run's roof)."""
    cells = cells.copy()
    achieved = cells["achieved_macs_per_s"].astype(float)
    roof = cells["setup"].map(lambda s: roofs[s].compute_macs_per_s if s in roofs else math.nan)
    own = pd.to_numeric(cells["compute_fraction"], errors="coerce").astype(float)
    cells["roof_fraction"] = (achieved / roof.astype(float)).where(roof.notna(), own)
    quality, reason = cells["quality"].astype(object), cells["quality_reason"].astype(object)
    for i, cell in cells.iterrows():
        r = roofs.get(str(cell["setup"]))
        why = above_roof(cell.to_dict(), r.compute_roof if r is not None else None)
        if why is None:
            continue
        if quality[i] in UNTRUSTED:  # contended wins; an implausible row says so already
            continue
        # a noisy cell stays noisy besides; "clean" said nothing but that it was
        kept = reason[i] if quality[i] == "noisy" else None
        quality[i] = "implausible"
        reason[i] = "; ".join(x for x in (why, kept) if isinstance(x, str) and x)
    cells["quality"], cells["quality_reason"] = quality, reason
    return cells


def _cells(ok: pd.DataFrame, extra: Sequence[Column] = ()) -> pd.DataFrame:
    """Per cell: each column summarised over the repeats by its ``agg`` (the contract's
    and ``extra``'s, the plugin measurements the files declare), with counts of repeats,
    the output check's worst errors and verdict, and the worst quality."""
    keys = list(CELL_COLUMNS)
    medians = [*MEDIAN_COLUMNS, *(c.name for c in extra if c.agg == MEDIAN)]
    firsts = [*FIRST_COLUMNS, *(c.name for c in extra if c.agg == FIRST)]
    numeric = ok[[*keys, *medians]].copy()
    for c in medians:
        numeric[c] = pd.to_numeric(numeric[c], errors="coerce")
    # dropna=False: a row is never lost to an empty key (the loader fills older files' keys)
    grouped = numeric.groupby(keys, sort=True, dropna=False)
    med = grouped[medians].median()
    first = ok.groupby(keys, sort=True, dropna=False)[firsts].first()
    extra = ok.groupby(keys, sort=True, dropna=False).agg(
        n_repeats=("status", "size"),
        noisy=("noisy", lambda s: bool(s.fillna(False).astype(bool).any())),
    )
    checks = ok[[*keys, "max_abs_err", "max_rel_err"]].copy()
    for c in ("max_abs_err", "max_rel_err"):
        checks[c] = pd.to_numeric(checks[c], errors="coerce")
    errors = checks.groupby(keys, sort=True, dropna=False)[["max_abs_err", "max_rel_err"]].max()
    verdict = ok.groupby(keys, sort=True, dropna=False)["output_ok"].agg(_all_ok)
    judged = ok.groupby(keys, sort=True, dropna=False)[["quality", "quality_reason"]].apply(
        _worst_quality
    )
    cells = pd.concat([med, first, extra, errors, verdict, judged], axis=1).reset_index()
    cells = _with_columns(cells, ("quality", "quality_reason", "quality_repeats"))  # no ok row
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
    return _net_of_idle(_roofline_columns(cells))


def _roofline_columns(cells: pd.DataFrame) -> pd.DataFrame:
    """Intensity and achieved rate where the rows lack them but their parts are known
    (``macs ÷ bytes_per_image``; ``macs × batch ÷ median latency``), and the counted memory:
    ``counted_memory_bytes`` = weights + the counted activation peak (device-independent)."""
    macs = pd.to_numeric(cells["macs"], errors="coerce").astype(float)
    for c in ("bytes_per_image", "intensity_macs_per_byte", "activation_peak_bytes"):
        cells[c] = pd.to_numeric(cells[c], errors="coerce").astype(float)
    per_byte = macs / cells["bytes_per_image"].where(cells["bytes_per_image"] > 0)
    cells["intensity_macs_per_byte"] = cells["intensity_macs_per_byte"].fillna(per_byte)
    latency_s = cells["latency_ms_median"].where(cells["latency_ms_median"] > 0) / MS_PER_S
    rate = macs * cells["batch_size"].astype(float) / latency_s
    cells["achieved_macs_per_s"] = cells["achieved_macs_per_s"].fillna(rate)
    weights = pd.to_numeric(cells["weights_bytes"], errors="coerce").astype(float)
    cells["counted_memory_bytes"] = weights + cells["activation_peak_bytes"]
    cells["counted_memory_mib"] = to_mib(cells["counted_memory_bytes"])
    cells["activation_peak_mib"] = to_mib(cells["activation_peak_bytes"])
    return cells


def _worst_quality(rows: pd.DataFrame) -> pd.Series:
    """A cell's verdict over its repeats: the worst quality (bench.quality.rank; rows
    written before verdicts count for none), its reason, and ``quality_repeats``: how many
    repeats have it ("2 of 3"; empty when the cell has one repeat)."""
    judged = rows[rows["quality"].isin(QUALITIES)]
    if judged.empty:
        return pd.Series({"quality": None, "quality_reason": None, "quality_repeats": None})
    worst = max(judged["quality"], key=rank)
    mine = judged[judged["quality"] == worst]
    reason = mine["quality_reason"].dropna()
    return pd.Series(
        {
            "quality": worst,
            "quality_reason": str(reason.iloc[0]) if len(reason) else None,
            "quality_repeats": f"{len(mine)} of {len(rows)}" if len(rows) > 1 else None,
        }
    )


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


FIGURE_DIR = "figures"  # the report folder's subfolder of figure files

"""What the report's figures compute before they draw: pure pandas and numpy, no matplotlib.

Least-squares lines and the Pareto frontier, the panels a figure facets cells into, one
row per network, each network's best point, the batching gain, speed-ups over eager,
where each network stands under its setup's roofs and the shares of a per-layer profile.
Every function here takes the tidy tables of :mod:`bench.report.data` and returns numbers
(frozen dataclasses, frames, dicts); :mod:`bench.report.readings` turns them into
sentences, and the figure modules draw them. Tests call these directly, without a figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.quality import rank
from bench.report.data import EAGER, LAYER_GROUPS, PROFILE_KEY, UNTRUSTED, Roofs, setup_labels

# --------------------------------------------------------------------------- fits


@dataclass(frozen=True, slots=True)
class LineFit:
    """Least-squares line ``y = slope * x + intercept`` over ``n`` points; ``r2`` is the
    coefficient of determination (NaN when ``y`` is constant)."""

    slope: float
    intercept: float
    r2: float
    n: int


@dataclass(frozen=True, slots=True)
class Fit:
    """A line fitted in one panel, with the data it was fitted to (for the reading and tests)."""

    setup: str
    batch_size: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    models: tuple[str, ...]
    line: LineFit
    x_name: str = ""
    y_name: str = ""


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


def panel_fit(sub: pd.DataFrame, x_col: str, y_col: str, batch_size: int) -> Fit | None:
    """The least-squares line of ``y_col`` on ``x_col`` over one panel's cells ``sub`` (in
    the rows' own units); None with fewer than two distinct ``x``."""
    if sub[x_col].nunique() < 2:
        return None
    line = fit_line(list(sub[x_col]), list(sub[y_col]))
    return Fit(
        str(sub["setup"].iloc[0]),
        batch_size,
        tuple(sub[x_col]),
        tuple(sub[y_col].astype(float)),
        tuple(sub["model"]),
        line,
        x_col,
        y_col,
    )


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


# --------------------------------------------------------------------------- cells


def models_with(cells: pd.DataFrame, column: str) -> tuple[list[str], list[str]]:
    """(models with a value in ``column``, models without) among plotted cells."""
    has = cells.groupby("model")[column].apply(lambda s: bool(np.isfinite(s.astype(float)).any()))
    return sorted(has[has].index), sorted(has[~has].index)


def untrusted(qualities: Sequence[object] | pd.Series) -> np.ndarray:
    """Which of ``qualities`` (a cell's ``quality``) make its number untrustworthy:
    ``contended`` or ``implausible`` (drawn hollow)."""
    return np.array([q in UNTRUSTED for q in qualities], dtype=bool)


def by_setup(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The cells of each setup, setups in sorted order (a machine's eager setup before its
    other configurations): the one place figures facet."""
    first = cells.drop_duplicates("setup")
    order = sorted(
        zip(
            first["base_setup"],
            first["config"] != EAGER,
            first["config"],
            first["setup"],
            strict=True,
        )
    )
    return [(setup, cells[cells["setup"] == setup]) for *_, setup in order]


def per_model(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per network: counts and published figures (they do not depend on the setup)."""
    ordered = cells.sort_values(["model", "batch_size", "setup"], kind="stable")
    return ordered.groupby("model", sort=True).agg(
        params=("params", "first"),
        params_m=("params_m", "first"),
        gmacs=("gmacs", "first"),
        top1=("top1", "first"),
        top5=("top5", "first"),
        accuracy_source=("accuracy_source", "first"),
    )


def unverified(per_model: pd.DataFrame) -> list[str]:
    """Networks whose accuracy source says it was not checked against the paper's text."""
    src = per_model["accuracy_source"].astype("string")
    return [str(m) for m in per_model.index[src.str.contains("unverified", na=False)]]


def best_per_model(sc: pd.DataFrame, column: str, pick: Callable[[pd.Series], Any]) -> pd.DataFrame:
    """Each network's cell where ``pick`` (``pd.Series.idxmax`` or ``idxmin``) of
    ``column`` falls, sorted by network."""
    idx = sc.groupby("model", sort=True)[column].apply(pick)
    return sc.loc[list(idx)].sort_values("model")


def larger_batch(sc: pd.DataFrame) -> int | None:
    """The largest batch size above 1 measured for as many networks as any batch size > 1."""
    counts = sc[sc["batch_size"] > 1].groupby("batch_size")["model"].nunique()
    if counts.empty or counts.max() < 2:
        return None
    return int(counts[counts == counts.max()].index.max())


def sized(model: str, image_size: int, sizes: int) -> str:
    """The network's name, with its input size where the cells hold it at ``sizes`` > 1
    sizes (0: a part written before the size was recorded)."""
    if sizes < 2:
        return model
    return f"{model} ({image_size} px)" if image_size else f"{model} (size not recorded)"


def line_ends(sc: pd.DataFrame) -> pd.DataFrame:
    """The last cell (largest batch size) of each network's line in one panel, one per
    network and input size, with ``label``: the network's name (and its input size where
    the panel holds it at several, :func:`sized`)."""
    sizes = sc.groupby("model")["image_size"].nunique()
    ends = sc.sort_values(["model", "image_size", "batch_size"], kind="stable")
    ends = ends.groupby(["model", "image_size"], sort=True).tail(1)
    label = [
        sized(str(m), int(s), int(sizes[m]))
        for m, s in zip(ends["model"], ends["image_size"], strict=True)
    ]
    return ends.assign(label=label)


@dataclass(frozen=True, slots=True)
class BatchingGain:
    """Time per image at the smallest batch ÷ at the largest (``lo``, ``hi``), per network
    (and input size, where a network was measured at several: :func:`sized`)."""

    lo: int
    hi: int
    gains: dict[str, float]


def batching_gains(sc: pd.DataFrame) -> BatchingGain:
    """The batching gain of one setup's cells ``sc``: one per network and input size that
    has both the smallest and the largest batch size of the setup."""
    lo, hi = int(sc["batch_size"].min()), int(sc["batch_size"].max())
    gains: dict[str, float] = {}
    if lo == hi:
        return BatchingGain(lo, hi, gains)
    sizes = sc.groupby("model")["image_size"].nunique()
    for (model, size), g in sc.groupby(["model", "image_size"], sort=True):
        t = g.set_index("batch_size")["time_per_image_ms"]
        if lo in t.index and hi in t.index:
            gains[sized(str(model), int(size), int(sizes[model]))] = float(t[lo] / t[hi])
    return BatchingGain(lo, hi, gains)


# --------------------------------------------------------------------------- speed-ups


@dataclass(frozen=True, slots=True)
class Speedup:
    """One point of the speed-up figure: eager latency ÷ ``config`` latency (medians of
    repeats) of ``model`` at ``batch_size`` on ``base_setup``."""

    base_setup: str
    model: str
    config: str
    batch_size: int
    image_size: int
    eager_ms: float
    config_ms: float
    quality: str | None = None  # the worse verdict of the two cells (bench.quality.rank)

    @property
    def ratio(self) -> float:
        return self.eager_ms / self.config_ms


def speedups(cells: pd.DataFrame) -> list[Speedup]:
    """Every cell of a configuration other than eager that has an eager cell of the same
    network, batch size and image size on the same base setup, sorted."""
    cols = ["base_setup", "model", "batch_size", "image_size"]
    timed = cells[np.isfinite(cells["latency_ms_median"].astype(float))]
    timed = timed[timed["latency_ms_median"].astype(float) > 0]
    eager = timed[timed["config"] == EAGER].set_index(cols)[["latency_ms_median", "quality"]]
    out = []
    for r in timed[timed["config"] != EAGER].itertuples(index=False):
        key = (r.base_setup, r.model, r.batch_size, r.image_size)
        if key in eager.index:
            ref = eager.loc[key]
            judged = [q for q in (ref["quality"], r.quality) if isinstance(q, str)]
            out.append(
                Speedup(
                    str(r.base_setup),
                    str(r.model),
                    str(r.config),
                    int(r.batch_size),
                    int(r.image_size),
                    float(ref["latency_ms_median"]),
                    float(r.latency_ms_median),
                    max(judged, key=rank) if judged else None,
                )
            )
    return sorted(out, key=lambda p: (p.base_setup, p.model, p.config, p.image_size, p.batch_size))


# --------------------------------------------------------------------------- roofline


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a network stands on one setup's roofline: its highest fraction of the compute
    roof (``compute_fraction``, at ``compute_batch``) and its highest fraction of the
    roofline bound at its own intensity (``roofline_fraction``, at ``roofline_batch`` and
    ``intensity_macs_per_byte``); NaN where the roofs are not known."""

    model: str
    compute_fraction: float
    compute_batch: int
    roofline_fraction: float
    roofline_batch: int
    intensity_macs_per_byte: float
    achieved_macs_per_s: float


def compute_fraction(cells: pd.DataFrame, roofs: Roofs) -> pd.Series:
    """Achieved ÷ the measured GEMM roof drawn (the rows' own ``compute_fraction`` where no
    roof was measured)."""
    achieved = cells["achieved_macs_per_s"].astype(float)
    if math.isfinite(roofs.compute_macs_per_s):
        return achieved / roofs.compute_macs_per_s
    return pd.to_numeric(cells["compute_fraction"], errors="coerce").astype(float)


def above_the_roof(cells: pd.DataFrame, roofs: Roofs) -> pd.Series:
    """Which cells are above the compute roof: judged ``implausible``, or (whatever their
    verdict) with a median rate above the roof beyond its uncertainty. Such a rate is never
    read as a fraction of the roof."""
    frac = compute_fraction(cells, roofs)
    return cells["quality"].eq("implausible") | (frac > 1 + roofs.compute_ci_rel)


def roofline_standings(cells: pd.DataFrame, roofs: Roofs) -> list[Standing]:
    """One :class:`Standing` per network of one setup's ``cells`` (sorted by name), from
    its cells below the compute roof (:func:`above_the_roof`; NaN where it has none). The
    compute fraction is achieved ÷ the measured GEMM roof drawn (the rows' own
    ``compute_fraction`` where no roof was measured)."""
    achieved = cells["achieved_macs_per_s"].astype(float)
    below = ~above_the_roof(cells, roofs)
    frac = compute_fraction(cells, roofs).where(below)
    bound = roofs.bound_macs_per_s(cells["intensity_macs_per_byte"].astype(float))
    sc = cells.assign(_frac=frac, _eff=(achieved / bound).where(below), _rate=achieved)
    out = []
    for model, g in sc.groupby("model", sort=True):
        g = g.sort_values("batch_size")
        near = g.loc[g["_frac"].idxmax()] if g["_frac"].notna().any() else g.iloc[-1]
        best = g.loc[g["_eff"].idxmax()] if g["_eff"].notna().any() else g.iloc[-1]
        out.append(
            Standing(
                str(model),
                float(near["_frac"]),
                int(near["batch_size"]),
                float(best["_eff"]),
                int(best["batch_size"]),
                float(best["intensity_macs_per_byte"]),
                float(g["_rate"].max()),
            )
        )
    return out


def roofline_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells a roofline can place: a positive, finite intensity and achieved rate."""
    ok = np.isfinite(cells["intensity_macs_per_byte"].astype(float)) & np.isfinite(
        cells["achieved_macs_per_s"].astype(float)
    )
    cells = cells[ok]
    return cells[(cells["intensity_macs_per_byte"] > 0) & (cells["achieved_macs_per_s"] > 0)]


# --------------------------------------------------------------------------- layer types


@dataclass(frozen=True, slots=True)
class LayerShares:
    """One per-layer profile (``effbench profile``): per layer group, the share of the
    summed layer time and of the MACs; the layers' summed time and the plain forward's."""

    model: str
    setup: str
    batch_size: int
    image_size: int
    groups: tuple[str, ...]
    time_share: tuple[float, ...]
    mac_share: tuple[float, ...]
    sum_layers_ms: float
    forward_ms: float

    def excess(self) -> list[tuple[str, float, float]]:
        """(group, time share, MAC share) of the groups whose time share exceeds their MAC
        share by more than half a percentage point, largest excess first."""
        rows = [
            (g, t, 0.0 if math.isnan(m) else m)
            for g, t, m in zip(self.groups, self.time_share, self.mac_share, strict=True)
        ]
        over = [r for r in rows if r[1] - r[2] > 0.005]
        return sorted(over, key=lambda r: (-(r[1] - r[2]), self.groups.index(r[0])))


def profiles(layers: pd.DataFrame) -> list[LayerShares]:
    """The profiles in ``layers`` (``ReportData.layers``), one per (network, setup, batch
    size, image size): where the same profile was made more than once, the latest (by
    timestamp). Sorted by network, setup and batch size."""
    if layers.empty:
        return []
    key = list(PROFILE_KEY)
    stamp = layers["timestamp"].astype(str)
    latest = stamp.groupby([layers[k].astype(str) for k in key]).transform("max")
    layers = layers[stamp == latest]
    firsts = layers.drop_duplicates(key)
    labels = setup_labels(firsts.assign(host=firsts["hostname"].fillna("unknown host")))
    config = firsts["config"].astype(str)
    labels = labels.where(config == EAGER, labels + " · " + config)
    out = []
    for (_, first), label in zip(firsts.iterrows(), labels, strict=True):
        same = np.logical_and.reduce([layers[k].astype(str) == str(first[k]) for k in key])
        out.append(_profile(layers[same], str(label)))
    return sorted(out, key=lambda p: (p.model, p.setup, p.batch_size, p.image_size))


def _profile(rows: pd.DataFrame, setup: str) -> LayerShares:
    sums = rows.groupby("group", sort=False)[["time_ms", "macs"]].sum(min_count=1)
    order = [g for g in LAYER_GROUPS if g in sums.index]
    order += sorted(g for g in sums.index if g not in LAYER_GROUPS)
    sums = sums.loc[order]
    total_t, total_m = float(sums["time_ms"].sum()), float(sums["macs"].sum())
    time_share = sums["time_ms"] / total_t if total_t > 0 else sums["time_ms"] * np.nan
    mac_share = sums["macs"] / total_m if total_m > 0 else sums["macs"] * np.nan
    first = rows.iloc[0]
    summed = float(first["sum_layers_ms"]) if pd.notna(first["sum_layers_ms"]) else total_t
    return LayerShares(
        str(first["model"]),
        setup,
        int(first["batch_size"]),
        int(first["image_size"]) if pd.notna(first["image_size"]) else 0,
        tuple(order),
        tuple(float(v) for v in time_share.fillna(0.0)),
        tuple(float(v) for v in mac_share),
        summed,
        float(first["forward_ms"]),
    )

"""The two sides of a comparison, read and lined up: rows loaded from run folders, cells
matched on :attr:`bench.keys.CellKey.MATCH_COLUMNS`, the metrics both sides measured, and
whether the sides were measured at the same time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.compare.results import Side
from bench.compare.settings import MATCH_KEY, Metric, Settings
from bench.compare.text import cell_name, plain
from bench.errors import InvalidOption, NothingCompared, ResultsCorrupt
from bench.status import OK
from bench.store import best_attempts, discover, load_discovered


def load_side(path: str | Path) -> Side:
    """Rows and run environments of a run folder, a folder of runs or a part file (found
    by :func:`bench.store.discover`, as every loader finds them)."""
    p = Path(path)
    found = discover([p])
    # a cell re-measured because it was contended counts once, by its best attempt
    loaded = load_discovered(found)
    rows = best_attempts(loaded.rows)
    if rows.empty:
        raise ResultsCorrupt(f"{p} holds no result rows; run `effbench run` first")
    envs = tuple(
        env for r in found.runs if isinstance(env := r.manifest.get("environment", {}), Mapping)
    )
    return Side(str(p), rows, envs, loaded.extra)


@dataclass(frozen=True, slots=True)
class MatchedCell:
    """One cell measured on both sides: its key (values of MATCH_KEY) and each side's rows."""

    key: tuple[Any, ...]
    base: pd.DataFrame
    cand: pd.DataFrame


@dataclass(frozen=True, slots=True)
class Matching:
    matched: tuple[MatchedCell, ...]  # sorted by str(key)
    only_baseline: tuple[tuple[Any, ...], ...]
    only_candidate: tuple[tuple[Any, ...], ...]


def _key(row: Any) -> tuple[Any, ...]:
    return tuple(int(v) if isinstance(v, (np.integer,)) else v for v in row)


def _cells(side: Side) -> dict[tuple[Any, ...], pd.DataFrame]:
    return {_key(k): g for k, g in side.rows.groupby(list(MATCH_KEY), dropna=False)}


def match_cells(base: Side, cand: Side) -> Matching:
    """Every cell of either side, matched on MATCH_KEY; raise :class:`NothingCompared` when
    no cell is on both sides."""
    keys_b, keys_c = _cells(base), _cells(cand)
    matched = sorted((k for k in keys_b if k in keys_c), key=str)
    only_b = tuple(sorted((k for k in keys_b if k not in keys_c), key=str))
    only_c = tuple(sorted((k for k in keys_c if k not in keys_b), key=str))
    if not matched:
        raise NothingCompared(nothing_compared(base, cand, only_b, only_c))
    cells = tuple(MatchedCell(k, keys_b[k], keys_c[k]) for k in matched)
    return Matching(cells, only_b, only_c)


def nothing_compared(
    base: Side, cand: Side, only_b: Sequence[tuple[Any, ...]], only_c: Sequence[tuple[Any, ...]]
) -> str:
    """The one-line error when the two sides share no cell: what each side has, and which
    key columns keep them apart."""
    apart = []
    for i, col in enumerate(MATCH_KEY):
        vb, vc = {str(k[i]) for k in only_b}, {str(k[i]) for k in only_c}
        if not vb & vc:
            apart.append(f"{col} ({_few(sorted(vb))} vs {_few(sorted(vc))})")
    why = (
        "they differ in " + "; ".join(apart)
        if apart
        else "each key value occurs on both sides, but no combination of them does"
    )
    return (
        f"nothing was compared: {plain(base.label)} and {plain(cand.label)} share no cell "
        f"(cells match on {', '.join(MATCH_KEY)}); {why}. The baseline has "
        f"{_few([cell_name(k) for k in only_b])}; the candidate has "
        f"{_few([cell_name(k) for k in only_c])}. Compare runs of the same sweep on the same "
        "kind of device"
    )


def _few(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _time_span(side: Side) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    if "timestamp" not in side.rows:
        return None
    t = pd.to_datetime(side.rows["timestamp"], errors="coerce", utc=True, format="ISO8601").dropna()
    return (t.min(), t.max()) if len(t) else None


def overlap_in_time(base: Side, cand: Side) -> bool | None:
    """Whether the two sides were measured over overlapping spans of time (interleaved, as
    `effbench run --variant` does); ``None`` when a side has no readable timestamps."""
    sb, sc = _time_span(base), _time_span(cand)
    if sb is None or sc is None:
        return None
    return bool(sb[0] <= sc[1] and sc[0] <= sb[1])


def values(rows: pd.DataFrame, column: str) -> np.ndarray:
    """The finite, positive values of ``column`` (one per row, i.e. per repeat)."""
    v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v) & (v > 0)]


def samples(rows: pd.DataFrame, column: str) -> np.ndarray:
    """Every finite, positive per-iteration sample in the list column ``column``."""
    chunks = [np.asarray(s, dtype=float) for s in rows[column] if s is not None and len(s)]
    if not chunks:
        return np.empty(0)
    v = np.concatenate(chunks)
    return v[np.isfinite(v) & (v > 0)]


def _has_data(rows: pd.DataFrame, metric: Metric) -> bool:
    ok = rows[rows["status"] == OK]
    return len(values(ok, metric.column)) > 0


def _lacks(rows: pd.DataFrame, metric: Metric) -> bool:
    """Rows ran (some are ok) yet none measured ``metric``: it is not measured here at all.
    A side whose every row failed does not lack it; its cells are reported as failed."""
    return bool((rows["status"] == OK).any()) and not _has_data(rows, metric)


def select_metrics(base: Side, cand: Side, settings: Settings) -> tuple[str, ...]:
    """The metrics asked for (each must have data on both sides), or without any asked for
    every metric with data on both sides."""
    if settings.metrics:
        metrics = tuple(dict.fromkeys(settings.metrics))
        for name in metrics:
            for side in (base, cand):
                if _lacks(side.rows, settings.metric(name)):
                    raise InvalidOption(
                        f"metric {name!r} has no data in {side.label} (column "
                        f"{settings.metric(name).column} is empty in every ok row); "
                        f"drop --metric {name}"
                    )
        return metrics
    metrics = tuple(
        n
        for n in settings.known_metrics
        if _has_data(base.rows, settings.metric(n)) and not _lacks(cand.rows, settings.metric(n))
    )
    if not metrics:
        raise InvalidOption(
            f"no metric has data in both {base.label} and {cand.label} "
            "(no ok rows with latency, memory or energy); check both runs finished"
        )
    return metrics

"""Per matched cell and metric: an estimate of the ratio candidate / baseline from the two
sides' per-repeat values, then, over all cells of a metric at once (Benjamini-Hochberg), its
interval and verdict. The statistics themselves are in :mod:`bench.stats.inference`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.compare.matching import MatchedCell, samples, values
from bench.compare.pairing import MIN_PAIRS, Pairs, cell_pairs
from bench.compare.results import CellResult, Family
from bench.compare.settings import COUNT_FLOOR, VERDICTS, Metric, Settings
from bench.stats.inference import (
    RankEstimate,
    TEstimate,
    bh_discoveries,
    borrowed,
    pooled_log_sd,
    rank_estimate,
    rank_spread,
    trimmed_log_mean,
    welch,
)
from bench.stats.paired import newey_west_lag, with_session_spread
from bench.status import FAILED, OK, SKIPPED

# Evidence that comes from run-to-run variation; any other (one repeat per side) rests on a
# fixed noise floor instead.
FROM_REPEATS = ("repeats", "borrowed spread")


@dataclass(frozen=True, slots=True)
class CellEstimate:
    """A cell and metric with data on both sides, estimated but not yet judged: its
    interval's level depends on the p-values of every other cell of the metric."""

    key: tuple[Any, ...]
    metric: str
    estimate: TEstimate | RankEstimate
    evidence: str  # "repeats", "borrowed spread", "samples" or "single values"
    n_base: int
    n_cand: int
    base_value: float  # geometric mean (trimmed with Yuen's test) of the per-repeat values
    cand_value: float
    spread: float | None  # run-to-run sd of the log per-repeat values, when 2+ per side
    note: str = ""  # how the estimate was formed, where the evidence needs saying


def verdict_of(d: float, lo: float, hi: float, log_bound: float) -> str:
    """Read the verdict off a log-ratio estimate ``d`` and its interval [lo, hi]."""
    if lo > 0 and d > log_bound:
        return "regression"
    if hi < 0 and d < -log_bound:
        return "improvement"
    if lo >= -log_bound and hi <= log_bound:
        return "unchanged"
    return "inconclusive"


def estimate_cell(
    cell: MatchedCell, name: str, settings: Settings, drift: float
) -> CellResult | CellEstimate:
    """The estimate of metric ``name`` on ``cell``, or its final result when a side has
    nothing to estimate from (failed or unmeasured)."""
    metric = settings.metric(name)
    okb, okc = cell.base[cell.base["status"] == OK], cell.cand[cell.cand["status"] == OK]
    vb, vc = values(okb, metric.column), values(okc, metric.column)
    unmeasured = _unmeasured(cell, metric, name, len(vb), len(vc))
    if unmeasured is not None:
        return unmeasured
    if metric.counted:  # deterministic: no contention, drift or spread to allow for
        return _counted(cell.key, name, vb, vc)
    if name == "latency":  # ping-pong rows: adjacent bursts, not repeats, are the evidence
        paired = _paired(cell.key, okb, okc, settings)
        if paired is not None:
            return paired
    contended = _contended(okb, okc)
    if contended:
        return CellResult(cell.key, name, "inconclusive", CONTENDED, len(vb), len(vc),
                          note=contended)  # fmt: skip
    return _estimate(cell.key, name, metric, okb, okc, vb, vc, settings, drift)


CONTENDED = "contended"  # the evidence of a cell whose rows the host contended
COUNTED = "counted"  # the evidence of a deterministic count (bench.instructions)


def _counted(key: tuple[Any, ...], name: str, vb: np.ndarray, vc: np.ndarray) -> CellEstimate:
    """A counted metric: the ratio of the sides' (geometric mean) values, exact up to the
    counting noise ``COUNT_FLOOR``; its interval is the ratio ± that floor, and its p-value
    0 beyond it, 1 within (bench.stats.inference.TEstimate with no standard error)."""
    gmean_b, gmean_c = float(np.exp(np.log(vb).mean())), float(np.exp(np.log(vc).mean()))
    est = TEstimate(math.log(gmean_c / gmean_b), 0.0, math.inf, COUNT_FLOOR)
    return CellEstimate(key, name, est, COUNTED, len(vb), len(vc), gmean_b, gmean_c, None)


PAIRED = "paired bursts"  # the evidence of ping-pong rows (bench.compare.pairing)


def _paired(
    key: tuple[Any, ...], okb: pd.DataFrame, okc: pd.DataFrame, settings: Settings
) -> CellEstimate | CellResult | None:
    """The paired estimate of a cell measured in ping-pong (None when it was not): the mean
    log ratio of adjacent bursts with its Newey–West interval (bench.stats.paired); a cell
    whose uncontended pairs are too few is inconclusive (contended)."""
    pairs = cell_pairs(okb, okc, settings.latency_statistic)
    if pairs is None:
        return None
    if pairs.used < MIN_PAIRS:
        return CellResult(key, "latency", "inconclusive", CONTENDED, pairs.used, pairs.used,
                          note=f"{pairs.dropped} of {pairs.total} burst pairs ran on a contended "
                          f"host, {pairs.used} left (fewer than {MIN_PAIRS}); re-measure on a "
                          "quieter host, no verdict from these")  # fmt: skip
    est, tau, estimated = with_session_spread(pairs.log_ratios(), settings.session_spread)
    base = np.concatenate(pairs.base)
    cand = np.concatenate(pairs.cand)
    return CellEstimate(key, "latency", est, PAIRED, pairs.used, pairs.used,
                        float(np.exp(np.log(base).mean())), float(np.exp(np.log(cand).mean())),
                        None, _paired_note(pairs, tau, estimated))  # fmt: skip


def _paired_note(pairs: Pairs, tau: float, estimated: bool) -> str:
    sessions = len(pairs.base)
    lag = newey_west_lag(max(len(b) for b in pairs.base))
    note = f"{pairs.used} adjacent burst pairs in {sessions} session(s), Newey–West lag {lag}"
    if pairs.dropped:
        note += f"; {pairs.dropped} contended pair(s) dropped"
    spread = f"{math.expm1(tau):.1%}"
    if estimated:
        note += f"; the sessions' own offsets spread {spread} (measured from their means)"
    elif tau > 0:
        note += (f"; a session-to-session offset of {spread} allowed (--session-spread), "
                 "which its pairs cannot see; more sessions (--repeats) narrow it")  # fmt: skip
    return note


def _contended(okb: pd.DataFrame, okc: pd.DataFrame) -> str:
    """Why a cell cannot be judged because a side's kept rows were measured on a contended
    host (bench.quality), or '' when no row was: a busy host slows a side by more than
    any threshold, so no verdict is read off it."""
    said = []
    for label, df in (("baseline", okb), ("candidate", okc)):
        if "quality" not in df.columns:
            continue
        n = int((df["quality"] == "contended").sum())
        if n:
            said.append(f"{n} of {len(df)} {label} repeat(s)")
    if not said:
        return ""
    return (
        f"{' and '.join(said)} ran on a contended host (quality `contended`); "
        "re-measure on a quiet host (`effbench run --resume`), no verdict from these"
    )


def _unmeasured(
    cell: MatchedCell, metric: Metric, name: str, nb: int, nc: int
) -> CellResult | None:
    """The result of a cell that lacks values on a side, or None when both sides have some."""
    sb, sc = set(cell.base["status"]), set(cell.cand["status"])
    if nc == 0 and nb > 0 and cell.cand["status"].isin(FAILED).any():
        status = ", ".join(sorted(sc - {OK, SKIPPED}))
        return CellResult(cell.key, name, "regression", "failed", nb, 0,
                          note=f"candidate failed ({status}); baseline ran")  # fmt: skip
    if nb == 0 and nc == 0 and cell.base["status"].isin(FAILED).any():
        status = ", ".join(sorted(sc | sb))
        verdict = "unchanged" if sb == sc else "inconclusive"
        return CellResult(cell.key, name, verdict, "failed", 0, 0,
                          note=f"failed on both sides ({status})")  # fmt: skip
    if nb == 0 or nc == 0:
        statuses = f"baseline {sorted(sb)}, candidate {sorted(sc)}"
        return CellResult(cell.key, name, "inconclusive", "no data", nb, nc,
                          note=f"no {metric.column} on one side ({statuses})")  # fmt: skip
    return None


def _estimate(
    key: tuple[Any, ...],
    name: str,
    metric: Metric,
    okb: pd.DataFrame,
    okc: pd.DataFrame,
    vb: np.ndarray,
    vc: np.ndarray,
    settings: Settings,
    drift: float,
) -> CellEstimate:
    """Repeats on both sides: Welch (or Yuen) or the rank test; one repeat on one side: the
    other side's spread; one on each: within-run samples or a fixed noise floor."""
    gmean_b, gmean_c = float(np.exp(np.log(vb).mean())), float(np.exp(np.log(vc).mean()))
    spread = None
    est: TEstimate | RankEstimate
    if len(vb) >= 2 and len(vc) >= 2 and settings.test == "rank":
        est, evidence = rank_estimate(vb, vc, drift), "repeats"
        spread = rank_spread(est)
    elif len(vb) >= 2 and len(vc) >= 2:
        spread = pooled_log_sd(vb, vc)
        est, evidence = welch(vb, vc, drift, settings.trim), "repeats"
        gmean_b = math.exp(trimmed_log_mean(vb, settings.trim))
        gmean_c = math.exp(trimmed_log_mean(vc, settings.trim))
    elif max(len(vb), len(vc)) >= 2:
        est, evidence = borrowed(vb, vc, drift), "borrowed spread"
    else:
        sb = samples(okb, metric.samples_column) if metric.samples_column else None
        sc = samples(okc, metric.samples_column) if metric.samples_column else None
        floor = max(settings.single_run_floor, drift)
        if sb is not None and sc is not None and len(sb) > 1 and len(sc) > 1:
            est, evidence = welch(sb, sc, floor), "samples"
            # the estimate stays the ratio of the per-repeat medians
            est = TEstimate(math.log(gmean_c / gmean_b), est.se, est.df, floor)
        else:
            est, evidence = welch(vb, vc, floor), "single values"
    return CellEstimate(key, name, est, evidence, len(vb), len(vc), gmean_b, gmean_c, spread)


def judge(
    estimates: Sequence[CellEstimate], metrics: Sequence[str], settings: Settings
) -> tuple[tuple[Family, ...], list[CellResult]]:
    """Benjamini-Hochberg per metric over the estimates' p-values, then every interval at
    its family's false-coverage level and the verdict read off it."""
    # one family per metric: trivially significant memory changes must not loosen the
    # latency intervals
    p_values = [e.estimate.p_value() for e in estimates]
    families = []
    levels: dict[str, float] = {}
    for name in metrics:
        ps = [p for p, e in zip(p_values, estimates, strict=True) if e.metric == name]
        r = bh_discoveries(ps, settings.alpha)
        levels[name] = settings.alpha * max(r, 1) / max(len(ps), 1)
        families.append(Family(name, len(ps), r, 1.0 - levels[name]))
    results = [
        _result(e, p, levels[e.metric], settings.threshold_of(e.metric).log_bound)
        for e, p in zip(estimates, p_values, strict=True)
    ]
    return tuple(families), results


def _result(e: CellEstimate, p: float, level: float, bound: float) -> CellResult:
    lo, hi = e.estimate.interval(level)
    return CellResult(
        e.key,
        e.metric,
        verdict_of(e.estimate.d, lo, hi, bound),
        e.evidence,
        e.n_base,
        e.n_cand,
        e.base_value,
        e.cand_value,
        math.exp(e.estimate.d),
        math.exp(lo) if math.isfinite(lo) else None,
        math.exp(hi) if math.isfinite(hi) else None,
        p,
        _note(e, lo, hi, level),
        e.spread,
    )


def _note(e: CellEstimate, lo: float, hi: float, level: float) -> str:
    """What the reader must know about how this cell's interval was drawn."""
    floor = e.estimate.floor
    note = ""
    if not math.isfinite(hi - lo):
        note = (
            f"too few repeats for the rank test to reach the {1 - level:.2%} level; "
            "add repeats or use --test welch"
        )
    if e.evidence == PAIRED:
        return e.note
    if e.evidence == COUNTED:
        return f"deterministic count: the ratio ± {math.expm1(floor):.1%} counting noise"
    if e.evidence == "borrowed spread":
        note = "one side has a single repeat; its run-to-run spread is taken from the other"
    if e.evidence in FROM_REPEATS and floor > 0:
        return "; ".join(n for n in (note, f"±{math.expm1(floor):.0%} drift allowance") if n)
    if e.evidence not in FROM_REPEATS:
        noise = f"±{math.expm1(floor):.0%} noise floor"
        how = (
            f"interval from within-run samples, widened by a {noise}"
            if e.evidence == "samples"
            else f"no variance to estimate, interval is the ratio ± a {noise}"
        )
        return f"a single repeat on each side: {how}; use --repeats 5 or more"
    return note


def severity(r: CellResult) -> tuple[Any, ...]:
    """Sort key: regressions and inconclusive cells worst first; improvements best first."""
    rank = VERDICTS.index(r.verdict)
    ratio = r.ratio if r.ratio is not None else math.inf
    return (rank, -ratio if rank < 2 else ratio, str(r.key), r.metric)

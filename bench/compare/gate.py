"""The regression gate end to end: two sides in, one :class:`Comparison` out."""

from __future__ import annotations

from pathlib import Path

from bench.compare.environment import check_environments, environment_differences
from bench.compare.matching import load_side, match_cells, overlap_in_time, select_metrics
from bench.compare.results import CellResult, Comparison, Side
from bench.compare.settings import Settings
from bench.compare.verdicts import CellEstimate, estimate_cell, judge, severity
from bench.errors import ResultsCorrupt


def compare_sides(base: Side, cand: Side, settings: Settings) -> Comparison:
    """Compare every matched cell of ``cand`` with ``base``; see :mod:`bench.compare`."""
    settings.validate()
    for side in (base, cand):
        if side.rows.empty:
            raise ResultsCorrupt(f"{side.label} holds no result rows; run `effbench run` first")
    metrics = select_metrics(base, cand, settings)
    interleaved = overlap_in_time(base, cand)
    drift = settings.drift_floor if interleaved is False else 0.0
    matching = match_cells(base, cand)
    estimates: list[CellEstimate] = []
    fixed: list[CellResult] = []
    for cell in matching.matched:
        for name in metrics:
            outcome = estimate_cell(cell, name, settings, drift)
            if isinstance(outcome, CellResult):
                fixed.append(outcome)
            else:
                estimates.append(outcome)
    families, judged = judge(estimates, metrics, settings)
    return Comparison(
        baseline=base.label,
        candidate=cand.label,
        settings=settings,
        metrics=metrics,
        results=tuple(sorted([*fixed, *judged], key=severity)),
        only_baseline=matching.only_baseline,
        only_candidate=matching.only_candidate,
        env_differences=environment_differences(base, cand),
        families=families,
        interleaved=interleaved,
    )


def compare_paths(
    baseline: str | Path,
    candidate: str | Path,
    settings: Settings,
    allow_env_mismatch: bool = False,
) -> Comparison:
    """Load both sides (run folders, folders of runs or part files) and compare them;
    refuse environments that differ unless ``allow_env_mismatch``."""
    comparison = compare_sides(load_side(baseline), load_side(candidate), settings)
    if not allow_env_mismatch:
        check_environments(comparison)
    return comparison

"""The regression gate end to end: two sides in, one :class:`Comparison` out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.compare.environment import check_environments, environment_differences
from bench.compare.matching import load_side, match_cells, overlap_in_time, select_metrics
from bench.compare.results import CellResult, Comparison, Side
from bench.compare.settings import METRICS, Metric, Settings, gate_metrics
from bench.compare.verdicts import CellEstimate, estimate_cell, judge, severity
from bench.errors import InvalidOption, ResultsCorrupt


def compare_sides(base: Side, cand: Side, settings: Settings) -> Comparison:
    """Compare every matched cell of ``cand`` with ``base``; see :mod:`bench.compare`. The
    gate metrics of plugin measurements that both sides' files declare join the contract's
    (:func:`plugin_metrics`)."""
    settings = replace(settings, extra_metrics=plugin_metrics(base, cand))
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


def plugin_metrics(base: Side, cand: Side) -> tuple[Metric, ...]:
    """The gate metrics (``Column.gate``) of the columns outside the contract that both
    sides declare alike; :class:`InvalidOption` for one that takes a built-in metric's name."""
    cand_columns = {c.name: c for c in cand.extra}
    both = [c for c in base.extra if cand_columns.get(c.name) == c]
    taken = [c for c in both if c.gate is not None and c.gate.metric in METRICS]
    if taken:
        c = taken[0]
        raise InvalidOption(
            f"column {c.name} declares the gate metric {c.gate.metric!r} (a built-in one); "
            "give its measurement's Gate another name"
        )
    return tuple(gate_metrics(both).values())


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

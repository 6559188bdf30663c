"""A comparison as JSON: settings, families, summary, every (cell, metric) result with its
numbers unrounded, the unmatched cells and the environment differences."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bench.compare.results import CellResult, Comparison
from bench.compare.settings import LATENCY_STATISTICS, MATCH_KEY, VERDICTS


def to_dict(c: Comparison) -> dict[str, Any]:
    s = c.settings
    out = {
        "baseline": c.baseline,
        "candidate": c.candidate,
        "settings": {
            "metrics": list(c.metrics),
            "threshold": s.threshold.fraction,
            "alpha": s.alpha,
            "single_run_floor": math.expm1(s.single_run_floor),
            "drift_floor": math.expm1(s.drift_floor),
            "session_spread": math.expm1(s.session_spread),
            "latency_statistic": s.latency_statistic,
            "latency_column": LATENCY_STATISTICS[s.latency_statistic],
            "test": s.test,
            "trim": s.trim,
            "correction": "benjamini-hochberg",
        },
        "tests": c.tests,
        "discoveries": c.discoveries,
        "families": [
            {
                "metric": f.metric,
                "tests": f.tests,
                "discoveries": f.discoveries,
                "confidence": f.confidence,
                "spread": c.spread(f.metric),
                "repeats_for_twice_threshold": c.repeats_for(f.metric),
            }
            for f in c.families
        ],
        "summary": {v: c.count(v) for v in VERDICTS},
        "interleaved": c.interleaved,
        "results": [_result(r) for r in c.results],
        "only_baseline": [dict(zip(MATCH_KEY, k, strict=True)) for k in c.only_baseline],
        "only_candidate": [dict(zip(MATCH_KEY, k, strict=True)) for k in c.only_candidate],
        "environment_differences": [
            {"what": d.what, "baseline": d.baseline, "candidate": d.candidate}
            for d in c.env_differences
        ],
    }
    if any(s.metric(m).counted for m in c.metrics):  # only then: older outputs stay as they were
        out["settings"]["count_threshold"] = s.count_threshold.fraction
    return out


def _result(r: CellResult) -> dict[str, Any]:
    return {
        **r.cell,
        "metric": r.metric,
        "verdict": r.verdict,
        "evidence": r.evidence,
        "n_baseline": r.n_base,
        "n_candidate": r.n_cand,
        "baseline": r.base_value,
        "candidate": r.cand_value,
        "ratio": r.ratio,
        "ci_low": r.ci_low,
        "ci_high": r.ci_high,
        "p_value": r.p_value,
        "spread": r.spread,
        "note": r.note,
    }


def to_json(c: Comparison) -> str:
    return json.dumps(to_dict(c), indent=2, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)

"""Whether the two sides were measured in environments that change the numbers (library
versions, device names, dtypes, TF32), and the refusal when they were."""

from __future__ import annotations

import pandas as pd

from bench.compare.results import Comparison, EnvDifference, Side
from bench.errors import BenchError

# What changes the numbers: refuse to compare when these differ.
ENV_KEYS = ("torch_version", "cuda_version", "cudnn_version")  # from each run's manifest
ROW_KEYS = ("device_name", "dtype", "torch_version", "tf32")  # from the side's ok rows


class EnvironmentMismatch(BenchError):
    """Baseline and candidate were measured in environments that change the numbers."""


def _side_env(side: Side) -> dict[str, str]:
    out: dict[str, set[str]] = {}
    for env in side.environments:
        for k in ENV_KEYS:
            out.setdefault(k, set()).add(str(env.get(k)))
    ok = side.rows[side.rows["status"] == "ok"]
    for k in ROW_KEYS:
        vals = {str(v) for v in ok[k] if v is not None and not pd.isna(v)}
        if vals:
            out.setdefault(k, set()).update(vals)
    return {k: ", ".join(sorted(v)) for k, v in out.items()}


def environment_differences(base: Side, cand: Side) -> tuple[EnvDifference, ...]:
    """(what, baseline value, candidate value) for each thing that matters and differs."""
    eb, ec = _side_env(base), _side_env(cand)
    return tuple(
        EnvDifference(k, eb[k], ec[k]) for k in dict.fromkeys([*ENV_KEYS, *ROW_KEYS])
        if k in eb and k in ec and eb[k] != ec[k]
    )  # fmt: skip


def check_environments(comparison: Comparison) -> None:
    """Raise :class:`EnvironmentMismatch` naming every difference, if there is one."""
    if comparison.env_differences:
        diffs = "; ".join(
            f"{d.what}: {d.baseline} vs {d.candidate}" for d in comparison.env_differences
        )
        raise EnvironmentMismatch(
            f"baseline and candidate environments differ ({diffs}); their numbers are not "
            "comparable. Re-measure the baseline here, or pass --allow-env-mismatch"
        )

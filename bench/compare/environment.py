"""Whether the two sides were measured in environments that change the numbers (library
versions, device names, dtypes, TF32), and the refusal when they were."""

from __future__ import annotations

import pandas as pd

from bench.compare.results import Comparison, EnvDifference, Side
from bench.errors import BenchError
from bench.status import OK

# What changes the numbers: refuse to compare when these differ.
ENV_KEYS = ("torch_version", "cuda_version", "cudnn_version")  # from each run's manifest
# from the side's ok rows; memory_method also says how the worker ran its allocator (its
# memory pass fixes glibc's thresholds, which changes some CPU latencies: docs/roofline.md)
ROW_KEYS = ("device_name", "dtype", "torch_version", "tf32", "memory_method")
# The code and interpreter a run imported (manifest): shown when they differ, never refused;
# that is what an A/B run of two code versions or environments measures.
CODE_KEYS = ("python_executable", "python_version", "torchvision_version", "effbench_commit")
# Refused unless the two sides were interleaved (`--variant NAME:python=PATH`): measured
# side by side, a different torch is the subject of the comparison, not an accident of a
# baseline stored months ago.
INTERLEAVED_OK = ("torch_version",)


UNRECORDED_METHOD = "not recorded (rows from before memory_method)"


class EnvironmentMismatch(BenchError):
    """Baseline and candidate were measured in environments that change the numbers."""


def _side_env(side: Side) -> dict[str, str]:
    out: dict[str, set[str]] = {}
    for env in side.environments:
        for k in ENV_KEYS:
            out.setdefault(k, set()).add(str(env.get(k)))
        for k in CODE_KEYS:
            if env.get(k) is not None:  # older manifests lack them
                out.setdefault(k, set()).add(str(env[k]))
    ok = side.rows[side.rows["status"] == OK]
    for k in ROW_KEYS:
        if k not in ok:
            continue
        vals = {str(v) for v in ok[k] if v is not None and not pd.isna(v)}
        vals = {v for v in vals if not v.startswith("failed")}  # a probe's error, not a method
        if k == "memory_method" and ok[k].isna().any():
            # rows written before effbench recorded the method ran without the memory pass's
            # allocator settings: another state, refused like another method
            vals.add(UNRECORDED_METHOD)
        if vals:
            out.setdefault(k, set()).update(vals)
    return {k: ", ".join(sorted(v)) for k, v in out.items()}


def environment_differences(base: Side, cand: Side) -> tuple[EnvDifference, ...]:
    """(what, baseline value, candidate value) for each thing that matters and differs."""
    eb, ec = _side_env(base), _side_env(cand)
    return tuple(
        EnvDifference(k, eb[k], ec[k]) for k in dict.fromkeys([*ENV_KEYS, *ROW_KEYS, *CODE_KEYS])
        if k in eb and k in ec and eb[k] != ec[k]
    )  # fmt: skip


def refused_differences(comparison: Comparison) -> tuple[EnvDifference, ...]:
    """The differences that make the numbers incomparable: all but the code and interpreter
    (:data:`CODE_KEYS`), and, for interleaved sides, the torch version."""
    allowed = set(CODE_KEYS) | (set(INTERLEAVED_OK) if comparison.interleaved else set())
    return tuple(d for d in comparison.env_differences if d.what not in allowed)


def check_environments(comparison: Comparison) -> None:
    """Raise :class:`EnvironmentMismatch` naming every refused difference, if there is one."""
    refused = refused_differences(comparison)
    if refused:
        diffs = "; ".join(f"{d.what}: {d.baseline} vs {d.candidate}" for d in refused)
        hint = (
            " (a different torch is compared when the two are measured interleaved: "
            "`effbench run --variant NAME:python=PATH`)"
            if any(d.what in INTERLEAVED_OK for d in refused)
            else ""
        )
        raise EnvironmentMismatch(
            f"baseline and candidate environments differ ({diffs}); their numbers are not "
            f"comparable{hint}. Re-measure the baseline here, or pass --allow-env-mismatch"
        )

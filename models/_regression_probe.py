"""Experiment-only networks for validating `effbench compare` (scripts/regression_experiment.py).

Not part of the normal registry: the name starts with ``_``, so ``models._loader`` does not
auto-import it and `effbench models` does not list these. A sweep that wants them names the
module in ``$EFFBENCH_PLUGINS`` (``EFFBENCH_PLUGINS=models._regression_probe``); worker
processes inherit the variable and import it too, which is how the registration reaches them.

``probe_<name>`` wraps the torchvision network ``<name>`` and, after every inference-mode
forward on the CPU, runs a fixed number of small matmul steps: real CPU work in the same
thread, not a sleep. The number of steps per batch size is read from
``$EFFBENCH_PROBE_STEPS``, a JSON object ``{"probe_<name>@<batch size>": steps}``; a cell
that is not named, or the variable unset, adds nothing. The count is *deterministic*: it is
calibrated once, before any sweep, by the experiment script (:func:`calibrate_steps`), and
every worker of a set runs exactly the same extra work. (Calibrating inside each worker, as
an earlier version did, realised 12-22% when 10% was asked for.) Baseline and slowed sets
have the same model names, so their cells match; the extra work reaches the workers through
the environment only.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping

import torch
from torch import nn

# at import, not in the builders: the runner then has torchvision imported, so its fork
# server imports it once (bench.executor) instead of every worker (1.1 s each)
from torchvision.models import get_model

from models.registry import ModelSpec, register_model

STEPS_ENV = "EFFBENCH_PROBE_STEPS"
BASES = ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5")
IMAGE_SIZE = 64
STEP_SIZE = 48  # a 48x48 float32 matmul: about 9 KiB, stays in L1/L2 beside the network


def steps_from_env() -> dict[str, int]:
    """``$EFFBENCH_PROBE_STEPS`` parsed: ``{"probe_<name>@<batch>": steps}``."""
    text = os.environ.get(STEPS_ENV, "").strip()
    if not text:
        return {}
    try:
        raw = json.loads(text)
        steps = {str(k): int(v) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"${STEPS_ENV} must be a JSON object such as {{'probe_squeezenet1_1@1': 40}}"
        ) from e
    if any(v < 0 for v in steps.values()):
        raise ValueError(f"${STEPS_ENV}: step counts must be >= 0")
    return steps


class ExtraWork(nn.Module):
    """``net`` followed by ``steps[batch size]`` dependent 48x48 matmul steps."""

    def __init__(self, net: nn.Module, steps: Mapping[int, int]) -> None:
        super().__init__()
        self.net = net
        self.steps = dict(steps)
        self._a = torch.randn(STEP_SIZE, STEP_SIZE, generator=torch.Generator().manual_seed(0))

    def extra(self, steps: int) -> None:
        a = self._a
        for _ in range(steps):
            a = torch.mm(a, self._a).clamp_(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        # only the timed path pays: MACs are counted on the meta device, outside inference mode
        if x.device.type == "cpu" and torch.is_inference_mode_enabled():
            self.extra(self.steps.get(int(x.shape[0]), 0))
        return y


def _timed_blocks(
    base: str, batch_size: int, steps: int, pairs: int
) -> tuple[list[float], list[float]]:
    """Alternate blocks of the bare forward and the forward plus ``steps`` steps, ``pairs``
    times, in this process (one thread); each block's time is the fastest of 7 forwards,
    since contention on a shared machine only adds time. Returns both lists of seconds."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the experiment's sweeps run with --threads 1
    net = ExtraWork(get_model(base, weights=None).eval(), {})
    x = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)

    def block(n: int) -> float:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            net.net(x)
            net.extra(n)
            times.append(time.perf_counter() - t0)
        return min(times)

    bare, extra = [], []
    with torch.inference_mode():
        for _ in range(5):
            block(steps)
        for _ in range(pairs):
            bare.append(block(0))
            extra.append(block(steps))
    return bare, extra


def calibrate_steps(
    base: str, batch_size: int, fraction: float, probe_steps: int = 200, pairs: int = 40
) -> dict[str, float]:
    """Steps of extra work that add ``fraction`` of the forward time of ``base`` at
    ``batch_size`` (one thread, ``IMAGE_SIZE`` px).

    Method (:func:`_timed_blocks`): interleaved blocks of the bare forward (a) and the
    forward plus ``probe_steps`` steps (b). The cost of one step *as it runs after the
    network* is the median over pairs of (b - a) / probe_steps; the steps are
    ``round(fraction * median(a) / step)``. Returns the steps and the times (s) behind them.
    """
    bare, extra = _timed_blocks(base, batch_size, probe_steps, pairs)
    step = sorted((b - a) / probe_steps for a, b in zip(bare, extra, strict=True))
    bare_s, step_s = sorted(bare)[len(bare) // 2], step[len(step) // 2]
    return {
        "steps": max(0, round(fraction * bare_s / step_s)),
        "forward_s": bare_s,
        "step_s": step_s,
    }


def realised_ratio(base: str, batch_size: int, steps: int, pairs: int = 40) -> float:
    """(forward + ``steps`` steps) / forward, measured afresh: the median over interleaved
    pairs of blocks (:func:`_timed_blocks`) of their ratio."""
    bare, extra = _timed_blocks(base, batch_size, steps, pairs)
    ratios = sorted(b / a for a, b in zip(bare, extra, strict=True))
    return ratios[len(ratios) // 2]


def _build(base: str) -> nn.Module:
    name = f"probe_{base}"
    steps = {
        int(k.split("@", 1)[1]): v for k, v in steps_from_env().items() if k.startswith(name + "@")
    }
    return ExtraWork(get_model(base, weights=None), steps)


for _base in BASES:
    register_model(
        ModelSpec(
            name=f"probe_{_base}",
            family="regression-probe",
            builder=functools.partial(_build, _base),
            image_size=IMAGE_SIZE,
            origin="test",
            description=f"{_base} plus ${STEPS_ENV} fixed extra work (compare validation)",
        )
    )

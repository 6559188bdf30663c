"""Experiment-only networks for validating `effbench compare` (scripts/regression_experiment.py).

Not part of the normal registry: the name starts with ``_``, so ``models.registry`` does not
auto-import it and `effbench models` does not list these. A sweep that wants them names the
module in ``$EFFBENCH_PLUGINS`` (``EFFBENCH_PLUGINS=models._regression_probe``); worker
processes inherit the variable and import it too, which is how the registration reaches them.

``probe_<name>`` wraps the torchvision network ``<name>`` and, when
``$EFFBENCH_PROBE_SLOWDOWN`` is a fraction ``f > 0`` (e.g. ``0.10``), does ``f`` times more
work per forward: on the first inference-mode forward of each input shape it times the
network (fastest of 15 forwards) and a small matmul step (fastest of 10 x 50 steps), then runs
``round(f * t_forward / t_step)`` matmul steps after every forward. The extra work is real
CPU work in the same thread pool, not a sleep. With the variable unset or 0 the wrapper
adds nothing. The same model names exist in the baseline and the slowed run, so their cells
match; the slowdown reaches the workers through the environment only.
"""

from __future__ import annotations

import functools
import os
import time

import torch
from torch import nn

from models.registry import ModelSpec, register_model

SLOWDOWN_ENV = "EFFBENCH_PROBE_SLOWDOWN"
BASES = ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5")
IMAGE_SIZE = 64


def slowdown_fraction() -> float:
    text = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not text:
        return 0.0
    value = float(text)
    if not 0 <= value < 10:
        raise ValueError(f"${SLOWDOWN_ENV}={text!r} must be a fraction such as 0.10")
    return value


class SlowedDown(nn.Module):
    """``net`` followed by calibrated extra work of ``fraction`` times its forward time."""

    def __init__(self, net: nn.Module, fraction: float) -> None:
        super().__init__()
        self.net = net
        self.fraction = fraction
        self._steps: dict[tuple[int, ...], int] = {}
        self._a = torch.randn(48, 48, generator=torch.Generator().manual_seed(0))

    def _extra(self, steps: int) -> None:
        a = self._a
        for _ in range(steps):
            a = torch.mm(a, self._a).clamp_(-1.0, 1.0)

    def _calibrate(self, x: torch.Tensor) -> int:
        # minima: interference from other processes only ever adds time, so the fastest
        # of several tries is the least disturbed estimate of both costs
        fwd = []
        for _ in range(15):
            t0 = time.perf_counter()
            self.net(x)
            fwd.append(time.perf_counter() - t0)
        step = []
        for _ in range(10):
            t0 = time.perf_counter()
            self._extra(50)
            step.append((time.perf_counter() - t0) / 50)
        return max(1, round(self.fraction * min(fwd) / min(step)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        # only the timed path pays: MACs are counted on the meta device, outside inference mode
        if self.fraction > 0 and x.device.type == "cpu" and torch.is_inference_mode_enabled():
            shape = tuple(x.shape)
            if shape not in self._steps:
                self._steps[shape] = self._calibrate(x)
            self._extra(self._steps[shape])
        return y


def _build(base: str) -> nn.Module:
    from torchvision.models import get_model

    return SlowedDown(get_model(base, weights=None), slowdown_fraction())


for _base in BASES:
    register_model(
        ModelSpec(
            name=f"probe_{_base}",
            family="regression-probe",
            builder=functools.partial(_build, _base),
            image_size=IMAGE_SIZE,
            origin="test",
            description=f"{_base} plus ${SLOWDOWN_ENV} x more work (compare validation)",
        )
    )

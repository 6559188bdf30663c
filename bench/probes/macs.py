"""Multiply-adds (MACs) of a model.

MACs per image are counted on the ``meta`` device (no data, no arithmetic) for one image of
the model's input shape, the model in ``eval()`` with autograd enabled, as torchvision
computed its ``_ops`` metadata. Two counters:

- ``torch``: ``torch.utils.flop_counter.FlopCounterMode`` (conv, linear, matmul, bmm,
  attention) total FLOPs divided by 2. Equals torchvision's ``_ops`` for its models. An
  operator torch does not know (torchvision's ``deform_conv2d``) is counted with the
  formula the model's spec gives (``ModelSpec.macs_formulas``), passed per count as
  ``FlopCounterMode(custom_mapping=...)``; torch's global registry is left alone.
- ``fvcore``: ``fvcore.nn.FlopCountAnalysis.total()``, which already counts one "flop"
  per multiply-add and also counts batch norm, pooling and element-wise ops, so it reads
  somewhat higher. Runs on a real CPU tensor (fvcore traces with ``torch.jit``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from bench.errors import InvalidOption
from bench.plan import MACS_COUNTERS as COUNTERS
from bench.probes.sizes import build_on_meta


def count_macs(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    counter: str = "torch",
    formulas: Mapping[Any, Callable[..., int]] | None = None,
) -> int:
    """Multiply-adds for one forward pass of ``input_shape`` (batch included).

    ``build`` is called to make a fresh model (on the ``meta`` device for the ``torch``
    counter), so the caller's model and its device are left alone. ``formulas`` maps
    operators the ``torch`` counter does not know to their FLOP formulas (a registered
    model's ``spec.macs_formulas``); fvcore has its own op handlers and ignores them.
    """
    if counter == "torch":
        return _count_torch(build, input_shape, formulas)
    if counter == "fvcore":
        return _count_fvcore(build, input_shape)
    raise InvalidOption(f"unknown MACs counter {counter!r}; choose one of {', '.join(COUNTERS)}")


def flop_counter_mode(formulas: Mapping[Any, Callable[..., int]] | None = None) -> Any:
    """A silent ``FlopCounterMode`` that also knows ``formulas`` (operator packet to FLOP
    formula), for this count only."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=dict(formulas or {}))


def _count_torch(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    formulas: Mapping[Any, Callable[..., int]] | None,
) -> int:
    model = build_on_meta(build)
    x = torch.empty(input_shape, device="meta")
    counter = flop_counter_mode(formulas)
    with counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def warm_counter(counter: str = "torch") -> None:
    """Count a one-layer network once with ``counter``, for its imports: the ``torch``
    counter's module hooks import torch's compiler stack at their first call (torch._dynamo,
    sympy, triton: about 900 modules, 1.2 s and 80 MB of resident memory here, torch 2.14),
    fvcore its own few MB. A worker does it before its memory baselines, and the fork
    server (``torch`` only) once for all its workers. A counter that fails here is left
    to the real count, which records why in the row (bench.probes.counts)."""
    with contextlib.suppress(Exception):
        count_macs(lambda: nn.Linear(2, 2), (1, 2), counter)


@contextlib.contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """Set logger ``name`` to ``level`` inside the block only; its own level comes back."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _count_fvcore(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis

    model = build().eval()
    x = torch.zeros(input_shape)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with logger_level("fvcore", logging.ERROR), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return int(analysis.total())

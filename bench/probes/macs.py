"""Multiply-adds (MACs) and parameter counts of a model.

MACs per image are counted on the ``meta`` device (no data, no arithmetic) for one image of
the model's input shape, the model in ``eval()`` with autograd enabled, as torchvision
computed its ``_ops`` metadata. Two counters:

- ``torch``: ``torch.utils.flop_counter.FlopCounterMode`` (conv, linear, matmul, bmm,
  attention) total FLOPs divided by 2. Equals torchvision's ``_ops`` for its models.
- ``fvcore``: ``fvcore.nn.FlopCountAnalysis.total()``, which already counts one "flop"
  per multiply-add and also counts batch norm, pooling and element-wise ops, so it reads
  somewhat higher. Runs on a real CPU tensor (fvcore traces with ``torch.jit``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from bench.errors import InvalidOption
from bench.plan import MACS_COUNTERS as COUNTERS


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def weights_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers, in their current dtype."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


def count_macs(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    counter: str = "torch",
) -> int:
    """Multiply-adds for one forward pass of ``input_shape`` (batch included).

    ``build`` is called to make a fresh model (on the ``meta`` device for the ``torch``
    counter), so the caller's model and its device are left alone.
    """
    if counter == "torch":
        return _count_torch(build, input_shape)
    if counter == "fvcore":
        return _count_fvcore(build, input_shape)
    raise InvalidOption(f"unknown MACs counter {counter!r}; choose one of {', '.join(COUNTERS)}")


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """Build a model on the ``meta`` device (shapes, no data), in ``eval()``.

    A few builders compute with tensors while constructing (regnet's width schedule);
    those are built on the CPU and moved to ``meta``.
    """
    try:
        with torch.device("meta"):
            return build().eval()
    except (NotImplementedError, RuntimeError):
        return build().to("meta").eval()


def _count_torch(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_on_meta(build)
    x = torch.empty(input_shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def _count_fvcore(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis

    model = build().eval()
    x = torch.zeros(input_shape)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return int(analysis.total())

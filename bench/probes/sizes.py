"""The model's size (parameters, bytes of weights) and its build on the ``meta`` device.

``params`` counts every parameter once (shared tensors once); ``weights_bytes`` the bytes of
parameters and buffers in their current dtype, counted on the model as placed for the row
(dtype, configuration). :func:`build_on_meta` builds a model with shapes and no data, for
every count that runs nothing (MACs, traffic, layers, the catalog). Its measurement,
``bench.probes.counts.SizeCount``, counts them once per group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def weights_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers, in their current dtype."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


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

"""Shared pieces of our own implementations (not a registry module: the name starts with ``_``)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

import models.suites  # noqa: F401  (defines the ``seeds`` suite before we extend it)
from models.registry import ModelSpec, extend_suite, register_model


def register_seeds(specs: Iterable[ModelSpec]) -> None:
    """Register ``specs`` and append them to the ``seeds`` suite."""
    specs = tuple(specs)
    for spec in specs:
        register_model(spec)
    extend_suite("seeds", [s.name for s in specs])


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias) → batch norm → ReLU, the unit of the BN-era Inception papers.

    ``kernel_size``/``padding`` may be ``(h, w)`` pairs for the asymmetric 1×n / n×1 filters.
    ``eps=1e-3`` as in the authors' TensorFlow models.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_chans, eps=1e-3),
            nn.ReLU(inplace=True),
        )

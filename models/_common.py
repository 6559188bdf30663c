"""Shared pieces of our own implementations (not a registry module: the name starts with ``_``)."""

from __future__ import annotations

from torch import nn

# Our implementations of the seed notes' networks join this suite (``suites=SEEDS``).
SEEDS = ("seeds",)


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

"""Network in Network, ImageNet version (Lin, Chen & Yan, "Network In Network", ICLR 2014).

The paper describes the mlpconv layer (a convolution followed by 1×1 convolutions, "cascaded
cross channel parametric pooling") and global average pooling, but reports CIFAR, SVHN and
MNIST only. The ImageNet layout here is the authors' released Caffe model (model zoo
"NIN-imagenet"): four mlpconv layers, conv 11×11/4 (96) → 2×1×1, conv 5×5 (256) → 2×1×1,
conv 3×3 (384) → 2×1×1, conv 3×3 (1024) → 1×1 (1024) → 1×1 (1000), each convolution followed
by ReLU, 3×3/2 max pooling (rounding up, as Caffe does) after the first three, dropout before
the last, and 6×6 global average pooling to the 1000 class scores (no fully connected layer).
The paper gives neither a parameter count nor an ImageNet accuracy for it.
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS
from models.registry import Reference, register_model


def mlpconv(
    in_chans: int, widths: tuple[int, int, int], kernel_size: int, stride: int, padding: int
) -> list[nn.Module]:
    """A k×k convolution followed by two 1×1 convolutions (the "micro network"), with ReLUs."""
    c0, c1, c2 = widths
    return [
        nn.Conv2d(in_chans, c0, kernel_size, stride, padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(c0, c1, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 1),
        nn.ReLU(inplace=True),
    ]


@register_model(
    name="nin_imagenet",
    family="nin",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Lin et al. 2014 (ICLR) for the mlpconv design; ImageNet layout from the "
            "authors' Caffe model-zoo NIN-imagenet; the paper gives no ImageNet figures"
        ),
    ),
    description="Network in Network (ImageNet): 4 mlpconv layers, global average pooling",
)
class NiN(nn.Module):
    """NiN for 3×224×224 ImageNet inputs; global average pooling gives the class scores."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *mlpconv(3, (96, 96, 96), 11, 4, 0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *mlpconv(96, (256, 256, 256), 5, 1, 2),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *mlpconv(256, (384, 384, 384), 3, 1, 1),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Dropout(0.5),
            *mlpconv(384, (1024, 1024, num_classes), 3, 1, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))

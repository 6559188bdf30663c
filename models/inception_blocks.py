"""GoogLeNet's Inception module, naive and with 1×1 bottlenecks, as benchmarkable blocks
(Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, Fig. 2 and Table 1).

Both blocks take the input of inception(3a), a 192×28×28 feature map, and use inception(3a)'s
filter counts (Table 1): 1×1: 64; 3×3: 128; 5×5: 32; pool projection: 32; reductions before
the 3×3 and 5×5: 96 and 16. The naive module (Fig. 2a) applies 1×1, 3×3 and 5×5 convolutions
and 3×3 max pooling straight to the input and concatenates them (64+128+32+192 = 416 maps);
the module with dimension reductions (Fig. 2b) puts 1×1 convolutions before the 3×3 and 5×5
and after the pooling (256 maps). Every convolution has a bias and a ReLU, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS
from models.registry import Reference, register_model


def conv_relu(in_chans: int, out_chans: int, kernel_size: int) -> nn.Sequential:
    """Same-size convolution with bias, then ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    )


@register_model(
    name="inception3a_naive",
    family="inception_block",
    image_size=28,
    in_chans=192,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Szegedy et al. 2015 (CVPR), Fig. 2(a) with Table 1's inception(3a) filter "
            "counts; the paper gives no figures for the naive module"
        ),
    ),
    description="naive Inception module on inception(3a)'s 192×28×28 input (416 maps out)",
)
class NaiveInception(nn.Module):
    """Fig. 2(a): parallel 1×1, 3×3, 5×5 convolutions and 3×3 max pooling, concatenated."""

    def __init__(self, in_chans: int = 192, c1: int = 64, c3: int = 128, c5: int = 32) -> None:
        super().__init__()
        self.branch1x1 = conv_relu(in_chans, c1, 1)
        self.branch3x3 = conv_relu(in_chans, c3, 3)
        self.branch5x5 = conv_relu(in_chans, c5, 5)
        self.branch_pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1
        )


@register_model(
    name="inception3a_bottleneck",
    family="inception_block",
    image_size=28,
    in_chans=192,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Szegedy et al. 2015 (CVPR), Table 1, inception(3a): params 159K, ops 128M "
            "(the 159K matches the weights without biases, 163,328, divided by 1024; "
            "unverified: typed from the paper, its table text not found)"
        ),
        params=159_000,
        gmacs=0.128,
    ),
    description="Inception module with 1×1 reductions, inception(3a) (256 maps out)",
)
class BottleneckInception(nn.Module):
    """Fig. 2(b): 1×1 reductions before the 3×3 and 5×5 and a 1×1 projection after pooling."""

    def __init__(
        self,
        in_chans: int = 192,
        c1: int = 64,
        r3: int = 96,
        c3: int = 128,
        r5: int = 16,
        c5: int = 32,
        pool_proj: int = 32,
    ) -> None:
        super().__init__()
        self.branch1x1 = conv_relu(in_chans, c1, 1)
        self.branch3x3 = nn.Sequential(conv_relu(in_chans, r3, 1), conv_relu(r3, c3, 3))
        self.branch5x5 = nn.Sequential(conv_relu(in_chans, r5, 1), conv_relu(r5, c5, 5))
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), conv_relu(in_chans, pool_proj, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1
        )

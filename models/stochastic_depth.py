"""ResNet with stochastic depth (Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with
Stochastic Depth", ECCV 2016), the 110-layer CIFAR-10 network of its Table 1.

Training drops residual block l with probability 1 − p_l, with the linear decay rule
p_l = 1 − (l/L)(1 − p_L), p_L = 0.5 (Eq. 4). At test time every block is active and its
residual is scaled by its survival probability (Eq. 5): H_l = ReLU(p_l·f_l(H_{l−1}) + id(H_{l−1})).
This module is built for inference, so it only implements that test-time rule.

The network is He et al.'s CIFAR ResNet-110 (3 stages of 18 basic blocks, 16/32/64 filters,
32×32 inputs, 10 classes); when a stage halves the grid and doubles the depth, the shortcut
is a stride-2 subsampling with zero-padded channels (parameter-free), as in the authors' code.
That gives 1,727,962 parameters; ports that use 1×1 projection shortcuts instead (option B)
count 1,730,714. timm has no CIFAR ResNet.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models._common import SEEDS
from models.registry import Reference, register_model


def survival_probabilities(num_blocks: int, p_last: float = 0.5) -> list[float]:
    """Linear decay rule (Eq. 4): p_l = 1 − (l/L)(1 − p_L) for l = 1..L."""
    return [1.0 - (i / num_blocks) * (1.0 - p_last) for i in range(1, num_blocks + 1)]


class ZeroPadShortcut(nn.Module):
    """Identity shortcut across a stage change: subsample by ``stride``, zero-pad channels."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.extra = out_chans - in_chans
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class StochasticBasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN residual, scaled at inference by ``survival``."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, survival: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.shortcut: nn.Module = (
            ZeroPadShortcut(in_chans, out_chans, stride)
            if stride != 1 or in_chans != out_chans
            else nn.Identity()
        )
        self.relu2 = nn.ReLU(inplace=True)
        self.survival = survival

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.shortcut(x) + self.survival * residual)


@register_model(
    name="resnet110_stochastic_depth_cifar",
    family="stochastic_depth",
    image_size=32,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Huang et al. 2016 (ECCV), Table 1, 110-layer ResNet with stochastic depth, "
            "CIFAR-10+ test error 5.25%; parameters: He et al. 2016 (CVPR), Table 6, "
            "the same 110-layer network, 1.7M (unverified: typed from the papers, their "
            "table text not found)"
        ),
        top1=94.75,
        params=1_700_000,
        dataset="CIFAR-10 (standard augmentation)",
    ),
    description="CIFAR ResNet-110, stochastic depth (linear decay to 0.5), test-time rule",
)
class StochasticDepthResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with stochastic-depth inference scaling; 3×32×32 inputs."""

    def __init__(self, n: int = 18, p_last: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        probs = iter(survival_probabilities(3 * n, p_last))
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        blocks: list[nn.Module] = []
        in_chans = 16
        for stage, chans in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(StochasticBasicBlock(in_chans, chans, stride, next(probs)))
                in_chans = chans
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))

"""Wide ResNet WRN-28-10 for CIFAR (Zagoruyko & Komodakis, "Wide Residual Networks",
BMVC 2016, Table 1 and Table 5).

Depth 28 = 6N + 4 with N = 4 pre-activation basic blocks B(3,3) per group, widening factor
k = 10: conv 3×3 (16) → conv2 group (160 maps, 32×32) → conv3 (320, 16×16) → conv4 (640,
8×8) → BN-ReLU → 8×8 average pooling → 10-way fully connected. Each block is
BN-ReLU-conv3×3-(dropout)-BN-ReLU-conv3×3, plus a 1×1 convolution on the shortcut where the
depth or grid changes. Dropout (the paper's WRN-28-10-dropout) is identity at inference.

Our 36,479,194 parameters equal those the widely used PyTorch port asserts for its
CIFAR-10 WRN-28-10 (osmr/imgclsmob, ``pytorchcv``); timm has no CIFAR WRN (its
``wide_resnet50_2``, the ImageNet WRN-50-2 of the seeds suite, is checked against
torchvision's in ``tests/test_timm_source.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS
from models.registry import Reference, register_model


class WideBasicBlock(nn.Module):
    """Pre-activation B(3,3) block with optional dropout between the convolutions."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = (
            nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)
            if stride != 1 or in_chans != out_chans
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        identity = x if self.shortcut is None else self.shortcut(act)
        return out + identity


class WideResNet(nn.Module):
    """WRN-d-k for 3×32×32 inputs."""

    def __init__(
        self, depth: int = 28, widen: int = 10, dropout: float = 0.0, num_classes: int = 10
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6N+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_chans = 16
        for group, chans in enumerate(widths):
            for i in range(n):
                stride = 2 if group > 0 and i == 0 else 1
                blocks.append(WideBasicBlock(in_chans, chans, stride, dropout))
                in_chans = chans
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_chans)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@register_model(
    name="wrn28_10_cifar",
    family="wide_resnet",
    image_size=32,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Zagoruyko & Komodakis 2016 (BMVC), Table 5: WRN-28-10, 36.5M parameters, "
            "CIFAR-10 test error 4.17% (accuracy unverified: the table text was not "
            "found; papers-with-code lists 3.89% for the dropout variant)"
        ),
        top1=95.83,
        params=36_500_000,
        dataset="CIFAR-10 (standard augmentation)",
        verified=(
            "36.5M: our exact count, 36,479,194, is the one the osmr/imgclsmob "
            "(pytorchcv) WRN-28-10 CIFAR-10 test asserts (weight_count == 36479194)"
        ),
    ),
    description="Wide ResNet WRN-28-10 (pre-activation, k=10) for 32×32 CIFAR-10",
)
def wrn28_10(num_classes: int = 10) -> WideResNet:
    """WRN-28-10 (10 classes unless told)."""
    return WideResNet(28, 10, num_classes=num_classes)

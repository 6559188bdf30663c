"""Squeeze-and-Excitation networks (Hu, Shen, Albanie, Sun & Wu, "Squeeze-and-Excitation
Networks", CVPR 2018 / TPAMI 2020): the SE block and SE-ResNet-50 (Table 1).

SE block (Sec. 3): squeeze = global average pooling to one value per channel; excitation =
FC (C→C/r) → ReLU → FC (C/r→C) → sigmoid; the C gates rescale the input channels. r = 16.
In SE-ResNet the block acts on the residual branch before the identity sum (Fig. 3).
``SqueezeExcitation`` works on any NCHW feature map, so other backbones can use it; ``add_se``
wraps a backbone's modules to append one after them.

SE-ResNet-50 is the authors' released network (Caffe, github.com/hujie-frank/SENet; ported
by Cadene's pretrainedmodels and timm as ``legacy_seresnet50``): the original ResNet-50 with an
SE block in every bottleneck, striding on the first 1×1 convolution of a block (torchvision's
and timm's ``seresnet50`` stride on the 3×3, "v1.5": the same 28,088,024 parameters but 4.09
instead of 3.86 G-MACs). Both parameter counts and our 3.86 G-MACs equal timm's
``legacy_seresnet50`` exactly (``tests/test_timm_source.py``). The paper reports 3.87 GFLOPs
(multiply-adds) against 3.86 for ResNet-50 and "∼2.5 million additional parameters" over
ResNet-50's "∼25 million" (Sec. 4, "Model and Computational Complexity"); it lists no total.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from models._common import SEEDS
from models.registry import Reference, register_model


class SqueezeExcitation(nn.Module):
    """Channel gates from global context: x · σ(W2 δ(W1 avgpool(x))), reduction ``r``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.flatten(self.squeeze(x))))))
        return x * s.view(s.shape[0], s.shape[1], 1, 1)


class WithSE(nn.Module):
    """``module`` followed by an SE block on its output (for ``add_se``)."""

    def __init__(self, module: nn.Module, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.module = module
        self.se = SqueezeExcitation(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.module(x))


def add_se(
    model: nn.Module,
    select: Callable[[str, nn.Module], int | None],
    reduction: int = 16,
) -> nn.Module:
    """Wrap every submodule for which ``select(name, module)`` returns its output channel
    count in ``WithSE``, in place; returns ``model``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            channels = select(f"{name}.{child_name}" if name else child_name, child)
            if channels is not None:
                setattr(module, child_name, WithSE(child, channels, reduction))
    return model


class SEBottleneck(Bottleneck):
    """torchvision's ResNet bottleneck with an SE block on the residual before the sum, and
    the original ResNet's stride on the first 1×1 convolution (as the SE authors' model)."""

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, *args: object, **kwargs: object
    ) -> None:
        super().__init__(inplanes, planes, stride, *args, **kwargs)  # type: ignore[arg-type]
        self.conv1.stride, self.conv2.stride = self.conv2.stride, self.conv1.stride
        self.se = SqueezeExcitation(planes * self.expansion, reduction=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


@register_model(
    name="se_resnet50",
    family="senet",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Hu et al. 2018 (CVPR), Table 2, SE-ResNet-50 (re-implementation, single "
            "224×224 crop, ILSVRC-2012 val): 23.29% top-1, 6.62% top-5 error, 3.87 "
            "GFLOPs; parameters only as '∼2.5 million' over ResNet-50's '∼25 million' "
            "(unverified: typed from the paper, its table text not found)"
        ),
        top1=76.71,
        top5=93.38,
        gmacs=3.87,
        dataset="ImageNet-1K (ILSVRC-2012 val)",
    ),
    description="SE-ResNet-50: ResNet-50 with squeeze-and-excitation (r=16) per block",
)
def se_resnet50(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-50: the original ResNet-50 [3, 4, 6, 3] with SE bottlenecks (r = 16)."""
    return ResNet(SEBottleneck, [3, 4, 6, 3], num_classes=num_classes)  # type: ignore[arg-type]

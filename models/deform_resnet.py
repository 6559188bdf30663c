"""ResNet-50 with deformable convolutions in its last stage (Dai, Qi, Xiong, Li, Zhang, Hu &
Wei, "Deformable Convolutional Networks", ICCV 2017, Sec. 2.1 and 3).

The paper applies deformable convolution to the last 3×3 convolutions of a ResNet (res5a, b
and c); each gets its own offset branch, a plain convolution with the same kernel, stride and
dilation that predicts 2·k·k = 18 offset maps, initialised to zero (so the network starts as
the regular one). Here the three res5 3×3 convolutions of torchvision's ResNet-50 are
replaced by ``torchvision.ops.DeformConv2d`` with such an offset convolution. The paper's
res5 uses stride 1 and dilation 2 for detection and segmentation; for ImageNet
classification the stride-2, dilation-1 stage is kept. The paper reports no ImageNet
accuracy, parameter or operation count for this network.

The spec carries a multiply-add formula for ``torchvision::deform_conv2d`` (the kernel part,
as a convolution: N·C_out·H_out·W_out·(C_in/groups)·k_h·k_w multiply-adds; bilinear sampling
is not counted) in ``macs_formulas``; the MAC counters pass it to ``FlopCounterMode`` as
``custom_mapping`` so that the deformable convolutions do not count as zero. Importing this
module changes nothing in torch's global FLOP registry.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import ResNet
from torchvision.ops import DeformConv2d

from models._common import SEEDS
from models.registry import Reference, register_model


def deform_conv2d_flops(
    input_shape: torch.Size,
    weight_shape: torch.Size,
    *args: Any,
    out_shape: torch.Size | None = None,
    **kwargs: Any,
) -> int:
    """FLOPs (2 per multiply-add) of the convolution part of a deformable convolution."""
    assert out_shape is not None
    _, c_in_per_group, kh, kw = weight_shape
    return 2 * prod(out_shape) * c_in_per_group * kh * kw


class DeformableConv3x3(nn.Module):
    """3×3 deformable convolution with its own offset convolution (zero-initialised)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_chans, 2 * 3 * 3, 3, stride, 1, bias=True)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_chans, out_chans, 3, stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


@register_model(
    name="deform_resnet50",
    family="deformable",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Dai et al. 2017 (ICCV), Sec. 3: deformable convolution in res5a-c with "
            "offset convolutions; no ImageNet classification figures given"
        ),
    ),
    description="ResNet-50 with deformable 3×3 convolutions (and offset convs) in res5",
    macs_formulas={torch.ops.torchvision.deform_conv2d: deform_conv2d_flops},
)
def deform_resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 whose three res5 (``layer4``) 3×3 convolutions are deformable."""
    model = resnet50(weights=None, num_classes=num_classes)
    for block in model.layer4:
        conv = block.conv2
        block.conv2 = DeformableConv3x3(conv.in_channels, conv.out_channels, conv.stride[0])
    return model

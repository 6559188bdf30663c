"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning", AAAI 2017,
arXiv:1602.07261), for 3×299×299 inputs.

Inception-v4 (Fig. 9): stem (Fig. 3) → 4× Inception-A (Fig. 4) → Reduction-A (Fig. 7,
k=192, l=224, m=256, n=384) → 7× Inception-B (Fig. 5) → Reduction-B (Fig. 8) → 3×
Inception-C (Fig. 6) → 8×8 average pooling → dropout (keep 0.8) → 1000-way fully connected.
Its 42,679,816 parameters equal timm's ``inception_v4`` (a port of the authors' TF-slim
release) exactly; ``tests/test_timm_source.py`` checks this and the multiply-adds.

Inception-ResNet-v2 is the authors' released implementation, not the paper's figures: TF-slim's
``nets/inception_resnet_v2.py`` (tensorflow/models, research/slim), which Keras and timm
(``inception_resnet_v2``) port, and whose trained checkpoint is the network everyone
benchmarks. Its 55,843,464 parameters equal timm's exactly. Layout: stem (3×3/2 32, 3×3 32,
3×3 64, max pool, 1×1 80, 3×3 192, max pool) → Mixed-5b (four branches, 320 maps at 35×35)
→ 10× Block35 (residual scale 0.17) → Mixed-6a (Reduction-A with k=l=256, m=n=384; 1088
maps at 17×17) → 20× Block17 (0.10) → Mixed-7a (Reduction-B; 2080 maps at 8×8) → 9× Block8
(0.20) → one Block8 with scale 1 and no ReLU → 1×1 convolution to 1536 → average pooling →
fully connected. The residual branches are those of the paper's Figs. 16, 17 and 19.

The paper's own figures do not describe one network: Fig. 15 gives 5/10/5 residual modules,
Figs. 17 and 19 give 1154 and 2048 filters for the linear 1×1 convolutions where the sums
need 1152 and 2144 (the Reduction-A and -B outputs), and the paper gives no parameter or
operation count. That layout (about 32.4M parameters) was registered here before; it is not
kept, because nothing measured its accuracy and no implementation anyone benchmarks builds it.

Every convolution is conv → batch norm (eps 1e-3, as in the TensorFlow models) → ReLU ("V" in
the figures means no padding); the 1×1 convolutions that restore the depth before a residual
sum are linear (bias, no batch norm), and the residual is scaled before the sum and a ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS, ConvBNReLU
from models.registry import Reference, register_model


class Stem(nn.Module):
    """Fig. 3: 299×299×3 → 35×35×384."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 32, 3, stride=2)
        self.conv2 = ConvBNReLU(32, 32, 3)
        self.conv3 = ConvBNReLU(32, 64, 3, padding=1)
        self.pool4 = nn.MaxPool2d(3, 2)
        self.conv4 = ConvBNReLU(64, 96, 3, stride=2)
        self.branch5a = nn.Sequential(ConvBNReLU(160, 64, 1), ConvBNReLU(64, 96, 3))
        self.branch5b = nn.Sequential(
            ConvBNReLU(160, 64, 1),
            ConvBNReLU(64, 64, (7, 1), padding=(3, 0)),
            ConvBNReLU(64, 64, (1, 7), padding=(0, 3)),
            ConvBNReLU(64, 96, 3),
        )
        self.conv6 = ConvBNReLU(192, 192, 3, stride=2)
        self.pool6 = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))
        x = torch.cat([self.pool4(x), self.conv4(x)], 1)
        x = torch.cat([self.branch5a(x), self.branch5b(x)], 1)
        return torch.cat([self.conv6(x), self.pool6(x)], 1)


class InceptionA(nn.Module):
    """Fig. 4: 35×35×384 → 35×35×384."""

    def __init__(self, in_chans: int = 384) -> None:
        super().__init__()
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBNReLU(in_chans, 96, 1)
        )
        self.branch1x1 = ConvBNReLU(in_chans, 96, 1)
        self.branch3x3 = nn.Sequential(ConvBNReLU(in_chans, 64, 1), ConvBNReLU(64, 96, 3, 1, 1))
        self.branch3x3dbl = nn.Sequential(
            ConvBNReLU(in_chans, 64, 1), ConvBNReLU(64, 96, 3, 1, 1), ConvBNReLU(96, 96, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch_pool(x), self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x)], 1
        )


class InceptionB(nn.Module):
    """Fig. 5: 17×17×1024 → 17×17×1024."""

    def __init__(self, in_chans: int = 1024) -> None:
        super().__init__()
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBNReLU(in_chans, 128, 1)
        )
        self.branch1x1 = ConvBNReLU(in_chans, 384, 1)
        self.branch7x7 = nn.Sequential(
            ConvBNReLU(in_chans, 192, 1),
            ConvBNReLU(192, 224, (1, 7), padding=(0, 3)),
            ConvBNReLU(224, 256, (7, 1), padding=(3, 0)),
        )
        self.branch7x7dbl = nn.Sequential(
            ConvBNReLU(in_chans, 192, 1),
            ConvBNReLU(192, 192, (1, 7), padding=(0, 3)),
            ConvBNReLU(192, 224, (7, 1), padding=(3, 0)),
            ConvBNReLU(224, 224, (1, 7), padding=(0, 3)),
            ConvBNReLU(224, 256, (7, 1), padding=(3, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch_pool(x), self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x)], 1
        )


class InceptionC(nn.Module):
    """Fig. 6: 8×8×1536 → 8×8×1536."""

    def __init__(self, in_chans: int = 1536) -> None:
        super().__init__()
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBNReLU(in_chans, 256, 1)
        )
        self.branch1x1 = ConvBNReLU(in_chans, 256, 1)
        self.branch3x3 = ConvBNReLU(in_chans, 384, 1)
        self.branch3x3_a = ConvBNReLU(384, 256, (1, 3), padding=(0, 1))
        self.branch3x3_b = ConvBNReLU(384, 256, (3, 1), padding=(1, 0))
        self.branch3x3dbl = nn.Sequential(
            ConvBNReLU(in_chans, 384, 1),
            ConvBNReLU(384, 448, (1, 3), padding=(0, 1)),
            ConvBNReLU(448, 512, (3, 1), padding=(1, 0)),
        )
        self.branch3x3dbl_a = ConvBNReLU(512, 256, (3, 1), padding=(1, 0))
        self.branch3x3dbl_b = ConvBNReLU(512, 256, (1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl(x)
        return torch.cat(
            [
                self.branch_pool(x),
                self.branch1x1(x),
                self.branch3x3_a(b3),
                self.branch3x3_b(b3),
                self.branch3x3dbl_a(b3d),
                self.branch3x3dbl_b(b3d),
            ],
            1,
        )


class ReductionA(nn.Module):
    """Fig. 7: 35×35 → 17×17; output depth in_chans + n + m."""

    def __init__(self, in_chans: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741
        super().__init__()
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.branch3x3 = ConvBNReLU(in_chans, n, 3, stride=2)
        self.branch3x3dbl = nn.Sequential(
            ConvBNReLU(in_chans, k, 1), ConvBNReLU(k, l, 3, 1, 1), ConvBNReLU(l, m, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_pool(x), self.branch3x3(x), self.branch3x3dbl(x)], 1)


class ReductionB(nn.Module):
    """Fig. 8 (Inception-v4): 17×17×1024 → 8×8×1536."""

    def __init__(self, in_chans: int = 1024) -> None:
        super().__init__()
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.branch3x3 = nn.Sequential(
            ConvBNReLU(in_chans, 192, 1), ConvBNReLU(192, 192, 3, stride=2)
        )
        self.branch7x7x3 = nn.Sequential(
            ConvBNReLU(in_chans, 256, 1),
            ConvBNReLU(256, 256, (1, 7), padding=(0, 3)),
            ConvBNReLU(256, 320, (7, 1), padding=(3, 0)),
            ConvBNReLU(320, 320, 3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_pool(x), self.branch3x3(x), self.branch7x7x3(x)], 1)


class ResidualInception(nn.Module):
    """x + scale·W(concat(branches(x))), then ReLU unless ``relu=False``; W is a linear 1×1
    convolution (with bias) back to the input depth."""

    def __init__(
        self,
        branches: list[nn.Module],
        concat_chans: int,
        chans: int,
        scale: float,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(concat_chans, chans, 1, bias=True)
        self.scale = scale
        self.relu: nn.Module = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.up(torch.cat([b(x) for b in self.branches], 1))
        return self.relu(x + self.scale * residual)


class StemResNetV2(nn.Module):
    """TF-slim's Inception-ResNet-v2 stem up to Mixed-5b: 299×299×3 → 35×35×320."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNReLU(3, 32, 3, stride=2),
            ConvBNReLU(32, 32, 3),
            ConvBNReLU(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2),
            ConvBNReLU(64, 80, 1),
            ConvBNReLU(80, 192, 3),
            nn.MaxPool2d(3, 2),
        )
        self.branch1x1 = ConvBNReLU(192, 96, 1)
        self.branch5x5 = nn.Sequential(ConvBNReLU(192, 48, 1), ConvBNReLU(48, 64, 5, 1, 2))
        self.branch3x3dbl = nn.Sequential(
            ConvBNReLU(192, 64, 1), ConvBNReLU(64, 96, 3, 1, 1), ConvBNReLU(96, 96, 3, 1, 1)
        )
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBNReLU(192, 64, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return torch.cat(
            [self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), self.branch_pool(x)], 1
        )


def inception_resnet_a(chans: int = 320) -> ResidualInception:
    """Block35 (the paper's Fig. 16 branches): 35×35 grid."""
    return ResidualInception(
        [
            ConvBNReLU(chans, 32, 1),
            nn.Sequential(ConvBNReLU(chans, 32, 1), ConvBNReLU(32, 32, 3, 1, 1)),
            nn.Sequential(
                ConvBNReLU(chans, 32, 1), ConvBNReLU(32, 48, 3, 1, 1), ConvBNReLU(48, 64, 3, 1, 1)
            ),
        ],
        concat_chans=128,
        chans=chans,
        scale=0.17,
    )


def inception_resnet_b(chans: int = 1088) -> ResidualInception:
    """Block17 (the paper's Fig. 17 branches): 17×17 grid."""
    return ResidualInception(
        [
            ConvBNReLU(chans, 192, 1),
            nn.Sequential(
                ConvBNReLU(chans, 128, 1),
                ConvBNReLU(128, 160, (1, 7), padding=(0, 3)),
                ConvBNReLU(160, 192, (7, 1), padding=(3, 0)),
            ),
        ],
        concat_chans=384,
        chans=chans,
        scale=0.10,
    )


def inception_resnet_c(
    chans: int = 2080, scale: float = 0.20, relu: bool = True
) -> ResidualInception:
    """Block8 (the paper's Fig. 19 branches): 8×8 grid."""
    return ResidualInception(
        [
            ConvBNReLU(chans, 192, 1),
            nn.Sequential(
                ConvBNReLU(chans, 192, 1),
                ConvBNReLU(192, 224, (1, 3), padding=(0, 1)),
                ConvBNReLU(224, 256, (3, 1), padding=(1, 0)),
            ),
        ],
        concat_chans=448,
        chans=chans,
        scale=scale,
        relu=relu,
    )


class ReductionBResNetV2(nn.Module):
    """Mixed-7a (the paper's Fig. 18): 17×17×1088 → 8×8×2080."""

    def __init__(self, in_chans: int = 1088) -> None:
        super().__init__()
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.branch_a = nn.Sequential(
            ConvBNReLU(in_chans, 256, 1), ConvBNReLU(256, 384, 3, stride=2)
        )
        self.branch_b = nn.Sequential(
            ConvBNReLU(in_chans, 256, 1), ConvBNReLU(256, 288, 3, stride=2)
        )
        self.branch_c = nn.Sequential(
            ConvBNReLU(in_chans, 256, 1),
            ConvBNReLU(256, 288, 3, 1, 1),
            ConvBNReLU(288, 320, 3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch_pool(x), self.branch_a(x), self.branch_b(x), self.branch_c(x)], 1
        )


class Classifier(nn.Sequential):
    """Global average pooling, dropout (keep 0.8), fully connected."""

    def __init__(self, in_features: int, num_classes: int = 1000) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(in_features, num_classes),
        )


_TABLE2 = (
    "Szegedy et al. 2017 (AAAI), Table 2, single crop, single model, non-blacklisted ILSVRC-2012 "
    "val: {top1_err}% top-1, {top5_err}% top-5 error; no parameter or operation count given"
)
_CHECKED = (
    "top-1 {top1}% listed for the paper on wizwand.com/paper/68fa62b91e209131ce9fae18 "
    "(papers-with-code results); the top-5 and the table text itself were not found"
)


@register_model(
    name="inception_v4",
    family="inception_v4",
    image_size=299,
    suites=SEEDS,
    reference=Reference(
        source=_TABLE2.format(top1_err="20.0", top5_err="5.0"),
        top1=80.0,
        top5=95.0,
        dataset="ImageNet-1K (ILSVRC-2012 val, non-blacklisted)",
        verified=_CHECKED.format(top1="80.0"),
    ),
    description="Inception-v4: pure Inception, 4/7/3 A/B/C modules, 299×299",
)
class InceptionV4(nn.Sequential):
    """Inception-v4 (Fig. 9) for 3×299×299 inputs."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(
            Stem(),
            *[InceptionA(384) for _ in range(4)],
            ReductionA(384, k=192, l=224, m=256, n=384),
            *[InceptionB(1024) for _ in range(7)],
            ReductionB(1024),
            *[InceptionC(1536) for _ in range(3)],
            Classifier(1536, num_classes),
        )


@register_model(
    name="inception_resnet_v2",
    family="inception_v4",
    image_size=299,
    suites=SEEDS,
    reference=Reference(
        source=_TABLE2.format(top1_err="19.9", top5_err="4.9"),
        top1=80.1,
        top5=95.1,
        dataset="ImageNet-1K (ILSVRC-2012 val, non-blacklisted)",
        verified=_CHECKED.format(top1="80.1"),
    ),
    description="Inception-ResNet-v2 as released (TF-slim): 10/20/10 residual blocks",
)
class InceptionResNetV2(nn.Sequential):
    """Inception-ResNet-v2 as released (TF-slim) for 3×299×299 inputs."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(
            StemResNetV2(),
            *[inception_resnet_a(320) for _ in range(10)],
            ReductionA(320, k=256, l=256, m=384, n=384),
            *[inception_resnet_b(1088) for _ in range(20)],
            ReductionBResNetV2(1088),
            *[inception_resnet_c(2080) for _ in range(9)],
            inception_resnet_c(2080, scale=1.0, relu=False),
            ConvBNReLU(2080, 1536, 1),
            Classifier(1536, num_classes),
        )

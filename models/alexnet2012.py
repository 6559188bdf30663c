"""AlexNet as published (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012, Sec. 3 and Fig. 2), beside torchvision's
single-tower ``alexnet`` (the "one weird trick" variant: 64/192/384/256/256 filters, no LRN).

Five convolutions (96, 256, 384, 384, 256 kernels) and three fully connected layers (4096,
4096, 1000). The two-GPU split is kept as grouped convolutions: conv2, conv4 and conv5 see only
the kernel maps on their own GPU (``groups=2``); conv3 and the fully connected layers see both.
Local response normalization (k=2, n=5, α=1e-4, β=0.75) follows the ReLU of conv1 and conv2,
and overlapping max pooling (3×3, stride 2) follows the two normalizations and conv5.

The paper states a 224×224 input but 55×55 conv1 maps, which need 227; we keep the stated
224×224 input with padding 2 on conv1 (55×55 maps, as torchvision does). PyTorch's
``LocalResponseNorm`` divides α by n, so it is given α·n to match the paper's formula.
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS
from models.registry import Reference, register_model


def paper_lrn() -> nn.LocalResponseNorm:
    """LRN of Sec. 3.3: b = a / (k + α Σ a²)^β over n=5 adjacent maps."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)


@register_model(
    name="alexnet2012",
    family="alexnet",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Krizhevsky et al. 2012 (NIPS): abstract/Sec. 1 '60 million parameters'; "
            "Table 2, 1 CNN, ILSVRC-2012 val: 40.7% top-1, 18.2% top-5 error"
        ),
        top1=59.3,
        top5=81.8,
        params=60_000_000,
        dataset="ImageNet-1K (ILSVRC-2012 val)",
        verified=(
            "'60 million parameters' in the abstract (slidestalk.com/u3807/ImageNet_"
            "Classification_with_Deep_Convolutional_Neural_Networks, the paper's text); "
            "40.7%/18.2% as the '(Krizhevsky et al., 2012), 1 convnet' row of Zeiler & "
            "Fergus's Table 2 (speakerdeck.com/hakka_labs/visualization-and-"
            "understanding-convolutional-neural-networks, the ZFNet paper's text)"
        ),
    ),
    description="AlexNet 2012: 96-filter conv1, two-GPU grouped convs, LRN",
)
class AlexNet2012(nn.Module):
    """The two-tower AlexNet of the NIPS 2012 paper, for 3×224×224 inputs, 1000 classes."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            paper_lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            paper_lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

"""ZFNet (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
Fig. 3 and Table 2).

AlexNet revised after the deconvnet visualisations: conv1 is 96 filters of 7×7 at stride 2
(AlexNet: 11×11, stride 4), conv2 has stride 2, and the sparse two-GPU connections of layers
3-5 are dense. Max pooling is 3×3 with stride 2; layers 1-2 are contrast-normalized across
feature maps (taken here as AlexNet's LRN, k=2, n=5, α=1e-4, β=0.75).

The seed notes (after cs231n) give conv3-5 as 512, 1024, 512 filters: that is the paper's
variant (b) of Table 2, registered as ``zfnet_512_1024_512``; the paper's Fig. 3 model has 384,
384, 256 and is ``zfnet``. Map sizes follow Fig. 3 (110, 55, 26, 13, 13, 13, 6): conv1 pads 1
and pooling rounds up (Caffe convention), as the figure's sizes require.
"""

from __future__ import annotations

import torch
from torch import nn

from models._common import SEEDS
from models.alexnet2012 import paper_lrn
from models.registry import Reference, register_model


class ZFNet(nn.Module):
    """ZFNet for 3×224×224 inputs; ``widths`` are the filters of conv3, conv4, conv5."""

    def __init__(
        self, widths: tuple[int, int, int] = (384, 384, 256), num_classes: int = 1000
    ) -> None:
        super().__init__()
        c3, c4, c5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            paper_lrn(),
            nn.Conv2d(96, 256, 5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            paper_lrn(),
            nn.Conv2d(256, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(c5 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    name="zfnet",
    family="zfnet",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Zeiler & Fergus, 'Visualizing and Understanding Convolutional Networks' "
            "(arXiv:1311.2901, the version found; ECCV 2014), Table 2, '1 convnet as per "
            "Fig. 2' (the model drawn in Fig. 3 of the ECCV version), ILSVRC-2012 val: "
            "38.3% top-1, 16.4% top-5 error; no parameter count given"
        ),
        top1=61.7,
        top5=83.6,
        dataset="ImageNet-1K (ILSVRC-2012 val)",
        verified=(
            "Table 2 of the paper's text at speakerdeck.com/hakka_labs/visualization-"
            "and-understanding-convolutional-neural-networks ('1 convnet as per Fig. 2 "
            "38.3 16.4 16.5'); 38.4%/16.5% typed here earlier from memory was not found"
        ),
    ),
    description="ZFNet (Fig. 3): 7×7/2 conv1, dense conv3-5 of 384, 384, 256",
)
def zfnet(num_classes: int = 1000) -> ZFNet:
    """The Fig. 3 model (conv3-5: 384, 384, 256)."""
    return ZFNet((384, 384, 256), num_classes)


@register_model(
    name="zfnet_512_1024_512",
    family="zfnet",
    image_size=224,
    suites=SEEDS,
    reference=Reference(
        source=(
            "Zeiler & Fergus 2014 (ECCV), Table 2, '1 convnet as per Fig. 3 but with "
            "layers 3,4,5: 512,1024,512 maps - (b)', ILSVRC-2012 val: 37.5% top-1, "
            "16.0% top-5 error; no parameter count given (unverified: this row is not in "
            "the version of Table 2 found)"
        ),
        top1=62.5,
        top5=84.0,
        dataset="ImageNet-1K (ILSVRC-2012 val)",
    ),
    description="ZFNet variant (b) of Table 2, the seeds' conv3-5 of 512, 1024, 512",
)
def zfnet_512_1024_512(num_classes: int = 1000) -> ZFNet:
    """Table 2 variant (b): conv3-5 widened to 512, 1024, 512."""
    return ZFNet((512, 1024, 512), num_classes)

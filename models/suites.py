"""Named suites of registered models."""

from __future__ import annotations

from models.registry import register_suite

register_suite(
    "smoke",
    ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5", "resnet18"),
    "a few small models; seconds on a CPU",
)
register_suite(
    "canziani",
    (
        "alexnet",
        "vgg16",
        "vgg19",
        "googlenet",
        "inception_v3",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
    ),
    "the networks of Canziani, Paszke & Culurciello (2016) that torchvision has",
)
# Every architecture the seed notes discuss that torchvision ships; our own
# implementations of the others (LeNet-5, ZFNet, NiN, ...) extend this suite when registered.
SEEDS_TORCHVISION = (
    "alexnet",
    "vgg16",
    "vgg19",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "densenet121",
    "squeezenet1_0",
    "squeezenet1_1",
    "efficientnet_b0",
)
register_suite(
    "seeds", SEEDS_TORCHVISION, "every architecture the seed notes discuss that is available"
)
# The default CPU sweep of `nox -s bench`: light networks that a 2-core machine sweeps over
# batch sizes 1..16 in under 10 minutes (12 models x 5 batch sizes = 60 cells).
register_suite(
    "cpu-default",
    (
        "alexnet",
        "resnet18",
        "resnet50",
        "googlenet",
        "densenet121",
        "squeezenet1_0",
        "squeezenet1_1",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "shufflenet_v2_x1_0",
        "efficientnet_b0",
    ),
    "the default CPU sweep of `nox -s bench`: light networks, minutes on 2 cores",
)

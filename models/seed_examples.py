"""The seed notes' hand-calculated examples as benchmarkable blocks (128×28×28 input).

- 1×1 bottleneck (seed 000, GoogLeNet section): a 3×3 convolution 128→128 has
  3·3·128·128 = 147,456 weights; a 1×1 128→32 followed by a 3×3 32→128 has
  1·1·128·32 + 3·3·32·128 = 40,960 for the same receptive field.
- Small filters (seed 000, VGG section; Simonyan & Zisserman 2015, Sec. 2.3): one 5×5
  convolution and two stacked 3×3 convolutions both see 5×5 pixels; at 128 channels they have
  409,600 ("400k") and 294,912 ("294k") weights.

The seeds count weights only, so these convolutions have no bias; a ReLU follows each one.
"""

from __future__ import annotations

from torch import nn

from models._common import SEEDS
from models.registry import Reference, register_model


def conv(in_chans: int, out_chans: int, kernel_size: int) -> list[nn.Module]:
    """Same-size convolution without bias, then ReLU."""
    return [
        nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=False),
        nn.ReLU(inplace=True),
    ]


_SEED_000 = "seed notes 000 (Modern CNN lecture notes)"


def _seed_example(
    name: str, params: int | None, section: str, what: str, description: str
) -> dict[str, object]:
    """The registry metadata of one of the seed notes' examples (``what`` quotes them)."""
    return {
        "name": name,
        "family": "seed_example",
        "image_size": 28,
        "in_chans": 128,
        "suites": SEEDS,
        "reference": Reference(
            source=f"{_SEED_000}, {section} section: {what}",
            params=params,
            verified=f"{_SEED_000}, {section} section: '{what}'",
        ),
        "description": description,
    }


@register_model(
    **_seed_example(
        "seed_conv3x3_128",
        147_456,
        "GoogLeNet",
        "3*3*128*128 = 147,456",
        "3×3 conv 128→128 (the seeds' bottleneck baseline)",
    )
)
def conv3x3_128() -> nn.Sequential:
    """One 3×3 convolution, 128→128 channels."""
    return nn.Sequential(*conv(128, 128, 3))


@register_model(
    **_seed_example(
        "seed_bottleneck_128_32",
        40_960,
        "GoogLeNet",
        "1*1*128*32 + 3*3*32*128 = 40,960",
        "1×1 128→32 then 3×3 32→128 (the seeds' bottleneck)",
    )
)
def bottleneck_128_32() -> nn.Sequential:
    """1×1 convolution 128→32, then 3×3 convolution 32→128."""
    return nn.Sequential(*conv(128, 32, 1), *conv(32, 128, 3))


@register_model(
    **_seed_example(
        "seed_conv5x5_128",
        None,
        "VGG",
        "a 5×5 conv, '400k' parameters",
        "5×5 conv 128→128 (receptive field 5)",
    )
)
def conv5x5_128() -> nn.Sequential:
    """One 5×5 convolution, 128→128 channels."""
    return nn.Sequential(*conv(128, 128, 5))


@register_model(
    **_seed_example(
        "seed_two_conv3x3_128",
        None,
        "VGG",
        "two 3×3 convs, '294k' parameters",
        "two 3×3 convs 128→128 (receptive field 5)",
    )
)
def two_conv3x3_128() -> nn.Sequential:
    """Two stacked 3×3 convolutions, 128→128→128 channels."""
    return nn.Sequential(*conv(128, 128, 3), *conv(128, 128, 3))

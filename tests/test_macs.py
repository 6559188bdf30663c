"""MAC and parameter counting against hand calculations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import InvalidOption
from bench.probes.macs import count_macs, count_params, weights_bytes


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1),  # 8 x 16 x 16 outputs, 3*3*3 MACs each
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 16 * 16, 10),  # 2048 * 10 MACs
    )


def test_torch_counter_matches_hand_calculation() -> None:
    conv = 8 * 16 * 16 * (3 * 3 * 3)
    linear = 8 * 16 * 16 * 10
    assert count_macs(_conv_net, (1, 3, 16, 16)) == conv + linear
    assert count_macs(_conv_net, (4, 3, 16, 16)) == 4 * (conv + linear)


def test_params_and_weight_bytes() -> None:
    model = _conv_net()
    expected = (3 * 3 * 3 * 8 + 8) + (2048 * 10 + 10)
    assert count_params(model) == expected
    assert weights_bytes(model) == 4 * expected
    assert weights_bytes(model.to(torch.bfloat16)) == 2 * expected


def test_shared_parameters_count_once() -> None:
    lin = nn.Linear(4, 4)
    assert count_params(nn.Sequential(lin, lin)) == 4 * 4 + 4


def test_fvcore_counts_the_same_convention_a_little_higher() -> None:
    from torchvision.models import resnet18

    torch_macs = count_macs(resnet18, (1, 3, 224, 224), "torch")
    fv_macs = count_macs(resnet18, (1, 3, 224, 224), "fvcore")
    # fvcore also counts batch norm, pooling and additions: 0.1-6% higher (issue facts)
    assert 1.001 <= fv_macs / torch_macs <= 1.06


def test_unknown_counter_is_refused() -> None:
    with pytest.raises(InvalidOption, match="fvcore"):
        count_macs(_conv_net, (1, 3, 16, 16), "ptflops")

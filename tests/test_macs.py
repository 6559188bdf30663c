"""MAC and parameter counting against hand calculations."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from bench.errors import InvalidOption
from bench.probes.macs import count_macs, logger_level
from bench.probes.sizes import count_params, weights_bytes


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


# fvcore traces the network with torch.jit, which torch 2.14 says is deprecated
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_fvcore_counts_the_same_convention_a_little_higher() -> None:
    from torchvision.models import resnet18

    torch_macs = count_macs(resnet18, (1, 3, 224, 224), "torch")
    fv_macs = count_macs(resnet18, (1, 3, 224, 224), "fvcore")
    # fvcore also counts batch norm, pooling and additions: 0.1-6% higher (issue facts)
    assert 1.001 <= fv_macs / torch_macs <= 1.06


def test_unknown_counter_is_refused() -> None:
    with pytest.raises(InvalidOption, match="fvcore"):
        count_macs(_conv_net, (1, 3, 16, 16), "ptflops")


class _Deform(nn.Module):
    """A 3×3 deformable convolution 4→6 (torchvision's op, unknown to FlopCounterMode)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.offset = nn.Conv2d(4, 18, 3, padding=1)
        self.conv = DeformConv2d(4, 6, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


def test_formulas_count_an_unknown_op_for_that_count_only() -> None:
    from torch.utils.flop_counter import flop_registry

    from models.deform_resnet import deform_conv2d_flops

    op = torch.ops.torchvision.deform_conv2d
    offset = 8 * 8 * 18 * (3 * 3 * 4)
    kernel = 8 * 8 * 6 * (3 * 3 * 4)
    assert count_macs(_Deform, (1, 4, 8, 8)) == offset  # torch alone counts it as zero
    assert count_macs(_Deform, (1, 4, 8, 8), formulas={op: deform_conv2d_flops}) == offset + kernel
    assert op not in flop_registry
    assert count_macs(_Deform, (1, 4, 8, 8)) == offset


def test_fvcore_leaves_its_logger_level_as_it_found_it() -> None:
    logger = logging.getLogger("fvcore")
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        count_macs(_conv_net, (1, 3, 16, 16), "fvcore")
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)


def test_logger_level_is_scoped_even_on_error() -> None:
    logger = logging.getLogger("effbench-test-logger")
    logger.setLevel(logging.DEBUG)
    with pytest.raises(RuntimeError), logger_level("effbench-test-logger", logging.ERROR):
        assert logger.level == logging.ERROR
        raise RuntimeError("boom")
    assert logger.level == logging.DEBUG


def test_after_the_fork_servers_imports_a_count_imports_nothing() -> None:
    """The counter's first count imports torch's compiler stack (torch._dynamo, sympy,
    triton: about 900 modules, 1.2 s). bench.worker_preload does it once in the fork
    server; done in each worker, every group paid the time and its peak_rss_bytes read
    80 MB above its baseline (an alloc64 cell: 64 MiB per image + 83 MB)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "import sys\n"
        "import bench.worker_preload\n"
        "from bench.probes.macs import count_macs\n"
        "from models import get_spec\n"
        "spec, before = get_spec('lenet5'), set(sys.modules)\n"
        "count_macs(spec.builder, (1, spec.in_chans, spec.image_size, spec.image_size))\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"

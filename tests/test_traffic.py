"""Counted memory traffic and activation peak against hand calculations from the shapes.

Under ``torch.no_grad()`` on ``meta`` these modules dispatch (checked once with a logging
``TorchDispatchMode``): ``nn.Conv2d`` one ``aten.convolution``; ``nn.Linear`` a ``t`` view of
the weight then ``addmm`` (``mm`` without bias); ``nn.ReLU`` ``relu`` (``relu_`` in place);
``nn.MaxPool2d`` ``max_pool2d_with_indices``, which also writes int64 indices (8 bytes each),
as on CUDA; ``nn.Flatten`` a ``view``. Views count 0 bytes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import InvalidOption
from bench.probes.sizes import build_on_meta, weights_bytes
from bench.probes.traffic import (
    Traffic,
    count_traffic,
    exclusive_bytes_by_module,
    traffic_of,
)

F32 = 4  # bytes per float32 element
I64 = 8  # bytes per int64 element (max-pool indices)


def _meta(module: nn.Module, *shape: int) -> tuple[nn.Module, torch.Tensor]:
    return module.to("meta").eval(), torch.empty(shape, device="meta")


# conv 3->6, 5x5, on 1x3x32x32: output 6x28x28
IN = 3 * 32 * 32 * F32
W_CONV = 6 * 3 * 5 * 5 * F32
B_CONV = 6 * F32
CONV_OUT = 6 * 28 * 28 * F32


@pytest.mark.parametrize("bias", [True, False])
def test_conv_reads_input_weight_bias_and_writes_its_output(bias: bool) -> None:
    model, x = _meta(nn.Conv2d(3, 6, 5, bias=bias), 1, 3, 32, 32)
    expected = IN + W_CONV + (B_CONV if bias else 0) + CONV_OUT
    assert traffic_of(model, x) == Traffic(
        bytes_accessed=expected, activation_peak_bytes=IN + CONV_OUT
    )


@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_one_matmul_and_its_weight_transpose_moves_nothing(bias: bool) -> None:
    model, x = _meta(nn.Linear(20, 10, bias=bias), 4, 20)
    inp, weight, out = 4 * 20 * F32, 10 * 20 * F32, 4 * 10 * F32
    expected = (10 * F32 if bias else 0) + inp + weight + out  # addmm(bias, x, w.t()) or mm
    assert traffic_of(model, x) == Traffic(expected, inp + out)


class _Views(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 1).transpose(1, 2).unsqueeze(0).expand(3, -1, -1, -1)
        return y[1].flatten(1).t().detach()


class _CopyingReshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1).reshape(2, -1)  # not viewable: clone, then _unsafe_view


def test_views_move_nothing_and_a_copying_reshape_counts_its_copy() -> None:
    x_bytes = 2 * 5 * 20 * F32
    model, x = _meta(_Views(), 2, 5, 20)
    assert traffic_of(model, x) == Traffic(0, x_bytes)
    model, x = _meta(_CopyingReshape(), 2, 5, 20)
    assert traffic_of(model, x) == Traffic(x_bytes + x_bytes, x_bytes + x_bytes)


class _Matmul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, torch.ones(20, 10, device=x.device))  # view, mm, _unsafe_view


def test_matmul_unsafe_view_counts_nothing() -> None:
    model, x = _meta(_Matmul(), 2, 5, 20)
    inp, weight, out = 2 * 5 * 20 * F32, 20 * 10 * F32, 2 * 5 * 10 * F32
    # ones: written once (an allocation with a fill); mm reads x and it, writes the output
    assert traffic_of(model, x).bytes_accessed == weight + (inp + weight + out)


class _Writes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)  # allocated, not written
        out.copy_(x)  # reads x, writes out
        torch.add(x, x, out=out)  # reads x twice, writes out
        return out


def test_copy_destination_and_out_argument_are_written_not_read() -> None:
    model, x = _meta(_Writes(), 2, 8)
    n = 2 * 8 * F32
    assert traffic_of(model, x) == Traffic(
        bytes_accessed=2 * n + 3 * n, activation_peak_bytes=2 * n
    )


def _small_net(inplace: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 5),  # 6x28x28
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),  # 6x14x14
        nn.Flatten(),
        nn.Linear(6 * 14 * 14, 10),
    )


POOL_OUT = 6 * 14 * 14 * F32
POOL_IDX = 6 * 14 * 14 * I64
W_FC = 10 * 6 * 14 * 14 * F32
B_FC = OUT = 10 * F32
SMALL_NET_BYTES = (
    (IN + W_CONV + B_CONV + CONV_OUT)  # convolution
    + (CONV_OUT + CONV_OUT)  # relu: read and write (in place too)
    + (CONV_OUT + POOL_OUT + POOL_IDX)  # max_pool2d_with_indices
    + 0  # flatten: a view
    + (B_FC + POOL_OUT + W_FC + OUT)  # addmm (its t() view is free)
)


def test_small_net_in_place_relu_moves_the_same_bytes_with_a_lower_peak() -> None:
    out_of_place = traffic_of(*_meta(_small_net(inplace=False), 1, 3, 32, 32))
    in_place = traffic_of(*_meta(_small_net(inplace=True), 1, 3, 32, 32))
    assert out_of_place.bytes_accessed == in_place.bytes_accessed == SMALL_NET_BYTES
    # Sequential rebinds `input`, so each intermediate dies when the next module returns; the
    # caller holds the input throughout. Out of place, relu's output joins the conv's:
    assert out_of_place.activation_peak_bytes == IN + CONV_OUT + CONV_OUT
    # In place, the largest moment is the pool: input, conv/relu map, pooled map and indices.
    assert in_place.activation_peak_bytes == IN + CONV_OUT + POOL_OUT + POOL_IDX


def test_count_traffic_builds_on_meta_and_float16_halves_every_byte() -> None:
    def build() -> nn.Module:  # no max pool: its int64 indices would not halve
        return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4704, 10))

    w_fc = 10 * 4704 * F32
    f32 = Traffic(
        bytes_accessed=(IN + W_CONV + B_CONV + CONV_OUT)
        + 2 * CONV_OUT
        + (B_FC + CONV_OUT + w_fc + OUT),
        activation_peak_bytes=IN + 2 * CONV_OUT,
    )
    assert count_traffic(build, (1, 3, 32, 32)) == f32
    assert count_traffic(build, (1, 3, 32, 32), "float16") == Traffic(
        f32.bytes_accessed // 2, f32.activation_peak_bytes // 2
    )


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(InvalidOption, match="bfloat16"):
        count_traffic(lambda: nn.Conv2d(3, 6, 5), (1, 3, 32, 32), "float64")


def test_batch_multiplies_activation_bytes_not_weight_bytes() -> None:
    def build() -> nn.Module:
        return nn.Conv2d(3, 6, 5)

    assert count_traffic(build, (4, 3, 32, 32)) == Traffic(
        bytes_accessed=4 * (IN + CONV_OUT) + (W_CONV + B_CONV),
        activation_peak_bytes=4 * (IN + CONV_OUT),
    )


class _Skip(nn.Module):
    """conv0 3->8, then y + relu(conv2(relu(conv1(y)))), all 3x3 same-padded, on 8x8."""

    def __init__(self, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return torch.relu(self.conv2(torch.relu(self.conv1(self.conv0(x)))))
        y = self.conv0(x)
        return torch.relu(self.conv2(torch.relu(self.conv1(y)))) + y


X8 = 3 * 8 * 8 * F32  # input, per image
Y8 = 8 * 8 * 8 * F32  # every 8-channel map, per image


def test_activation_peak_holds_the_skip_branch_with_the_residual() -> None:
    # Each op's output joins its live inputs; a temporary dies once the op using it returns.
    # With the skip, y stays live while the branch computes: x, y, the branch input and the
    # branch output at once (conv1, relu, conv2, relu and the add all reach that).
    assert traffic_of(*_meta(_Skip(), 1, 3, 8, 8)).activation_peak_bytes == X8 + 3 * Y8
    # Without it, conv0's output dies after conv1: x plus two maps at most.
    assert traffic_of(*_meta(_Skip(skip=False), 1, 3, 8, 8)).activation_peak_bytes == X8 + 2 * Y8


def test_activation_peak_and_bytes_scale_with_batch() -> None:
    one = traffic_of(*_meta(_Skip(), 1, 3, 8, 8))
    two = traffic_of(*_meta(_Skip(), 2, 3, 8, 8))
    assert two.activation_peak_bytes == 2 * one.activation_peak_bytes == 2 * (X8 + 3 * Y8)
    weights = (8 * 3 * 9 + 8 + 2 * (8 * 8 * 9 + 8)) * F32  # read once per forward
    assert two.bytes_accessed - weights == 2 * (one.bytes_accessed - weights)


def test_bytes_by_module_go_to_the_innermost_module_and_sum_to_the_total() -> None:
    model, x = _meta(_Skip(), 1, 3, 8, 8)
    by_module = exclusive_bytes_by_module(model, x)
    w0, w = (8 * 3 * 9 + 8) * F32, (8 * 8 * 9 + 8) * F32
    assert by_module == {
        "conv0": X8 + w0 + Y8,
        "conv1": Y8 + w + Y8,
        "conv2": Y8 + w + Y8,
        "": 2 * (Y8 + Y8) + (Y8 + Y8 + Y8),  # two relus and the add, run by the root
    }
    assert sum(by_module.values()) == traffic_of(model, x).bytes_accessed


def test_inference_mode_counts_the_same_operators_as_no_grad() -> None:
    # inference_mode hands CompositeImplicitAutograd ops (conv2d, linear, max_pool2d) to the
    # mode undecomposed; the counter decomposes them, so the figures agree.
    model, x = _meta(_small_net(inplace=False), 1, 3, 32, 32)
    with torch.inference_mode():
        inference = traffic_of(model, x)
        by_module = exclusive_bytes_by_module(model, x)
    assert inference == traffic_of(model, x)
    assert by_module == exclusive_bytes_by_module(model, x)
    assert inference.bytes_accessed == SMALL_NET_BYTES


@pytest.mark.parametrize(
    "name", ["lenet5", "resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5"]
)
def test_registered_models_read_every_weight_and_hold_input_and_output(name: str) -> None:
    from models import get_spec

    spec = get_spec(name)
    model = build_on_meta(spec.builder)
    x = torch.empty(1, spec.in_chans, spec.image_size, spec.image_size, device="meta")
    with torch.no_grad():
        out = model(x)
    traffic = traffic_of(model, x)
    assert traffic.bytes_accessed >= weights_bytes(model)
    assert traffic.activation_peak_bytes >= (x.numel() + out.numel()) * F32
    assert sum(exclusive_bytes_by_module(model, x).values()) == traffic.bytes_accessed


def test_seed_bottleneck_reads_fewer_weight_bytes_than_the_plain_3x3() -> None:
    # seed notes 000 (GoogLeNet section): 3·3·128·128 = 147,456 weights against
    # 1·1·128·32 + 3·3·32·128 = 40,960; no bias, ReLU in place after each, 128×28×28 input.
    from models import get_spec

    a128, a32 = 128 * 28 * 28 * F32, 32 * 28 * 28 * F32
    shape = (1, 128, 28, 28)
    plain = count_traffic(get_spec("seed_conv3x3_128").builder, shape)
    assert plain == Traffic(
        bytes_accessed=(a128 + 147_456 * F32 + a128) + 2 * a128,  # conv, relu_
        activation_peak_bytes=a128 + a128,
    )
    bottleneck = count_traffic(get_spec("seed_bottleneck_128_32").builder, shape)
    assert bottleneck == Traffic(
        bytes_accessed=(a128 + 128 * 32 * F32 + a32)  # 1×1 conv
        + 2 * a32  # relu_
        + (a32 + 3 * 3 * 32 * 128 * F32 + a128)  # 3×3 conv
        + 2 * a128,  # relu_
        activation_peak_bytes=a128 + a32 + a128,  # input, 32-channel map, output
    )


def test_a_group_counts_three_batch_sizes_and_reads_the_rest_off_their_line() -> None:
    """Counting is 0.1-0.3 s of Python per forward: a group counts its two smallest
    batch sizes and its largest, and reads those between off the line they lie on."""
    from bench.probes.traffic import Traffic, traffic_by_line

    calls: list[int] = []

    def linear(b: int) -> Traffic:
        calls.append(b)
        return Traffic(1_000 + 300 * b, 64 + 40 * b)

    counted: dict[int, Traffic] = {}
    sizes = (1, 2, 4, 8, 16)
    got = [traffic_by_line(linear, sizes, b, counted) for b in sizes]
    assert got == [Traffic(1_000 + 300 * b, 64 + 40 * b) for b in sizes]
    assert sorted(calls) == [1, 2, 16]

    calls.clear()

    def bent(b: int) -> Traffic:  # an operator that only runs at some batch sizes
        calls.append(b)
        return Traffic(1_000 + 300 * b + (77 if b >= 8 else 0), 64 + 40 * b)

    got = [traffic_by_line(bent, sizes, b, {}) for b in sizes]
    assert got == [bent(b) for b in sizes] and sorted(set(calls)) == [1, 2, 4, 8, 16]


def test_a_real_networks_traffic_read_off_the_line_equals_its_count() -> None:
    """The line is exact for a real network: every batch size read off it equals a direct
    count (the independent reference), activation peak included."""
    from bench.probes.traffic import meta_model, traffic_at, traffic_by_line
    from models import get_spec

    meta = meta_model(get_spec("mobilenet_v3_small").builder, "float32")

    def count(b: int) -> Traffic:
        return traffic_at(meta, (b, 3, 64, 64), "float32")

    sizes = (1, 2, 3, 5, 8)
    counted: dict[int, Traffic] = {}
    for b in sizes:
        assert traffic_by_line(count, sizes, b, counted) == count(b)
    assert sorted(counted) == [1, 2, 8]  # 3 and 5 came off the line

"""bench/layers.py: the seeds' hand calculations, textbook receptive fields, and totals that
must equal count_params / count_macs and torchvision's weight metadata."""

from __future__ import annotations

import json

import pytest

from bench.errors import InvalidOption, UnknownModel
from bench.layers import Inspection, LayerRow, format_inspection, inspect_model
from bench.probes.macs import count_macs
from bench.probes.sizes import count_params
from models import get_spec


def row(insp: Inspection, name: str) -> LayerRow:
    return next(r for r in insp.rows if r.name == name)


def test_lenet5_output_sizes_and_parameters_by_hand() -> None:
    insp = inspect_model("lenet5")
    sizes = [row(insp, n).output_shape[-1] for n in ("c1", "s2", "c3.three", "s4", "c5")]
    assert sizes == [28, 14, 10, 5, 1]
    assert row(insp, "c5").output_shape == (1, 120, 1, 1)
    c1 = (5 * 5 * 1 + 1) * 6
    s2 = 2 * 6  # one coefficient and one bias per map
    c3 = 6 * (3 * 5 * 5 + 1) + 9 * (4 * 5 * 5 + 1) + 1 * (6 * 5 * 5 + 1)  # Table I
    s4 = 2 * 16
    c5 = (5 * 5 * 16 + 1) * 120
    f6 = (120 + 1) * 84
    assert (c1, s2, c3, s4, c5, f6) == (156, 12, 1516, 32, 48120, 10164)  # as the paper states
    assert row(insp, "c1").params == c1
    assert row(insp, "s2").params == s2
    assert sum(row(insp, f"c3.{g}").params for g in ("three", "four", "six")) == c3
    assert row(insp, "c5").params == c5
    assert row(insp, "f6").params == f6
    assert insp.params == c1 + s2 + c3 + s4 + c5 + f6 == 60_000
    assert row(insp, "c5").receptive_field == (32, 32)  # C5 sees the whole 32×32 input


def test_alexnet2012_first_layer_is_the_seeds_35k() -> None:
    first = inspect_model("alexnet2012").rows[0]
    assert first.type == "Conv2d"
    assert first.kernel == (11, 11) and first.stride == (4, 4)
    assert first.output_shape == (1, 96, 55, 55)
    weights = 11 * 11 * 3 * 96
    assert weights == 34_848
    assert first.params == weights + 96
    assert first.receptive_field == (11, 11)


def test_seeds_bottleneck_example() -> None:
    plain = inspect_model("seed_conv3x3_128")
    bottleneck = inspect_model("seed_bottleneck_128_32")
    assert plain.params == 3 * 3 * 128 * 128 == 147_456
    assert bottleneck.params == 1 * 1 * 128 * 32 + 3 * 3 * 32 * 128 == 40_960
    assert bottleneck.params < plain.params / 3
    convs = [r for r in bottleneck.rows if r.type == "Conv2d"]
    assert convs[-1].receptive_field == (3, 3)  # the same field as the single 3×3
    assert convs[-1].output_shape == plain.rows[0].output_shape == (1, 128, 28, 28)


def test_two_3x3_see_what_one_5x5_sees_with_fewer_parameters() -> None:
    five = inspect_model("seed_conv5x5_128")
    two = inspect_model("seed_two_conv3x3_128")
    assert [r.receptive_field for r in five.rows if r.type == "Conv2d"] == [(5, 5)]
    assert [r.receptive_field for r in two.rows if r.type == "Conv2d"] == [(3, 3), (5, 5)]
    assert five.params == 5 * 5 * 128 * 128 == 409_600  # the seeds' "400k"
    assert two.params == 2 * 3 * 3 * 128 * 128 == 294_912  # the seeds' "294k"
    assert two.macs == 28 * 28 * two.params and five.macs == 28 * 28 * five.params


def test_inception_bottleneck_multiply_adds_by_hand() -> None:
    naive = inspect_model("inception3a_naive")
    reduced = inspect_model("inception3a_bottleneck")
    hw = 28 * 28
    assert naive.macs == hw * (192 * 64 + 9 * 192 * 128 + 25 * 192 * 32)
    assert reduced.macs == hw * (
        192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
    )
    assert round(reduced.macs / 1e6) == 128  # GoogLeNet Table 1, inception(3a): 128M ops
    assert naive.output_shape == (1, 416, 28, 28)
    assert reduced.output_shape == (1, 256, 28, 28)


@pytest.mark.parametrize(
    ("model", "layer", "field", "jump"),
    [
        # Araujo, Norris & Sim, "Computing Receptive Fields of CNNs", Distill 2019, Table 1.
        ("vgg16", "features.30", 212, 32),
        ("alexnet", "features.12", 195, 32),
        ("alexnet2012", "features.14", 195, 32),
    ],
)
def test_receptive_fields_match_published_values(
    model: str, layer: str, field: int, jump: int
) -> None:
    r = row(inspect_model(model), layer)
    assert r.receptive_field == (field, field)
    assert r.jump == (jump, jump)


def test_branches_take_the_largest_path() -> None:
    insp = inspect_model("inception3a_naive")
    # concat of 1×1, 3×3, 5×5 and 3×3 pool branches: the 5×5 path is the largest
    assert row(insp, "branch5x5.0").receptive_field == (5, 5)
    assert row(insp, "branch1x1.0").receptive_field == (1, 1)


@pytest.mark.parametrize(
    "name",
    ["lenet5", "alexnet2012", "inception3a_bottleneck", "deform_resnet50", "se_resnet50"],
)
def test_totals_equal_count_params_and_count_macs(name: str) -> None:
    spec = get_spec(name)
    insp = inspect_model(name)
    shape = (1, spec.in_chans, spec.image_size, spec.image_size)
    assert insp.params == count_params(spec.build()) == sum(r.params for r in insp.rows)
    macs = count_macs(spec.build, shape, formulas=spec.macs_formulas)
    assert insp.macs == macs == sum(r.macs for r in insp.rows)
    assert insp.input_shape == shape


def test_deformable_convolutions_are_counted_with_the_specs_formula() -> None:
    insp = inspect_model("deform_resnet50")
    for block in range(3):  # res5a-c: 7×7×512 outputs, 3×3×512 multiply-adds each
        assert row(insp, f"layer4.{block}.conv2.conv").macs == 7 * 7 * 512 * 3 * 3 * 512


@pytest.mark.parametrize(
    "name", ["resnet18", "googlenet", "squeezenet1_1", "mobilenet_v3_small", "vit_b_16"]
)
def test_totals_equal_torchvision_weight_metadata(name: str) -> None:
    ref = get_spec(name).reference
    assert ref is not None and ref.params is not None and ref.gmacs is not None
    insp = inspect_model(name)
    assert insp.params == ref.params
    assert round(insp.macs / 1e9, 3) == ref.gmacs


def test_image_size_override() -> None:
    insp = inspect_model("resnet18", image_size=160)
    assert insp.input_shape == (1, 3, 160, 160)
    assert row(insp, "layer4.1.bn2").output_shape == (1, 512, 5, 5)
    assert insp.params == get_spec("resnet18").reference.params


def test_unknown_model_and_bad_size() -> None:
    with pytest.raises(UnknownModel):
        inspect_model("lenet55")
    with pytest.raises(InvalidOption):
        inspect_model("lenet5", image_size=0)


def test_formats() -> None:
    insp = inspect_model("lenet5")
    data = json.loads(format_inspection(insp, "json"))
    assert data["params"] == 60_000 and len(data["rows"]) == len(insp.rows)
    assert data["rows"][0]["name"] == "c1" and data["rows"][0]["kernel"] == [5, 5]
    lines = format_inspection(insp, "csv").splitlines()
    assert lines[0].startswith("name,type,kernel") and len(lines) == len(insp.rows) + 1
    assert lines[1].split(",")[:3] == ["c1", "Conv2d", "5×5"]
    table = format_inspection(insp, "table")
    assert "60,000 parameters" in table and "326,520 multiply-adds" in table
    with pytest.raises(InvalidOption):
        format_inspection(insp, "xml")

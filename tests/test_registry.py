"""Registry vs torchvision's weight metadata (an independent reference)."""

from __future__ import annotations

import fnmatch
import sys

import pytest
import torchvision
from torchvision.models import get_model_weights

from bench.errors import UnknownModel, UnknownSuite
from bench.probes.macs import build_on_meta, count_macs, count_params
from models import get_spec, list_models, resolve_model_names, suite_models

TORCHVISION = sorted(torchvision.models.list_models(module=torchvision.models))
# A representative subset for CI: one or two per family, cheap to count on `meta`.
SUBSET = [
    "alexnet",
    "vgg11",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnext50_32x4d",
    "densenet121",
    "squeezenet1_1",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "efficientnet_b0",
    "regnet_y_400mf",
    "convnext_tiny",
    "swin_t",
    "vit_b_32",
    "maxvit_t",
]


def _meta_params(name: str) -> int:
    return count_params(build_on_meta(get_spec(name).builder))


def _check(name: str) -> None:
    spec = get_spec(name)
    meta = get_model_weights(name).DEFAULT.meta
    size = spec.image_size
    assert size == get_model_weights(name).DEFAULT.transforms().crop_size[0]
    assert _meta_params(name) == meta["num_params"]
    macs = count_macs(spec.builder, (1, 3, size, size))
    assert round(macs / 1e9, 3) == pytest.approx(meta["_ops"], abs=5e-4)


def test_every_torchvision_classifier_is_registered() -> None:
    assert set(TORCHVISION) <= set(list_models())
    assert len(TORCHVISION) >= 80


@pytest.mark.parametrize("name", SUBSET)
def test_params_and_macs_match_torchvision_metadata(name: str) -> None:
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_params_and_macs_match_torchvision_metadata_all(name: str) -> None:
    _check(name)


def test_googlenet_is_built_without_auxiliary_heads() -> None:
    model = get_spec("googlenet").build()
    assert model.aux1 is None and model.aux2 is None
    assert not model.training


def test_reference_figures_carry_their_source() -> None:
    ref = get_spec("resnet50").reference
    weights = get_model_weights("resnet50").DEFAULT
    assert ref is not None
    assert ref.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert weights.name in ref.source and "torchvision" in ref.source


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownModel, match=r"did you mean 'resnet50'"):
        get_spec("resnet5O")


def test_suites() -> None:
    canziani = suite_models("canziani")
    assert {"alexnet", "vgg16", "vgg19", "googlenet", "inception_v3", "resnet152"} <= set(canziani)
    assert set(suite_models("smoke")) <= set(list_models())
    assert suite_models("all") == tuple(list_models())
    with pytest.raises(UnknownSuite, match="canziani"):
        suite_models("canzani")


def test_timm_name_without_timm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from models import timm_zoo

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    timm_zoo.timm_spec.cache_clear()
    try:
        with pytest.raises(UnknownModel, match=r"pip install 'effbench\[timm\]'") as info:
            get_spec("timm:resnet18")
        assert "\n" not in str(info.value)
    finally:
        timm_zoo.timm_spec.cache_clear()


def test_resolve_model_names_expands_registry_patterns_and_validates_names() -> None:
    tv = [n for n in TORCHVISION if fnmatch.fnmatch(n, "resnet1*")]
    expected = tuple(sorted([*tv, "resnet110_stochastic_depth_cifar"]))
    assert resolve_model_names(["resnet1*"]) == expected
    assert resolve_model_names([" alexnet", "vgg16", "alexnet"]) == ("alexnet", "vgg16")
    with pytest.raises(UnknownModel, match=r"did you mean 'resnet50'"):
        resolve_model_names(["alexnet", "resnet5O"])
    with pytest.raises(UnknownModel, match="more than the cap of 2"):
        resolve_model_names(["resnet1*"], cap=2)

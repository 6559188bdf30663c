"""Registry vs torchvision's weight metadata (an independent reference)."""

from __future__ import annotations

import ast
import fnmatch
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision
from torch import nn
from torchvision.models import get_model_weights

from bench.errors import InvalidOption, UnknownModel, UnknownSuite
from bench.probes.macs import count_macs
from bench.probes.sizes import build_on_meta, count_params
from models import (
    ModelSpec,
    Reference,
    get_model,
    get_spec,
    list_models,
    register_model,
    registry,
    resolve_model_names,
    suite_models,
)

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


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in the test go to copies of the registry's tables, dropped after."""
    list_models()  # load first, so the copies hold every model
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SUITES", dict(registry._SUITES))


def test_register_model_as_a_decorator_and_with_a_spec(scratch_registry: None) -> None:
    ref = Reference(source="a test, Table 1", params=4 * 2 + 2)

    @register_model(name="t_dec", family="test", image_size=8, reference=ref, suites=["smoke"])
    def t_dec(num_classes: int = 2) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

    assert t_dec.__name__ == "t_dec"  # the builder comes back unchanged
    spec = get_spec("t_dec")
    assert (spec.family, spec.image_size, spec.in_chans, spec.origin) == ("test", 8, 3, "effbench")
    assert spec.reference == ref and spec.builder is t_dec
    assert suite_models("smoke")[-1] == "t_dec"
    assert get_model("t_dec", num_classes=5)[-1].out_features == 5
    with pytest.raises(InvalidOption, match=r"takes no option 'width'; it takes 'num_classes'"):
        get_model("t_dec", width=3)

    plugin = register_model(ModelSpec(name="t_spec", family="test", builder=t_dec, image_size=4))
    assert get_spec("t_spec") is plugin and "t_spec" in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="t_spec", family="test", image_size=4)(t_dec)
    with pytest.raises(TypeError, match="not both"):
        register_model(plugin, family="test")  # type: ignore[call-overload]


def test_options_a_kwargs_builder_cannot_take_are_one_line_errors() -> None:
    with pytest.raises(InvalidOption, match=r"'resnet18' cannot be built with foo=1") as info:
        get_model("resnet18", foo=1)
    assert "\n" not in str(info.value)
    assert get_model("resnet18", num_classes=10).fc.out_features == 10


def test_the_registry_imports_no_model_module() -> None:
    # Every import in models/registry.py, at any depth: none may point back into `models`
    # (the loader and timm's zoo import the registry, never the other way round).
    tree = ast.parse(Path(registry.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m == "models" or m.startswith("models.")]


# One fresh process for the tests below: it looks up our networks and a plugin's, then a
# torchvision one, then lists every network, noting what was imported and changed on the way.
LOADING = """
import json, logging, os, sys
from torch.utils import flop_counter
before = dict(flop_counter.flop_registry)
from bench.devices import _torchvision_version
from bench.executor import ForkServerExecutor, call_in_fresh_process, fork_server_pid
import models

def server_has_torchvision():
    ForkServerExecutor().prepare()
    call_in_fresh_process(os.getpid, (), 120)  # a fork: the server has done its imports
    return "torchvision/_C" in open(f"/proc/{fork_server_pid()}/maps").read()

models.get_spec("lenet5"), models.get_spec("tiny_mlp")
out = {"version": _torchvision_version(), "own": "torchvision" in sys.modules}
out["own_server"] = server_has_torchvision()
models.get_spec("resnet18")
out["zoo"] = "torchvision" in sys.modules
out["zoo_server"] = server_has_torchvision()
out["models"] = len(models.list_models())
out["flop_registry_kept"] = flop_counter.flop_registry == before
out["fvcore_level"] = logging.getLogger("fvcore").level
import torchvision
out["same_version"] = out["version"] == torchvision.__version__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loading() -> dict[str, object]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the fork server is Linux's")
    out = subprocess.run(
        [sys.executable, "-c", LOADING],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_loading_the_registry_changes_nothing_global(loading: dict[str, object]) -> None:
    assert loading["flop_registry_kept"] is True
    assert loading["fvcore_level"] == logging.NOTSET
    assert loading["models"] >= len(TORCHVISION)  # type: ignore[operator]


def test_our_networks_and_the_plugins_load_without_torchvision_and_so_does_the_fork_server(
    loading: dict[str, object],
) -> None:
    """A lookup of our networks or a plugin's never imports torchvision (1.1 s; a new model
    module importing it at the top fails here until listed in ``models._loader.ZOO``), nor
    does the fork server a run of them starts (its memory maps no torchvision library); a
    torchvision network loads the zoo, and the next server has it too. The environment
    record reads torchvision's version without importing it, the same string."""
    assert (loading["own"], loading["own_server"]) == (False, False)
    assert (loading["zoo"], loading["zoo_server"]) == (True, True)
    assert loading["same_version"] is True

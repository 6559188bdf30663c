"""timm as a model source, and our seed implementations cross-checked against timm's.

timm is the independent reference: its networks are built by timm itself and counted with the
same probes; every comparison is exact (parameters) or exact multiply-adds, so an edit to one of
our implementations cannot drift silently.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from bench.errors import UnknownModel
from bench.probes.macs import count_macs
from bench.probes.sizes import build_on_meta, count_params
from models import get_spec, resolve_model_names, suite_models

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]


def _timm_builder(name: str) -> functools.partial:
    return functools.partial(timm.create_model, name, pretrained=False)


def _params(build: Callable[[], nn.Module]) -> int:
    return count_params(build_on_meta(build))


# (ours, timm's, input size, whether the multiply-adds must match too)
CROSS_CHECKS = [
    ("inception_v4", "inception_v4", 299, True),
    ("inception_resnet_v2", "inception_resnet_v2", 299, True),
    # the SE authors' released network (stride on the first 1×1): parameters and MACs
    ("se_resnet50", "legacy_seresnet50", 224, True),
    # timm's own SE-ResNet-50 strides on the 3×3: same parameters, more MACs
    ("se_resnet50", "seresnet50", 224, False),
    # the seeds suite's ImageNet WRN-50-2 (torchvision's) against timm's
    ("wide_resnet50_2", "wide_resnet50_2", 224, True),
]


@pytest.mark.parametrize(("ours", "theirs", "size", "macs_too"), CROSS_CHECKS)
def test_our_networks_equal_timms(ours: str, theirs: str, size: int, macs_too: bool) -> None:
    spec = get_spec(ours)
    assert spec.image_size == size
    assert _params(spec.builder) == _params(_timm_builder(theirs))
    if macs_too:
        shape = (1, 3, size, size)
        assert count_macs(spec.builder, shape) == count_macs(_timm_builder(theirs), shape)


def test_inception_resnet_v2_is_the_released_55_8m_network() -> None:
    # timm's docs and the Keras/TF-slim release quote 55.8M; timm counts 55,843,464.
    assert _params(get_spec("inception_resnet_v2").builder) == 55_843_464


def test_timm_spec_reads_its_input_size_from_timm() -> None:
    for name in ("inception_v4", "resnet18", "efficientnet_b0"):
        spec = get_spec(f"timm:{name}")
        cfg = timm.models.get_pretrained_cfg(name)
        assert (spec.in_chans, spec.image_size, spec.image_size) == tuple(cfg.input_size)
        assert spec.family == "timm" and spec.origin == "timm"
        model = spec.build()
        assert not model.training


def test_timm_reference_only_where_cited() -> None:
    assert get_spec("timm:resnet18").reference is None
    ref = get_spec("timm:inception_resnet_v2").reference
    assert ref is not None and "Table 2" in ref.source and ref.top1 == 80.1


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModel, match=r"did you mean 'timm:resnet50'"):
        get_spec("timm:resnet5O")


def test_patterns_expand_over_timm_list_models_with_a_cap() -> None:
    expected = tuple(f"timm:{n}" for n in timm.list_models("inception_v*"))
    assert expected  # timm's own filter, the independent reference
    got = resolve_model_names(["resnet18", "timm:inception_v*", "resnet18", "timm:inception_v4"])
    assert got == ("resnet18", *expected)
    with pytest.raises(UnknownModel, match=r"matches \d+ models, more than the cap of 3"):
        resolve_model_names(["timm:resnet*"], cap=3)
    with pytest.raises(UnknownModel, match="no model matches"):
        resolve_model_names(["timm:no_such_net_*"])


def test_timm_seeds_suite_resolves() -> None:
    names = suite_models("timm-seeds")
    assert len(names) >= 12 and all(n.startswith("timm:") for n in names)
    assert resolve_model_names(names) == names


def test_get_spec_works_in_a_fresh_process() -> None:
    code = "from models import get_spec; s = get_spec('timm:resnet18'); print(s.image_size)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(timm.models.get_pretrained_cfg("resnet18").input_size[-1])


def _sweep(tmp_path: Path, models: str, image_size: int) -> None:
    from bench import load_results
    from bench.cli import main

    out = tmp_path / "results"
    argv = ["run", "--models", models, "--batch-sizes", "1,4", "--devices", "cpu"]
    argv += ["--image-size", str(image_size), "--max-time", "0.2", "--min-time", "0.05"]
    argv += ["--warmup-iters", "1", "--warmup-time", "0", "--out", str(out), "--run-id", "t"]
    assert main(argv) == 0
    df = load_results([out])
    expected = set(resolve_model_names(models.split(",")))
    assert set(df["model"]) == expected
    assert set(df["batch_size"]) == {1, 4}
    assert (df["status"] == "ok").all(), df[["model", "batch_size", "status", "error"]]
    for name, g in df.groupby("model"):
        # parameters counted in the worker equal timm's own model's
        arch = str(name).removeprefix("timm:")
        assert (g["params"] == _params(_timm_builder(arch))).all()


def test_cpu_sweep_over_timm_models(tmp_path: Path) -> None:
    _sweep(tmp_path, "timm:resnet18,timm:efficientnet_b0", 64)


@pytest.mark.slow
def test_cpu_sweep_over_timm_seeds(tmp_path: Path) -> None:
    # 75 px is the smallest input the Inception stems take; every other seed network too.
    _sweep(tmp_path, ",".join(suite_models("timm-seeds")), 75)

"""timm's model zoo as a model source: ``timm:NAME`` is ``timm.create_model(NAME,
pretrained=False)`` in ``eval()`` mode, at the input size of its ``pretrained_cfg``.

timm (pytorch-image-models) is an optional extra, ``pip install 'effbench[timm]'``; it is
imported only when a ``timm:`` name is asked for, so the registry loads without it. Nothing is
downloaded: no weights are loaded, only the architecture is built. Parameters and MACs are
counted from the built network like every other model's. A ``timm:`` network carries a
``Reference`` only where a cited source gives figures for that architecture: the papers of the
seed networks we implement ourselves, for timm's ports of the same networks (``_SAME_AS``).

Registers itself as the registry's source of ``timm:`` names, and defines the ``timm-seeds``
suite: timm's versions of the seed notes' networks.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from types import ModuleType

from torch import nn

from bench.errors import UnknownModel
from models.registry import (
    TIMM_PREFIX,
    ModelSource,
    ModelSpec,
    Reference,
    get_spec,
    register_source,
    register_suite,
)

INSTALL_HINT = "pip install 'effbench[timm]'"

# timm's versions of the seed notes' networks (torchvision's seeds suite, plus the networks
# that torchvision lacks and we implement ourselves). GoogLeNet, AlexNet, SqueezeNet, ZFNet,
# NiN, LeNet-5, FractalNet, CIFAR ResNets and deformable convolutions are not in timm.
TIMM_SEEDS = (
    "vgg16",
    "vgg19",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnetv2_50",  # pre-activation ResNet ("Identity Mappings in Deep Residual Networks")
    "wide_resnet50_2",
    "densenet121",
    "efficientnet_b0",
    "inception_v4",
    "inception_resnet_v2",
    "legacy_seresnet50",  # the SE authors' released SE-ResNet-50 (stride on the first 1×1)
    "seresnet50",  # timm's SE-ResNet-50 (stride on the 3×3, as torchvision's ResNet-50)
)
register_suite(
    "timm-seeds",
    tuple(TIMM_PREFIX + n for n in TIMM_SEEDS),
    "timm's versions of the seed networks (needs the timm extra)",
)

# timm architectures that are exactly one of ours (same parameter count and MACs, tested in
# tests/test_timm_source.py), so our Reference (the paper's figures) applies to them too.
_SAME_AS: dict[str, str] = {
    "inception_v4": "inception_v4",
    "inception_resnet_v2": "inception_resnet_v2",
    "legacy_seresnet50": "se_resnet50",
}


def _timm() -> ModuleType:
    """The timm module, or a one-line error that says how to install it."""
    try:
        import timm
    except ImportError:
        raise UnknownModel(
            f"timm models need the timm package, which is not installed; {INSTALL_HINT}"
        ) from None
    return timm


def list_timm(pattern: str = "*") -> list[str]:
    """timm's architecture names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _timm().list_models() if fnmatch.fnmatch(n, pattern))


def _build(name: str, **config: object) -> nn.Module:
    return _timm().create_model(name, pretrained=False, **config)


def _input_shape(name: str) -> tuple[int, int]:
    """(in_chans, image_size) from the default pretrained_cfg (or the built model's)."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        from bench.probes.sizes import build_on_meta

        cfg = build_on_meta(functools.partial(_build, name)).pretrained_cfg
        size = cfg["input_size"]
    else:
        size = cfg.input_size
    return int(size[0]), int(size[-1])


def _reference(name: str) -> Reference | None:
    ours = _SAME_AS.get(name.split(".", 1)[0])
    return get_spec(ours).reference if ours else None


@functools.cache
def timm_spec(name: str) -> ModelSpec:
    """The spec of timm's network ``name`` (with or without a pretrained tag)."""
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?)"
        raise UnknownModel(
            f"unknown timm model {name!r}{hint if close else ''}; "
            "see timm.list_models() for the list"
        )
    try:
        in_chans, size = _input_shape(name)
    except RuntimeError as e:  # a pretrained tag the architecture does not have
        raise UnknownModel(f"timm model {name!r}: {e}") from None
    return ModelSpec(
        name=TIMM_PREFIX + name,
        family="timm",
        builder=functools.partial(_build, name),
        image_size=size,
        in_chans=in_chans,
        origin="timm",
        reference=_reference(name),
        description=f"timm {timm.__version__} create_model({name!r}, pretrained=False)",
    )


register_source(ModelSource(prefix=TIMM_PREFIX, spec=timm_spec, names=list_timm))

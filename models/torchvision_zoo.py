"""Every torchvision classification model, registered under its torchvision name.

Input size and reference figures are read from the default weights' metadata
(``transforms().crop_size``, ``num_params``, ``_ops``, ``_metrics``); nothing is typed in.
Networks are built with ``weights=None`` in the configuration the published weights use.
"""

from __future__ import annotations

import functools

import torchvision
from torch import nn
from torchvision.models import get_model, get_model_builder, get_model_weights, list_models

from models.registry import ModelSpec, Reference, register_model

# Builder arguments that make a weightless build equal the published model.
# googlenet(weights=None) keeps its two auxiliary heads (13.0M parameters); the published
# weights drop them (6.6M). init_weights=False only skips a slow random initialisation.
_INFERENCE_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"init_weights": False},
}


def _build(name: str, **kwargs: object) -> nn.Module:
    return get_model(name, weights=None, **_INFERENCE_KWARGS.get(name, {}), **kwargs)


def _family(name: str) -> str:
    """The torchvision module that defines the builder (``resnet``, ``vgg``, ...)."""
    return get_model_builder(name).__module__.rsplit(".", 1)[-1]


def _register_all() -> None:
    for name in list_models(module=torchvision.models):
        weights = get_model_weights(name).DEFAULT
        meta = weights.meta
        metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
        crop = weights.transforms().crop_size
        # ViTs are built for one input size (positional embedding); the default weights of
        # vit_h_14 (SWAG) are at 518 px, which torchvision's builder sets from the weights.
        kwargs = {"image_size": int(crop[0])} if name.startswith("vit_") else {}
        register_model(
            ModelSpec(
                name=name,
                family=_family(name),
                builder=functools.partial(_build, name, **kwargs),
                image_size=int(crop[0]),
                in_chans=3,
                origin="torchvision",
                reference=Reference(
                    source=(
                        f"torchvision {torchvision.__version__} weight metadata "
                        f"{type(weights).__name__}.{weights.name}"
                    ),
                    top1=metrics.get("acc@1"),
                    top5=metrics.get("acc@5"),
                    params=meta.get("num_params"),
                    gmacs=meta.get("_ops"),
                ),
            )
        )


_register_all()

"""What the registry holds, counted: parameters, MACs and weight bytes of registered models.

Counts are taken on the ``meta`` device (shapes only), so listing every model is fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from bench.errors import InvalidOption
from bench.probes.flops import build_on_meta, count_macs, count_params, weights_bytes
from models import get_spec


def _meta_model(name: str) -> torch.nn.Module:
    return build_on_meta(get_spec(name).builder)


def model_rows(names: Iterable[str]) -> list[dict[str, Any]]:
    """One row per model: family, input, counted params and the published references."""
    rows = []
    for name in names:
        spec = get_spec(name)
        ref = spec.reference
        rows.append(
            {
                "model": name,
                "family": spec.family,
                "origin": spec.origin,
                "input": f"{spec.in_chans}x{spec.image_size}x{spec.image_size}",
                "params": count_params(_meta_model(name)),
                "params_ref": ref.params if ref else None,
                "gmacs_ref": ref.gmacs if ref else None,
                "top1": ref.top1 if ref else None,
                "top5": ref.top5 if ref else None,
                "dataset": ref.dataset if ref else None,
                "source": ref.source if ref else None,
            }
        )
    return rows


def model_totals(
    name: str, image_size: int | None = None, counter: str = "torch"
) -> dict[str, Any]:
    """Params, MACs per image and float32 weight bytes of ``name`` at ``image_size``."""
    spec = get_spec(name)
    size = image_size or spec.image_size
    if size < 1:
        raise InvalidOption(f"--image-size {size} must be >= 1")
    model = _meta_model(name)
    try:
        macs = count_macs(spec.builder, (1, spec.in_chans, size, size), counter)
    except RuntimeError as e:
        raise InvalidOption(
            f"{name} cannot run on a {spec.in_chans}x{size}x{size} input ({e}); "
            f"try its default --image-size {spec.image_size}"
        ) from e
    ref = spec.reference
    return {
        "model": name,
        "input": f"{spec.in_chans}x{size}x{size}",
        "params": count_params(model),
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "macs_counter": counter,
        "weights_bytes_float32": weights_bytes(model),
        "params_ref": ref.params if ref else None,
        "gmacs_ref": ref.gmacs if ref and size == spec.image_size else None,
    }

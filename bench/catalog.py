"""What the registry holds, with parameters counted from each built model.

Counts are taken on the ``meta`` device (shapes only), so listing every model is fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from bench.probes.sizes import build_on_meta, count_params
from models import get_spec
from models.registry import model_failures


def _meta_model(name: str) -> torch.nn.Module:
    return build_on_meta(get_spec(name).builder)


def model_rows(names: Iterable[str]) -> list[dict[str, Any]]:
    """One row per model: family, input, counted params and the published references."""
    rows = []
    for name in names:
        spec = get_spec(name)
        ref = spec.reference
        with model_failures(name):
            params = count_params(_meta_model(name))
        rows.append(
            {
                "model": name,
                "family": spec.family,
                "origin": spec.origin,
                "input": f"{spec.in_chans}x{spec.image_size}x{spec.image_size}",
                "params": params,
                "params_ref": ref.params if ref else None,
                "gmacs_ref": ref.gmacs if ref else None,
                "top1": ref.top1 if ref else None,
                "top5": ref.top5 if ref else None,
                "dataset": ref.dataset if ref else None,
                "source": ref.source if ref else None,
                "verified": ref.verified if ref else None,
            }
        )
    return rows

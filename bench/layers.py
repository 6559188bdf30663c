"""Per-layer analysis of a registered model: shapes, parameters, multiply-adds and receptive
fields, one row per leaf layer.

Method (one image, batch 1, on the ``meta`` device, so nothing is computed):

- Multiply-adds use the convention of ``bench.probes.macs.count_macs(counter="torch")``:
  ``FlopCounterMode`` FLOPs (conv, linear, matmul, attention) divided by 2, attributed to the
  innermost module that ran them (a module's count minus its children's). A container that
  runs such ops itself (e.g. a functional matmul) gets a row of its own, so the rows add up to
  ``count_macs`` exactly.
- Parameters are each module's own (``recurse=False``), shared tensors counted once, so the
  rows add up to ``count_params``. Modules never called (e.g. training-only heads) still get a
  row, with no output shape.
- Receptive field (pixels of the input, per axis) and jump (effective stride, input pixels per
  output step) are propagated through every operator: convolution and pooling grow the field
  by (k−1)·dilation·jump and multiply the jump by the stride; adaptive/global pooling and
  flattening a spatial map cover the whole map; anything else (sums, concatenations,
  element-wise ops) takes the largest field among its inputs, i.e. the largest path through
  branches. Fields are theoretical and not clipped to the image.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from bench.errors import InvalidOption
from bench.probes.macs import flop_counter_mode
from bench.probes.sizes import build_on_meta, count_params, weights_bytes

FORMATS = ("table", "json", "csv")


@dataclass(frozen=True, slots=True)
class LayerRow:
    """One leaf layer (or a container that runs ops or holds parameters itself).

    ``macs`` are multiply-adds per image; ``receptive_field`` and ``jump`` are (h, w) in input
    pixels, taken at the layer's output on its last call; ``calls`` counts forward calls.
    """

    name: str
    type: str
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | str | None
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    receptive_field: tuple[int, int] | None
    jump: tuple[int, int] | None
    calls: int


@dataclass(frozen=True, slots=True)
class Inspection:
    """Rows in execution order plus totals (params, multiply-adds per image, bytes)."""

    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    rows: tuple[LayerRow, ...]
    params: int
    macs: int
    weights_bytes: int


def inspect_model(name: str, image_size: int | None = None) -> Inspection:
    """Inspect registered model ``name`` on one image of its input shape.

    ``image_size`` overrides the registered square input size.
    """
    from models.registry import get_spec, model_failures

    spec = get_spec(name)
    with model_failures(name), sized_input(name, spec.image_size, image_size) as size:
        shape = (1, spec.in_chans, size, size)
        return inspect_module(spec.builder, shape, name=name, formulas=spec.macs_formulas)


@contextlib.contextmanager
def sized_input(name: str, own_size: int, image_size: int | None) -> Iterator[int]:
    """The square input size for model ``name``: ``image_size`` if given, else its own.
    Under an override, a shape error raised inside the block becomes one line saying to
    use a larger ``--image-size``."""
    size = own_size if image_size is None else image_size
    if size < 1:
        raise InvalidOption(f"image size must be a positive integer, got {size}")
    try:
        yield size
    except (RuntimeError, ValueError) as e:
        if image_size is None or isinstance(e, InvalidOption):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidOption(
            f"{name} cannot take a {size}x{size} input ({first}); use a larger --image-size "
            f"(its own is {own_size})"
        ) from e


def inspect_module(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    name: str = "",
    formulas: Mapping[Any, Callable[..., int]] | None = None,
) -> Inspection:
    """Inspect the model that ``build()`` returns on an input of ``input_shape`` (batch 1);
    ``formulas`` are FLOP formulas for operators torch does not know (as ``count_macs``)."""
    model = build_on_meta(build)
    x = torch.empty(input_shape, device="meta")
    macs_by_module = exclusive_macs(model, x, formulas)
    shapes, fields, calls, order = _trace(model, x)

    rows: list[LayerRow] = []
    seen: set[int] = set()
    modules = dict(model.named_modules())
    position = {n: i for i, n in enumerate(modules)}
    # Execution order first; modules that never ran follow in definition order.
    ranked = sorted(modules, key=lambda n: order.get(n, len(order) + position[n]))
    for mod_name in ranked:
        module = modules[mod_name]
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        params = sum(p.numel() for p in own)
        macs = macs_by_module.get(mod_name, 0)
        is_leaf = next(module.children(), None) is None
        if not (is_leaf or params or macs):
            continue
        field = fields.get(mod_name)
        rows.append(
            LayerRow(
                name=mod_name or "(model)",
                type=type(module).__name__,
                kernel=_pair_attr(module, "kernel_size"),
                stride=_pair_attr(module, "stride"),
                padding=_padding(module),
                output_shape=shapes.get(mod_name),
                params=params,
                macs=macs,
                receptive_field=None if field is None else (_int(field.rf_h), _int(field.rf_w)),
                jump=None if field is None else (_int(field.jump_h), _int(field.jump_w)),
                calls=calls.get(mod_name, 0),
            )
        )
    return Inspection(
        model=name or type(model).__name__,
        input_shape=tuple(input_shape),
        output_shape=shapes.get(""),
        rows=tuple(rows),
        params=count_params(model),
        macs=sum(r.macs for r in rows),
        weights_bytes=weights_bytes(model),
    )


def exclusive_macs(
    model: nn.Module, x: torch.Tensor, formulas: Mapping[Any, Callable[..., int]] | None = None
) -> dict[str, int]:
    """Multiply-adds per module name ("" is the root), each counted once, innermost module,
    for one forward of ``x`` (its batch included); used by ``bench.profile`` as well."""
    counter = flop_counter_mode(formulas)
    with counter:
        model(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    inclusive: dict[str, int] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        qual = "" if key == root else key[len(root) + 1 :] if key.startswith(root + ".") else None
        if qual is not None:
            inclusive[qual] = sum(ops.values())
    exclusive: dict[str, int] = {}
    for qual, total in inclusive.items():
        children = [
            c for c in inclusive if c != qual and _parent(c) == qual
        ]  # direct children that ran
        exclusive[qual] = total - sum(inclusive[c] for c in children)
    global_total = sum(counts.get("Global", {}).values())
    attributed = sum(exclusive.values())
    if global_total != attributed:  # ops outside any named module: give them to the root
        exclusive[""] = exclusive.get("", 0) + global_total - attributed
    return {k: v // 2 for k, v in exclusive.items() if v}


def _parent(qual: str) -> str | None:
    return None if qual == "" else qual.rsplit(".", 1)[0] if "." in qual else ""


class _FieldTracker(TorchDispatchMode):
    """Propagates a ``_Field`` from input to output tensors of every operator."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.fields: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.fields[start] = _Field(1.0, 1.0, 1.0, 1.0, False)

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in _flat([args, list(kwargs.values())]) if isinstance(a, torch.Tensor)]
        known = [(t, self.fields[t]) for t in tensors if t in self.fields]
        if known:
            field = _propagate(func, args, known, out)
            for t in _flat([out]):
                if isinstance(t, torch.Tensor):
                    self.fields[t] = field
        return out


@dataclass(frozen=True, slots=True)
class _Field:
    """Receptive field (h, w) and jump (h, w) in input pixels; ``whole`` once the grid has
    been mixed (global pooling, flattening, attention), after which the field stays fixed."""

    rf_h: float
    rf_w: float
    jump_h: float
    jump_w: float
    whole: bool

    def grow(self, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]) -> _Field:
        if self.whole:
            return self
        return _Field(
            self.rf_h + (k[0] - 1) * d[0] * self.jump_h,
            self.rf_w + (k[1] - 1) * d[1] * self.jump_w,
            self.jump_h * s[0],
            self.jump_w * s[1],
            False,
        )


def _flat(items: Any) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flat(item))
        else:
            flat.append(item)
    return flat


def _two(value: Any, default: int) -> tuple[int, int]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    vals = [int(v) for v in value]
    return (vals[0], vals[-1])


# Operators that move data between layouts (NCHW <-> NHWC) without mixing grid positions.
_LAYOUT_OPS = frozenset({"permute", "transpose", "t", "clone", "contiguous", "_to_copy", "expand"})


def _propagate(
    func: Any, args: tuple[Any, ...], known: list[tuple[torch.Tensor, _Field]], out: Any
) -> _Field:
    """Field of ``func``'s output: the largest input field, then the operator's own growth."""
    src, big = max(known, key=lambda tf: tf[1].rf_h * tf[1].rf_w)
    local = [f for _, f in known if not f.whole]
    if local:  # the grid step comes from the inputs that still have a grid (SE gates do not)
        jump_h = min(f.jump_h for f in local)
        jump_w = min(f.jump_w for f in local)
        field = _Field(big.rf_h, big.rf_w, jump_h, jump_w, False)
    else:
        return big
    name = getattr(getattr(func, "overloadpacket", None), "__name__", str(func))
    if name in _LAYOUT_OPS:
        return field
    if name in ("convolution", "_convolution") and not args[6]:
        return field.grow(tuple(args[1].shape[-2:]), _two(args[3], 1), _two(args[5], 1))
    if name == "deform_conv2d":
        return field.grow(tuple(args[1].shape[-2:]), (args[5], args[6]), (args[9], args[10]))
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        k = _two(args[1], 1)
        s = _two(args[2] if len(args) > 2 else None, 0)
        d = _two(args[4], 1) if name != "avg_pool2d" and len(args) > 4 else (1, 1)
        return field.grow(k, k if s == (0, 0) else s, d)
    if src.dim() == 4 and isinstance(out, torch.Tensor):
        h, w = (int(v) for v in src.shape[-2:])
        if name in ("_adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool2d"):
            oh, ow = _two(args[1], 1)
            sh, sw = max(h // oh, 1), max(w // ow, 1)
            grown = field.grow((h - (oh - 1) * sh, w - (ow - 1) * sw), (sh, sw), (1, 1))
            return _Field(grown.rf_h, grown.rf_w, grown.jump_h, grown.jump_w, oh * ow == 1)
        keeps_grid = out.dim() >= 3 and (h, w) in (tuple(out.shape[-2:]), tuple(out.shape[1:3]))
        same_batch = out.dim() >= 1 and out.shape[0] == src.shape[0]
        if not keeps_grid and same_batch and h * w > 1:
            # Flattening, global reductions, attention: the output mixes every grid position.
            grown = field.grow((h, w), (1, 1), (1, 1))
            return _Field(grown.rf_h, grown.rf_w, field.jump_h, field.jump_w, True)
    return field


def _trace(
    model: nn.Module, x: torch.Tensor
) -> tuple[dict[str, tuple[int, ...]], dict[str, _Field], dict[str, int], dict[str, int]]:
    """Output shape, field, call count and first-call order of every module."""
    shapes: dict[str, tuple[int, ...]] = {}
    fields: dict[str, _Field] = {}
    calls: dict[str, int] = {}
    order: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}
    tracker = _FieldTracker(x)

    def pre_hook(module: nn.Module, _args: Any) -> None:
        n = names[id(module)]
        order.setdefault(n, len(order))

    def post_hook(module: nn.Module, _args: Any, output: Any) -> None:
        n = names[id(module)]
        calls[n] = calls.get(n, 0) + 1
        first = next((t for t in _flat([output]) if isinstance(t, torch.Tensor)), None)
        if first is not None:
            shapes[n] = tuple(first.shape)
            if first in tracker.fields:
                fields[n] = tracker.fields[first]

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad(), tracker:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, fields, calls, order


def _pair_attr(module: nn.Module, attr: str) -> tuple[int, ...] | None:
    value = getattr(module, attr, None)
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        return (value, value)
    try:
        return tuple(int(v) for v in value)
    except TypeError:
        return None


def _padding(module: nn.Module) -> tuple[int, ...] | str | None:
    value = getattr(module, "padding", None)
    return value if isinstance(value, str) else _pair_attr(module, "padding")


def _int(value: float) -> int:
    return round(value)


def format_inspection(insp: Inspection, fmt: str = "table") -> str:
    """Render ``insp`` as an aligned text table, JSON (rows and totals) or CSV (rows)."""
    if fmt == "json":
        return json.dumps(asdict(insp), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for row in insp.rows:
            writer.writerow(_cells(row))
        return buf.getvalue()
    if fmt == "table":
        return _table(insp)
    raise InvalidOption(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


_COLUMNS = (
    "name", "type", "kernel", "stride", "padding", "output_shape",
    "params", "macs", "receptive_field", "jump", "calls",
)  # fmt: skip


def _dims(value: tuple[int, ...] | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "×".join(str(v) for v in value)


def _cells(row: LayerRow) -> list[str]:
    return [
        row.name,
        row.type,
        _dims(row.kernel),
        _dims(row.stride),
        _dims(row.padding),
        _dims(row.output_shape),
        str(row.params),
        str(row.macs),
        _dims(row.receptive_field),
        _dims(row.jump),
        str(row.calls),
    ]


def _table(insp: Inspection) -> str:
    header = list(_COLUMNS)
    body = [_cells(r) for r in insp.rows]
    for cells in body:
        cells[6] = f"{int(cells[6]):,}"
        cells[7] = f"{int(cells[7]):,}"
    widths = [
        max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)
    ]
    right = {6, 7, 10}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(c) for c in body)]
    out.append(
        f"total: {insp.params:,} parameters, {insp.macs:,} multiply-adds per image "
        f"({insp.macs / 1e9:.3f} G), {insp.weights_bytes:,} bytes of weights; "
        f"input {_dims(insp.input_shape)}, output {_dims(insp.output_shape)}"
    )
    return "\n".join(out)

"""Counted memory traffic and activation peak of one forward pass, on the ``meta`` device.

Both are counted at the dispatch level (a ``TorchDispatchMode``) during one forward of the
model in ``eval()`` under ``torch.no_grad()``, so nothing is computed and the figures are the
same on every machine. Definitions (docs/counted-memory.md has the details and a worked
example):

- ``bytes_accessed``: the sum over every ATen operator executed of the bytes of its tensor
  inputs (read) plus its tensor outputs (written), each tensor numel × element size. Weights
  count once per operator that reads them. Views and aliases (schema alias annotation
  ``Tensor(a)`` without ``!``, the ``inplace_view`` tag, or every output sharing storage with
  an input of an operator that mutates nothing, e.g. ``_unsafe_view``) move nothing and count
  0; in-place operators count their read and their write; ``out=`` arguments and the
  destination of ``copy_``/``fill_``/``zero_`` are written, not read; ``empty*`` allocates
  without writing. It is the traffic with no reuse across operators (nothing stays in a
  cache, nothing is fused): an upper bound on DRAM traffic, not a measurement.
- ``activation_peak_bytes``: the largest total, over the forward, of the storages alive other
  than parameters and buffers: the input plus every storage an operator allocated, from the
  operator that made it until its last reference (Python or C++) is dropped, each storage once
  however many views it has. Lifetimes come from ``weakref.finalize`` on the storage's Python
  object, which PyTorch keeps tied to the C++ ``StorageImpl`` (meta storages included).
  Kernel workspaces, allocator rounding and caching are not counted.

``CompositeImplicitAutograd`` operators reaching the mode (they do under
``torch.inference_mode()``) are decomposed first, so the operators counted are the ones that
run under ``no_grad`` either way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.errors import InvalidOption
from bench.plan import DTYPES
from bench.probes.sizes import build_on_meta


@dataclass(frozen=True, slots=True)
class Traffic:
    """Counted bytes of one forward of the whole input (batch included)."""

    bytes_accessed: int  # bytes read + written by every op of one forward of the input
    activation_peak_bytes: int  # peak live bytes other than weights (input included)


def traffic_by_line(
    count: Callable[[int], Traffic],
    batch_sizes: Sequence[int],
    batch_size: int,
    counted: dict[int, Traffic],
) -> Traffic:
    """Traffic at ``batch_size`` for a group of ``batch_sizes``, counting as few forwards
    as it can (each count runs every operator's meta kernel in Python: 0.1-0.3 s for a
    torchvision network, as much as a cell's memory pass). A forward's operators do not
    depend on the batch, so both figures are a line in it (weights + batch × activations),
    exactly, for every network of the default suites. So the group's two smallest batch
    sizes and its largest are counted; where the three lie on one line with a whole
    number of bytes per image, the batch sizes between are read off that line, and
    otherwise each is counted. ``counted`` keeps the counts of the group."""

    def at(b: int) -> Traffic:
        if b not in counted:
            counted[b] = count(b)
        return counted[b]

    sizes = sorted(set(batch_sizes))
    if batch_size in counted or len(sizes) < 4 or batch_size not in sizes:
        return at(batch_size)
    b1, b2, last = sizes[0], sizes[1], sizes[-1]
    if batch_size in (b1, b2, last):
        return at(batch_size)
    points = (at(b1), at(b2), at(last))
    line: list[int] = []
    for field in ("bytes_accessed", "activation_peak_bytes"):
        y1, y2, y3 = (getattr(t, field) for t in points)
        per, left = divmod(y2 - y1, b2 - b1)
        if left or y1 + per * (last - b1) != y3:
            return at(batch_size)  # not one line: count it
        line.append(y1 + per * (batch_size - b1))
    return Traffic(*line)


def count_traffic(
    build: Callable[[], nn.Module], input_shape: tuple[int, ...], dtype: str = "float32"
) -> Traffic:
    """Traffic of one forward of an input of ``input_shape`` (batch included) in ``dtype``.

    ``build`` makes a fresh model, built on ``meta``; its floating parameters and buffers are
    cast to ``dtype`` (integer buffers such as batch norm's counter keep theirs).
    """
    return traffic_at(meta_model(build, dtype), input_shape, dtype)


def meta_model(build: Callable[[], nn.Module], dtype: str = "float32") -> nn.Module:
    """``build``'s model on ``meta`` in ``dtype``, for :func:`traffic_at` at several input
    shapes (a worker counts every batch size of its group on one)."""
    if dtype not in DTYPES:
        raise InvalidOption(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return build_on_meta(build).to(getattr(torch, dtype))


def traffic_at(model: nn.Module, input_shape: tuple[int, ...], dtype: str = "float32") -> Traffic:
    """Traffic of one forward of ``model`` (from :func:`meta_model` in ``dtype``) on an input
    of ``input_shape``. The forward runs under ``no_grad`` in ``eval()`` on ``meta``: it
    changes nothing in the model, so the model is reused from shape to shape."""
    x = torch.empty(input_shape, device="meta", dtype=getattr(torch, dtype))
    return traffic_of(model, x)


def traffic_of(model: nn.Module, x: torch.Tensor) -> Traffic:
    """Traffic of ``model(x)``; ``model`` (in ``eval()``) and ``x`` already on ``meta``."""
    counter = _run(model, x, by_module=False)
    return Traffic(bytes_accessed=counter.total_bytes, activation_peak_bytes=counter.peak_bytes)


def exclusive_bytes_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Bytes accessed by the operators each module ran itself (the innermost module running
    when the operator was dispatched), keyed by qualified name; "" is the root and anything
    outside a submodule. A module reused under several names is keyed by its first name.
    Sums to ``traffic_of(model, x).bytes_accessed``; modules that moved no bytes are left
    out."""
    counter = _run(model, x, by_module=True)
    return {name: n for name, n in counter.by_module.items() if n}


def _run(model: nn.Module, x: torch.Tensor, by_module: bool) -> _TrafficCounter:
    weights = [t.untyped_storage() for t in (*model.parameters(), *model.buffers())]
    counter = _TrafficCounter(weights, x)
    handles = _track_modules(model, counter.stack) if by_module else []
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        counter.close()
    return counter


def _track_modules(model: nn.Module, stack: list[str]) -> list[Any]:
    """Hooks keeping ``stack`` equal to the qualified names of the modules now running."""
    names = {id(m): n for n, m in model.named_modules()}

    def push(module: nn.Module, _args: Any) -> None:
        stack.append(names[id(module)])

    def pop(_module: nn.Module, _args: Any, _output: Any) -> None:
        stack.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop, always_call=True))
    return handles


@dataclass(frozen=True, slots=True)
class _OpRule:
    """How an operator moves data. ``decomposes``: it is ``CompositeImplicitAutograd``, counted
    as the operators it runs; ``view``: it only makes views or aliases (or changes a
    tensor's metadata in place); ``allocates``: it allocates without writing (``empty``);
    ``mutates``: it writes one of its arguments (in place or ``out=``); ``unread``: the
    positions and names of the tensor arguments it writes without reading them."""

    decomposes: bool
    view: bool
    allocates: bool
    mutates: bool
    unread_positions: frozenset[int]
    unread_names: frozenset[str]


_ALLOCATIONS = frozenset({"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided"})
_OVERWRITES = frozenset({"copy_", "fill_", "zero_"})  # self is written whole, not read


def _rule(func: Any) -> _OpRule:
    arguments = func._schema.arguments
    name = func.overloadpacket.__name__
    aliases = [a.alias_info for a in arguments if a.alias_info is not None]
    unread = {i for i, a in enumerate(arguments) if a.is_out}
    if name in _OVERWRITES and arguments:
        unread.add(0)
    return _OpRule(
        decomposes=func._can_decompose(),
        view=any(not a.is_write for a in aliases) or torch.Tag.inplace_view in func.tags,
        allocates=name in _ALLOCATIONS,
        mutates=any(a.is_write for a in aliases),
        unread_positions=frozenset(unread),
        unread_names=frozenset(arguments[i].name for i in unread),
    )


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _all_aliased(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> bool:
    """Every output shares its storage with an input (no new data was made)."""
    storages = {id(t.untyped_storage()) for t in inputs}
    return bool(outputs) and all(id(t.untyped_storage()) in storages for t in outputs)


class _TrafficCounter(TorchDispatchMode):
    """Adds up bytes read and written per operator and follows the live activation storages.

    ``weights`` are the storages never counted as live (parameters, buffers); ``x``'s storage
    is live from the start. ``stack`` holds the running modules' names when attributing.
    """

    def __init__(self, weights: list[torch.UntypedStorage], x: torch.Tensor) -> None:
        super().__init__()
        self._weights = weights  # held, so that their ids stay theirs
        self._weight_ids = {id(s) for s in weights}
        self._rules: dict[Any, _OpRule] = {}
        self._live: dict[int, int] = {}  # id(storage) -> bytes, for storages still alive
        self._finalizers: list[weakref.finalize] = []
        self.live_bytes = 0
        self.peak_bytes = 0
        self.total_bytes = 0
        self.by_module: dict[str, int] = {}
        self.stack: list[str] = []
        self._track(x.untyped_storage())

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        rule = self._rules.get(func)
        if rule is None:
            rule = self._rules[func] = _rule(func)
        if rule.decomposes:  # composites reach the mode under inference_mode
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if rule.view:
            return out
        outputs = _tensors(out)
        if not rule.allocates:
            read = self._read(rule, args, kwargs)
            if not rule.mutates and _all_aliased(outputs, read):
                return out  # e.g. _unsafe_view: a view its schema does not annotate
            n = _bytes(read) + _bytes(outputs)
            self.total_bytes += n
            where = self.stack[-1] if self.stack else ""
            self.by_module[where] = self.by_module.get(where, 0) + n
        for t in outputs:
            self._track(t.untyped_storage())
        return out

    @staticmethod
    def _read(rule: _OpRule, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if not rule.unread_positions:
            return _tensors((args, kwargs))
        kept = [a for i, a in enumerate(args) if i not in rule.unread_positions]
        return _tensors((kept, {k: v for k, v in kwargs.items() if k not in rule.unread_names}))

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self._live or key in self._weight_ids:
            return
        size = storage.nbytes()
        self._live[key] = size
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._finalizers.append(weakref.finalize(storage, self._free, key))

    def _free(self, key: int) -> None:
        self.live_bytes -= self._live.pop(key)

    def close(self) -> None:
        """Stop following storages still alive (the input, the output)."""
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()
        self._live.clear()

"""The leaf layers of a forward for ``bench.profile``: which layers a forward calls,
which group each belongs to (conv, norm, activation, ...), and their times from
synchronised forward hooks, rounds of plain and hooked forwards taking turns, with the
hooks' own cost timed on an empty hooked layer."""

from __future__ import annotations

import contextlib
import functools
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.config_apply import prepare_cell
from bench.configs import Config
from bench.sampler import Clock, TimeBudget, sample

WARMUP_ITERS = 3
IDENTITY_CALLS = 200  # hooked empty calls timed for the overhead estimate


_NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


_ACTIVATION_NAMES = frozenset(
    {"swish", "hardswish", "hardsigmoid", "mish", "gelu", "quickgelu", "silu", "sigmoid"}
)


def layer_group(module: nn.Module) -> str:
    """The group of a timed layer, one of :data:`GROUPS`; see docs/profile.md for the rules."""
    kind = type(module).__name__
    if isinstance(module, nn.MultiheadAttention) or "Attention" in kind:
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd) or "Conv" in kind:
        groups = getattr(module, "groups", 1)
        in_channels = getattr(module, "in_channels", None)
        return "depthwise conv" if groups > 1 and groups == in_channels else "conv"
    if isinstance(module, nn.Linear):  # LazyLinear, NonDynamicallyQuantizableLinear too
        return "linear"
    if isinstance(module, _NORMS) or "Norm" in kind:
        return "norm"
    if type(module).__module__ == "torch.nn.modules.activation" or (
        kind.lower() in _ACTIVATION_NAMES
    ):
        return "activation"
    if "Pool" in kind:
        return "pool"
    return "other"


@dataclass(frozen=True, slots=True)
class _Timed:
    """What the timing rounds measured; ``layer_ms[name]`` holds one total per forward."""

    model_type: str
    order: tuple[str, ...]  # timed layers in first-call order
    types: dict[str, str]
    groups: dict[str, str]
    calls: dict[str, int]
    layer_ms: dict[str, list[float]]
    forward_samples_ms: tuple[float, ...]
    hooked_samples_ms: tuple[float, ...]
    overhead_per_call_ms: float


def _time_layers(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    device: str,
    dtype: torch.dtype,
    cfg: Config,
    rounds: int,
    min_time_s: float,
    warmup_s: float,
    clock: Clock,
) -> _Timed:
    """Build and place the model as the worker does, then warm up and time alternating
    plain and hooked rounds, ``min_time_s / rounds`` seconds of each per round."""
    cell = prepare_cell(build().eval(), input_shape, cfg, device, dtype)
    model, x, forward, sync = cell.model, cell.x, cell.forward, cell.sync
    share = min_time_s / rounds
    with torch.inference_mode():
        leaves = _called_leaves(model, forward)
        layers = _LayerClock(leaves, sync, clock)
        _warm_up(forward, layers, sync, clock, warmup_s)
        plain: list[float] = []
        hooked: list[float] = []
        for r in range(rounds):
            for kind in ("plain", "hooked") if r % 2 == 0 else ("hooked", "plain"):
                if kind == "plain":
                    plain.extend(_plain_round(forward, sync, clock, share))
                else:
                    hooked.extend(_hooked_round(forward, layers, sync, clock, share))
        overhead_ms = _hook_overhead_ms(x, sync, clock)
    return _Timed(
        model_type=type(model).__name__,
        order=tuple(leaves),
        types={n: type(m).__name__ for n, m in leaves.items()},
        groups={n: layer_group(m) for n, m in leaves.items()},
        calls=layers.first_calls,
        layer_ms=layers.samples_ms,
        forward_samples_ms=tuple(plain),
        hooked_samples_ms=tuple(hooked),
        overhead_per_call_ms=overhead_ms,
    )


def _called_leaves(model: nn.Module, forward: Callable[[], Any]) -> dict[str, nn.Module]:
    """Modules that ran in one forward while none of their submodules did, by qualified
    name in first-call order."""
    names = {id(m): n for n, m in model.named_modules()}
    called: dict[str, nn.Module] = {}

    def note(module: nn.Module, _args: Any) -> None:
        called.setdefault(names[id(module)], module)

    handles = [m.register_forward_pre_hook(note) for m in model.modules()]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    above = {a for n in called for a in _ancestors(n)}  # every module above a called one
    return {n: m for n, m in called.items() if n not in above}


def _parent_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _ancestors(name: str) -> Iterator[str]:
    while name:
        name = _parent_of(name)
        yield name


class _LayerClock:
    """Pre- and post-hooks on each timed layer: ``sync(); clock()`` at both ends of each call,
    summed per forward; ``samples_ms[name]`` gets one total per hooked forward."""

    def __init__(self, leaves: Mapping[str, nn.Module], sync: Callable[[], None], clock: Clock):
        self._leaves = dict(leaves)
        self._sync = sync
        self._clock = clock
        self._total: dict[str, float] = dict.fromkeys(leaves, 0.0)
        self._calls: dict[str, int] = dict.fromkeys(leaves, 0)
        self.first_calls: dict[str, int] = {}
        self.samples_ms: dict[str, list[float]] = {n: [] for n in leaves}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        handles = []
        for name, module in self._leaves.items():
            pre, post = _hooks(name, self._total, self._calls, self._sync, self._clock)
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, forward: Callable[[], Any], record: bool) -> None:
        """One hooked forward (hooks installed by the caller); kept when ``record``."""
        for name in self._total:
            self._total[name] = 0.0
            self._calls[name] = 0
        forward()
        if not record:
            return
        if not self.first_calls:
            self.first_calls = dict(self._calls)
        for name, total in self._total.items():
            self.samples_ms[name].append(total * 1e3)


def _hooks(
    name: str,
    total: dict[str, float],
    calls: dict[str, int],
    sync: Callable[[], None],
    clock: Clock,
) -> tuple[Callable[..., None], Callable[..., None]]:
    """The pre- and post-hook of layer ``name``: a stack of start times, so a layer that
    re-enters itself still sums correctly."""
    starts: list[float] = []

    def pre(_module: nn.Module, _args: Any) -> None:
        sync()
        starts.append(clock())

    def post(_module: nn.Module, _args: Any, _output: Any) -> None:
        sync()
        total[name] += clock() - starts.pop()
        calls[name] += 1

    return pre, post


def _warm_up(
    forward: Callable[[], Any],
    layers: _LayerClock,
    sync: Callable[[], None],
    clock: Clock,
    s: float,
) -> None:
    """At least ``WARMUP_ITERS`` plain forwards and ``s`` seconds, then one hooked forward."""
    start, done = clock(), 0
    while done < WARMUP_ITERS or clock() - start < s:
        forward()
        sync()
        done += 1
    with layers.installed():
        layers.forward(forward, record=False)
        sync()


def _plain_round(
    forward: Callable[[], Any], sync: Callable[[], None], clock: Clock, share: float
) -> tuple[float, ...]:
    """Plain forwards for ``share`` seconds (at least one); each forward's time in ms."""
    return sample(forward, TimeBudget(share), sync=sync, clock=clock).samples_ms


def _hooked_round(
    forward: Callable[[], Any],
    layers: _LayerClock,
    sync: Callable[[], None],
    clock: Clock,
    share: float,
) -> tuple[float, ...]:
    """Hooked forwards for ``share`` seconds (at least one); each forward's time in ms."""
    with layers.installed():
        run = functools.partial(layers.forward, forward, record=True)
        return sample(run, TimeBudget(share), sync=sync, clock=clock).samples_ms


def _hook_overhead_ms(x: torch.Tensor, sync: Callable[[], None], clock: Clock) -> float:
    """Median time the hooks measure around an empty layer (``nn.Identity``) on ``x``'s
    device: the part of the hook cost that lands inside each layer's window, in ms."""
    empty = nn.Identity()
    per_call: list[float] = []
    total = {"": 0.0}
    pre, post = _hooks("", total, {"": 0}, sync, clock)
    empty.register_forward_pre_hook(pre)
    empty.register_forward_hook(post)
    for _ in range(IDENTITY_CALLS):
        total[""] = 0.0
        empty(x)
        per_call.append(total[""] * 1e3)
    return statistics.median(per_call)

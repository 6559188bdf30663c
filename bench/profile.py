"""Where the time of a forward goes, layer by layer: per-layer wall time beside each layer's
multiply-adds and bytes, for one model on one device, dtype, batch size and configuration.

Method:

- The timed layers are the *leaves of the call tree*: modules that ran in the forward while
  none of their own submodules did (every ``nn.Conv2d``, ``nn.ReLU``…, and a module such as
  ``nn.MultiheadAttention`` whose ``out_proj`` is used through its weight, never called).
- Each timed layer gets a forward pre-hook and a forward hook that read ``clock`` after a
  device synchronisation (``bench.devices.synchronizer``: ``torch.cuda.synchronize`` on CUDA,
  nothing on the CPU), so a layer's time is its own work, queued work before it excluded. A
  layer called several times in a forward sums its calls; the layer's time is the median
  over the timed forwards of that per-forward sum, in milliseconds.
- The plain forward (no hook) is timed with the suite's sampler (``bench.sampler``); plain and
  hooked rounds alternate (``rounds`` of each, order swapped each round), so drift (another
  process, clock changes) hits both alike. ``forward_ms`` is the median of every plain sample.
- ``sum_layers_ms`` is the sum of the layers' medians; ``gap_ms = forward_ms −
  sum_layers_ms`` is the work outside leaf layers (residual adds, ``flatten``, ``torch.cat``
  in containers' ``forward``, the Python of container calls) minus the hook overhead that
  falls inside the layers' windows. That overhead is estimated by timing an empty hooked
  ``nn.Identity`` with the same hooks, times the leaf calls per forward (``hook_overhead_ms``).
- Multiply-adds are counted on the ``meta`` device at the batch size (``bench.layers``'
  exclusive counts: ``FlopCounterMode`` FLOPs ÷ 2, innermost module); bytes read plus
  written are ``bench.probes.traffic.exclusive_bytes_by_module`` at the batch size in the
  dtype. What containers run themselves is ``outside_macs`` / ``outside_bytes``, so rows
  plus outside equal the model's totals.

Compiled configurations fuse layers into graphs with no module boundary left to time, so
they are refused; eager, ``channels_last`` and ``autocast`` run with hooks.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from bench.configs import Config, check_config, parse_config
from bench.configure import forward_of, make_input, place_model
from bench.devices import default_threads, device_name, synchronizer, torch_dtype
from bench.errors import DeviceUnavailable, InvalidOption
from bench.layers import exclusive_macs, sized_input
from bench.plan import DTYPES
from bench.probes.macs import build_on_meta
from bench.probes.traffic import exclusive_bytes_by_module
from bench.sampler import Clock, TimeBudget, sample
from bench.schema import PROFILE
from bench.stats import summarize

FORMATS = ("table", "json", "csv")
GROUPS = ("conv", "depthwise conv", "linear", "norm", "activation", "pool", "attention", "other")
WARMUP_ITERS = 3
IDENTITY_CALLS = 200  # hooked empty calls timed for the overhead estimate


@dataclass(frozen=True, slots=True)
class LayerTime:
    """One timed layer: ``time_ms`` is the median over forwards of its per-forward total
    (all ``calls``); ``share`` is of the layers' sum; ``macs`` and ``bytes`` are per forward
    at the profile's batch size; ``compute_fraction`` is achieved ÷ the given ceiling, None
    where the layer ran above the ceiling beyond its uncertainty (``above_ceiling``: such a
    rate is implausible, never a fraction of the ceiling)."""

    name: str
    type: str
    group: str
    calls: int
    time_ms: float
    share: float
    macs: int
    bytes: int
    achieved_macs_per_s: float | None
    compute_fraction: float | None
    above_ceiling: bool = False


@dataclass(frozen=True, slots=True)
class GroupTime:
    """Layers of one group together: time share (of the layers' sum) beside MAC share (of
    the layers' multiply-adds)."""

    group: str
    time_ms: float
    time_share: float
    macs: int
    macs_share: float
    bytes: int


@dataclass(frozen=True, slots=True)
class Profile:
    """A model's forward split by layer (rows in execution order), with the plain forward's
    median, the layers' sum, the gap and what explains it; times in ms, per forward."""

    model: str
    device: str
    device_name: str
    dtype: str
    batch_size: int
    image_size: int
    config: str
    threads: int
    rows: tuple[LayerTime, ...]
    forward_ms: float
    sum_layers_ms: float
    gap_ms: float
    gap_note: str
    hook_overhead_ms: float
    ceiling_macs_per_s: float | None
    groups: tuple[GroupTime, ...]
    hooked_forward_ms: float  # median forward with the hooks in place
    leaf_calls: int  # timed layer calls per forward
    outside_macs: int  # multiply-adds run outside the timed layers (containers' own ops)
    outside_bytes: int
    forward_samples_ms: tuple[float, ...]  # every plain-forward sample
    noisy: bool  # the plain forward's IQR is above 10% of its median (bench.stats)
    hooked_forwards: int  # forwards the layer medians are taken over
    ceiling_ci_rel: float = 0.0  # the ceiling's 95% CI half-width ÷ value (0: unknown)


PROFILE_COLUMNS = tuple(c.name for c in PROFILE)  # declared once in bench/schema.py


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


def profile_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 1,
    config: str = "eager",
    threads: int | None = None,
    image_size: int | None = None,
    rounds: int = 20,
    min_time_s: float = 1.0,
    warmup_s: float = 0.2,
    ceiling_macs_per_s: float | None = None,
    ceiling_ci_rel: float = 0.0,
) -> Profile:
    """Profile registered model ``name`` (see the module docstring): ``min_time_s`` of timed
    plain forwards and as much of hooked forwards, split over ``rounds`` alternating rounds
    (50 ms each by default: short, so that a burst of load from another process lands on
    both kinds) after ``warmup_s`` of warm-up; ``threads`` defaults to the cores this
    process may use. ``ceiling_ci_rel`` is the relative half-width of the compute
    ceiling's 95% confidence interval (a layer above the ceiling by more is
    implausible)."""
    from models import get_spec
    from models.registry import model_failures

    spec = get_spec(name)
    with model_failures(name), sized_input(name, spec.image_size, image_size) as size:
        return profile_module(
            spec.build,
            (batch_size, spec.in_chans, size, size),
            name=name,
            formulas=spec.macs_formulas,
            meta_build=spec.builder,
            device=device,
            dtype=dtype,
            config=config,
            threads=threads,
            rounds=rounds,
            min_time_s=min_time_s,
            warmup_s=warmup_s,
            ceiling_macs_per_s=ceiling_macs_per_s,
            ceiling_ci_rel=ceiling_ci_rel,
        )


def profile_module(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    *,
    name: str = "",
    formulas: Mapping[Any, Callable[..., int]] | None = None,
    meta_build: Callable[[], nn.Module] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    config: str = "eager",
    threads: int | None = None,
    rounds: int = 20,
    min_time_s: float = 1.0,
    warmup_s: float = 0.2,
    ceiling_macs_per_s: float | None = None,
    ceiling_ci_rel: float = 0.0,
    clock: Clock = time.perf_counter,
) -> Profile:
    """Profile the model ``build()`` returns on an input of ``input_shape`` (batch first);
    ``meta_build`` builds it for counting on ``meta`` (default ``build``), ``formulas`` are
    FLOP formulas for operators torch does not know (as ``count_macs``)."""
    cfg = _check_options(device, dtype, config, input_shape, rounds, min_time_s)
    if ceiling_macs_per_s is not None and not ceiling_macs_per_s > 0:
        raise InvalidOption(f"a compute ceiling must be positive, got {ceiling_macs_per_s}")
    if not ceiling_ci_rel >= 0:
        raise InvalidOption(f"a ceiling's uncertainty must be >= 0, got {ceiling_ci_rel}")
    n_threads = default_threads() if threads is None else threads
    if n_threads < 1:
        raise InvalidOption(f"threads must be a positive integer, got {n_threads}")
    macs, nbytes = _count_on_meta(meta_build or build, input_shape, dtype, formulas)
    with _num_threads(n_threads):
        timed = _time_layers(
            build, input_shape, device, torch_dtype(dtype), cfg, rounds, min_time_s, warmup_s, clock
        )
    rows = _rows(timed, macs, nbytes, ceiling_macs_per_s, ceiling_ci_rel)
    forward_ms = statistics.median(timed.forward_samples_ms)
    sum_layers_ms = sum(r.time_ms for r in rows)
    leaf_calls = sum(r.calls for r in rows)
    overhead_ms = timed.overhead_per_call_ms * leaf_calls
    outside_macs = sum(macs.values()) - sum(r.macs for r in rows)
    outside_bytes = sum(nbytes.values()) - sum(r.bytes for r in rows)
    profile = Profile(
        model=name or timed.model_type,
        device=device,
        device_name=device_name(device),
        dtype=dtype,
        batch_size=input_shape[0],
        image_size=input_shape[-1],
        config=cfg.name,
        threads=n_threads,
        rows=rows,
        forward_ms=forward_ms,
        sum_layers_ms=sum_layers_ms,
        gap_ms=forward_ms - sum_layers_ms,
        gap_note="",
        hook_overhead_ms=overhead_ms,
        ceiling_macs_per_s=ceiling_macs_per_s,
        groups=_groups(rows),
        hooked_forward_ms=statistics.median(timed.hooked_samples_ms),
        leaf_calls=leaf_calls,
        outside_macs=outside_macs,
        outside_bytes=outside_bytes,
        forward_samples_ms=timed.forward_samples_ms,
        noisy=summarize(timed.forward_samples_ms).noisy,
        hooked_forwards=len(timed.hooked_samples_ms),
        ceiling_ci_rel=ceiling_ci_rel,
    )
    return replace(profile, gap_note=_gap_note(profile))


def _check_options(
    device: str,
    dtype: str,
    config: str,
    input_shape: tuple[int, ...],
    rounds: int,
    min_time_s: float,
) -> Config:
    """The parsed configuration, or :class:`InvalidOption` saying what to pass instead."""
    if dtype not in DTYPES:
        raise InvalidOption(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not input_shape or input_shape[0] < 1:
        raise InvalidOption(f"batch size must be a positive integer, got {input_shape[:1]}")
    if rounds < 1:
        raise InvalidOption(f"rounds must be a positive integer, got {rounds}")
    if not min_time_s > 0:
        raise InvalidOption(f"min time must be positive, got {min_time_s} s")
    cfg = parse_config(config)
    if cfg.compiled:
        raise InvalidOption(
            f"configuration {cfg.name} compiles the model into graphs that fuse layers, so its "
            "time cannot be split by module; profile eager (or channels_last, autocast) to see "
            f"where the time goes, and use `effbench run --configs {cfg.name}` for whole-forward "
            "numbers"
        )
    check_config(cfg, device, dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {device} is not available here (no CUDA); use cpu")
    return cfg


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block; the caller's come back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _count_on_meta(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    dtype: str,
    formulas: Mapping[Any, Callable[..., int]] | None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Exclusive multiply-adds and bytes per module name at the batch size, on ``meta``.
    Bytes are in the dtype; under autocast that is the model cast to it (the casts autocast
    inserts are not counted)."""
    model = build_on_meta(build).to(torch_dtype(dtype))
    x = torch.empty(input_shape, device="meta", dtype=torch_dtype(dtype))
    macs = exclusive_macs(model, x, formulas)
    nbytes = exclusive_bytes_by_module(model, x)
    return macs, nbytes


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
    sync = synchronizer(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        torch.backends.cudnn.benchmark = True  # as the worker measures
    model = place_model(build().eval(), cfg, device, dtype)
    gen = torch.Generator().manual_seed(0)
    x = make_input(torch.randn(*input_shape, generator=gen), cfg, device, dtype)
    share = min_time_s / rounds
    with torch.inference_mode():
        forward = forward_of(model, cfg, device, dtype, x)
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


def ceiling_share(
    achieved: float | None, ceiling: float | None, ci_rel: float = 0.0
) -> tuple[float | None, bool]:
    """(achieved ÷ ceiling, above): ``above`` when the rate is above the ceiling by more
    than its uncertainty, and then no fraction (None): such a rate means the ceiling was
    measured at a busier moment, or the count is wrong; it is not a share of the ceiling."""
    if achieved is None or ceiling is None:
        return None, False
    if achieved > ceiling * (1 + ci_rel):
        return None, True
    return achieved / ceiling, False


def _rows(
    timed: _Timed,
    macs: Mapping[str, int],
    nbytes: Mapping[str, int],
    ceiling: float | None,
    ci_rel: float = 0.0,
) -> tuple[LayerTime, ...]:
    medians = {n: statistics.median(timed.layer_ms[n]) for n in timed.order}
    total_ms = sum(medians.values())
    rows = []
    for name in timed.order:
        ms, m = medians[name], macs.get(name, 0)
        achieved = m / (ms / 1e3) if ms > 0 else None
        fraction, above = ceiling_share(achieved, ceiling, ci_rel)
        rows.append(
            LayerTime(
                name=name or "(model)",
                type=timed.types[name],
                group=timed.groups[name],
                calls=timed.calls.get(name, 0),
                time_ms=ms,
                share=ms / total_ms if total_ms > 0 else 0.0,
                macs=m,
                bytes=nbytes.get(name, 0),
                achieved_macs_per_s=achieved,
                compute_fraction=fraction,
                above_ceiling=above,
            )
        )
    return tuple(rows)


def _groups(rows: Sequence[LayerTime]) -> tuple[GroupTime, ...]:
    """Per-group totals, largest time first."""
    total_ms = sum(r.time_ms for r in rows)
    total_macs = sum(r.macs for r in rows)
    out = []
    for group in GROUPS:
        members = [r for r in rows if r.group == group]
        if not members:
            continue
        ms = sum(r.time_ms for r in members)
        m = sum(r.macs for r in members)
        out.append(
            GroupTime(
                group=group,
                time_ms=ms,
                time_share=ms / total_ms if total_ms > 0 else 0.0,
                macs=m,
                macs_share=m / total_macs if total_macs else 0.0,
                bytes=sum(r.bytes for r in members),
            )
        )
    return tuple(sorted(out, key=lambda g: -g.time_ms))


def _ms(value: float) -> str:
    """Milliseconds with three decimals, more below 0.1 ms (a small layer, a tiny model)."""
    return f"{value:.{3 if abs(value) >= 0.1 else 4 if abs(value) >= 0.01 else 5}f}"


def _gap_note(p: Profile) -> str:
    """A few sentences on what the gap between the plain forward and the layers' sum holds."""
    overhead_ms, calls = p.hook_overhead_ms, p.leaf_calls
    per_call_us = overhead_ms / calls * 1e3 if calls else 0.0
    outside_ms = p.gap_ms + overhead_ms
    parts = [
        f"The layer times include about {_ms(overhead_ms)} ms of hook and synchronisation "
        f"overhead ({calls} leaf calls × {per_call_us:.1f} µs, timed on an empty hooked "
        "Identity), so they read slightly high.",
        f"That leaves about {_ms(outside_ms)} ms of the plain forward outside leaf layers: "
        "residual adds, flatten, torch.cat and other ops in containers' forward, and the "
        "Python of container calls"
        + (f" ({p.outside_macs:,} multiply-adds run there)." if p.outside_macs else "."),
    ]
    if outside_ms < 0:
        parts[1] = (
            f"The layers' sum still exceeds the plain forward by {_ms(-outside_ms)} ms beyond "
            "that overhead: run-to-run noise, or hooks slowing the layers themselves."
        )
    if p.noisy:
        parts.append(
            "The plain forward is noisy: under bursty load most forwards are delayed somewhere "
            "but each layer only now and then, so the layers' medians add up to less than the "
            "median forward; rerun on a quiet machine."
        )
    if p.device.startswith("cuda"):
        parts.append(
            "On CUDA each layer is synchronised, so the next layer's launch no longer overlaps "
            "the running kernel; the sum includes launch latency the plain forward hides."
        )
    parts.append(f"With the hooks in place the whole forward took {_ms(p.hooked_forward_ms)} ms.")
    return " ".join(parts)


def format_profile(profile: Profile, fmt: str = "table") -> str:
    """Render ``profile`` as an aligned text table, JSON (everything) or CSV (the rows)."""
    if fmt == "json":
        return json.dumps(asdict(profile), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [f.name for f in fields(LayerTime)]
        writer.writerow(names)
        for row in profile.rows:
            writer.writerow(["" if getattr(row, n) is None else getattr(row, n) for n in names])
        return buf.getvalue()
    if fmt == "table":
        return _table(profile)
    raise InvalidOption(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]], left: int) -> list[str]:
    """``header`` and ``body`` as aligned lines: the first ``left`` columns to the left."""
    widths = [
        max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(c) for c in body)]


ABOVE_CEILING = "above roof (implausible)"


def _of_ceiling(r: LayerTime) -> str:
    """The table's "of ceiling" cell: a percentage up to 100%, "at ceiling" above it within
    the ceiling's uncertainty, and never a percentage above it."""
    if not r.macs:
        return ""
    if r.above_ceiling:
        return ABOVE_CEILING
    if r.compute_fraction is None:
        return ""
    return f"{r.compute_fraction:.1%}" if r.compute_fraction <= 1 else "at ceiling"


def _above_note(p: Profile) -> str:
    """The totals line's sentence on layers above the ceiling ("" when none)."""
    above = [r for r in p.rows if r.above_ceiling and r.macs]
    if not above or not p.ceiling_macs_per_s:
        return ""
    ci = f" ±{p.ceiling_ci_rel:.1%}" if p.ceiling_ci_rel else ""
    return (
        f"{len(above)} layer(s) ran above the measured compute ceiling "
        f"({p.ceiling_macs_per_s / 1e9:.2f} GMAC/s{ci}): implausible, so shown as "
        f'"{ABOVE_CEILING}", not as a share of it; the ceiling was measured at a busier '
        "moment than the layers (or the count is wrong): measure it again on a quiet machine "
        "(`effbench peak`). "
    )


def _table(p: Profile) -> str:
    """Layers slowest first (the question is where the time goes; ``#`` is the execution
    order and ``cum`` the running share, so the top lines say how few layers matter), then
    the totals and the gap explained, then the groups."""
    position = {r.name: i for i, r in enumerate(p.rows)}
    ranked = sorted(p.rows, key=lambda r: -r.time_ms)
    header = ["layer", "type", "group", "#", "calls", "time_ms", "share", "cum", "macs", "bytes"]
    header += ["GMAC/s"] + (["of ceiling"] if p.ceiling_macs_per_s else [])
    body, cum = [], 0.0
    for r in ranked:
        cum += r.share
        gmacs = (
            ""
            if r.achieved_macs_per_s is None or not r.macs
            else f"{r.achieved_macs_per_s / 1e9:.2f}"
        )
        cells = [r.name, r.type, r.group, str(position[r.name]), str(r.calls), _ms(r.time_ms)]
        cells += [f"{r.share:.1%}", f"{cum:.1%}", f"{r.macs:,}", f"{r.bytes:,}", gmacs]
        if p.ceiling_macs_per_s:
            cells.append(_of_ceiling(r))
        body.append(cells)
    title = (
        f"{p.model} on {p.device} ({p.device_name}), {p.dtype}, batch {p.batch_size}, "
        f"{p.image_size}×{p.image_size}, {p.config}, {p.threads} thread"
        f"{'' if p.threads == 1 else 's'}; layers slowest "
        "first (# = execution order), times are medians per forward"
    )
    gap_pct = p.gap_ms / p.forward_ms if p.forward_ms > 0 else 0.0
    totals = (
        f"total: layers sum {_ms(p.sum_layers_ms)} ms vs plain forward {_ms(p.forward_ms)} ms "
        f"(median of {len(p.forward_samples_ms)}"
        + ("; noisy, IQR above 10%: rerun on a quieter machine or longer" if p.noisy else "")
        + f"); gap {'+' if p.gap_ms >= 0 else '-'}{_ms(abs(p.gap_ms))} ms ({gap_pct:+.1%}). "
        + _above_note(p)
        + p.gap_note
    )
    gbody = [
        [
            g.group,
            _ms(g.time_ms),
            f"{g.time_share:.1%}",
            f"{g.macs_share:.1%}",
            f"{g.macs:,}",
            f"{g.bytes:,}",
        ]
        for g in p.groups
    ]
    groups = _aligned(["group", "time_ms", "time share", "MAC share", "macs", "bytes"], gbody, 1)
    return "\n".join([title, *_aligned(header, body, 3), totals, "", *groups])


def profile_frame(profiles: Sequence[Profile], hostname: str, timestamp: str) -> Any:
    """One row per (profile, layer) with :data:`PROFILE_COLUMNS`, as a pandas DataFrame (what
    ``profile.parquet`` holds)."""
    import pandas as pd

    records = []
    for p in profiles:
        for r in p.rows:
            records.append(
                {
                    "model": p.model,
                    "device": p.device,
                    "device_name": p.device_name,
                    "dtype": p.dtype,
                    "batch_size": p.batch_size,
                    "image_size": p.image_size,
                    "config": p.config,
                    "threads": p.threads,
                    "layer": r.name,
                    "type": r.type,
                    "group": r.group,
                    "calls": r.calls,
                    "time_ms": r.time_ms,
                    "share": r.share,
                    "macs": r.macs,
                    "bytes": r.bytes,
                    "achieved_macs_per_s": r.achieved_macs_per_s,
                    "compute_fraction": r.compute_fraction,
                    "forward_ms": p.forward_ms,
                    "sum_layers_ms": p.sum_layers_ms,
                    "hook_overhead_ms": p.hook_overhead_ms,
                    "hostname": hostname,
                    "timestamp": timestamp,
                }
            )
    frame = pd.DataFrame.from_records(records, columns=list(PROFILE_COLUMNS))
    for column in ("achieved_macs_per_s", "compute_fraction"):  # None -> NaN, a float column
        frame[column] = frame[column].astype("float64")
    return frame

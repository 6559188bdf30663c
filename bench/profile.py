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
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from bench.configs import Config, check_config, parse_config
from bench.devices import default_threads, device_name, torch_dtype
from bench.errors import DeviceUnavailable, InvalidOption
from bench.layers import exclusive_macs, sized_input
from bench.plan import DTYPES
from bench.probes.sizes import build_on_meta
from bench.probes.traffic import exclusive_bytes_by_module
from bench.profile_layers import _time_layers, _Timed
from bench.sampler import Clock
from bench.schema import PROFILE
from bench.stats import summarize

FORMATS = ("table", "json", "csv")
GROUPS = ("conv", "depthwise conv", "linear", "norm", "activation", "pool", "attention", "other")


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

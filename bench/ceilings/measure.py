"""Measuring the ceilings: the kernels (GEMM, 3×3 convolution, triad, copy), their
sizing, and the precision loop (bench.sampler) that times them (see the package
docstring)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.ceilings.datasheet import datasheet_ceilings
from bench.ceilings.record import (
    BANDWIDTH_KINDS,
    BYTES_PER_S,
    COMPUTE_KINDS,
    KINDS,
    MACS_PER_S,
    Ceiling,
    _check_dtype,
)
from bench.errors import DeviceUnavailable, InvalidOption
from bench.sampler import CiTarget, Clock, Sampled, Warmup, sample, settle_heap

MIN_SAMPLES = 6  # the fewest from which the median's CI can be formed (bench.stats)
WARMUP_CALLS = 2
TARGET_CALL_S = {"cpu": 0.020, "cuda": 0.002}  # one call (a GPU sample) lasts at least this
MAX_CALL_S = {"cpu": 0.5, "cuda": 0.05}  # sizing stops before a call would outlast this
RATE_GAIN = 1.1  # sizing goes on while a size's rate beats the previous one's by this
GEMM_N_START = 256
GEMM_N_CAP = {"cpu": 4096, "cuda": 16384}
CONV_CHANNELS = 256
CONV_BATCH_CAP = {"cpu": 8, "cuda": 256}
MIB = 1024**2
STREAM_MIN_BYTES = {"cpu": 256 * MIB, "cuda": 1024 * MIB}  # both tensors of a copy
LLC_MULTIPLE = 8
TRIAD_SCALAR = 3.0

T = TypeVar("T")


def _noop() -> None:
    return None


def sample_until_precise(
    run: Callable[[], object],
    *,
    sync: Callable[[], None] = _noop,
    clock: Clock = time.perf_counter,
    precision: float = 0.02,
    budget_s: float = 1.5,
    warmup_calls: int = WARMUP_CALLS,
    min_samples: int = MIN_SAMPLES,
    key: Hashable = None,
) -> Sampled:
    """Run ``run`` ``warmup_calls`` times, then time it (``t0; run(); sync(); t1``) until
    at least ``min_samples`` samples exist and the 95% CI of their median is within
    ±``precision`` of it, or until ``budget_s`` seconds (by ``clock``) have passed since
    the first timed call; at least ``min_samples`` are always taken (bench.sampler, a
    :class:`~bench.sampler.CiTarget` on elapsed seconds). The heap is settled after the
    warm-up (:func:`bench.sampler.settle_heap`): no full collection among the timed calls."""
    policy = CiTarget(precision, max_time_s=budget_s, min_samples=min_samples, elapsed=True)
    return sample(
        run,
        policy,
        key=key,
        sync=sync,
        warmup=Warmup(warmup_calls),
        before_timed=settle_heap,
        clock=clock,
    )


def time_call(run: Callable[[], object], sync: Callable[[], None], clock: Clock) -> float:
    """Seconds for one call of ``run`` after one untimed call."""
    run()
    sync()
    t0 = clock()
    run()
    sync()
    return clock() - t0


@dataclass(frozen=True, slots=True)
class Kernel:
    """One sized workload: ``work`` MACs (compute kinds) or bytes (bandwidth kinds) per
    call of ``run``; ``shape`` describes it for the method text."""

    kind: str
    work: float
    shape: str
    run: Callable[[], object]


def pick_size(
    ladder: Sequence[T],
    build: Callable[[T], Kernel],
    seconds: Callable[[Kernel], float],
    work: Callable[[T], float],
    *,
    target_s: float,
    max_call_s: float,
    gain: float = RATE_GAIN,
) -> Kernel:
    """The kernel of the first size in ``ladder`` whose call (timed by ``seconds``) takes
    at least ``target_s`` and whose rate is less than ``gain`` × the previous size's; or,
    failing that, of the last size tried before the next one's call would outlast
    ``max_call_s`` (predicted from ``work``), or of the last size in ``ladder``.

    Growing while the rate still climbs keeps a scheduler's time slice (a call of a
    small size waiting ~16 ms for a busy core) from passing for a long enough call."""
    if not ladder:
        raise DeviceUnavailable("not enough free memory for the smallest ceiling workload")
    kernel: Kernel | None = None
    before = 0.0
    for i, size in enumerate(ladder):
        kernel = None  # free the previous size's tensors before allocating the next
        kernel = build(size)
        t = seconds(kernel)
        now = kernel.work / t
        if t >= target_s and now < gain * before:
            break
        if i + 1 < len(ladder) and t * work(ladder[i + 1]) / kernel.work > max_call_s:
            break
        before = now
    assert kernel is not None
    return kernel


def rate(work: float, calls_per_sample: int, sampled: Sampled) -> float:
    """Work per second at the median sample: ``work · calls_per_sample / median``."""
    return work * calls_per_sample / sampled.median_s


def describe(kernel: Kernel, calls: int, sampled: Sampled, precision: float) -> str:
    """The method text of a measured ceiling."""
    per = f"; {calls} calls per sample" if calls > 1 else ""
    if sampled.ci_rel is None:
        reached = "95% CI of the median not formable"
    else:
        reached = f"95% CI of the median ±{sampled.ci_rel:.2%}"
    how = "reached" if sampled.converged else "budget spent before"
    return (
        f"{kernel.shape}{per}; median of {len(sampled.samples_s)} samples; {reached} "
        f"({how} the ±{precision:.0%} target)"
    )


def measure_kernel(
    kernel: Kernel,
    *,
    device: str,
    device_name: str,
    dtype: str,
    threads: int,
    sync: Callable[[], None] = _noop,
    clock: Clock = time.perf_counter,
    precision: float = 0.02,
    budget_s: float = 1.5,
) -> Ceiling:
    """The measured ceiling of a sized kernel (median rate, see the module docstring)."""
    calls = 1
    if device != "cpu":  # a GPU sample must outlast the launch and sync overhead
        one = time_call(kernel.run, sync, clock)
        calls = max(1, math.ceil(_target_s(device) / max(one, 1e-9)))
    run = kernel.run if calls == 1 else _repeat(kernel.run, calls)
    sampled = sample_until_precise(
        run, sync=sync, clock=clock, precision=precision, budget_s=budget_s
    )
    unit = MACS_PER_S if kernel.kind in COMPUTE_KINDS else BYTES_PER_S
    return Ceiling(
        device=device,
        device_name=device_name,
        dtype=dtype,
        threads=threads if device == "cpu" else 0,
        kind=kernel.kind,
        value=rate(kernel.work, calls, sampled),
        unit=unit,
        source="measured",
        method=describe(kernel, calls, sampled, precision),
        ci_rel=sampled.ci_rel,
        samples=len(sampled.samples_s),
        citation=None,
    )


def _repeat(run: Callable[[], object], calls: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(calls):
            run()

    return repeated


# --------------------------------------------------------------------------- workloads


def _kind_of(device: str) -> str:
    return "cpu" if device == "cpu" else "cuda"


def _target_s(device: str) -> float:
    return TARGET_CALL_S[_kind_of(device)]


def gemm_ladder(device: str, elsize: int, free_bytes: int) -> tuple[int, ...]:
    """Square sizes to try: 256, 512, ... up to the device's cap, while a, b and c fit in
    a quarter of ``free_bytes``."""
    sizes = []
    n = GEMM_N_START
    while n <= GEMM_N_CAP[_kind_of(device)] and 3 * n * n * elsize <= free_bytes // 4:
        sizes.append(n)
        n *= 2
    return tuple(sizes)


def conv_ladder(device: str, elsize: int, free_bytes: int) -> tuple[tuple[int, int], ...]:
    """(batch, H=W) to try: (1, 14), (1, 28), (1, 56), then the batch doubling to the
    device's cap, while input and output fit in a quarter of ``free_bytes``."""
    sizes = [(1, 14), (1, 28), (1, 56)]
    n = 2
    while n <= CONV_BATCH_CAP[_kind_of(device)]:
        sizes.append((n, 56))
        n *= 2
    fits = [(b, h) for b, h in sizes if 2 * b * CONV_CHANNELS * h * h * elsize <= free_bytes // 4]
    return tuple(fits)


def stream_elements(device: str, elsize: int, llc_bytes: int, free_bytes: int) -> int:
    """Elements per tensor for triad and copy: the two tensors of a copy hold at least
    the device's floor (CPU: also ``LLC_MULTIPLE`` × the last-level cache); the three of
    a triad at most half of ``free_bytes``."""
    want = STREAM_MIN_BYTES[_kind_of(device)]
    if device == "cpu":
        want = max(want, LLC_MULTIPLE * llc_bytes)
    n = math.ceil(want / (2 * elsize))
    return max(1, min(n, free_bytes // (2 * 3 * elsize)))


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu")) -> int:
    """Bytes of last-level cache, summed over its distinct instances (sysfs ``cache``
    entries of every CPU, deduplicated by ``shared_cpu_list``); 0 if unreadable."""
    found: dict[tuple[int, str], int] = {}
    for index in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            shared = (index / "shared_cpu_list").read_text().strip()
            found[(level, shared)] = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
    if not found:
        return 0
    top = max(level for level, _ in found)
    return sum(size for (level, _), size in found.items() if level == top)


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _free_bytes(device: str) -> int:
    """Free memory on ``device``: CUDA's free device memory, or MemAvailable."""
    if device != "cpu":
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gemm_macs(n: int) -> float:
    """Multiply-adds of an n×n by n×n product: n³."""
    return float(n) ** 3


def conv_macs(size: tuple[int, int]) -> float:
    """Multiply-adds of the (batch, H=W) 3×3 convolution: N·Cout·H·W·Cin·9."""
    batch, hw = size
    return float(batch * CONV_CHANNELS * hw * hw * CONV_CHANNELS * 9)


def _gemm(n: int, device: str, dtype: str) -> Kernel:
    import torch

    from bench.devices import torch_dtype

    dt = torch_dtype(dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    c = torch.empty(n, n, device=device, dtype=dt)
    shape = f"torch.mm(a, b, out=c), {n}×{n} {dtype} (n={n}); n³ MACs per call"
    return Kernel("gemm", gemm_macs(n), shape, lambda: torch.mm(a, b, out=c))


def _conv(size: tuple[int, int], device: str, dtype: str) -> Kernel:
    import torch

    from bench.devices import torch_dtype

    batch, hw = size
    dt, ch = torch_dtype(dtype), CONV_CHANNELS
    x = torch.randn(batch, ch, hw, hw, device=device, dtype=dt)
    w = torch.randn(ch, ch, 3, 3, device=device, dtype=dt)
    conv2d = torch.nn.functional.conv2d
    macs = conv_macs(size)
    shape = (
        f"conv2d of {batch}×{ch}×{hw}×{hw} by {ch}×{ch}×3×3, padding 1, {dtype}; "
        f"N·Cout·H·W·Cin·9 = {macs:.4g} MACs per call"
    )
    return Kernel("conv3x3", macs, shape, lambda: conv2d(x, w, padding=1))


def _streams(n: int, device: str, dtype: str) -> tuple[Kernel, Kernel]:
    import torch

    from bench.devices import torch_dtype

    dt = torch_dtype(dtype)
    a = torch.full((n,), 0.0, device=device, dtype=dt)
    b = torch.full((n,), 1.0, device=device, dtype=dt)
    c = torch.full((n,), 2.0, device=device, dtype=dt)
    elsize = a.element_size()
    mib = n * elsize / MIB
    triad = Kernel(
        "triad",
        3.0 * n * elsize,
        f"torch.add(b, c, alpha={TRIAD_SCALAR:g}, out=a), 3 × {n} {dtype} "
        f"({3 * mib:.0f} MiB); 3·n·elsize bytes per call",
        lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=a),
    )
    copy = Kernel(
        "copy",
        2.0 * n * elsize,
        f"a.copy_(b), 2 × {n} {dtype} ({2 * mib:.0f} MiB); 2·n·elsize bytes per call",
        lambda: a.copy_(b),
    )
    return triad, copy


# --------------------------------------------------------------------------- measuring


def _check_device(device: str) -> None:
    """Raise unless ``device`` is ``cpu`` or a present ``cuda:N``."""
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda:") or not device[5:].isdigit():
        raise InvalidOption(f"unknown device {device!r}; use cpu or cuda:N (cuda:0, ...)")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"{device} requested but torch sees no CUDA device here; measure --device cpu "
            "or run on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if int(device[5:]) >= count:
        raise DeviceUnavailable(f"{device} is not present: this machine has cuda:0..{count - 1}")


def _check_numbers(device: str, threads: int, precision: float, budget_s: float) -> None:
    if device == "cpu" and threads < 1:
        raise InvalidOption(f"a CPU measurement needs at least 1 thread, not {threads}")
    if not 0 < precision < 1:
        raise InvalidOption(f"precision is a fraction of the median in (0, 1), not {precision}")
    if not budget_s > 0:
        raise InvalidOption(f"the time budget must be positive, not {budget_s} s")


def _kernels(
    kinds: Iterable[str], device: str, dtype: str, seconds: Callable[[Kernel], float]
) -> Iterator[Kernel]:
    """Sized kernels of ``kinds``, in order, built one kind at a time (a generator): the
    tensors of a measured gemm or conv are freed before the next kind is built."""
    import torch

    from bench.devices import torch_dtype

    elsize = torch.empty((), dtype=torch_dtype(dtype)).element_size()
    kind_of = _kind_of(device)
    limits = {"target_s": TARGET_CALL_S[kind_of], "max_call_s": MAX_CALL_S[kind_of]}
    streams: tuple[Kernel, Kernel] | None = None
    for kind in kinds:
        if kind == "gemm":
            ladder = gemm_ladder(device, elsize, _free_bytes(device))
            yield pick_size(ladder, lambda n: _gemm(n, device, dtype), seconds, gemm_macs, **limits)
        elif kind == "conv3x3":
            ladder = conv_ladder(device, elsize, _free_bytes(device))
            yield pick_size(ladder, lambda s: _conv(s, device, dtype), seconds, conv_macs, **limits)
        else:
            if streams is None:
                llc = last_level_cache_bytes() if device == "cpu" else 0
                n = stream_elements(device, elsize, llc, _free_bytes(device))
                streams = _streams(n, device, dtype)
            yield streams[BANDWIDTH_KINDS.index(kind)]


def measure_ceilings(
    device: str,
    dtype: str,
    threads: int,
    *,
    precision: float = 0.02,
    budget_s: float = 1.5,
    kinds: Sequence[str] = KINDS,
    clock: Clock = time.perf_counter,
) -> tuple[Ceiling, ...]:
    """Measure ``kinds`` on ``device`` in ``dtype`` (with ``threads`` intra-op threads on
    a CPU, restored after), each for up to ``budget_s`` of sampling; then add the
    datasheet ceilings of the device, if it is a GPU the suite knows."""
    import torch

    from bench.devices import device_name, synchronizer

    _check_dtype(dtype)
    _check_device(device)
    _check_numbers(device, threads, precision, budget_s)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InvalidOption(f"unknown ceiling kinds {unknown}; choose from {', '.join(KINDS)}")
    name, sync = device_name(device), synchronizer(device)
    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads)
    out: list[Ceiling] = []

    def seconds(kernel: Kernel) -> float:
        return time_call(kernel.run, sync, clock)

    try:
        with torch.inference_mode():
            for kernel in _kernels(kinds, device, dtype, seconds):
                out.append(
                    measure_kernel(
                        kernel,
                        device=device,
                        device_name=name,
                        dtype=dtype,
                        threads=threads,
                        sync=sync,
                        clock=clock,
                        precision=precision,
                        budget_s=budget_s,
                    )
                )
                del kernel  # its tensors go before the next kind's are allocated
    except (RuntimeError, NotImplementedError) as e:
        raise DeviceUnavailable(
            f"{device} ({name}) could not run the {dtype} ceiling workloads: {e}; "
            "measure another dtype or device"
        ) from e
    finally:
        if device == "cpu":
            torch.set_num_threads(before)
    return (*out, *datasheet_ceilings(device, name, dtype))

"""Device ceilings for a roofline: the attainable compute rate and memory bandwidth of one
device, dtype and (on a CPU) thread count, measured here; plus, for GPUs the suite knows,
the datasheet peaks, labelled as such and never mixed with the measured ones.

Measured kinds (``source="measured"``); each ceiling is the **median** rate over calls:

- ``gemm``: ``torch.mm(a, b, out=c)`` of square n×n matrices, n³ multiply-adds (MACs) per
  call. n doubles from 256 (to 4096 on a CPU, 16384 on a GPU, and while a, b and c fit in
  a quarter of the free memory) until one call takes at least 20 ms (CPU) or 2 ms (GPU)
  and the rate gained less than 10% over the previous n, or until the next n's call would
  outlast 0.5 s (CPU) or 50 ms (GPU). The method text names the n used.
- ``conv3x3``: ``conv2d`` of N×256×H×W by 256×256×3×3, padding 1, N·Cout·H·W·Cin·9 MACs
  per call; sized by the same rule, H = W going 14 → 28 → 56, then N doubling (to 8 on a
  CPU, 256 on a GPU).
- ``triad``: ``torch.add(b, c, alpha=3, out=a)`` on contiguous 1-D tensors, 3·n·elsize
  bytes per call; ``copy``: ``a.copy_(b)``, 2·n·elsize bytes. Sized so the two tensors of
  a copy hold at least 8× the last-level cache and 256 MiB (CPU) or 1 GiB (GPU).

Timing: warm-up, then single calls timed with ``time.perf_counter`` (a GPU is synchronised
after each sample; a sample there is k calls, k chosen so it lasts ≥ 2 ms), until the
distribution-free 95% confidence interval of the median lies within ±``precision`` of it
(at least 6 samples) or ``budget_s`` of sampling is spent. ``ci_rel`` records the
half-width reached and ``samples`` the count. Rates are MACs per second (compute kinds)
and bytes per second (bandwidth kinds). TF32 and cuDNN settings are torch's defaults.

``python -m bench.ceilings --device cpu --dtype float32 --threads 2`` prints one JSON
object per ceiling, one per line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench.errors import BenchError, DeviceUnavailable, InvalidOption
from bench.plan import DTYPES
from bench.sampler import CiTarget, Clock, Sampled, Warmup, sample
from bench.units import GIGA

if TYPE_CHECKING:
    import pandas as pd

COMPUTE_KINDS = ("gemm", "conv3x3")
BANDWIDTH_KINDS = ("triad", "copy")
KINDS = COMPUTE_KINDS + BANDWIDTH_KINDS
DATASHEET_KINDS = ("datasheet_compute", "datasheet_bandwidth")
MACS_PER_S = "macs_per_s"
BYTES_PER_S = "bytes_per_s"
FORMATS = ("table", "json")

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


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One ceiling of one (device, dtype, threads): measured here or read off a datasheet."""

    device: str  # "cpu", "cuda:0"
    device_name: str  # CPU model or GPU name (bench.devices.device_name)
    dtype: str  # "float32" | "float16" | "bfloat16"
    threads: int  # intra-op threads (CPU); 0 for GPUs
    kind: str  # COMPUTE_KINDS, BANDWIDTH_KINDS or DATASHEET_KINDS
    value: float  # MACs/s for compute kinds, bytes/s for bandwidth kinds
    unit: str  # MACS_PER_S | BYTES_PER_S
    source: str  # "measured" | "datasheet"
    method: str  # op, shape, dtype, samples, precision reached (or the datasheet figure)
    ci_rel: float | None  # half-width of the median's 95% CI / median; measured only
    samples: int | None  # timed samples; measured only
    citation: str | None  # datasheet title and URL; None for measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Ceiling:
        """The ceiling of a :meth:`to_dict` (a JSON line); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        extra = set(values) - names
        if extra:
            raise InvalidOption(f"not a ceiling: unknown keys {sorted(extra)}")
        return cls(**values)


CEILING_COLUMNS: tuple[str, ...] = (
    *(f.name for f in fields(Ceiling)),
    "hostname",
    "measured_at",
    "phase",
)
# When in a run the ceilings were measured: before the first cell, or again (briefly, GEMM
# and triad) after the last one, as a canary of how the machine drifted meanwhile.
PHASES = ("start", "end")


# --------------------------------------------------------------------------- datasheets


@dataclass(frozen=True, slots=True)
class Datasheet:
    """Dense peaks of one GPU model as its NVIDIA datasheet gives them.

    ``flops`` are dense FLOP/s per dtype (a figure the sheet marks "with sparsity" is
    halved); ``float32`` is the non-tensor-core FP32 peak. A device matches when its name
    contains one of ``names`` and none of ``unless`` (case-insensitive).
    """

    model: str
    names: tuple[str, ...]
    flops: dict[str, float]
    flops_note: dict[str, str]
    bandwidth_bytes_per_s: float
    citation: str
    unless: tuple[str, ...] = ()


_H200 = (
    "NVIDIA H200 Tensor Core GPU datasheet (NVIDIA, 2023), "
    "https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446"
)
_H100 = (
    "NVIDIA H100 Tensor Core GPU datasheet (NVIDIA), "
    "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
)
_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet (NVIDIA, June 2021), "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_V100 = (
    "NVIDIA V100 Tensor Core GPU datasheet (NVIDIA), "
    "https://images.nvidia.com/content/technologies/volta/pdf/"
    "volta-v100-datasheet-update-us-1165301-r5.pdf"
)
_SPARSE = "{half} TFLOP/s: the sheet's {sparse} TFLOPS is with 2:4 sparsity, dense is half"
_TC16 = "{v} TFLOP/s dense FP16/BF16 Tensor Core"


def _hopper(sparse16: float, fp32: float) -> tuple[dict[str, float], dict[str, str]]:
    half = sparse16 / 2
    note16 = _SPARSE.format(half=f"{half:g}", sparse=f"{sparse16:,.0f}")
    flops = {"float32": fp32 * 1e12, "float16": half * 1e12, "bfloat16": half * 1e12}
    notes = {
        "float32": f"{fp32:g} TFLOP/s FP32 (non-tensor-core)",
        "float16": f"FP16 Tensor Core {note16}",
        "bfloat16": f"BF16 Tensor Core {note16}",
    }
    return flops, notes


def _ampere() -> tuple[dict[str, float], dict[str, str]]:
    flops = {"float32": 19.5e12, "float16": 312e12, "bfloat16": 312e12}
    notes = {
        "float32": "19.5 TFLOP/s FP32 (non-tensor-core)",
        "float16": "312 TFLOP/s FP16 Tensor Core (dense; 624 with sparsity)",
        "bfloat16": "312 TFLOP/s BF16 Tensor Core (dense; 624 with sparsity)",
    }
    return flops, notes


def _volta(fp32: float, tensor: float) -> tuple[dict[str, float], dict[str, str]]:
    flops = {"float32": fp32 * 1e12, "float16": tensor * 1e12}
    notes = {
        "float32": f"{fp32:g} TFLOP/s single precision",
        "float16": f"{tensor:g} TFLOP/s tensor performance (FP16 Tensor Core)",
    }
    return flops, notes


DATASHEETS: tuple[Datasheet, ...] = (
    # torch may name an H200 NVL (60 TFLOP/s FP32, lower tensor peaks) "NVIDIA H200" too;
    # no NVL figures are kept (not verified), so a name saying NVL matches nothing.
    Datasheet("H200 SXM", ("H200",), *_hopper(1979, 67), 4.8e12, _H200, unless=("NVL",)),
    Datasheet("H100 SXM", ("H100 80GB HBM3", "H100 SXM"), *_hopper(1979, 67), 3.35e12, _H100),
    Datasheet("H100 PCIe", ("H100 PCIe",), *_hopper(1513, 51), 2.0e12, _H100),
    Datasheet("A100 80GB SXM", ("A100-SXM4-80GB", "A100 SXM4 80GB"), *_ampere(), 2039e9, _A100),
    Datasheet("A100 40GB SXM", ("A100-SXM4-40GB", "A100 SXM4 40GB"), *_ampere(), 1555e9, _A100),
    Datasheet("A100 80GB PCIe", ("A100 80GB PCIe",), *_ampere(), 1935e9, _A100),
    Datasheet("A100 40GB PCIe", ("A100-PCIE-40GB", "A100 PCIe 40GB"), *_ampere(), 1555e9, _A100),
    Datasheet("V100 SXM2", ("V100-SXM2", "V100 SXM2"), *_volta(15.7, 125), 900e9, _V100),
    Datasheet("V100 PCIe", ("V100-PCIE", "V100 PCIe"), *_volta(14, 112), 900e9, _V100),
)


def find_datasheet(device_name: str) -> Datasheet | None:
    """The datasheet whose longest matching name occurs in ``device_name``, if any."""
    name = device_name.lower()
    best: tuple[int, Datasheet] | None = None
    for sheet in DATASHEETS:
        if any(u.lower() in name for u in sheet.unless):
            continue
        for key in sheet.names:
            if key.lower() in name and (best is None or len(key) > best[0]):
                best = (len(key), sheet)
    return None if best is None else best[1]


def datasheet_ceilings(device: str, device_name: str, dtype: str) -> tuple[Ceiling, ...]:
    """Datasheet peaks for a known GPU: dense compute in MACs/s (FLOP/s ÷ 2, one
    multiply-add being two FLOPs) for ``dtype`` where the sheet gives it, and memory
    bandwidth in bytes/s. Empty for CPUs and unknown GPUs."""
    _check_dtype(dtype)
    if device == "cpu":
        return ()
    sheet = find_datasheet(device_name)
    if sheet is None:
        return ()

    def ceiling(kind: str, value: float, unit: str, method: str) -> Ceiling:
        return Ceiling(
            device=device,
            device_name=device_name,
            dtype=dtype,
            threads=0,
            kind=kind,
            value=value,
            unit=unit,
            source="datasheet",
            method=method,
            ci_rel=None,
            samples=None,
            citation=sheet.citation,
        )

    out = []
    if dtype in sheet.flops:
        method = f"{sheet.model} datasheet: {sheet.flops_note[dtype]}; ÷ 2 FLOP per MAC"
        out.append(ceiling("datasheet_compute", sheet.flops[dtype] / 2, MACS_PER_S, method))
    bw = sheet.bandwidth_bytes_per_s
    method = f"{sheet.model} datasheet: GPU memory bandwidth {bw / 1e9:,.0f} GB/s"
    out.append(ceiling("datasheet_bandwidth", bw, BYTES_PER_S, method))
    return tuple(out)


# --------------------------------------------------------------------------- timing


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
    :class:`~bench.sampler.CiTarget` on elapsed seconds)."""
    policy = CiTarget(precision, max_time_s=budget_s, min_samples=min_samples, elapsed=True)
    return sample(run, policy, key=key, sync=sync, warmup=Warmup(warmup_calls), clock=clock)


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


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidOption(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")


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


# --------------------------------------------------------------------------- reading


def _roof(
    ceilings: Iterable[Ceiling], kind: str, device: str, dtype: str, threads: int
) -> float | None:
    want = threads if device == "cpu" else 0  # GPU ceilings do not depend on CPU threads
    for c in ceilings:
        if (c.source, c.kind, c.device, c.dtype, c.threads) == (
            "measured",
            kind,
            device,
            dtype,
            want,
        ):
            return c.value
    return None


def compute_roof(
    ceilings: Iterable[Ceiling], device: str, dtype: str, threads: int
) -> float | None:
    """The measured gemm ceiling (MACs/s) of (device, dtype, threads); ``threads`` is
    ignored for GPUs. None when none was measured."""
    return _roof(ceilings, "gemm", device, dtype, threads)


def bandwidth_roof(
    ceilings: Iterable[Ceiling], device: str, dtype: str, threads: int
) -> float | None:
    """The measured triad ceiling (bytes/s) of (device, dtype, threads); ``threads`` is
    ignored for GPUs. None when none was measured."""
    return _roof(ceilings, "triad", device, dtype, threads)


def ceilings_frame(
    ceilings: Iterable[Ceiling], hostname: str, measured_at: str, phase: str = "start"
) -> pd.DataFrame:
    """One row per ceiling, columns :data:`CEILING_COLUMNS` (``measured_at`` a UTC ISO
    timestamp, ``phase`` one of :data:`PHASES`); ``samples`` is a nullable integer column."""
    import pandas as pd

    if phase not in PHASES:
        raise InvalidOption(f"unknown ceilings phase {phase!r}; one of {', '.join(PHASES)}")
    rows = [
        {**c.to_dict(), "hostname": hostname, "measured_at": measured_at, "phase": phase}
        for c in ceilings
    ]
    df = pd.DataFrame(rows, columns=list(CEILING_COLUMNS))
    df["threads"] = df["threads"].astype("int64")
    df["value"] = df["value"].astype("float64")
    df["ci_rel"] = df["ci_rel"].astype("float64")
    df["samples"] = df["samples"].astype("Int64")
    return df


def _human(c: Ceiling) -> str:
    if c.unit == MACS_PER_S:
        return f"{c.value / GIGA:,.1f} GMAC/s"
    return f"{c.value / GIGA:,.1f} GB/s"


def format_ceilings(ceilings: Iterable[Ceiling], fmt: str = "table") -> str:
    """``table``: aligned columns, rates in GMAC/s (10⁹ MACs/s) and GB/s (10⁹ bytes/s),
    the CI half-width in percent; ``json``: a JSON array of the ceilings' dicts."""
    if fmt not in FORMATS:
        raise InvalidOption(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    items = list(ceilings)
    if fmt == "json":
        return json.dumps([c.to_dict() for c in items], indent=2)
    head = ("device", "name", "dtype", "threads", "kind", "ceiling", "source", "ci", "samples")
    rows = [head] + [
        (
            c.device,
            c.device_name,
            c.dtype,
            str(c.threads),
            c.kind,
            _human(c),
            c.source,
            "-" if c.ci_rel is None else f"±{c.ci_rel:.1%}",
            "-" if c.samples is None else str(c.samples),
        )
        for c in items
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 5, 7, 8}
    lines = [
        "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    notes = sorted({c.citation for c in items if c.citation})
    return "\n".join([line.rstrip() for line in lines] + [f"datasheet: {note}" for note in notes])


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidOption(f"{message}; see python -m bench.ceilings --help")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.ceilings",
        description="Measure compute and bandwidth ceilings; one JSON object per line.",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--precision", type=float, default=0.02, help="CI target (default 0.02)")
    p.add_argument("--budget-s", type=float, default=1.5, help="seconds per kind (default 1.5)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated ({','.join(KINDS)})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the ceilings as JSON lines; 0 on success, 2 on a suite error
    (message on stderr)."""
    try:
        args = _parser().parse_args(argv)
        threads = args.threads
        if threads is None:
            from bench.devices import default_threads

            threads = default_threads() if args.device == "cpu" else 0
        ceilings = measure_ceilings(
            args.device,
            args.dtype,
            threads,
            precision=args.precision,
            budget_s=args.budget_s,
            kinds=tuple(k for k in args.kinds.split(",") if k),
        )
    except BenchError as e:
        print(f"bench.ceilings: error: {e}", file=sys.stderr)
        return 2
    for c in ceilings:
        print(json.dumps(c.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

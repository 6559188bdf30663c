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

``effbench peak --devices cpu --dtypes float32 --threads 2 --format json`` prints them
(the run measures its own through its executor: ``bench.run_ceilings``).

The package: :mod:`~bench.ceilings.record` (the record, the table, the roofs),
:mod:`~bench.ceilings.datasheet`, :mod:`~bench.ceilings.measure` (kernels, sizing, timing).
"""

from __future__ import annotations

from bench.ceilings.datasheet import DATASHEETS, Datasheet, datasheet_ceilings, find_datasheet
from bench.ceilings.measure import (
    CONV_BATCH_CAP,
    CONV_CHANNELS,
    GEMM_N_CAP,
    GEMM_N_START,
    LLC_MULTIPLE,
    MAX_CALL_S,
    MIB,
    MIN_SAMPLES,
    RATE_GAIN,
    STREAM_MIN_BYTES,
    TARGET_CALL_S,
    TRIAD_SCALAR,
    WARMUP_CALLS,
    Kernel,
    conv_ladder,
    conv_macs,
    describe,
    gemm_ladder,
    gemm_macs,
    last_level_cache_bytes,
    measure_ceilings,
    measure_kernel,
    pick_size,
    rate,
    sample_until_precise,
    stream_elements,
    time_call,
)
from bench.ceilings.record import (
    BANDWIDTH_KINDS,
    BYTES_PER_S,
    CEILING_COLUMNS,
    COMPUTE_KINDS,
    DATASHEET_KINDS,
    FORMATS,
    KINDS,
    MACS_PER_S,
    PHASES,
    Ceiling,
    bandwidth_roof,
    ceilings_frame,
    compute_roof,
    format_ceilings,
    highest_compute_ceiling,
)

__all__ = [
    "BANDWIDTH_KINDS",
    "BYTES_PER_S",
    "CEILING_COLUMNS",
    "COMPUTE_KINDS",
    "CONV_BATCH_CAP",
    "CONV_CHANNELS",
    "DATASHEETS",
    "DATASHEET_KINDS",
    "FORMATS",
    "GEMM_N_CAP",
    "GEMM_N_START",
    "KINDS",
    "LLC_MULTIPLE",
    "MACS_PER_S",
    "MAX_CALL_S",
    "MIB",
    "MIN_SAMPLES",
    "PHASES",
    "RATE_GAIN",
    "STREAM_MIN_BYTES",
    "TARGET_CALL_S",
    "TRIAD_SCALAR",
    "WARMUP_CALLS",
    "Ceiling",
    "Datasheet",
    "Kernel",
    "bandwidth_roof",
    "ceilings_frame",
    "compute_roof",
    "conv_ladder",
    "conv_macs",
    "datasheet_ceilings",
    "describe",
    "find_datasheet",
    "format_ceilings",
    "gemm_ladder",
    "gemm_macs",
    "highest_compute_ceiling",
    "last_level_cache_bytes",
    "measure_ceilings",
    "measure_kernel",
    "pick_size",
    "rate",
    "sample_until_precise",
    "stream_elements",
    "time_call",
]

"""bench/ceilings.py: rate arithmetic, the precision loop and sizing through a fake clock,
the datasheet table, reading and formatting ceilings, and one short real CPU run."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.ceilings import (
    BANDWIDTH_KINDS,
    BYTES_PER_S,
    CEILING_COLUMNS,
    COMPUTE_KINDS,
    DATASHEETS,
    KINDS,
    MACS_PER_S,
    Ceiling,
    Kernel,
    bandwidth_roof,
    ceilings_frame,
    compute_roof,
    conv_ladder,
    conv_macs,
    datasheet_ceilings,
    format_ceilings,
    gemm_ladder,
    gemm_macs,
    last_level_cache_bytes,
    measure_ceilings,
    measure_kernel,
    pick_size,
    sample_until_precise,
    stream_elements,
)
from bench.errors import DeviceUnavailable, InvalidOption

MIB = 1024**2
GIB = 1024**3


class FakeClock:
    """A clock that only moves when the fake workload runs: each call of :meth:`run`
    advances it by the next scripted duration."""

    def __init__(self, durations: Iterable[float]) -> None:
        self.now = 0.0
        self._durations: Iterator[float] = iter(durations)
        self.calls = 0
        self.syncs = 0

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += next(self._durations)
        self.calls += 1

    def sync(self) -> None:
        self.syncs += 1


def _forever(x: float) -> Iterator[float]:
    while True:
        yield x


def _ceiling(**kw: object) -> Ceiling:
    base: dict[str, object] = {
        "device": "cpu",
        "device_name": "Test CPU",
        "dtype": "float32",
        "threads": 2,
        "kind": "gemm",
        "value": 1e11,
        "unit": MACS_PER_S,
        "source": "measured",
        "method": "fake",
        "ci_rel": 0.01,
        "samples": 10,
        "citation": None,
    }
    base.update(kw)
    return Ceiling(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------- rates and precision loop


def test_gemm_rate_is_n_cubed_over_the_median_call() -> None:
    clock = FakeClock(_forever(0.5))
    kernel = Kernel("gemm", gemm_macs(1024), "n=1024", clock.run)
    c = measure_kernel(
        kernel, device="cpu", device_name="x", dtype="float32", threads=2, clock=clock
    )
    assert c.value == 1024**3 / 0.5
    assert (c.unit, c.source, c.kind, c.threads, c.citation) == (
        MACS_PER_S,
        "measured",
        "gemm",
        2,
        None,
    )
    # identical calls: the CI is a point at the first look, after the 6 samples it needs
    assert c.samples == 6 and c.ci_rel == 0.0
    assert clock.calls == 2 + 6  # two warm-up calls, then the samples
    assert "median of 6 samples" in c.method and "reached" in c.method


def test_a_gpu_sample_groups_calls_and_synchronises_once_per_sample() -> None:
    # 2**-11 s per call (exact in binary); the GPU target is 2 ms, so 5 calls a sample
    per_call = 2.0**-11
    clock = FakeClock(_forever(per_call))
    n = 1 << 28
    kernel = Kernel("triad", 3.0 * n * 2, "fake triad", clock.run)
    c = measure_kernel(
        kernel,
        device="cuda:0",
        device_name="Fake GPU",
        dtype="float16",
        threads=8,
        sync=clock.sync,
        clock=clock,
    )
    assert c.value == 3.0 * n * 2 / per_call
    assert (c.unit, c.threads, c.samples) == (BYTES_PER_S, 0, 6)
    assert "5 calls per sample" in c.method
    assert clock.calls == 2 + 5 * (2 + 6)  # timing one call (2), warm-up (2 samples), samples
    # time_call's two; the shared sampler's one before warm-up, one per warm-up call and
    # one before timing; then one per sample
    assert clock.syncs == 2 + 1 + 2 + 1 + 6


def test_precision_loop_stops_once_the_interval_excludes_an_outlier() -> None:
    # ranks of the 95% interval of the median: n=6 and n=7 include the largest sample,
    # n=8 gives ranks 1..6 (0-based), which excludes it
    clock = FakeClock([0.125, 0.125, 1.0, 1.0, 5.0, *[1.0] * 100])  # exact in binary
    s = sample_until_precise(clock.run, clock=clock, precision=0.02, budget_s=100.0)
    assert len(s.samples_s) == 8
    assert s.converged and s.ci_rel == 0.0 and s.median_s == 1.0


def test_precision_loop_stops_at_the_budget_when_the_spread_stays() -> None:
    warmup = [9.0, 9.0]  # not counted against the budget
    clock = FakeClock([*warmup, *[1.0, 2.0] * 50])
    s = sample_until_precise(clock.run, clock=clock, precision=0.02, budget_s=10.0)
    # 1+2+1+2+1+2+1 = 10 s of samples: the 7th reaches the budget
    assert s.samples_s == (1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0)
    assert not s.converged
    assert s.ci_rel == 1.0  # median 1, interval [1, 2]


def test_precision_loop_takes_six_samples_even_past_the_budget() -> None:
    clock = FakeClock([1.0, 2.0] * 50)  # never within 2%
    s = sample_until_precise(clock.run, clock=clock, precision=0.02, budget_s=0.001)
    assert len(s.samples_s) == 6 and not s.converged


def test_the_timed_calls_start_on_a_settled_heap() -> None:
    """The warm-up's garbage is collected, and what survives frozen, before the first
    timed call (bench.sampler.settle_heap): no full collection of it among the samples.
    Automatic collection is off here, so only that explicit collection can free the
    warm-up's reference cycles."""
    import gc
    import weakref

    class Node:
        pass

    cycles: list[weakref.ref[Node]] = []
    seen: list[tuple[int, int]] = []  # per call: warm-up cycles still alive, frozen objects

    def run() -> None:
        seen.append((sum(r() is not None for r in cycles), gc.get_freeze_count()))
        if len(seen) <= 2:  # the two warm-up calls each leave a cycle behind
            node = Node()
            node.me = node  # type: ignore[attr-defined]
            cycles.append(weakref.ref(node))

    enabled = gc.isenabled()
    gc.disable()
    try:
        sample_until_precise(run, warmup_calls=2, min_samples=3, budget_s=0.0)
    finally:
        if enabled:
            gc.enable()
    assert seen[1][0] == 1  # the first warm-up call's cycle lives on into the second
    assert seen[2][0] == 0 and seen[2][1] > 0  # the first timed call: gone, heap frozen


# ----------------------------------------------------------------------------- sizing


def _builder(log: list[int]):
    def build(n: int) -> Kernel:
        log.append(n)
        return Kernel("gemm", gemm_macs(n), f"n={n}", lambda: None)

    return build


def _chosen_n(kernel: Kernel) -> int:
    return round(kernel.work ** (1 / 3))


LADDER = (256, 512, 1024, 2048, 4096)
CPU_LIMITS = {"target_s": 0.020, "max_call_s": 0.5}


def test_sizing_stops_at_the_first_long_enough_call_once_the_rate_is_flat() -> None:
    built: list[int] = []
    rate = 50e9  # MACs/s at every n: 1024 is the first call of >= 20 ms (21.5 ms)
    k = pick_size(LADDER, _builder(built), lambda k: k.work / rate, gemm_macs, **CPU_LIMITS)
    assert _chosen_n(k) == 1024 and built == [256, 512, 1024]


def test_sizing_grows_past_a_time_slice_while_the_rate_climbs() -> None:
    # a busy second core: every call waits at least 16 ms, so 256 and 512 look slow;
    # 1024 takes 21.5 ms but its rate is 2.7x 512's, so 2048 is tried and is flat
    built: list[int] = []

    def seconds(k: Kernel) -> float:
        return max(0.016, k.work / 50e9)

    k = pick_size(LADDER, _builder(built), seconds, gemm_macs, **CPU_LIMITS)
    assert _chosen_n(k) == 2048 and built == [256, 512, 1024, 2048]


def test_sizing_never_builds_a_size_whose_call_would_be_too_long() -> None:
    built: list[int] = []

    def seconds(k: Kernel) -> float:  # the rate grows with n forever: 256 takes 65.5 ms
        n = _chosen_n(k)
        return k.work / (n * 1e6)

    k = pick_size(LADDER, _builder(built), seconds, gemm_macs, **CPU_LIMITS)
    # 512 would take 8 x 65.5 ms = 0.52 s > 0.5 s
    assert _chosen_n(k) == 256 and built == [256]


def test_sizing_takes_the_last_size_when_every_call_is_short() -> None:
    built: list[int] = []
    k = pick_size((256, 512), _builder(built), lambda k: 1e-6, gemm_macs, **CPU_LIMITS)
    assert _chosen_n(k) == 512


def test_sizing_with_nothing_that_fits_says_so() -> None:
    with pytest.raises(DeviceUnavailable, match="memory"):
        pick_size((), _builder([]), lambda k: 1.0, gemm_macs, **CPU_LIMITS)


def test_ladders_respect_caps_and_memory() -> None:
    plenty = 1 << 50
    assert gemm_ladder("cpu", 4, plenty) == LADDER
    assert gemm_ladder("cuda:0", 2, plenty)[-1] == 16384
    # a, b, c of 1024x1024 float32 are 12 MiB: fits a quarter of 48 MiB, 2048 does not
    assert gemm_ladder("cpu", 4, 48 * MIB) == (256, 512, 1024)
    assert conv_ladder("cpu", 4, plenty) == (
        (1, 14),
        (1, 28),
        (1, 56),
        (2, 56),
        (4, 56),
        (8, 56),
    )
    assert conv_ladder("cuda:0", 2, plenty)[-1] == (256, 56)
    assert conv_macs((8, 56)) == 8 * 256 * 56 * 56 * 256 * 9
    assert gemm_macs(1024) == 1024**3


def test_stream_sizes_defeat_the_caches() -> None:
    plenty = 1 << 50
    # the copy's two tensors hold 256 MiB at least, and 8x the last-level cache
    assert stream_elements("cpu", 4, 32 * MIB, plenty) == 256 * MIB // 8
    assert stream_elements("cpu", 4, 64 * MIB, plenty) == 512 * MIB // 8
    assert stream_elements("cpu", 2, 0, plenty) == 256 * MIB // 4
    assert stream_elements("cuda:0", 2, 0, plenty) == GIB // 4
    # never more than half the free memory for the triad's three tensors
    assert stream_elements("cpu", 4, 0, 60 * MIB) == 60 * MIB // 24


def _cache(root: Path, cpu: int, index: int, level: int, kind: str, size: str, shared: str):
    d = root / f"cpu{cpu}" / "cache" / f"index{index}"
    d.mkdir(parents=True)
    for name, value in (("level", level), ("type", kind), ("size", size)):
        (d / name).write_text(f"{value}\n")
    (d / "shared_cpu_list").write_text(f"{shared}\n")


def test_last_level_cache_sums_distinct_instances(tmp_path: Path) -> None:
    for cpu in range(4):
        _cache(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        _cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _cache(tmp_path, cpu, 2, 2, "Unified", "1024K", str(cpu))
        _cache(tmp_path, cpu, 3, 3, "Unified", "32768K", "0-1" if cpu < 2 else "2-3")
    assert last_level_cache_bytes(tmp_path) == 64 * MIB
    assert last_level_cache_bytes(tmp_path / "absent") == 0


# ----------------------------------------------------------------------------- datasheets


@pytest.mark.parametrize(
    ("name", "dtype", "tflops", "bandwidth_gb_s"),
    [
        # dense figures: Hopper sheets print 2:4-sparsity tensor figures, halved here
        ("NVIDIA H200", "bfloat16", 1979 / 2, 4800),
        ("NVIDIA H200", "float32", 67, 4800),
        ("NVIDIA H100 80GB HBM3", "float16", 1979 / 2, 3350),
        ("NVIDIA H100 PCIe", "bfloat16", 1513 / 2, 2000),
        ("NVIDIA A100-SXM4-80GB", "float16", 312, 2039),
        ("NVIDIA A100-SXM4-40GB", "float32", 19.5, 1555),
        ("NVIDIA A100 80GB PCIe", "bfloat16", 312, 1935),
        ("Tesla V100-SXM2-32GB", "float16", 125, 900),
        ("Tesla V100-PCIE-16GB", "float32", 14, 900),
    ],
)
def test_datasheet_peaks_are_dense_and_in_macs(
    name: str, dtype: str, tflops: float, bandwidth_gb_s: float
) -> None:
    compute, bandwidth = datasheet_ceilings("cuda:0", name, dtype)
    assert compute.kind == "datasheet_compute" and compute.unit == MACS_PER_S
    assert compute.value == pytest.approx(tflops * 1e12 / 2, rel=1e-12)
    assert bandwidth.kind == "datasheet_bandwidth" and bandwidth.unit == BYTES_PER_S
    assert bandwidth.value == pytest.approx(bandwidth_gb_s * 1e9, rel=1e-12)
    for c in (compute, bandwidth):
        assert (c.source, c.threads, c.ci_rel, c.samples) == ("datasheet", 0, None, None)
        assert c.citation and "datasheet" in c.citation and "https://" in c.citation
        assert c.device_name == name and c.dtype == dtype


def test_a_dtype_the_sheet_does_not_give_has_only_the_bandwidth() -> None:
    (only,) = datasheet_ceilings("cuda:0", "Tesla V100-SXM2-16GB", "bfloat16")
    assert only.kind == "datasheet_bandwidth"


@pytest.mark.parametrize(
    ("device", "name"),
    [
        ("cpu", "NVIDIA H200"),  # a CPU never gets GPU figures, whatever its name says
        ("cuda:0", "NVIDIA GeForce RTX 4090"),
        ("cuda:0", "NVIDIA H200 NVL"),  # no verified NVL figures
        ("cuda:0", "AMD EPYC"),
    ],
)
def test_no_datasheet_for_cpus_and_unknown_gpus(device: str, name: str) -> None:
    assert datasheet_ceilings(device, name, "float32") == ()


def test_every_datasheet_entry_is_cited() -> None:
    for sheet in DATASHEETS:
        assert sheet.citation.startswith("NVIDIA ") and "https://" in sheet.citation
        assert set(sheet.flops) == set(sheet.flops_note)
        assert sheet.flops["float32"] < sheet.flops["float16"]  # tensor cores beat FP32


# ----------------------------------------------------------------------------- reading


def test_roofs_read_measured_gemm_and_triad_only() -> None:
    cs = [
        _ceiling(kind="gemm", value=1e11),
        _ceiling(kind="conv3x3", value=2e11),
        _ceiling(kind="triad", value=3e10, unit=BYTES_PER_S),
        _ceiling(kind="copy", value=4e10, unit=BYTES_PER_S),
        _ceiling(device="cuda:0", threads=0, dtype="float16", value=5e14),
        *datasheet_ceilings("cuda:0", "NVIDIA H100 80GB HBM3", "float16"),
    ]
    assert compute_roof(cs, "cpu", "float32", 2) == 1e11
    assert bandwidth_roof(cs, "cpu", "float32", 2) == 3e10
    assert compute_roof(cs, "cpu", "float32", 1) is None  # another thread count
    assert compute_roof(cs, "cpu", "bfloat16", 2) is None
    assert compute_roof(cs, "cuda:0", "float16", 8) == 5e14  # threads do not key a GPU
    assert bandwidth_roof(cs, "cuda:0", "float16", 8) is None  # datasheet is not measured


def test_a_ceiling_round_trips_through_its_dict() -> None:
    c = _ceiling()
    assert Ceiling.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(InvalidOption, match="unknown keys"):
        Ceiling.from_dict({**c.to_dict(), "extra": 1})


def test_frame_has_the_columns_in_order_and_survives_parquet(tmp_path: Path) -> None:
    cs = [_ceiling(), *datasheet_ceilings("cuda:0", "NVIDIA H200", "bfloat16")]
    df = ceilings_frame(cs, "host-a", "2026-01-02T03:04:05+00:00")
    assert tuple(df.columns) == CEILING_COLUMNS
    assert CEILING_COLUMNS[-3:] == ("hostname", "measured_at", "phase")
    assert set(df["phase"]) == {"start"}
    with pytest.raises(InvalidOption, match="phase"):
        ceilings_frame(cs, "host-a", "2026-01-02T03:04:05+00:00", phase="middle")
    assert list(df["samples"].astype(object)) == [10, pd.NA, pd.NA]
    assert df["ci_rel"].isna().tolist() == [False, True, True]
    path = tmp_path / "ceilings.parquet"
    df.to_parquet(path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)


def test_table_shows_human_units_aligned() -> None:
    cs = [
        _ceiling(value=123.4e9),
        _ceiling(kind="triad", value=45.6e9, unit=BYTES_PER_S, ci_rel=0.123),
        *datasheet_ceilings("cuda:0", "NVIDIA A100-SXM4-80GB", "float16"),
    ]
    text = format_ceilings(cs)
    lines = text.splitlines()
    assert "123.4 GMAC/s" in lines[1] and "±1.0%" in lines[1]
    assert "45.6 GB/s" in lines[2] and "±12.3%" in lines[2]
    assert "156,000.0 GMAC/s" in lines[3] and "2,039.0 GB/s" in lines[4]
    starts = {line.index(c.kind) for line, c in zip(lines[1:5], cs, strict=True)}
    assert len(starts) == 1  # the kind column lines up
    assert lines[-1].startswith("datasheet: NVIDIA A100")


def test_json_format_and_unknown_formats() -> None:
    cs = [_ceiling(), _ceiling(kind="copy", unit=BYTES_PER_S)]
    assert json.loads(format_ceilings(cs, "json")) == [c.to_dict() for c in cs]
    with pytest.raises(InvalidOption, match="table, json"):
        format_ceilings(cs, "xml")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("cpu", "float64", 1), InvalidOption, "float32, float16, bfloat16"),
        (("tpu:0", "float32", 1), InvalidOption, "cpu or cuda:N"),
        (("cpu", "float32", 0), InvalidOption, "at least 1 thread"),
    ],
)
def test_bad_options_are_refused_before_measuring(
    args: tuple[str, str, int], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        measure_ceilings(*args)


def test_bad_kinds_and_precision_are_refused() -> None:
    with pytest.raises(InvalidOption, match="gemm, conv3x3, triad, copy"):
        measure_ceilings("cpu", "float32", 1, kinds=("flops",))
    with pytest.raises(InvalidOption, match="precision"):
        measure_ceilings("cpu", "float32", 1, precision=0.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_says_what_to_do() -> None:
    with pytest.raises(DeviceUnavailable, match="--device cpu"):
        measure_ceilings("cuda:0", "float32", 0)


# ----------------------------------------------------------------------------- real run


def test_the_cpu_is_measured_and_each_ceiling_survives_json() -> None:
    threads_before = torch.get_num_threads()
    found = measure_ceilings("cpu", "float32", 2, budget_s=0.2)
    assert torch.get_num_threads() == threads_before  # restored
    cs = [Ceiling.from_dict(json.loads(json.dumps(c.to_dict()))) for c in found]
    assert cs == list(found)
    assert [c.kind for c in cs] == list(KINDS)  # no datasheet for a CPU
    for c in cs:
        assert math.isfinite(c.value) and c.value > 0
        assert c.unit == (MACS_PER_S if c.kind in COMPUTE_KINDS else BYTES_PER_S)
        assert (c.device, c.threads, c.source, c.dtype) == ("cpu", 2, "measured", "float32")
        assert c.samples is not None and c.samples >= 6
        assert c.ci_rel is not None and c.ci_rel >= 0
    assert {c.kind for c in cs if c.kind in BANDWIDTH_KINDS} == set(BANDWIDTH_KINDS)

    gemm = cs[0]
    match = re.search(r"\(n=(\d+)\)", gemm.method)
    assert match, gemm.method
    n = int(match.group(1))
    direct = _direct_mm_rate(n, threads=2)
    assert 0.5 < gemm.value / direct < 2.0, (gemm.value, direct, n)


def _direct_mm_rate(n: int, threads: int) -> float:
    """n³ over the median of five timed ``torch.mm`` calls of the same n."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return n**3 / statistics.median(times)


def test_peak_warns_for_each_measured_ceiling_that_missed_its_precision() -> None:
    from bench.commands import imprecise_ceilings

    found = [
        _ceiling(kind="gemm", ci_rel=0.172),  # the busy host of issue 20: ±17.2% for ±2%
        _ceiling(kind="triad", ci_rel=0.015),
        _ceiling(kind="copy", ci_rel=None),
        *datasheet_ceilings("cuda:0", "NVIDIA H200", "float16"),  # no interval: not measured
    ]
    warnings = imprecise_ceilings(found, 0.02)
    assert len(warnings) == 2
    assert warnings[0].startswith("gemm on cpu float32 reached ±17.2%, not the ±2%")
    assert "copy on cpu float32 reached no interval" in warnings[1]


def test_the_highest_measured_compute_ceiling_is_the_roof() -> None:
    from bench.ceilings import highest_compute_ceiling

    found = [
        _ceiling(kind="gemm", value=9.0e10),
        _ceiling(kind="conv3x3", value=1.1e11, ci_rel=0.03),  # oneDNN's conv beats its GEMM
        _ceiling(kind="triad", value=5e12, unit=BYTES_PER_S),  # bandwidth: not a compute roof
        _ceiling(kind="gemm", value=2e11, threads=1),  # another thread count
        *datasheet_ceilings("cuda:0", "NVIDIA H200", "float32"),
    ]
    roof = highest_compute_ceiling(found, "cpu", "float32", 2)
    assert roof is not None and (roof.kind, roof.value, roof.ci_rel) == ("conv3x3", 1.1e11, 0.03)
    assert highest_compute_ceiling(found, "cpu", "bfloat16", 2) is None

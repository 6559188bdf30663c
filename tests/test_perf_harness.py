"""Benchmarks of the suite itself (`nox -s perf`): overhead and agreement.

This machine drifts by several percent between back-to-back measurements, so each
comparison is interleaved in one process (A B A B ...) and judged on the median of the
pair ratios. Figures go to pytest-benchmark's ``extra_info`` (see the JSON/console output).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.probes.timing import measure_latency

pytestmark = pytest.mark.perf
PAIRS = 7


def _bare_loop_median_ms(fn: Callable[[], object], seconds: float) -> float:
    """The simplest honest reference: time single calls with perf_counter."""
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _suite_median_ms(fn: Callable[[], object], seconds: float) -> float:
    r = measure_latency(
        fn, warmup_iters=10, warmup_time_s=0.1, min_time_s=seconds, max_time_s=seconds
    )
    return statistics.median(r.samples_ms)


def _interleaved_ratio(a: Callable[[], float], b: Callable[[], float]) -> tuple[float, list[float]]:
    ratios = []
    for _ in range(PAIRS):
        ratios.append(a() / b())
    return statistics.median(ratios), ratios


def test_harness_overhead_on_a_tiny_model(benchmark: pytest.FixtureRequest) -> None:
    """(a) For a ~50 µs forward, the suite's median is within 5% of a bare loop's."""
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128)).eval()
    x = torch.randn(16, 128)

    def forward() -> object:
        return model(x)

    with torch.inference_mode():
        _bare_loop_median_ms(forward, 0.5)  # warm
        ratio, ratios = benchmark.pedantic(
            _interleaved_ratio,
            args=(
                lambda: _suite_median_ms(forward, 1.0),
                lambda: _bare_loop_median_ms(forward, 1.0),
            ),
            rounds=1,
            iterations=1,
        )
        per_forward_us = _bare_loop_median_ms(forward, 0.5) * 1e3
    benchmark.extra_info.update(
        median_ratio_suite_over_bare=ratio, pair_ratios=ratios, forward_us=per_forward_us
    )
    print(
        f"\n(a) tiny model {per_forward_us:.1f} us/forward; suite/bare median ratio {ratio:.4f}; "
        f"pairs {[round(r, 4) for r in ratios]}"
    )
    assert abs(ratio - 1) <= 0.05


def test_agreement_with_torch_utils_benchmark(benchmark: pytest.FixtureRequest) -> None:
    """(b) resnet18, batch 1, CPU: the suite's median within 3% of blocked_autorange's."""
    from torch.utils.benchmark import Timer
    from torchvision.models import resnet18

    torch.set_num_threads(os.cpu_count() or 1)
    model = resnet18().eval()
    x = torch.randn(1, 3, 224, 224)

    def forward() -> object:
        return model(x)

    timer = Timer(
        stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads()
    )

    def reference_ms() -> float:
        with torch.inference_mode():
            return timer.blocked_autorange(min_run_time=3.0).median * 1e3

    def suite_ms() -> float:
        with torch.inference_mode():
            return _suite_median_ms(forward, 3.0)

    ratio, ratios = benchmark.pedantic(
        _interleaved_ratio, args=(suite_ms, reference_ms), rounds=1, iterations=1
    )
    benchmark.extra_info.update(median_ratio_suite_over_timer=ratio, pair_ratios=ratios)
    print(
        f"\n(b) resnet18 bs1: suite/Timer median ratio {ratio:.4f}; "
        f"pairs {[round(r, 4) for r in ratios]}"
    )
    assert abs(ratio - 1) <= 0.03


def test_default_cpu_sweep_time_outside_timed_iterations(
    benchmark: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """(c) Share of the default CPU sweep's wall time spent outside timed iterations
    (start-up, model build, MAC counting, warm-up, writing). Runs the real default sweep."""
    if torch.cuda.is_available():
        pytest.skip("the default sweep on a GPU machine is the canziani suite; this is the CPU one")
    from bench import load_results

    def sweep() -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bench", "run", "--out", str(tmp_path), "--run-id", "default"],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "EFFBENCH_PLUGINS"},
        )
        return time.perf_counter() - t0

    wall_s = benchmark.pedantic(sweep, rounds=1, iterations=1)
    df = load_results([tmp_path / "default"])
    timed_s = float(df["timed_s"].sum())
    share = 1 - timed_s / wall_s
    benchmark.extra_info.update(wall_s=wall_s, timed_s=timed_s, outside_share=share, cells=len(df))
    print(
        f"\n(c) default CPU sweep: {len(df)} cells, wall {wall_s:.1f} s, timed {timed_s:.1f} s, "
        f"outside timed iterations {share:.1%}"
    )
    assert len(df) == 60 and (df["status"] == "ok").all()
    assert wall_s < 600
    assert share < 0.25

"""Benchmark (`nox -s perf`): effbench times what a user's process gets (issue 22).

For each cell, ``effbench run`` (one cell, its own worker) alternates with
``torch.utils.benchmark.Timer.adaptive_autorange`` of the same torchvision network and input
at the same thread count, run in a plain ``python`` subprocess with the environment as it is
(glibc's default malloc, no ``mallopt``, no ``MALLOC_*`` variable). Each is a fresh process;
the order alternates from pair to pair so that drift hits both alike. The cell passes when
the median of its pair ratios (effbench ÷ Timer) is within 0.97–1.03.

Then ``--configs eager,malloc:tuned`` on mobilenet_v2 at batch 8 (repeats interleaved):
the tuned allocator's speed-up shows in the rows and in the report's speed-up figure.

Both need a quiet machine: other jobs on the cores move a ratio by more than 3%.
``EFFBENCH_PERF_PAIRS`` lowers the pair count to check that the benchmark itself works
(the acceptance needs at least 5)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store import load_results

pytestmark = pytest.mark.perf
PAIRS = int(os.environ.get("EFFBENCH_PERF_PAIRS", "5"))
BAND = (0.97, 1.03)
CELLS = [
    ("resnet18", 1),
    ("resnet18", 8),
    ("resnet50", 1),
    ("mobilenet_v2", 8),
    ("mobilenet_v3_large", 1),
    ("densenet121", 1),
]
THREADS = len(os.sched_getaffinity(0))
# The reference: PyTorch's own timer, in a process nobody has tuned.
TIMER = """
import sys, torch, torchvision
from torch.utils.benchmark import Timer
name, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
model = getattr(torchvision.models, name)().eval()
x = torch.randn(batch, 3, 224, 224)
with torch.inference_mode():
    m = Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
    print(m.adaptive_autorange(threshold=0.01, min_run_time=1.0, max_run_time=10.0).median * 1e3)
"""


def _plain_env() -> dict[str, str]:
    """The caller's environment without the test suite's plugin models."""
    return {k: v for k, v in os.environ.items() if k != "EFFBENCH_PLUGINS"}


def _timer_ms(model: str, batch: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TIMER, model, str(batch), str(THREADS)],
        check=True,
        capture_output=True,
        text=True,
        env=_plain_env(),
    )
    return float(out.stdout.strip().splitlines()[-1])


def _effbench_run(out: Path, run_id: str, *args: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "bench", "run", *args, "--threads", str(THREADS)]
        + ["--out", str(out), "--run-id", run_id, "--no-ceilings"],
        check=True,
        env=_plain_env(),
    )
    return out / run_id


def _effbench_ms(out: Path, run_id: str, model: str, batch: int) -> float:
    run = _effbench_run(out, run_id, "--models", model, "--batch-sizes", str(batch))
    (row,) = load_results([run]).itertuples()
    assert row.status == "ok" and row.config == "eager"
    return float(row.latency_ms_median)


@pytest.mark.parametrize(("model", "batch"), CELLS, ids=[f"{m}-b{b}" for m, b in CELLS])
def test_effbench_agrees_with_timer_in_a_default_process(
    benchmark: pytest.FixtureRequest, tmp_path: Path, model: str, batch: int
) -> None:
    def pairs() -> list[tuple[float, float]]:
        got = []
        for i in range(PAIRS):
            if i % 2 == 0:
                ours = _effbench_ms(tmp_path, f"p{i}", model, batch)
                ref = _timer_ms(model, batch)
            else:
                ref = _timer_ms(model, batch)
                ours = _effbench_ms(tmp_path, f"p{i}", model, batch)
            got.append((ours, ref))
        return got

    got = benchmark.pedantic(pairs, rounds=1, iterations=1)
    ratios = [ours / ref for ours, ref in got]
    ratio = statistics.median(ratios)
    benchmark.extra_info.update(
        median_ratio_effbench_over_timer=ratio,
        pair_ratios=ratios,
        effbench_ms=[o for o, _ in got],
        timer_ms=[r for _, r in got],
        threads=THREADS,
    )
    print(f"\n{model} batch {batch}, {THREADS} threads: effbench/Timer median {ratio:.4f}; pairs "
          + ", ".join(f"{o:.2f}/{r:.2f} ms" for o, r in got))  # fmt: skip
    assert BAND[0] <= ratio <= BAND[1], ratios


def test_malloc_tuned_shows_its_speed_up_in_the_rows_and_the_report(
    benchmark: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from bench.cli import main

    def sweep() -> Path:
        args = ["--models", "mobilenet_v2", "--batch-sizes", "8"]
        args += ["--configs", "eager,malloc:tuned", "--repeats", str(PAIRS)]
        return _effbench_run(tmp_path, "tuned", *args)

    run = benchmark.pedantic(sweep, rounds=1, iterations=1)
    df = load_results([run])
    assert (df["status"] == "ok").all() and len(df) == 2 * PAIRS
    ms = df.pivot(index="repeat", columns="config", values="latency_ms_median")
    speedups = list(ms["eager"] / ms["malloc:tuned"])
    speedup = statistics.median(speedups)
    benchmark.extra_info.update(median_speedup=speedup, speedups=speedups)
    print(f"\nmobilenet_v2 batch 8: eager / malloc:tuned median {speedup:.3f}; {speedups}")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    (fig,) = [f for f in doc["figures"] if f["name"] == "11-speedup-vs-eager"]
    assert not fig.get("skipped") and "(mobilenet_v2, malloc:tuned, batch 8)" in fig["reading"]
    # on the 2-core test machine the issue measured 1.7×; any machine whose glibc refaults
    # activation memory every forward shows some
    assert speedup > 1.05, speedups

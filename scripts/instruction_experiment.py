"""Measure what `effbench run --count-instructions` promises, on the experiment-only probe
networks of ``models/_regression_probe.py`` (squeezenet1_1, mobilenet_v3_small,
shufflenet_v2_x0_5 at 64 px, batch sizes 1, 2, 4: 9 CPU cells).

1. Calibration: two valgrind processes (``bench.instructions.count_cells``), one with no
   extra work and one with ``PROBE_STEPS`` extra matmul steps in every cell; their
   difference / ``PROBE_STEPS`` is the instructions of one step, and the steps that add 1%
   of a cell's forward are ``round(0.01 * forward / step)``: a fixed number of extra
   operations per forward.
2. One `effbench run --count-instructions` with three arms: ``A`` and ``B`` (the same code)
   and ``S1`` (the 1% steps); one run per side, one valgrind process per arm.
3. Analysis: the spread of each cell's count over three separate processes (calibration's
   bare run, A and B); `effbench compare A S1 --metric instructions` (every cell flagged?)
   and `compare A B` (none flagged?), with the default count threshold; and the cost: wall
   time of each valgrind process, its start-up and imports, and per cell.

    python scripts/instruction_experiment.py --out /tmp/instrexp      # ~10 min on 2 cores

Counts are deterministic, so the load on the machine changes the wall times, not the
numbers. Prints a markdown report and writes ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import compare  # noqa: E402
from bench.instructions import CountCell, finish_counts, start_counts  # noqa: E402
from bench.store import load_results  # noqa: E402

PLUGIN = "models._regression_probe"
STEPS_ENV = "EFFBENCH_PROBE_STEPS"
BASES = ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5")
MODELS = tuple(f"probe_{b}" for b in BASES)
BATCH_SIZES = (1, 2, 4)
IMAGE_SIZE = 64
PROBE_STEPS = 200
EXTRA = 0.01  # the injected extra work, a share of the forward's instructions


def cells() -> list[CountCell]:
    return [CountCell(m, b, IMAGE_SIZE, 3) for m in MODELS for b in BATCH_SIZES]


def steps_json(steps: dict[CountCell, int]) -> str:
    return json.dumps({f"{c.model}@{c.batch_size}": n for c, n in steps.items()})


def calibrate(out: Path) -> dict[str, object]:
    """Instructions of a bare forward and of one extra step, per cell; steps for 1%."""
    path = out / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())
    env = {"EFFBENCH_PLUGINS": PLUGIN}
    probe = {c: PROBE_STEPS for c in cells()}
    t0 = time.monotonic()  # the two processes at once, as the runner runs arms
    jobs = [start_counts(cells(), env=env)]
    jobs.append(start_counts(cells(), env={**env, STEPS_ENV: steps_json(probe)}))
    bare = finish_counts(jobs[0], 7200)
    t1 = time.monotonic()
    extra = finish_counts(jobs[1], 7200)
    t2 = time.monotonic()
    result: dict[str, object] = {"wall_s": {"bare": t1 - t0, "extra": t2 - t0}, "cells": {}}
    steps = {}
    for c in cells():
        b, e = bare[c], extra[c]
        if b.error or e.error:
            raise SystemExit(f"{c}: {b.error or e.error}")
        assert b.instructions_per_forward and e.instructions_per_forward
        step = (e.instructions_per_forward - b.instructions_per_forward) / PROBE_STEPS
        steps[c] = max(1, round(EXTRA * b.instructions_per_forward / step))
        result["cells"][f"{c.model}@{c.batch_size}"] = {  # type: ignore[index]
            "bare": b.instructions_per_forward,
            "bare_per_forward": list(b.per_forward),
            "step": step,
            "steps": steps[c],
            "cell_wall_s": b.wall_s,
        }
    result["steps"] = steps_json(steps)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def run_arms(out: Path, steps: str) -> float:
    """One `effbench run --count-instructions` with arms A, B and S1; its wall time."""
    if all((out / f"ix-{a}" / "manifest.json").exists() for a in ("A", "B", "S1")):
        return float("nan")
    env = {**os.environ, "EFFBENCH_PLUGINS": PLUGIN, "EFFBENCH_NO_CEILINGS": "1"}
    cmd = [
        sys.executable, "-m", "bench", "run", "--models", ",".join(MODELS),
        "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--threads", "1",
        "--image-size", str(IMAGE_SIZE), "--min-time", "0.05", "--max-time", "0.2",
        "--warmup-iters", "1", "--warmup-time", "0", "--remeasure", "0",
        "--count-instructions", "--out", str(out), "--run-id", "ix",
        "--variant", "A", "--variant", "B", "--variant", f"S1:{STEPS_ENV}={steps}",
    ]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    (out / "run.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"effbench run failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - t0


def verdicts(base: Path, cand: Path) -> dict[str, int]:
    s = compare.Settings(metrics=("instructions",))
    c = compare.compare_paths(base, cand, s, allow_env_mismatch=True)
    return {v: c.count(v) for v in compare.VERDICTS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out
    cal = calibrate(out)
    wall = run_arms(out, str(cal["steps"]))
    rows = load_results([out / f"ix-{a}" for a in ("A", "B", "S1")])
    rows = rows[rows["repeat"] == 0]
    counts = rows.pivot_table(
        index=["model", "batch_size"], columns="variant", values="instructions_per_forward"
    )
    lines = ["| cell | bare (calibration) | A | B | spread of 3 | S1 / A | steps |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    spreads = []
    for (model, b), r in counts.iterrows():
        c = cal["cells"][f"{model}@{b}"]  # type: ignore[index]
        three = [c["bare"], r["A"], r["B"]]
        spread = (max(three) - min(three)) / min(three)
        spreads.append(spread)
        lines.append(
            f"| {model} bs={b} | {c['bare']:,.0f} | {r['A']:,.0f} | {r['B']:,.0f} | "
            f"{spread:.4%} | {r['S1'] / r['A']:.4f} | {c['steps']} |"
        )
    log = (out / "run.log").read_text() if (out / "run.log").exists() else ""
    cost = [line for line in log.splitlines() if "under valgrind in" in line]
    summary = {
        "max_spread": max(spreads),
        "A_vs_S1": verdicts(out / "ix-A", out / "ix-S1"),
        "A_vs_B": verdicts(out / "ix-A", out / "ix-B"),
        "B_vs_A": verdicts(out / "ix-B", out / "ix-A"),
        "calibration_wall_s": cal["wall_s"],
        "run_wall_s": wall,
        "cost_lines": cost,
        "cell_wall_s": {k: v["cell_wall_s"] for k, v in cal["cells"].items()},  # type: ignore[union-attr]
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(f"\nlargest spread of one cell over 3 processes: {max(spreads):.4%}")
    for name in ("A_vs_S1", "A_vs_B", "B_vs_A"):
        print(f"{name}: {summary[name]}")
    print(f"calibration processes (s): {cal['wall_s']}; effbench run with 3 arms: {wall:.0f} s")
    print("\n".join(cost))


if __name__ == "__main__":
    main()

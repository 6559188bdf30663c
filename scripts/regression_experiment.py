"""Measure how well `effbench compare` separates noise from real slowdowns, on real runs.

Phase 1 (skipped with --analyze-only) sweeps the experiment-only probe models of
``models/_regression_probe.py`` (squeezenet1_1, mobilenet_v3_small, shufflenet_v2_x0_5 at
64 px, batch sizes 1, 2, 4, one thread; 9 cells) into four sets of runs under ``--out``:

    A     baseline, no injected work              (2 rounds x 10 repeats)
    B     the same code again, later               (2 rounds x 5 repeats)  -> A/A
    S10   10% more work per forward                (2 rounds x 5 repeats)
    S5    5% more work per forward                 (2 rounds x 5 repeats)

Rounds interleave the sets (A, S10, S5, B, A, S10, S5, B) so slow drift of a shared machine
does not line up with one set. Phase 2 draws random disjoint subsets of repeats and
compares them with bench.compare exactly as `effbench compare` does, and with the naive
"candidate median > 1.05 x baseline median" rule, and prints a markdown report.

    python scripts/regression_experiment.py --out exp-results   # ~17 min of sweeps, 2 cores
    python scripts/regression_experiment.py --out exp-results --analyze-only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import compare  # noqa: E402
from bench.store import load_results  # noqa: E402

MODELS = ("probe_squeezenet1_1", "probe_mobilenet_v3_small", "probe_shufflenet_v2_x0_5")
SETS = {"A": (0.0, 10), "S10": (0.10, 5), "S5": (0.05, 5), "B": (0.0, 5)}
RUN_ARGS = [
    "--batch-sizes", "1,2,4", "--threads", "1", "--image-size", "64",
    "--min-time", "0.3", "--max-time", "0.4", "--warmup-iters", "2", "--warmup-time", "0.05",
]  # fmt: skip


def snapshot(out: Path) -> Path:
    """Copy bench/ and models/ beside the results: other people edit the working tree while
    a sweep runs, and every worker process imports the code afresh."""
    snap = out / "code"
    if not snap.exists():
        for pkg in ("bench", "models"):
            shutil.copytree(ROOT / pkg, snap / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return snap


def run_sets(out: Path, rounds: int) -> None:
    code = snapshot(out)
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = "models._regression_probe"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    for r in range(1, rounds + 1):
        for name, (fraction, repeats) in SETS.items():
            run_dir = out / name / f"{name}-round{r}"
            if (run_dir / "manifest.json").exists():
                cmd = [sys.executable, "-m", "bench", "run", "--resume", str(run_dir)]
            else:
                cmd = [
                    sys.executable, "-m", "bench", "run", "--models", ",".join(MODELS),
                    *RUN_ARGS, "--repeats", str(repeats),
                    "--out", str(out / name), "--run-id", run_dir.name,
                ]  # fmt: skip
            env["EFFBENCH_PROBE_SLOWDOWN"] = str(fraction)
            t0 = time.monotonic()
            subprocess.run(cmd, env=env, check=True, cwd=code, stderr=subprocess.DEVNULL)
            print(f"{run_dir}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "exp-results")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runs-only", action="store_true")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--draws", type=int, default=100, help="random subsets per comparison")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    t0 = time.monotonic()
    if not args.analyze_only:
        run_sets(args.out, args.rounds)
        print(f"runs: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if not args.runs_only:
        analyze(args.out, args.draws, args.seed)
    return 0


def _units(df: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted({(r, int(k)) for r, k in zip(df["run_id"], df["repeat"], strict=True)})


def _pick(df: pd.DataFrame, units: Sequence[tuple[str, int]]) -> pd.DataFrame:
    wanted = {f"{r}#{k}" for r, k in units}
    return df[df["unit"].isin(wanted)]


def _naive(base: pd.DataFrame, cand: pd.DataFrame) -> list[bool]:
    """The "candidate median > 1.05 x baseline median" rule, per matched cell."""
    key = list(compare.MATCH_KEY)
    mb = base.groupby(key)["latency_ms_median"].median()
    mc = cand.groupby(key)["latency_ms_median"].median()
    both = mb.index.intersection(mc.index)
    return [bool(mc[k] > 1.05 * mb[k]) for k in both]


def _draw(
    rng: np.random.Generator,
    frames: dict[str, pd.DataFrame],
    units: dict[str, list[tuple[str, int]]],
    base: str,
    cand: str,
    kb: int,
    kc: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if base == cand:  # disjoint subsets of one set
        idx = rng.choice(len(units[base]), kb + kc, replace=False)
        chosen = [units[base][i] for i in idx]
        return _pick(frames[base], chosen[:kb]), _pick(frames[base], chosen[kb:])
    ib = rng.choice(len(units[base]), kb, replace=False)
    ic = rng.choice(len(units[cand]), kc, replace=False)
    return (
        _pick(frames[base], [units[base][i] for i in ib]),
        _pick(frames[cand], [units[cand][i] for i in ic]),
    )


COMPARISONS = (
    ("A/A, same runs (disjoint repeats of A)", "A", "A"),
    ("A/A, separate runs (A vs B)", "A", "B"),
    ("10% slower (A vs S10)", "A", "S10"),
    ("5% slower (A vs S5)", "A", "S5"),
)


def analyze(out: Path, draws: int, seed: int) -> None:
    frames = {}
    for name in SETS:
        df = load_results([out / name])
        df = df[df["status"] == "ok"].reset_index(drop=True)
        df["unit"] = df["run_id"].astype(str) + "#" + df["repeat"].astype(int).astype(str)
        frames[name] = df
    units = {name: _units(df) for name, df in frames.items()}
    rng = np.random.default_rng(seed)
    print("# Regression-gate experiment\n")
    print(
        "Repeats (fresh worker processes) per set: "
        + ", ".join(f"{n} {len(u)}" for n, u in units.items())
        + f"; {frames['A'].groupby(list(compare.MATCH_KEY)).ngroups} cells; "
        f"{draws} random draws per line.\n"
    )

    # the realised slowdown, from every repeat of each set: ratio of the medians of the
    # per-repeat medians (robust to the repeats another process disturbed)
    key = list(compare.MATCH_KEY)
    print("## Injected slowdown, realised (median over all repeats, vs A)\n")
    print("| set | min over cells | median | max |\n|---|---:|---:|---:|")
    base_med = frames["A"].groupby(key)["latency_ms_median"].median()
    truth: dict[str, list[float]] = {}
    for name in ("B", "S5", "S10"):
        ratio = frames[name].groupby(key)["latency_ms_median"].median() / base_med
        t = truth[name] = sorted(float(x) for x in ratio.dropna())
        print(f"| {name} | {t[0]:.3f} | {float(np.median(t)):.3f} | {t[-1]:.3f} |")

    # run-to-run noise of single repeats: what the single-repeat floor must cover
    logs = []
    for name in ("A", "B"):
        med = frames[name].set_index([*key, "run_id", "repeat"])["latency_ms_median"]
        for _, g in med.groupby(level=list(range(len(key)))):
            v = np.log(g.to_numpy(dtype=float))
            logs.extend(np.abs(v[:, None] - v[None, :])[np.triu_indices(len(v), 1)])
    q = np.quantile(np.expm1(np.asarray(logs)), [0.5, 0.95, 0.99, 1.0])
    print(
        "\n## Single-repeat noise: |ratio - 1| between two repeats of one cell (A and B)\n\n"
        f"median {q[0]:.1%}, 95th percentile {q[1]:.1%}, 99th {q[2]:.1%}, max {q[3]:.1%} "
        f"({len(logs)} pairs)\n"
    )

    print("## Verdicts per cell comparison\n")
    print(
        "| comparison | method | repeats per side | cell comparisons | regression "
        "| inconclusive | unchanged | improvement | naive median +5% |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    methods = {"Welch": 0.0, "Yuen 20%": 0.2}
    table = []
    for label, base, cand in COMPARISONS:
        for kb, kc in ((1, 1), (10, 1), (3, 3), (5, 5), (10, 10)):
            if kc > len(units[cand]) or (base == cand and kb + kc > len(units[base])):
                continue
            k = f"{kb}" if kb == kc else f"{kb} / {kc}"
            for method, trim in methods.items():
                if trim and (kb != kc or kb < 5):
                    continue  # nothing to trim
                s = compare.Settings(metrics=("latency",), trim=trim)
                counts = dict.fromkeys(compare.VERDICTS, 0)
                naive = n = 0
                for _ in range(draws):
                    fb, fc = _draw(rng, frames, units, base, cand, kb, kc)
                    c = compare.compare_sides(compare.Side("b", fb), compare.Side("c", fc), s)
                    for r in c.results:
                        counts[r.verdict] += 1
                    naive += sum(_naive(fb, fc))
                    n += len(c.results)
                table.append(
                    {"comparison": label, "method": method, "k": k, "n": n, **counts,
                     "naive": naive}
                )  # fmt: skip
                print(
                    f"| {label} | {method} | {k} | {n} | {counts['regression'] / n:.1%} "
                    f"| {counts['inconclusive'] / n:.1%} | {counts['unchanged'] / n:.1%} "
                    f"| {counts['improvement'] / n:.1%} | {naive / n:.1%} |",
                    flush=True,
                )
    (out / "summary.json").write_text(
        json.dumps({"units": {k: len(v) for k, v in units.items()}, "truth": truth,
                    "single_repeat_noise_quantiles": q.tolist(), "table": table}, indent=2)
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

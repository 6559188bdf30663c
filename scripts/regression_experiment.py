"""Measure how well `effbench compare` separates noise from real slowdowns, on real runs.

Phase 1, calibration: for each cell of the experiment-only probe models of
``models/_regression_probe.py`` (squeezenet1_1, mobilenet_v3_small, shufflenet_v2_x0_5 at
64 px, batch sizes 1, 2, 4, one thread; 9 cells) count the matmul steps that add 10% and 5%
of that cell's forward time (``calibrate_steps``: interleaved bare / extra blocks in one
process), then measure afresh, the same way, the ratio those counts realise. The counts are
written to ``calibration.json`` and reused by every worker, so each repeat of a slowed set
runs exactly the same extra work.

Phase 2, the sweep (skipped with --analyze-only): one interleaved `effbench run` with four
variants, one per set, ``--repeats`` fresh-process repeats each (short timing windows: many
cheap repeats beat few long ones when the noise is between processes):

    A     the unmodified code                        -> baseline
    B     the same code again                        -> A/A: A vs B, and splits of A+B
    S10   10% more work per forward (calibrated)
    S5    5% more work per forward (calibrated)

The runner alternates the variants' groups, reversing their order every step, so drift of a
shared machine hits every set alike (``exp-A/``, ``exp-B/``, ... under ``--out``).

Phase 3, analysis: draw random subsets of repeats (disjoint when both sides come from the
same pool) and compare them with bench.compare exactly as `effbench compare` does, per
latency statistic (per-repeat median and 10th percentile), test (Welch, Yuen 20%, the
Hodges-Lehmann / Mann-Whitney rank test) and threshold, next to the naive "candidate median
> 1.05 x baseline median" rule; print a markdown report and write ``summary.json``.

    python scripts/regression_experiment.py --out /tmp/regexp     # ~45 min on 2 cores
    python scripts/regression_experiment.py --out /tmp/regexp --analyze-only
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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

STEPS_ENV = "EFFBENCH_PROBE_STEPS"
BASES = ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5")
MODELS = tuple(f"probe_{b}" for b in BASES)
BATCH_SIZES = (1, 2, 4)
SETS = {"A": 0.0, "S10": 0.10, "S5": 0.05, "B": 0.0}
RUN_ARGS = [
    "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--threads", "1", "--image-size", "64",
    "--warmup-iters", "2", "--warmup-time", "0.1",
]  # fmt: skip
STATISTICS = ("median", "p10")
# test name -> Settings fields; Yuen only where both sides have the same 5+ repeats, the rank
# test only where both have 2+ (with fewer, compare falls back to the same path as Welch)
METHODS: dict[str, dict[str, object]] = {
    "Welch": {},
    "Yuen 20%": {"trim": 0.2},
    "rank (HL)": {"test": "rank"},
}
SIDES = (
    (1, 1),
    (10, 1),
    (3, 3),
    (5, 5),
    (10, 10),
    (20, 20),
    (30, 30),
    (50, 50),
    (100, 100),
    (150, 150),
)
DRIFT_FLOORS = (0.0, 0.10, 0.20, 0.30)  # allowances tried on whole runs measured apart
# (label, baseline set, candidate set, thresholds); "AB" pools A and B (the same code), and
# a comparison of a set with itself draws disjoint subsets
COMPARISONS = (
    ("A/A: disjoint random subsets of A+B", "AB", "AB", (0.05, 0.025)),
    ("A/A: A vs B (separate sets)", "A", "B", (0.05,)),
    ("10% slower: A+B vs S10", "AB", "S10", (0.05,)),
    ("5% slower: A+B vs S5", "AB", "S5", (0.05, 0.025)),
)


def snapshot(out: Path) -> Path:
    """Copy bench/ and models/ beside the results: every worker imports the code afresh, so
    edits to the working tree during a sweep must not reach it."""
    snap = out / "code"
    if not snap.exists():
        for pkg in ("bench", "models"):
            shutil.copytree(ROOT / pkg, snap / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return snap


def calibrate(out: Path) -> dict[str, dict[str, int]]:
    """Steps per cell for each slowed set, from ``calibration.json`` or measured now."""
    path = out / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())["steps"]
    from models._regression_probe import calibrate_steps, realised_ratio

    cells, steps = {}, {name: {} for name, f in SETS.items() if f > 0}
    for base in BASES:
        for bs in BATCH_SIZES:
            c = calibrate_steps(base, bs, 1.0)  # steps for 100%: scaled per set below
            key = f"probe_{base}@{bs}"
            for name in steps:
                n = steps[name][key] = max(1, round(SETS[name] * c["forward_s"] / c["step_s"]))
                # checked afresh, in the same way: the ratio these steps realise
                c[f"realised_{name}"] = realised_ratio(base, bs, n)
            cells[key] = c
            print(f"calibrated {key}: {c}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": cells, "steps": steps}, indent=2))
    return steps


def set_dir(out: Path, name: str) -> Path:
    """Where set ``name`` lives: one arm of the interleaved run (``exp-<name>``), or, for
    runs made before interleaving existed, a folder of per-round runs (``<name>/``)."""
    arm = out / f"exp-{name}"
    return arm if arm.exists() else out / name


def run_sets(out: Path, repeats: int, timing: Sequence[str]) -> None:
    """One interleaved `effbench run` whose four variants are the four sets: the runner
    alternates their groups (A B S10 S5, S5 S10 B A, ...), so drift of the machine hits
    every set alike."""
    code = snapshot(out)
    steps = calibrate(out)
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = "models._regression_probe"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    arms = [out / f"exp-{name}" for name in SETS]
    if all((arm / "manifest.json").exists() for arm in arms):
        cmd = [sys.executable, "-m", "bench", "run", "--resume", *map(str, arms)]
    else:
        cmd = [
            sys.executable, "-m", "bench", "run", "--models", ",".join(MODELS),
            *RUN_ARGS, *timing, "--repeats", str(repeats), "--out", str(out), "--run-id", "exp",
        ]  # fmt: skip
        for name in SETS:
            extra = steps.get(name)
            cmd += ["--variant", f"{name}:{STEPS_ENV}={json.dumps(extra)}" if extra else name]
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True, cwd=code, stderr=subprocess.DEVNULL)
    print(f"sweep: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "exp-results")
    p.add_argument("--repeats", type=int, default=150, help="fresh-process repeats per set")
    p.add_argument("--min-time", default="0.3", help="seconds timed per cell (effbench run)")
    p.add_argument("--max-time", default="0.4", help="at most this many seconds per cell")
    p.add_argument("--runs-only", action="store_true")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--draws", type=int, default=100, help="random subsets per comparison")
    p.add_argument(
        "--whole-runs-only", action="store_true", help="analyse only run-vs-run comparisons"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    t0 = time.monotonic()
    if not args.analyze_only:
        timing = ["--min-time", args.min_time, "--max-time", args.max_time]
        run_sets(args.out, args.repeats, timing)
        print(f"calibration and runs: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if not args.runs_only:
        analyze(args.out, args.draws, args.seed, args.whole_runs_only)
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


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _rates(
    label: str,
    k: str,
    picks: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    thresholds: Sequence[float],
    methods: dict[str, dict[str, object]] = METHODS,
    drift_floor: float | None = None,
) -> list[dict[str, object]]:
    """Verdict shares over ``picks`` (baseline, candidate) for every statistic, test and
    threshold, printed as table lines; Yuen only where both sides have 5+ repeats.
    ``drift_floor`` (a fraction) replaces the default allowance for sides measured apart."""
    kb = min(len(set(fb["unit"])) for fb, _ in picks)
    kc = min(len(set(fc["unit"])) for _, fc in picks)
    naive = sum(sum(_naive(fb, fc)) for fb, fc in picks)
    extra = {} if drift_floor is None else {"drift_floor": math.log1p(drift_floor)}
    lines = []
    for stat, (method, fields), t in itertools.product(STATISTICS, methods.items(), thresholds):
        if fields.get("trim") and (kb != kc or kb < 5):
            continue  # nothing to trim
        if fields.get("test") == "rank" and min(kb, kc) < 2:
            continue  # no repeats to rank: the same fallback as Welch
        s = compare.Settings(
            metrics=("latency",),
            threshold=compare.Threshold(t),
            latency_statistic=stat,
            **fields,  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )
        counts = dict.fromkeys(compare.VERDICTS, 0)
        n = 0
        for fb, fc in picks:
            c = compare.compare_sides(compare.Side("b", fb), compare.Side("c", fc), s)
            for r in c.results:
                counts[r.verdict] += 1
            n += len(c.results)
        lines.append(
            {"comparison": label, "statistic": stat, "method": method, "threshold": t, "k": k,
             "n": n, **counts, "naive": naive}
        )  # fmt: skip
        print(
            f"| {label} | {stat} | {method} | {t:.1%} | {k} | {n} "
            f"| {_pct(counts['regression'] / n)} | {_pct(counts['inconclusive'] / n)} "
            f"| {_pct(counts['unchanged'] / n)} | {_pct(counts['improvement'] / n)} "
            f"| {_pct(naive / n)} |",
            flush=True,
        )
    return lines


def analyze(out: Path, draws: int, seed: int, whole_runs_only: bool = False) -> None:
    frames = {}
    for name in SETS:
        df = load_results([set_dir(out, name)])
        df = df[df["status"] == "ok"].reset_index(drop=True)
        df["unit"] = df["run_id"].astype(str) + "#" + df["repeat"].astype(int).astype(str)
        # only what the comparison reads (it is run tens of thousands of times)
        cols = dict.fromkeys([*compare.MATCH_KEY, "status", "run_id", "repeat", "unit",
                              *compare.LATENCY_STATISTICS.values(), "latency_ms_samples",
                              *compare.ROW_KEYS, "timestamp"])  # fmt: skip
        frames[name] = pd.DataFrame({c: df[c].tolist() for c in cols})
    frames["AB"] = pd.concat([frames["A"], frames["B"]], ignore_index=True)
    units = {name: _units(df) for name, df in frames.items()}
    key = list(compare.MATCH_KEY)
    calibration = json.loads((out / "calibration.json").read_text())
    print("# Regression-gate experiment\n")
    print(
        "Repeats (fresh worker processes) per set: "
        + ", ".join(f"{n} {len(u)}" for n, u in units.items())
        + f"; {frames['A'].groupby(key).ngroups} cells; {draws} random draws per line.\n"
    )
    steps = calibration["steps"]
    print(
        "Calibrated extra work, steps per forward (min-max over cells): "
        + "; ".join(f"{n} {min(s.values())}-{max(s.values())}" for n, s in steps.items())
        + "\n"
    )
    cal = calibration["cells"].values()
    checked = {n: sorted(c[f"realised_{n}"] for c in cal if f"realised_{n}" in c) for n in steps}
    if all(checked.values()):
        print(
            "Ratio the counts realise, measured afresh in one process (interleaved blocks, "
            "min-median-max over cells): "
            + "; ".join(
                f"{n} {v[0]:.3f} / {v[len(v) // 2]:.3f} / {v[-1]:.3f}" for n, v in checked.items()
            )
            + "\n"
        )

    # the realised slowdown, from every repeat of each set: ratio of the medians of the
    # per-repeat statistic (robust to the repeats another process disturbed)
    print("## Realised slowdown (median over all repeats of the per-repeat value, vs A)\n")
    print("| set | per-repeat value | min over cells | median | max |\n|---|---|---:|---:|---:|")
    truth: dict[str, dict[str, list[float]]] = {}
    for stat in STATISTICS:
        col = compare.LATENCY_STATISTICS[stat]
        base_med = frames["A"].groupby(key)[col].median()
        for name in ("B", "S10", "S5"):
            ratio = frames[name].groupby(key)[col].median() / base_med
            t = sorted(float(x) for x in ratio.dropna())
            truth.setdefault(name, {})[stat] = t
            print(f"| {name} | {stat} | {t[0]:.3f} | {float(np.median(t)):.3f} | {t[-1]:.3f} |")

    # run-to-run noise of single repeats: what the single-repeat floor must cover
    noise = {}
    print("\n## Run-to-run noise (sets A and B)\n")
    print(
        "| per-repeat value | sd of log, median over cells | pairs of repeats: median "
        "abs difference | 95th pct | 99th pct | max |\n|---|---:|---:|---:|---:|---:|"
    )
    for stat in STATISTICS:
        col = compare.LATENCY_STATISTICS[stat]
        logs, sds = [], []
        for name in ("A", "B"):
            med = frames[name].set_index([*key, "run_id", "repeat"])[col]
            for _, g in med.groupby(level=list(range(len(key)))):
                v = np.log(g.to_numpy(dtype=float))
                sds.append(float(np.std(v, ddof=1)))
                logs.extend(np.abs(v[:, None] - v[None, :])[np.triu_indices(len(v), 1)])
        q = np.quantile(np.expm1(np.asarray(logs)), [0.5, 0.95, 0.99, 1.0])
        noise[stat] = {"sd_log_median": float(np.median(sds)), "pair_quantiles": q.tolist()}
        print(
            f"| {stat} | {np.median(sds):.3f} | {_pct(q[0])} | {_pct(q[1])} | {_pct(q[2])} "
            f"| {_pct(q[3])} |"
        )

    print("\n## Verdicts per cell comparison\n")
    print(
        "| comparison | per-repeat value | test | threshold | repeats per side "
        "| cell comparisons | regression | inconclusive | unchanged | improvement "
        "| naive median +5% |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(seed)
    table: list[dict[str, object]] = []
    for label, base, cand, thresholds in () if whole_runs_only else COMPARISONS:
        for kb, kc in SIDES:
            if kb > len(units[base]) or kc > len(units[cand]):
                continue
            if base == cand and kb + kc > len(units[base]):
                continue
            k = f"{kb}" if kb == kc else f"{kb} / {kc}"
            # one set of draws per line group, shared by every statistic and test, so the
            # rows of a group differ only in the method
            picks = [_draw(rng, frames, units, base, cand, kb, kc) for _ in range(draws)]
            table += _rates(label, k, picks, thresholds)

    # a stored baseline: one whole run against one whole run measured at another time
    # (only where a set was measured as several separate runs, as before interleaving)
    runs = {n: sorted(set(f["run_id"])) for n, f in frames.items() if n != "AB"}
    if all(len(r) > 1 for r in runs.values()):
        for label, base, cand, thresholds in COMPARISONS:
            base, cand = ("A", "A") if cand == "AB" else ("A" if base == "AB" else base, cand)
            pairs = [(rb, rc) for rb in runs[base] for rc in runs[cand] if rb != rc]
            picks = [
                (
                    frames[base][frames[base]["run_id"] == rb],
                    frames[cand][frames[cand]["run_id"] == rc],
                )
                for rb, rc in pairs
            ]
            reps = len(picks[0][0]) // frames[base].groupby(key).ngroups
            for floor in DRIFT_FLOORS:
                table += _rates(
                    f"{label}; one run vs one run, drift allowance {floor:.0%}",
                    f"{reps} (whole runs)",
                    picks,
                    thresholds[:1],
                    {m: METHODS[m] for m in ("Welch", "rank (HL)")},
                    floor,
                )

    (out / "summary.json").write_text(
        json.dumps({"units": {k: len(v) for k, v in units.items()}, "calibration": calibration,
                    "truth": truth, "noise": noise, "table": table}, indent=2)
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

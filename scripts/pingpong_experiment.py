"""The ping-pong gate's acceptance benchmark (docs/compare.md, "Ping-pong arms: measured"),
on the injected-slowdown networks of ``models/_regression_probe.py``.

1. Calibration (``calibration.json``, reused when present): per cell, the matmul steps
   that add 5% to the forward (``calibrate_steps``, as scripts/regression_experiment.py).
2. Gate runs, taking turns: an A/A gate (arms ``A`` and ``B``, the same code) and a 5%
   gate (arms ``A`` and ``S5``, the calibrated steps), each one
   `effbench run --pingpong --variant A:python=PY --variant X:python=PY ...` over every
   cell, as the CI recipe runs two checkouts; its wall time is recorded.
3. After each gate run, today's fresh-process mode on the same arms at the same wall time:
   `effbench run --variant ...` (interleaved fresh workers) with as many repeats as fit in
   the gate run's wall time (the time per repeat is measured by the first such run).
4. Analysis: every run compared as the gate would (`bench.compare`): ping-pong with the
   paired test at ``--threshold`` (2.5% by default: a true 5% change must clear it); the
   fresh-process runs with the default Welch test and with ``--test rank --latency-stat
   p10`` (docs/compare.md's advice for a contended machine), at the same threshold. Prints
   the verdict rates per mode side by side with the wall times and the host's load
   (``os.getloadavg``) before and after each run; writes ``summary.json``.

    python scripts/pingpong_experiment.py --out /tmp/ppexp --runs 20        # the acceptance
    python scripts/pingpong_experiment.py --out /tmp/ppexp-small --runs 2 \\
        --models probe_squeezenet1_1 --batch-sizes 1 --bursts 6              # a smoke test
    python scripts/pingpong_experiment.py --out /tmp/ppfork --runs 6 --sessions 10 \\
        --bursts 4 --no-fresh --forked        # many forked sessions per cell (--repeats 10)
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

PLUGIN = "models._regression_probe"
STEPS_ENV = "EFFBENCH_PROBE_STEPS"
MODELS = ("probe_squeezenet1_1", "probe_mobilenet_v3_small", "probe_shufflenet_v2_x0_5")
SLOWDOWN = 0.05
COMMON = ["--threads", "1", "--image-size", "64", "--remeasure", "0", "--no-ceilings"]
FRESH_TIMING = [
    "--warmup-iters",
    "2",
    "--warmup-time",
    "0.1",
    "--min-time",
    "0.3",
    "--max-time",
    "0.4",
]  # fmt: skip  (scripts/regression_experiment.py's)


def calibrate(out: Path, models: list[str], batch_sizes: list[int]) -> str:
    """``$EFFBENCH_PROBE_STEPS`` for the 5% set, from ``calibration.json`` or measured."""
    path = out / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())["steps"]
    from models._regression_probe import calibrate_steps

    cells, steps = {}, {}
    for model in models:
        for b in batch_sizes:
            c = calibrate_steps(model.removeprefix("probe_"), b, SLOWDOWN)
            steps[f"{model}@{b}"] = int(c["steps"])
            cells[f"{model}@{b}"] = c
            print(f"calibrated {model}@{b}: {c}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(steps)
    path.write_text(json.dumps({"cells": cells, "steps": text}, indent=2))
    return text


def environment(out: Path) -> str:
    """The interpreter both arms run, as the CI recipe's checkouts do: a virtualenv that
    imports torch from this interpreter's packages and effbench from a snapshot of this
    checkout (``out/code``: edits to the working tree during the runs do not reach them)."""
    import shutil
    import sysconfig

    code, venv = out / "code", out / "venv"
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    for pkg in ("bench", "models"):
        shutil.copytree(ROOT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "effbench_snapshot.pth").write_text(
        f"{code}\nimport site; site.addsitedir({ours!r})\n"
    )
    return str(python)


def arms(py: str | None, candidate: str, steps: str) -> list[str]:
    """``python=`` arms of the snapshot's interpreter; with ``py`` None (``--forked``)
    environment arms, whose workers the run's fork server forks."""
    if py is None:
        other = "B:EFFBENCH_AA=b" if candidate == "B" else f"S5:{STEPS_ENV}={steps}"
        return ["--variant", "A:EFFBENCH_AA=a", "--variant", other]
    out = ["--variant", f"A:python={py}", "--variant", f"{candidate}:python={py}"]
    if candidate == "S5":
        out += ["--variant", f"S5:{STEPS_ENV}={steps}"]
    return out


def run(out: Path, run_id: str, args: list[str], code: Path | None = None) -> dict[str, object]:
    """One `effbench run` with the probe plugin, from the snapshot ``code`` (default
    ``out/code``; :data:`ROOT` for this checkout), in ``out`` (so that only ``code`` is on
    its path); its wall time and the host's load before and after. Exits with the run's
    stderr if it fails."""
    out = out.resolve()
    code = code or out / "code"
    env = {**os.environ, "EFFBENCH_PLUGINS": PLUGIN, "PYTHONPATH": str(code)}
    load0 = os.getloadavg()
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", *args, "--out", str(out), "--run-id", run_id],
        env=env, capture_output=True, text=True, cwd=out,
    )  # fmt: skip
    wall = time.monotonic() - t0
    (out / f"{run_id}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{run_id} failed:\n{done.stderr[-3000:]}")
    return {"run_id": run_id, "wall_s": wall, "load_before": load0, "load_after": os.getloadavg()}


def verdicts(base: Path, cand: Path, **settings: object) -> dict[str, int]:
    s = compare.Settings(metrics=("latency",), **settings)  # type: ignore[arg-type]
    c = compare.compare_paths(base, cand, s, allow_env_mismatch=True)
    counts = {v: c.count(v) for v in compare.VERDICTS}
    counts["contended"] = sum(r.evidence == "contended" for r in c.results)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=20, help="gate runs, A/A and 5%% taking turns")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--bursts", type=int, default=20)
    ap.add_argument("--burst-time", type=float, default=0.2)
    ap.add_argument("--threshold", default="2.5%")
    ap.add_argument("--no-fresh", action="store_true", help="skip the fresh-process runs")
    ap.add_argument("--sessions", type=int, default=1, help="sessions per cell (--repeats)")
    ap.add_argument(
        "--forked",
        action="store_true",
        help="environment arms: every session's workers forked from the run's fork server "
        "(torch imported once), not a new interpreter per session and arm",
    )
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    models, sizes = args.models.split(","), [int(b) for b in args.batch_sizes.split(",")]
    steps = calibrate(out, models, sizes)
    py = environment(out)  # the snapshot, also what the runner imports (PYTHONPATH)
    if args.forked:
        py = None
    sweep = ["--models", args.models, "--batch-sizes", args.batch_sizes, *COMMON]
    threshold = compare.Threshold.parse(args.threshold)
    log_path = out / "runs.json"
    runs: list[dict[str, object]] = json.loads(log_path.read_text()) if log_path.exists() else []
    per_repeat_s = next((r["per_repeat_s"] for r in runs if "per_repeat_s" in r), None)
    for i in range(len([r for r in runs if r["mode"] == "pingpong"]), args.runs):
        cand = "S5" if i % 2 else "B"
        bursts = ["--pingpong", "--bursts", str(args.bursts), "--burst-time", str(args.burst_time),
                  "--repeats", str(args.sessions)]  # fmt: skip
        pp = run(out, f"pp{i}", [*sweep, *arms(py, cand, steps), *bursts])
        runs.append({**pp, "mode": "pingpong", "candidate": cand})
        if not args.no_fresh:
            # as many fresh repeats as fit in the ping-pong run's wall time (at least 2)
            repeats = 5 if per_repeat_s is None else max(2, round(pp["wall_s"] / per_repeat_s))
            fresh = run(out, f"fr{i}", [*sweep, *arms(py, cand, steps), *FRESH_TIMING,
                                        "--repeats", str(repeats)])  # fmt: skip
            if per_repeat_s is None:
                per_repeat_s = float(fresh["wall_s"]) / repeats  # type: ignore[arg-type]
                fresh["per_repeat_s"] = per_repeat_s
            runs.append({**fresh, "mode": "fresh", "candidate": cand, "repeats": repeats})
        log_path.write_text(json.dumps(runs, indent=2))
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for r in runs:
        rid, cand = str(r["run_id"]), str(r["candidate"])
        base, other = out / f"{rid}-A", out / f"{rid}-{cand}"
        ways = (
            {"ping-pong, paired": {}}
            if r["mode"] == "pingpong"
            else {
                "fresh, Welch": {},
                "fresh, rank p10": {"test": "rank", "latency_statistic": "p10"},
            }
        )
        for name, settings in ways.items():
            got = verdicts(base, other, threshold=threshold, **settings)
            r[name] = got
            key = (name, "A/A" if cand == "B" else "5% slower")
            acc = tally.setdefault(key, {"cells": 0})
            acc["cells"] += sum(got[v] for v in compare.VERDICTS)
            for v, n in got.items():
                acc[v] = acc.get(v, 0) + n
    lines = [
        "| mode | comparison | cells | regression | inconclusive (contended) | unchanged | "
        "improvement | wall time per gate run |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, comp), acc in sorted(tally.items()):
        mode = "pingpong" if name.startswith("ping") else "fresh"
        walls = [float(r["wall_s"]) for r in runs if r["mode"] == mode]  # type: ignore[arg-type]
        n = acc["cells"] or 1
        lines.append(
            f"| {name} | {comp} | {acc['cells']} | {acc['regression'] / n:.1%} | "
            f"{acc['inconclusive'] / n:.1%} ({acc['contended'] / n:.1%}) | "
            f"{acc['unchanged'] / n:.1%} | {acc['improvement'] / n:.1%} | "
            f"{min(walls):.0f}-{max(walls):.0f} s |"
        )
    loads = [(r["run_id"], r["load_before"][0], r["load_after"][0]) for r in runs]  # type: ignore[index]
    summary = {"runs": runs, "table": lines, "threshold": args.threshold}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n".join(lines))
    print("\nload average (1 min) before/after each run: "
          + ", ".join(f"{rid} {a:.1f}/{b:.1f}" for rid, a, b in loads))  # fmt: skip


if __name__ == "__main__":
    main()

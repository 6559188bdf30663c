"""Do ping-pong sessions forked from one interpreter carry independent offsets?

docs/compare.md ("Why about twelve") found that one ping-pong worker can run the same code a
few percent faster than another for its whole life (an A/A offset of sd about 3.3% between
sessions), so a 5% change needs about twelve sessions per cell; with a new interpreter per
session and arm (``python=`` arms, 3-4 s each with torch) twelve do not fit in five minutes.
Forking each session's workers from an interpreter that has already imported torch costs
about 0.1 s, but it only helps if forked workers carry offsets of their own. This script
measures it with A/A ping-pong runs of the injected-slowdown networks (no slowdown set):

- ``fork``: environment arms (``--variant A:EFFBENCH_AA=a --variant B:EFFBENCH_AA=b``),
  every session's two workers forked from the run's one fork server (torch imported once);
- ``fresh``: the same with ``--executor subprocess``, a new interpreter per session and arm
  (what ``python=`` arms get today).

Each run has ``--sessions`` sessions (``--repeats``) per cell; the modes take turns, so the
host's slow drift hits both alike. Per session, the mean log ratio B/A of its pairs and its
own Newey-West variance (bench.stats.paired); per mode, the offset sd ``tau`` as compare
estimates it (the variance of the session means less their mean own variance), within a run
and between the runs' means. If ``fork``'s tau is about ``fresh``'s, forked workers are as
independent as new interpreters and many forked sessions per cell are affordable; if it is
near 0, forked siblings share their server's offset (and two ``python=`` arms, which cannot
share a server, would keep a per-run offset that more sessions cannot average away).

    python scripts/session_offset_experiment.py --out /tmp/offsets --runs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare.pairing import cell_pairs  # noqa: E402
from bench.stats.paired import paired_hac  # noqa: E402
from bench.store import load_results  # noqa: E402
from scripts.pingpong_experiment import run as run_effbench  # noqa: E402

MODELS = "probe_squeezenet1_1,probe_mobilenet_v3_small,probe_shufflenet_v2_x0_5"
COMMON = ["--threads", "1", "--image-size", "64", "--remeasure", "0", "--no-ceilings"]
MODES = {"fork": [], "fresh": ["--executor", "subprocess"]}


def sessions(out: Path, run_id: str) -> dict[str, list[tuple[float, float]]]:
    """Per cell (model@batch): each session's (mean log ratio B/A, its own variance)."""
    a, b = load_results([out / f"{run_id}-A"]), load_results([out / f"{run_id}-B"])
    cells: dict[str, list[tuple[float, float]]] = {}
    for (model, batch), rows_a in a[a["status"] == "ok"].groupby(["model", "batch_size"]):
        rows_b = b[(b["model"] == model) & (b["batch_size"] == batch) & (b["status"] == "ok")]
        pairs = cell_pairs(rows_a, rows_b, "median")
        if pairs is None:
            continue
        cells[f"{model}@{batch}"] = [
            (float(s.mean()), paired_hac([s]).se ** 2) for s in pairs.log_ratios() if len(s) >= 2
        ]
    return cells


def tau(means: np.ndarray, own_var: np.ndarray) -> float:
    """The offsets' sd as compare estimates it (0 when the pairs explain the spread)."""
    if len(means) < 2:
        return float("nan")
    return float(np.sqrt(max(0.0, means.var(ddof=1) - own_var.mean())))


def summarise(runs: list[dict[str, object]], out: Path) -> dict[str, object]:
    """Per mode: tau within runs (pooled over runs and cells), tau between the runs' means,
    the sessions' own se, and every session's mean."""
    summary: dict[str, object] = {}
    for mode in MODES:
        within_var, own, run_means, detail = [], [], {}, {}
        for r in (r for r in runs if r["mode"] == mode):
            for cell, ss in sessions(out, str(r["run_id"])).items():
                m = np.array([s[0] for s in ss])
                v = np.array([s[1] for s in ss])
                if len(m) >= 2:
                    within_var.append(m.var(ddof=1) - v.mean())
                own.extend(v.tolist())
                run_means.setdefault(cell, []).append(float(m.mean()))
                detail.setdefault(cell, []).append([round(float(x), 4) for x in m])
        between = [np.var(ms, ddof=1) for ms in run_means.values() if len(ms) >= 2]
        summary[mode] = {
            "tau_within_run": float(np.sqrt(max(0.0, np.mean(within_var)))) if within_var else None,
            "tau_between_runs_of_run_means": float(np.sqrt(np.mean(between))) if between else None,
            "session_own_se_median": float(np.sqrt(np.median(own))) if own else None,
            "session_means_per_cell_and_run": detail,
        }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3, help="runs per mode (modes take turns)")
    ap.add_argument("--sessions", type=int, default=6, help="sessions per cell and run")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--batch-sizes", default="1")
    ap.add_argument("--bursts", type=int, default=10)
    ap.add_argument("--burst-time", type=float, default=0.2)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.json"
    runs: list[dict[str, object]] = json.loads(log.read_text()) if log.exists() else []
    sweep = [
        "--models", args.models, "--batch-sizes", args.batch_sizes, *COMMON, "--pingpong",
        "--bursts", str(args.bursts), "--burst-time", str(args.burst_time),
        "--repeats", str(args.sessions),
        "--variant", "A:EFFBENCH_AA=a", "--variant", "B:EFFBENCH_AA=b",
    ]  # fmt: skip
    modes = args.modes.split(",")
    for i in range(args.runs):
        for mode in modes:
            rid = f"{mode}{i}"
            if any(r["run_id"] == rid for r in runs):
                continue
            r = run_effbench(out, rid, [*sweep, *MODES[mode]], code=ROOT)
            runs.append({**r, "mode": mode})
            log.write_text(json.dumps(runs, indent=2))
            print(f"{rid}: {r['wall_s']:.0f} s, load {r['load_before']} -> {r['load_after']}",
                  file=sys.stderr, flush=True)  # fmt: skip
    summary = {"runs": runs, **summarise(runs, out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for mode in modes:
        s = summary[mode]
        print(f"{mode}: tau within a run {s['tau_within_run']}, between run means "
              f"{s['tau_between_runs_of_run_means']}, a session's own se "
              f"{s['session_own_se_median']}")  # fmt: skip


if __name__ == "__main__":
    main()

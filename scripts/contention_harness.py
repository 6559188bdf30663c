"""The contention harness: how well the verdicts (bench.quality) tell contended cells from
quiet ones, measured with real sweeps and a bounded load this script starts and stops itself
(bench.loadgen.CpuLoad: local spinning processes, at most 60 s each). docs/noise.md reports
what it printed.

    python scripts/contention_harness.py quiet  OUT [--repeats 2]     # >= 100 cells, no load
    python scripts/contention_harness.py loaded OUT [--start 20 --for 50]
    python scripts/contention_harness.py intermittent OUT [--on 20 --off 20 --references 3]

- ``quiet``: the default CPU sweep (60 cells) ``--repeats`` times with re-measurement off,
  after checking the host is quiet; prints the share of cells judged ``contended`` and
  ``noisy`` and names them.
- ``loaded``: the same sweep once, re-measurement off, with the load (one spinning process
  per core, plus one) on from ``--start`` to ``--start + --for`` seconds into the sweep;
  prints the share of the cells measured entirely inside that interval that were judged
  ``contended`` or ``noisy`` (the target is 95% or more), and the same for the cells
  entirely outside it.
- ``intermittent``: nine cells measured on a quiet host ``--references`` times (default 3;
  the reference is each cell's median, and the script prints how far one quiet run strays
  from it), then again
  with re-measurement on (``--remeasure``, default 2) while the load goes on for ``--on`` s
  and off for ``--off`` s for at most 60 s; prints, per cell, the kept latency (the best
  attempt, as the report and compare keep it) against the reference (the target is within
  ±10% for every cell).

Each run folder stays in OUT for `effbench show` and `effbench report`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import MAX_S, CpuLoad  # noqa: E402
from bench.preflight import check_host  # noqa: E402
from bench.store import best_attempts, load_results  # noqa: E402

CORES = len(os.sched_getaffinity(0))
INTERMITTENT = ["--models", "resnet18,mobilenet_v2,squeezenet1_1", "--batch-sizes", "1,2,4"]


def effbench(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bench", "run", *args]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    print("\n".join(done.stderr.strip().splitlines()[-4:]), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"effbench run failed ({done.returncode})")
    return done


def _wait_quiet() -> None:
    check = check_host(seconds=1.0)
    while check.busy:
        print(f"waiting: {check.describe()}", flush=True)
        time.sleep(5)
        check = check_host(seconds=1.0)
    print(check.describe(), flush=True)


def _rates(rows: pd.DataFrame, title: str) -> None:
    ok = rows[rows["status"] == "ok"]
    n = len(ok)
    counts = ok["quality"].value_counts().to_dict()
    flagged = counts.get("contended", 0) + counts.get("noisy", 0)
    print(f"\n{title}: {n} cells")
    for q in ("clean", "noisy", "contended", "implausible"):
        c = counts.get(q, 0)
        print(f"  {q:<12} {c:>4}  {c / n if n else 0:6.1%}")
    print(f"  contended or noisy: {flagged}/{n} = {flagged / n if n else 0:.1%}")
    for q in ("contended", "implausible"):
        for r in ok[ok["quality"] == q].itertuples():
            print(f"  {q}: {r.model} bs={r.batch_size} r{r.repeat}: {r.quality_reason}")


def quiet(out: Path, repeats: int) -> None:
    _wait_quiet()
    run_id = f"quiet-{dt.datetime.now():%H%M%S}"
    effbench("--repeats", str(repeats), "--remeasure", "0", "--out", str(out), "--run-id", run_id)
    _rates(load_results([out / run_id]), f"quiet host, {run_id}")


def _when(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    start = pd.to_datetime(rows["timestamp"], utc=True)
    return start, start + pd.to_timedelta(rows["cell_wall_s"], unit="s")


def loaded(out: Path, start_s: float, for_s: float) -> None:
    _wait_quiet()
    run_id = f"loaded-{dt.datetime.now():%H%M%S}"
    window: dict[str, dt.datetime] = {}

    def load() -> None:
        time.sleep(start_s)
        with CpuLoad(CORES + 1, max_s=min(for_s, MAX_S)):
            window["on"] = dt.datetime.now(dt.timezone.utc)
            time.sleep(min(for_s, MAX_S))
        window["off"] = dt.datetime.now(dt.timezone.utc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    effbench("--remeasure", "0", "--out", str(out), "--run-id", run_id)
    thread.join()
    rows = load_results([out / run_id])
    begin, end = _when(rows)
    on, off = pd.Timestamp(window["on"]), pd.Timestamp(window["off"])
    inside = rows[(begin >= on) & (end <= off)]
    outside = rows[(end < on) | (begin > off)]
    print(f"\nload on {on:%H:%M:%S} - {off:%H:%M:%S} ({CORES + 1} spinning processes)")
    _rates(inside, "cells measured entirely while the load ran")
    _rates(outside, "cells measured entirely outside it")


def intermittent(
    out: Path,
    on_s: float,
    off_s: float,
    remeasure: int,
    references: int,
    threads: int | None,
    cell_repeats: int,
) -> None:
    sweep = [*INTERMITTENT, "--repeats", str(cell_repeats)]
    sweep += ["--threads", str(threads)] if threads else []
    stamp = f"{dt.datetime.now():%H%M%S}"
    cell = ["model", "batch_size"]
    quiet = []
    for i in range(references):
        _wait_quiet()
        run_id = f"ref{i}-{stamp}"
        effbench(*sweep, "--remeasure", "0", "--out", str(out), "--run-id", run_id)
        quiet.append(_per_cell(load_results([out / run_id])))
    refs = pd.concat(quiet)
    ref = refs.groupby(cell, as_index=False)["latency_ms_median"].median()
    if references > 1:  # how far one quiet run strays from the quiet median: the floor
        stray = refs.merge(ref, on=cell, suffixes=("", "_ref"))
        dev = (stray["latency_ms_median"] / stray["latency_ms_median_ref"] - 1).abs()
        print(f"\n{references} quiet reference runs: one run's latency strays from their "
              f"median by {dev.median():.1%} (median), {dev.max():.1%} (most); "
              f"{(dev > 0.10).sum()} of {len(dev)} beyond ±10%")  # fmt: skip
    _wait_quiet()
    load = CpuLoad(CORES + 1, max_s=MAX_S, on_s=on_s, off_s=off_s).start()
    try:
        effbench(*sweep, "--remeasure", str(remeasure), "--out", str(out),
                 "--run-id", f"intermittent-{stamp}")  # fmt: skip
    finally:
        load.stop()
    rows = load_results([out / f"intermittent-{stamp}"])
    kept = _per_cell(best_attempts(rows))
    both = kept.merge(ref[[*cell, "latency_ms_median"]], on=cell, suffixes=("", "_ref"))
    both["ratio"] = both["latency_ms_median"] / both["latency_ms_median_ref"]
    attempts = rows.groupby(cell)["attempt"].max() + 1
    print(
        f"\nload {on_s:g} s on / {off_s:g} s off for at most {MAX_S:g} s; --remeasure {remeasure}"
    )
    print(f"{'cell':<24} {'ref ms':>9} {'kept ms':>9} {'ratio':>7} attempts quality")
    for r in both.itertuples():
        name = f"{r.model} bs={r.batch_size}"
        print(f"{name:<24} {r.latency_ms_median_ref:9.2f} {r.latency_ms_median:9.2f} "
              f"{r.ratio:7.3f} {attempts[(r.model, r.batch_size)]:>8} {r.quality}")  # fmt: skip
    within = ((both["ratio"] - 1).abs() <= 0.10).sum()
    print(f"within ±10% of the quiet reference: {within}/{len(both)}")


def _per_cell(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, batch size): the median latency over the repeats, the worst quality."""
    from bench.quality import rank

    cell = ["model", "batch_size"]
    ranked = rows.assign(_r=rows["quality"].map(rank)).sort_values("_r", kind="stable")
    worst = ranked.groupby(cell, as_index=False).last()[[*cell, "quality"]]
    med = rows.groupby(cell, as_index=False)["latency_ms_median"].median()
    return med.merge(worst, on=cell)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("quiet", "loaded", "intermittent"))
    p.add_argument("out", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--start", type=float, default=20.0)
    p.add_argument("--for", dest="for_s", type=float, default=50.0)
    p.add_argument("--on", type=float, default=20.0)
    p.add_argument("--off", type=float, default=20.0)
    p.add_argument("--remeasure", type=int, default=2)
    p.add_argument("--references", type=int, default=3, help="quiet reference runs (median)")
    p.add_argument("--threads", type=int, default=None, help="intermittent: threads per cell")
    p.add_argument("--cell-repeats", type=int, default=1, help="intermittent: --repeats")
    a = p.parse_args()
    if a.mode == "quiet":
        quiet(a.out, a.repeats)
    elif a.mode == "loaded":
        loaded(a.out, a.start, a.for_s)
    else:
        intermittent(a.out, a.on, a.off, a.remeasure, a.references, a.threads, a.cell_repeats)


if __name__ == "__main__":
    main()

"""Soak test of the runner's durability (issue 11): 20 rounds of start or resume, a random
signal at a random moment, then a final resume. Slow: `nox -s tests -- -m slow -k soak -s`
prints one line per round."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, effbench
from procs import descendants
from test_reliability import _assert_nothing_left

from bench import load_results
from bench.keys import RowKey

ROUNDS = 20
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
# 120 cells: enough that most of the 20 rounds land mid-run on a quiet 2-core machine
PLAN = ["--models", "tiny_mlp,alloc64,env_width", "--batch-sizes", "1,2,3,4", "--repeats", "10"]
PLAN += ["--min-time", "0.3", "--max-time", "0.4", "--warmup-iters", "1", "--warmup-time", "0"]


@pytest.mark.slow
def test_soak_random_signals_then_resume_leaves_every_cell_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("EFFBENCH_SOAK_SEED", "11")))
    out = tmp_path / "results"
    run_dir = out / "soak"
    log = tmp_path / "round.err"
    lines = []
    for i in range(ROUNDS):
        args = (
            ["run", "--resume", str(run_dir)]
            if (run_dir / "manifest.json").exists()
            else ["run", *PLAN, "--out", str(out), "--run-id", "soak"]
        )
        before = len(list(run_dir.glob("part-*.parquet")))
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench", *args],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        delay = rng.uniform(3.0, 12.0)  # start-up (torch import) takes 3-6 s here
        sig = rng.choice(SIGNALS)
        time.sleep(delay)
        procs = descendants(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole job
        else:
            proc.send_signal(sig)
        code = proc.wait(timeout=20)
        _assert_nothing_left(proc.pid, procs)
        text = log.read_text()
        assert "Traceback" not in text, text
        if code != 0:  # 0: the round finished before the signal landed
            assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), text
        # a SIGKILL between a part's temporary write and its rename leaves the temporary
        # file (the next resume deletes it); a part file itself is always whole
        if any(run_dir.glob("part-*.parquet")):
            load_results([run_dir])  # raises on a part that is not whole
        after = len(list(run_dir.glob("part-*.parquet")))
        partial = len(list(run_dir.glob(".*.tmp")))
        lines.append(
            f"round {i + 1:2d}: {sig.name:<7} after {delay:4.1f} s -> exit {code:4d}, "
            f"rows {before:3d} -> {after:3d}, partial writes left {partial}"
        )
    final = effbench(["run", "--resume", str(run_dir)])
    assert final.returncode == 0, final.stderr
    print("\n".join(lines))
    print(f"final resume: {final.stderr.strip().splitlines()[-2]}")

    manifest = json.loads((run_dir / "manifest.json").read_text())
    planned = {
        RowKey.of({**g, "batch_size": b}) for g in manifest["plan"] for b in g["batch_sizes"]
    }
    df = load_results([run_dir])
    got = [RowKey.of(r) for r in df.to_dict(orient="records")]
    assert len(planned) == 3 * 4 * 10
    assert len(got) == len(set(got)), "a cell has two rows"
    assert set(got) == planned, "a row is missing or came from another plan"
    assert set(df["run_id"]) == {"soak"}
    assert set(df["status"]) == {"ok"}, df[df["status"] != "ok"][["model", "status", "error"]]
    assert not list(run_dir.glob(".*.tmp")), "a partial write outlived the final resume"

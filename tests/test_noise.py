"""Contention end to end (docs/noise.md): real CPU load from bench.loadgen while real sweeps
of tiny test models run; the rows' verdicts, the closing line, `show`, --require-quiet,
re-measurement and resume. The rules themselves are tested in test_quality.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, effbench

from bench import load_results
from bench.loadgen import CpuLoad
from bench.plan import Group
from bench.runner import pending_groups
from bench.store import best_attempts

CORES = len(os.sched_getaffinity(0))
# they make real load and judge it: alone on the host (`nox -s tests` runs them after the rest)
pytestmark = pytest.mark.serial


# the suite turns the contended verdict off (tests/conftest.py); these tests are about it.
# Every command runs in a process of its own, as a user's does: beside a load it did not start.
def judged() -> dict[str, str]:
    return {**os.environ, "EFFBENCH_JUDGE_CONTENTION": "1"}


PLAN = ["run", "--models", "tiny_mlp,lenet5", "--batch-sizes", "1,2", "--threads", str(CORES)]
# Windows long enough for the clock-tick readings of /proc/stat (10 ms) to tell: a 50 ms
# window is within their error (bench.probes.contention) and only the run waits could say.
TIMING = ["--min-time", "0.5", "--max-time", "0.6", "--warmup-iters", "1", "--warmup-time", "0"]


def test_under_load_every_cell_is_contended_and_every_reader_says_so(tmp_path: Path) -> None:
    with CpuLoad(CORES + 1, max_s=40):
        time.sleep(0.3)
        r = effbench(
            [*PLAN, *TIMING, "--out", str(tmp_path), "--run-id", "busy"], env=judged(), process=True
        )
    assert r.returncode == 0, r.stderr
    rows = load_results([tmp_path / "busy"])
    assert len(rows) == 4 and set(rows["quality"]) == {"contended"}
    assert rows["quality_reason"].str.contains("other processes kept").all()
    # the pre-flight warned before the first cell, and says it in the manifest
    assert "effbench: warning: host busy" in r.stderr and "--threads" in r.stderr
    manifest = json.loads((tmp_path / "busy" / "manifest.json").read_text())
    assert manifest["preflight"][0]["busy"] is True
    # the closing line: never "ok" alone
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("effbench: 4 cells: 4 contended") and "--resume" in last
    shown = effbench(
        ["show", str(tmp_path / "busy"), "--format", "json"], env=judged(), process=True
    )
    assert {row["quality"] for row in json.loads(shown.stdout)} == {"contended"}


def test_require_quiet_refuses_a_busy_host_before_writing_anything(tmp_path: Path) -> None:
    with CpuLoad(CORES + 1, max_s=20):
        time.sleep(0.3)
        r = effbench([*PLAN, *TIMING, "--out", str(tmp_path), "--require-quiet"],
                     env={**judged(), "EFFBENCH_PREFLIGHT_S": "0.5"}, process=True)  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("effbench: error: host busy")
    assert "--require-quiet" in lines[0]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_contended_cells_are_measured_again_once_the_host_is_quiet(tmp_path: Path) -> None:
    """The load starts once the run folder is written (the command's imports done, before
    the first cell) and runs until the first attempt of every cell is written, then stops:
    the runner waits for a quiet host and measures the contended cells again (attempt 1)."""
    run = tmp_path / "again"
    cmd = [sys.executable, "-m", "bench", *PLAN, *TIMING, "--remeasure", "2",
           "--out", str(tmp_path), "--run-id", "again"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=judged())
    assert proc.stderr is not None
    said = [proc.stderr.readline()]
    while said[-1] and "effbench: writing to" not in said[-1]:
        said.append(proc.stderr.readline())
    with CpuLoad(CORES + 1, max_s=60) as load:
        deadline = time.monotonic() + 50
        while len(list(run.glob("part-*.parquet"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        load.stop()
        _, rest = proc.communicate(timeout=120)
    err = "".join(said) + rest
    assert proc.returncode == 0, err
    rows = load_results([run])
    first = rows[rows["attempt"] == 0]
    assert len(first) == 4 and set(first["quality"]) == {"contended"}
    again = rows[rows["attempt"] == 1]
    assert len(again) == 4, "every contended cell is measured again"
    assert "re-measuring 4 contended cell(s) (attempt 1)" in err
    kept = best_attempts(rows)
    assert len(kept) == 4 and (kept["attempt"] >= 1).all()
    if "effbench: host quiet" in err:  # the wait ended on a quiet host, not at its bound
        assert "contended" not in set(kept["quality"]), kept[["model", "quality_reason"]]
    # a resume measures nothing more: every cell has an acceptable row or used its attempts
    if "contended" not in set(kept["quality"]):
        resumed = effbench(["run", "--resume", str(run)], env=judged(), process=True)
        assert resumed.returncode == 0 and len(load_results([run])) == len(rows)


def _row(batch: int, attempt: int, status: str = "ok", quality: str | None = None) -> dict:
    return dict(model="m", device="cpu", dtype="float32", batch_size=batch, image_size=8,
                threads=1, config="eager", repeat=0, attempt=attempt, status=status,
                quality=quality)  # fmt: skip


def test_resume_measures_what_has_no_acceptable_row_and_continues_the_attempts() -> None:
    g = Group("m", "cpu", "float32", 8, 3, 1, 0, (1, 2, 4, 8, 16))
    existing = pd.DataFrame([
        _row(1, 0, quality="clean"),
        _row(2, 0, quality="contended"), _row(2, 1, quality="noisy"),  # an acceptable row
        _row(4, 0, quality="contended"), _row(4, 1, quality="contended"),  # none yet
        _row(8, 0, status="oom"),  # a failure is final
    ])  # fmt: skip
    pending = pending_groups([g], existing)
    assert [(p.batch_sizes, p.attempt) for p in pending] == [((16,), 0), ((4,), 2)]
    # a run that re-measures nothing takes a contended row as it is
    assert [p.batch_sizes for p in pending_groups([g], existing, remeasure=0)] == [(16,)]


def test_require_quiet_lets_a_quiet_host_run_and_stops_a_busy_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import argparse

    from bench import preflight, session

    def host(busy: bool) -> preflight.HostCheck:
        return preflight.HostCheck(0.5, 2, 1.6 if busy else 0.01, (), (0.1, 0.1, 0.1), (), busy)

    args = argparse.Namespace(require_quiet=True)
    monkeypatch.setattr(preflight, "check_host", lambda **kw: host(False))
    record = session._preflight(args, session._check_host(args), threads=2)
    assert record["busy"] is False and record["required_quiet"] is True
    assert capsys.readouterr().err == ""  # nothing to warn about
    monkeypatch.setattr(preflight, "check_host", lambda **kw: host(True))
    with pytest.raises(preflight.HostBusy, match="--require-quiet refuses a busy host"):
        session._check_host(args)
    # without --require-quiet a busy host is a warning, with the plan's threads in it
    args = argparse.Namespace(require_quiet=False)
    record = session._preflight(args, session._check_host(args), threads=2)
    assert record["busy"] is True and record["required_quiet"] is False
    assert "effbench: warning: host busy" in capsys.readouterr().err


def test_require_quiet_refuses_before_the_plan_is_read_and_torch_imported(tmp_path: Path) -> None:
    """A busy host (the check faked busy) is refused before anything imports torch or the
    fork server starts: the plan names a model that does not exist, and the refusal comes
    first."""
    code = (
        "import sys\n"
        "from bench import cli, preflight\n"
        "from bench.executor import fork_server_pid\n"
        "preflight.check_host = lambda **kw: preflight.HostCheck("
        "0.5, 2, 1.6, (), None, (), True)\n"
        "code = cli.main(['run', '--models', 'no_such_net', '--require-quiet', "
        "'--out', sys.argv[1]])\n"
        "print('torch' in sys.modules, fork_server_pid(), code)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert r.stdout.split() == ["False", "None", "2"], r.stderr
    assert r.stderr.startswith("effbench: error: host busy") and "--require-quiet" in r.stderr

"""The CI recipe of docs/compare.md runs: the `measure` and `gate` steps of
examples/effbench-gate.yml, verbatim, on a tiny model, with two `python=` arms (a committed
copy of this checkout as the base, this checkout as the head) in ping-pong.

What the test changes, and why: the checkouts' environments are made as in
tests/test_variant_python.py (``--system-site-packages`` virtualenvs pointing at the copies;
``pip install`` would need the network); the workflow's GATE_* variables pick a tiny model
and short bursts; and ``--count-instructions`` is taken out of the measure step: valgrind
spends 40-90 s importing torch in each arm on this 2-core machine, which
tests/test_instructions.py covers end to end on its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from bench import load_results

WORKFLOW = ROOT / "examples" / "effbench-gate.yml"
TINY = {
    "GATE_MODELS": "tiny_mlp",
    "GATE_BATCH_SIZES": "1,2",
    "GATE_RUN_FLAGS": "--bursts 4 --burst-time 0.02 --warmup-iters 1 --warmup-time 0",
}


def _flow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps() -> dict[str, dict]:
    return {s["id"]: s for s in _flow()["jobs"]["gate"]["steps"] if "id" in s}


def _venv(top: Path, name: str, checkout: Path) -> Path:
    """A virtualenv that imports effbench from ``checkout`` and torch from this
    interpreter's site-packages, with an ``effbench`` command as ``pip install -e`` gives."""
    venv = top / name
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "effbench_checkout.pth").write_text(
        f"{checkout}\nimport site; site.addsitedir({ours!r})\n"
    )
    script = venv / "bin" / "effbench"
    script.write_text(f'#!/bin/sh\nexec "{python}" -m bench "$@"\n')
    script.chmod(0o755)
    return python


@pytest.mark.system
def test_the_workflow_steps_gate_two_checkouts_in_one_run(tmp_path: Path) -> None:
    steps = _steps()
    measure = steps["measure"]["run"].replace(" --count-instructions", "")
    assert measure != steps["measure"]["run"]  # the recipe does count instructions
    base = tmp_path / "base"
    for pkg in ("bench", "models"):
        shutil.copytree(ROOT / pkg, base / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    _venv(tmp_path, "base-venv", base)
    _venv(tmp_path, "head-venv", ROOT)
    # the workflow's own variables, then the ones this test changes
    env = {**os.environ, **_flow()["env"], **TINY}
    env["GITHUB_OUTPUT"] = str(tmp_path / "github_output")
    said = []
    for script in (measure, steps["gate"]["run"]):
        r = subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=240,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        said.append(r.stderr)

    # both arms measured every cell, in ping-pong: one session per cell, shared by the arms
    rows = load_results([tmp_path / "results" / "gate-base", tmp_path / "results" / "gate-head"])
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert rows.groupby("batch_size")["pair_id"].nunique().tolist() == [1, 1]
    assert all(len(s) == 4 for s in rows["burst_sizes"])
    arms = rows.groupby("run_id")["variant"].first().to_dict()
    assert arms == {"gate-base": "base", "gate-head": "head"}

    # the gate: the same code on both sides passes; exit code, report and JUnit file
    assert (tmp_path / "github_output").read_text().strip() == "code=0", said[-1]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("### effbench compare:")
    # latency is read from the pairs of bursts (on a busy host: which pairs were contended)
    assert report.count("burst pairs") == 2, report
    suite = ET.parse(tmp_path / "effbench.xml").getroot()
    cases = suite.iter("testcase")
    assert sum(1 for _ in cases) >= 2
    assert not list(suite.iter("failure"))


def test_the_workflow_fails_the_job_on_a_regression_or_bad_input() -> None:
    last = _flow()["jobs"]["gate"]["steps"][-1]
    assert last["if"] == "steps.gate.outputs.code != '0'"
    assert last["run"] == "exit ${{ steps.gate.outputs.code }}"
    assert "--pingpong --count-instructions" in _steps()["measure"]["run"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_variables_the_test_changes_are_the_workflows_own(name: str) -> None:
    assert name in _flow()["env"]

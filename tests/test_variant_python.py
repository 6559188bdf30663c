"""`effbench run --variant NAME:python=PATH`: arms of one interleaved run in other
interpreters, measuring other code; `effbench compare` of those arms.

The test builds a second environment: a ``--system-site-packages`` virtualenv that sees this
test interpreter's packages (torch) but imports effbench from a *copy* of the checkout (its
own git repository, so its own commit), and two copies of a plugin network with the same
name, one whose forward sleeps twice as long. The rows' ``family`` column carries the copy
of the plugin and the checkout each worker imported, so the rows prove which code ran.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, ROOT, effbench

from bench import compare as cmp
from bench import load_results
from bench.devices import git_commit
from bench.schema import Row

PLUGIN = """
import time
from pathlib import Path

import bench
from torch import nn

from models.registry import ModelSpec, register_model

SLEEP_S = {sleep_s}
# which copy of this plugin and which checkout of effbench the worker imported
FAMILY = "{copy}@" + Path(bench.__file__).resolve().parent.parent.name


class Sleeper(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x):
        time.sleep(SLEEP_S)
        return self.head(x.flatten(1))


register_model(
    ModelSpec(name="ab_sleeper", family=FAMILY, builder=Sleeper, image_size=8, origin="test")
)
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def other_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A virtualenv importing effbench from ``other/`` (a committed copy of this checkout)
    and torch from this interpreter's site-packages, and the two plugin folders."""
    top = tmp_path_factory.mktemp("variant-python")
    other = top / "other"
    for pkg in ("bench", "models"):
        shutil.copytree(ROOT / pkg, other / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    _git(other, "init", "-q")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "the other checkout")
    venv = top / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the copy first on sys.path; then this interpreter's packages (torch) and their .pth
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "effbench_other.pth").write_text(
        f"{other}\nimport site; site.addsitedir({ours!r})\n"
    )
    plugins = {}
    for copy, sleep_s in (("fast", 0.004), ("slow", 0.008)):
        plugins[copy] = top / copy
        plugins[copy].mkdir()
        (plugins[copy] / "effbench_ab_model.py").write_text(
            PLUGIN.format(copy=copy, sleep_s=sleep_s)
        )
    check = subprocess.run(
        [python, "-c", "import torch, bench; print(bench.__file__)"],
        capture_output=True,
        text=True,
        cwd=top,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # it holds ROOT
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(other / "bench" / "__init__.py")
    return {"python": python, "other": other, "top": top, **plugins}


@pytest.mark.system
def test_arms_in_other_interpreters_are_measured_interleaved_and_compared(
    other_env: dict[str, Path],
) -> None:
    """base: this interpreter, this checkout, the fast plugin, in new processes; same: the
    same code in the default fork server; slow: the virtualenv, the copied checkout, the
    slow plugin."""
    out = other_env["top"] / "results"
    venv_python = str(other_env["python"])
    # the runner's PYTHONPATH holds this checkout (conftest) and the fast plugin; the venv
    # arm must not import this checkout, and it puts the slow plugin first
    env = {
        **os.environ,
        "EFFBENCH_PLUGINS": "effbench_ab_model",
        "PYTHONPATH": os.pathsep.join([str(other_env["fast"]), os.environ["PYTHONPATH"]]),
    }
    args = ["run", "--models", "ab_sleeper", "--batch-sizes", "1", "--devices", "cpu",
            "--threads", "1", "--repeats", "5", *FAST, "--out", str(out), "--run-id", "ab",
            "--variant", f"base:python={sys.executable}", "--variant", "same",
            "--variant", f"slow:python={venv_python}",
            "--variant", f"slow:PYTHONPATH={other_env['slow']}"]  # fmt: skip
    r = effbench(args, env=env)
    assert r.returncode == 0, r.stderr
    base, same, slow = (out / f"ab-{arm}" for arm in ("base", "same", "slow"))
    rows = load_results([base, same, slow])
    assert len(rows) == 15 and set(rows["status"]) == {"ok"}, rows[["run_id", "error"]]
    # which code ran: each arm's workers imported their own checkout and plugin copy
    family = rows.groupby("run_id")["family"].unique().map(list).to_dict()
    assert family == {
        "ab-base": [f"fast@{ROOT.name}"],
        "ab-same": [f"fast@{ROOT.name}"],
        "ab-slow": ["slow@other"],
    }
    # interleaved: the arms take turns, reversing the order every step
    seq = rows.sort_values("timestamp")["run_id"].str.removeprefix("ab-").tolist()
    assert seq[:6] == ["base", "same", "slow", "slow", "same", "base"]
    # each manifest records its arm's interpreter and the commit of the code it imported
    manifests = {d.name: json.loads((d / "manifest.json").read_text()) for d in (base, slow)}
    other_commit = git_commit(other_env["other"])
    assert other_commit is not None and other_commit != git_commit(ROOT)
    assert manifests["ab-base"]["environment"]["python_executable"] == sys.executable
    assert manifests["ab-base"]["environment"]["effbench_commit"] == git_commit(ROOT)
    assert manifests["ab-slow"]["environment"]["python_executable"] == venv_python
    assert manifests["ab-slow"]["environment"]["effbench_commit"] == other_commit
    assert manifests["ab-slow"]["options"]["python"] == venv_python
    pythonpath = dict(manifests["ab-slow"]["options"]["env"])["PYTHONPATH"].split(os.pathsep)
    assert pythonpath[:2] == [str(other_env["slow"]), str(other_env["fast"])]
    assert str(ROOT) not in pythonpath

    # compare: another interpreter and commit are compared, and said so; the slow arm regressed
    r = effbench(["compare", str(base), str(slow), "--threshold", "10%"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "**regression**" in r.stdout and "ran different code or environments" in r.stdout
    assert "effbench_commit" in r.stdout and "python_executable" in r.stdout
    # the identical arms: unchanged
    settings = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.10))
    c = cmp.compare_paths(base, same, settings)
    assert [x.verdict for x in c.results] == ["unchanged"], cmp.to_markdown(c)

    # resume: the slow arm's workers get their interpreter and PYTHONPATH again, once the
    # interpreter is named again (a manifest alone never runs a program)
    next(slow.glob("part-*_r4-*.parquet")).unlink()
    r = effbench(["run", "--resume", str(slow)], env=env)
    assert r.returncode == 2 and f"add --variant slow:python={venv_python}" in r.stderr
    r = effbench(["run", "--resume", str(slow), "--variant", f"slow:python={venv_python}"], env=env)
    assert r.returncode == 0, r.stderr
    again = load_results([slow])
    assert len(again) == 5 and set(again["family"]) == {"slow@other"}


def test_a_missing_interpreter_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    r = effbench(["run", "--models", "tiny_mlp", "--devices", "cpu", "--out", str(tmp_path),
                  "--variant", "a", "--variant", "b:python=/no/such/python"])  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("effbench: error: --variant")
    assert "no interpreter at /no/such/python" in r.stderr
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------- which environment differences pass


def _side(label: str, start: dt.datetime, env: dict, **row: object) -> cmp.Side:
    rows = []
    for i, value in enumerate((1.0, 1.01, 0.99, 1.005, 0.995)):
        fields: dict[str, object] = dict(
            run_id=label, repeat=i, model="m", family="f", batch_size=1, image_size=8,
            in_chans=3, device="cpu", device_name="Test CPU", dtype="float32", threads=1,
            status="ok", latency_ms_median=value, torch_version=env["torch_version"],
            timestamp=(start + dt.timedelta(seconds=10 * i)).isoformat(),
        )  # fmt: skip
        fields.update(row)
        rows.append(Row(**fields).to_dict())  # type: ignore[arg-type]
    return cmp.Side(label, pd.DataFrame(rows), (env,))


BASE_ENV = {
    "torch_version": "2.9.0",
    "cuda_version": None,
    "cudnn_version": None,
    "python_executable": "/base/bin/python",
    "python_version": "3.11.7",
    "torchvision_version": "0.24.0",
    "effbench_commit": "aaaa",
}
OTHER_CODE = {
    **BASE_ENV,
    "torch_version": "2.10.0",
    "python_executable": "/pr/bin/python",
    "python_version": "3.12.1",
    "torchvision_version": "0.25.0",
    "effbench_commit": "bbbb",
}
T0 = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)


def _compare(base: cmp.Side, cand: cmp.Side) -> cmp.Comparison:
    return cmp.compare_sides(base, cand, cmp.Settings())


def test_interleaved_arms_of_other_code_are_compared_and_said_to_differ() -> None:
    c = _compare(_side("a", T0, BASE_ENV), _side("b", T0, OTHER_CODE))
    assert c.interleaved is True
    cmp.check_environments(c)  # interpreter, versions and commit: compared
    assert {d.what for d in c.env_differences} == {
        "torch_version", "python_executable", "python_version", "torchvision_version",
        "effbench_commit",
    }  # fmt: skip
    assert "ran different code or environments" in cmp.to_markdown(c)


def test_a_stored_baseline_with_another_torch_is_still_refused() -> None:
    later = T0 + dt.timedelta(hours=5)
    c = _compare(_side("a", T0, BASE_ENV), _side("b", later, OTHER_CODE))
    with pytest.raises(cmp.EnvironmentMismatch, match=r"torch_version: 2\.9\.0 vs 2\.10\.0"):
        cmp.check_environments(c)
    # another commit alone (a stored baseline of main): compared, as before
    cmp.check_environments(_compare(_side("a", T0, BASE_ENV), _side("b", later, {
        **BASE_ENV, "effbench_commit": "cccc"})))  # fmt: skip


def test_interleaved_arms_on_another_device_stack_are_refused() -> None:
    c = _compare(_side("a", T0, BASE_ENV), _side("b", T0, {**OTHER_CODE, "cuda_version": "13.0"}))
    with pytest.raises(cmp.EnvironmentMismatch, match=r"cuda_version: None vs 13\.0"):
        cmp.check_environments(c)


def test_interleaved_arms_on_another_device_are_refused() -> None:
    base = _side("a", T0, BASE_ENV)
    other = _side("b", T0, OTHER_CODE, device_name="Other CPU")
    both = cmp.Side("b", pd.concat([other.rows, _side("b", T0, OTHER_CODE).rows]), (OTHER_CODE,))
    with pytest.raises(cmp.EnvironmentMismatch, match="device_name: Test CPU vs Other CPU"):
        cmp.check_environments(_compare(base, both))


def test_a_hanging_interpreter_probe_is_killed_with_its_children_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An arm's interpreter that never answers `python -m bench env` (here a script that
    starts a child and waits): refused in one error after the probe's bound, and its child
    killed with it (the process group), not left orphaned."""
    import signal
    import time

    from procs import alive

    from bench import devices
    from bench.errors import InvalidOption

    pidfile = tmp_path / "child.pid"
    hang = tmp_path / "python"
    hang.write_text(f"#!/bin/sh\nsleep 3600 &\necho $! > {pidfile}\nwait\n")
    hang.chmod(0o755)
    monkeypatch.setattr(devices, "PROBE_TIMEOUT_S", 2.0)
    t0 = time.monotonic()
    with pytest.raises(InvalidOption, match="cannot run"):
        devices.interpreter_environment(str(hang), {})
    assert time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    try:
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the probe's child outlived it"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)

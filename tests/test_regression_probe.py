"""The experiment-only probe networks (models/_regression_probe.py) that inject a fixed
amount of extra work for validating `effbench compare`.

They run in a subprocess: importing the module registers ``probe_*`` models, which must not
leak into this process's registry (other tests enumerate every registered model).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

CHECK = """
import json, os, sys, torch
import models._regression_probe as probe
from models import get_spec

calls = []
probe.ExtraWork.extra = lambda self, steps: calls.append(steps)
net = get_spec("probe_squeezenet1_1").build()
x = torch.randn(2, 3, probe.IMAGE_SIZE, probe.IMAGE_SIZE)
net(x)                              # outside inference mode (how MACs are counted): no extra
with torch.inference_mode():
    net(x)                          # batch 2: its configured steps
    net(x[:1])                      # batch 1: not configured, no extra work
other = get_spec("probe_mobilenet_v3_small").build()
print(json.dumps({"calls": calls, "steps": net.steps, "other": other.steps}))
"""


def _run(env_value: str | None, code: str = CHECK) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["EFFBENCH_PROBE_STEPS"] = env_value
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_extra_work_is_the_configured_steps_per_batch_size() -> None:
    r = _run(json.dumps({"probe_squeezenet1_1@2": 7, "probe_shufflenet_v2_x0_5@2": 3}))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["steps"] == {"2": 7}  # only this model's entries, keyed by batch size
    assert out["other"] == {}
    assert out["calls"] == [7, 0]


def test_unset_means_no_extra_work_and_bad_values_are_refused() -> None:
    """One process: the check with the variable unset, then the parser on each bad value."""
    bad = ["[1, 2]", '{"probe_squeezenet1_1@2": -1}']
    tail = (
        f"for text in {bad!r}:\n"
        "    os.environ[probe.STEPS_ENV] = text\n"
        "    try:\n"
        "        print('accepted', probe.steps_from_env())\n"
        "    except ValueError as e:\n"
        "        print(e)\n"
    )
    r = _run(None, CHECK + tail)
    assert r.returncode == 0, r.stderr
    unset, not_an_object, negative = r.stdout.splitlines()
    assert json.loads(unset)["calls"] == [0, 0]
    assert "must be a JSON object" in not_an_object
    assert "must be >= 0" in negative

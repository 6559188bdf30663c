"""Shared fixtures: test-only models visible to worker processes, and a CLI runner."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"  # on sys.path: pyproject's `pythonpath`
PLUGIN_MODULE = "effbench_test_models"


@pytest.fixture(scope="session", autouse=True)
def plugin_models_everywhere() -> Iterator[None]:
    """Register the test models (tests/plugins/effbench_test_models.py) in this process, and
    set ``EFFBENCH_PLUGINS`` and ``PYTHONPATH`` for the session so that worker processes,
    which import the registry fresh, register them too; the variables are restored after.
    ``EFFBENCH_NO_CEILINGS`` keeps sweeps from measuring device ceilings (seconds each)
    unless a test asks with ``--ceilings``; ``EFFBENCH_REMEASURE`` and
    ``EFFBENCH_PREFLIGHT_S`` turn re-measurement off and shorten the pre-flight check unless
    a test asks (``--remeasure N``)."""
    path = os.pathsep.join(p for p in (str(PLUGINS), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFBENCH_PLUGINS", PLUGIN_MODULE)
        mp.setenv("PYTHONPATH", path)
        mp.setenv("EFFBENCH_NO_CEILINGS", "1")
        # this machine is shared while the suite runs: no re-measurement of contended cells
        # (and its waits for a quiet host) unless a test asks, and a short pre-flight check
        mp.setenv("EFFBENCH_REMEASURE", "0")
        mp.setenv("EFFBENCH_PREFLIGHT_S", "0.05")
        importlib.import_module(PLUGIN_MODULE)
        yield


# Short timing for functional tests: the numbers are not what these tests check.
FAST = ["--min-time", "0.05", "--max-time", "0.3", "--warmup-iters", "1", "--warmup-time", "0"]


def effbench(
    args: Sequence[str], timeout: float = 300, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests with a reason where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

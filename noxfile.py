"""Sessions: `nox -s tests`, `nox -s system`, `nox -s unit`, `nox -s bench`, `nox -s profile`,
`nox -s lint`, `nox -s perf`, `nox -s report`, `nox -s regress -- BASELINE CANDIDATE`.
Dependencies come from pyproject.toml.

Every session runs in ONE shared virtualenv (`.nox/effbench`, or `$EFFBENCH_NOX_ENV`):
torch alone is several GB, and four copies of it (one per session, nox's default) took
24 GB on a CPU-only machine. The environment is created on first use and installed into
again only when pyproject.toml or the extras a session needs change, by uv where nox's
interpreter has it (`pip install nox uv`; about 45 s here) and by pip otherwise (90-115 s);
`EFFBENCH_INSTALLER=pip` chooses pip. uv is given pip's own settings (indexes, find-links,
constraints). To take PyTorch's CPU-only wheels (about 0.7 GB instead of 5.5 GB), give
the CPU index before the first session: `PIP_INDEX_URL=https://download.pytorch.org/whl/cpu
PIP_EXTRA_INDEX_URL=https://pypi.org/simple nox -s tests`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = Path(__file__).parent
ENV = Path(os.environ.get("EFFBENCH_NOX_ENV", ROOT / ".nox" / "effbench"))
EXTRAS = ("gpu", "timm", "ray")  # everything any session needs, installed once
GROUPS = ("test", "lint")


def _bin(name: str) -> str:
    return str(ENV / ("Scripts" if sys.platform == "win32" else "bin") / name)


def _uv(session: nox.Session) -> str | None:
    """uv, when this nox's interpreter has it (`pip install uv`, as .ci/run does) and
    ``$EFFBENCH_INSTALLER`` is not ``pip``: it built the environment in 40-47 s where pip
    took 90-115 s here (torch and its CUDA libraries, 5.9 GB, from this machine's mirror)."""
    choice = os.environ.get("EFFBENCH_INSTALLER", "uv")
    if choice not in ("uv", "pip"):
        session.error(f"$EFFBENCH_INSTALLER={choice!r}: give uv or pip")
    if choice == "pip":
        return None
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


_PIP_TO_UV = {  # pip's setting: uv's flag
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}


def _pip_settings() -> tuple[list[str], dict[str, str]]:
    """pip's indexes, find-links, constraints, trusted hosts, no-index and CA bundle (pip.conf
    and ``PIP_*`` variables, as `pip config list` shows them; a variable wins over a file) as
    uv's options and environment, for uv reads neither: a machine's mirror, version caps and
    proxy certificate hold for both installers. uv is told to pick across indexes as pip
    does (best version, not first index), which PyTorch's CPU index recipe relies on (not
    tried with uv: no internet where this was written)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=False).stdout  # fmt: skip
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if name in (*_PIP_TO_UV, "no-index", "cert") and (name not in found or scope == ":env:"):
            found[name] = value.strip().strip("'\"")
    args = ["--index-strategy", "unsafe-best-match"]
    if found.pop("no-index", "").lower() in ("1", "true", "yes", "on"):  # pip's truth words
        args.append("--no-index")
    cert = found.pop("cert", None)
    env = {"SSL_CERT_FILE": cert} if cert and "SSL_CERT_FILE" not in os.environ else {}
    for name, value in found.items():
        args += [a for item in value.split() for a in (_PIP_TO_UV[name], item)]
    return args, env


def _shared_env(session: nox.Session) -> None:
    """Create the shared virtualenv if missing; install the project (editable, every extra)
    and the dependency groups when pyproject.toml changed since the last install, with uv
    where there is one, else pip."""
    stamp = ENV / ".effbench-installed"
    want = json.dumps(
        {
            "pyproject": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
            "extras": EXTRAS,
            "groups": GROUPS,
        }
    )
    if Path(_bin("python")).exists() and stamp.exists() and stamp.read_text() == want:
        return
    uv = _uv(session)
    if not Path(_bin("python")).exists():
        if uv:
            session.run(uv, "venv", "-q", "--python", sys.executable, str(ENV), external=True)
        else:
            session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    env: dict[str, str] = {}
    if uv:
        settings, env = _pip_settings()
        # bytecode now, as pip does: else every process of the first test run compiled
        # torch's modules itself until one had written them (+80 s of the parallel pass)
        install = [uv, "pip", "install", "-q", "--compile-bytecode", "--python", _bin("python"),
                   *settings]  # fmt: skip
    else:
        install = [_bin("python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    groups = [d for g in GROUPS for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.run(*install, "-e", f".[{','.join(EXTRAS)}]", *groups, external=True, env=env)
    stamp.write_text(want)


# A test run starts about a hundred interpreters (workers, fork servers, commands) that
# import this project's modules, and each pytest process rewrites the test modules'
# asserts: with $PYTHONDONTWRITEBYTECODE (Python images set it) none of that is cached
# and every process compiles it all again (collection 15 s against 8 s, per xdist worker).
# Tests write their caches to the checkout's (git-ignored) and their own temporary folders.
# Empty is off for Python ("a non-empty string" turns it on) and any nox can pass it.
_TEST_ENV = {"PYTHONDONTWRITEBYTECODE": ""}


def _run(session: nox.Session, tool: str, *args: str) -> None:
    _shared_env(session)
    session.run(_bin(tool), *args, external=True, env=_TEST_ENV if tool == "pytest" else None)


# pytest-benchmark turns itself off under xdist, with a warning every run; the benchmarks
# are `nox -s perf`'s, one process
NO_BENCHMARKS = ("--benchmark-disable",)


def _workers() -> str:
    """pytest-xdist workers: one per core this process may use, at most 4 (each holds torch
    and starts sweeps of its own), or ``$EFFBENCH_TEST_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return os.environ.get("EFFBENCH_TEST_WORKERS", str(max(1, min(cores or 1, 4))))


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The test suite, CI's first step: the tests in parallel (pytest-xdist), then the
    `serial` ones (they make host load or need a quiet host) alone. The `system` tests are
    `nox -s system`, CI's second step. Arguments after `--` run one serial pytest instead
    (`-- -m slow` for the whole model list)."""
    if session.posargs:
        _run(session, "pytest", "--durations=25", *session.posargs)
        return
    _run(session, "pytest", "-n", _workers(), *NO_BENCHMARKS, "--durations=25",
         "-m", "not slow and not perf and not serial and not system")  # fmt: skip
    _run(session, "pytest", "--durations=10", "-m", "serial and not slow and not perf",
         *_files_marked("serial"))  # fmt: skip


@nox.session(python=False, default=False)
def system(session: nox.Session) -> None:
    """The `system` tests, in parallel: end to end through another program (a local Ray
    cluster, valgrind, Chromium, another interpreter or virtualenv, the GPU check script's
    dry run), each costing tens of CPU-seconds for its subject; CI runs them after
    `nox -s tests`. Arguments after `--` go to pytest."""
    _run(session, "pytest", "-n", _workers(), *NO_BENCHMARKS, "--durations=25",
         "-m", "system and not slow and not perf", *_files_marked("system"),
         *session.posargs)  # fmt: skip


def _files_marked(mark: str) -> list[str]:
    """The test files that say ``mark.NAME`` (a decorator or ``pytestmark``): the serial
    pass and `nox -s system` collect only these, not all of tests/ (8 s here);
    tests/conftest.py refuses a `serial` or `system` test whose file does not say it."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if f"mark.{mark}" in p.read_text(encoding="utf-8")
    ) or ["tests"]


@nox.session(python=False, default=False)
def unit(session: nox.Session) -> None:
    """The unit tests only (no real sweeps, no subprocesses): the inner loop, under 90 s."""
    _run(session, "pytest", "-n", _workers(), *NO_BENCHMARKS,
         "-m", "not integration and not slow and not perf",
         *session.posargs)  # fmt: skip


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Run the default sweep for the device present; arguments after `--` go to `effbench run`."""
    _run(session, "effbench", "run", *session.posargs)


@nox.session(python=False, default=False)
def profile(session: nox.Session) -> None:
    """Per-layer profiles for the report (default resnet18, mobilenet_v2) in results/profiles;
    arguments after `--` go to `effbench profile`."""
    args = session.posargs or ["resnet18", "mobilenet_v2", "--out", "results/profiles"]
    _run(session, "effbench", "profile", *args)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    _run(session, "ruff", "check", ".")
    session.run(_bin("ruff"), "format", "--check", ".", external=True)


@nox.session(python=False, default=False)
def perf(session: nox.Session) -> None:
    """The suite's own pytest-benchmark benchmarks (harness overhead, agreement)."""
    _run(
        session,
        "pytest",
        "-m",
        "perf",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-columns=min,median,max,rounds",
        *session.posargs,
    )


@nox.session(python=False, default=False)
def report(session: nox.Session) -> None:
    """Build the efficiency report of every run under results/ (or the runs after --)."""
    args = session.posargs or ["results", "--out", "reports/latest"]
    _run(session, "effbench", "report", *args)


@nox.session(python=False, default=False)
def regress(session: nox.Session) -> None:
    """Regression gate: `nox -s regress -- BASELINE CANDIDATE [effbench compare options]`."""
    if len(session.posargs) < 2:
        session.error("usage: nox -s regress -- BASELINE CANDIDATE [options]")
    _run(session, "effbench", "compare", *session.posargs)

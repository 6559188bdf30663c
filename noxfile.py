"""Sessions: `nox -s tests`, `nox -s bench`, `nox -s profile`, `nox -s lint`, `nox -s perf`,
`nox -s report`, `nox -s regress -- BASELINE CANDIDATE`. Dependencies come from
pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = Path(__file__).parent


def _install(session: nox.Session, *groups: str, extras: str = "gpu") -> None:
    session.install("-e", f".[{extras}]" if extras else ".")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (`-- -m slow` for the whole model list)."""
    _install(session, "test", extras="gpu,timm,ray")
    session.run("pytest", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the default sweep for the device present; arguments after `--` go to `effbench run`."""
    _install(session)
    session.run("effbench", "run", *session.posargs)


@nox.session(default=False)
def profile(session: nox.Session) -> None:
    """Per-layer profiles for the report (default resnet18, mobilenet_v2) in results/profiles;
    arguments after `--` go to `effbench profile`."""
    _install(session)
    args = session.posargs or ["resnet18", "mobilenet_v2", "--out", "results/profiles"]
    session.run("effbench", "profile", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
def perf(session: nox.Session) -> None:
    """The suite's own pytest-benchmark benchmarks (harness overhead, agreement)."""
    _install(session, "test")
    session.run(
        "pytest",
        "-m",
        "perf",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-columns=min,median,max,rounds",
        *session.posargs,
    )


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """Build the efficiency report of every run under results/ (or the runs after --)."""
    _install(session)
    session.run("effbench", "report", *(session.posargs or ["results", "--out", "reports/latest"]))


@nox.session(default=False)
def regress(session: nox.Session) -> None:
    """Regression gate: `nox -s regress -- BASELINE CANDIDATE [effbench compare options]`."""
    if len(session.posargs) < 2:
        session.error("usage: nox -s regress -- BASELINE CANDIDATE [options]")
    _install(session)
    session.run("effbench", "compare", *session.posargs)

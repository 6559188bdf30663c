"""Shared fixtures: test-only models visible to worker processes, and a CLI runner."""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"  # on sys.path: pyproject's `pythonpath`
PLUGIN_MODULE = "effbench_test_models"


@pytest.fixture(scope="session", autouse=True)
def plugin_models_everywhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Register the test models (tests/plugins/effbench_test_models.py) in this process, and
    set ``EFFBENCH_PLUGINS`` and ``PYTHONPATH`` for the session so that worker processes,
    which import the registry fresh, register them too; the variables are restored after.
    ``EFFBENCH_NO_CEILINGS`` keeps sweeps from measuring device ceilings (seconds each)
    unless a test asks with ``--ceilings``; ``EFFBENCH_REMEASURE`` and
    ``EFFBENCH_PREFLIGHT_S`` turn re-measurement off and shorten the pre-flight check unless
    a test asks (``--remeasure N``), and ``EFFBENCH_JUDGE_CONTENTION=0`` keeps rows from
    being judged ``contended`` (the tests of that verdict set it to 1), so a test's verdicts
    do not depend on what else runs on the machine. ``EFFBENCH_CACHE_DIR`` keeps the host's
    speed-canary record (bench.canaries) of the session out of the user's cache."""
    path = os.pathsep.join(p for p in (str(PLUGINS), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFBENCH_PLUGINS", PLUGIN_MODULE)
        mp.setenv("PYTHONPATH", path)
        mp.setenv("EFFBENCH_NO_CEILINGS", "1")
        # this machine is shared while the suite runs: no re-measurement of contended cells
        # (and its waits for a quiet host) unless a test asks, and a short pre-flight check
        mp.setenv("EFFBENCH_REMEASURE", "0")
        mp.setenv("EFFBENCH_PREFLIGHT_S", "0.05")
        mp.setenv("EFFBENCH_JUDGE_CONTENTION", "0")
        mp.setenv("EFFBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("effbench-cache")))
        importlib.import_module(PLUGIN_MODULE)
        yield


# Short timing for functional tests: the numbers are not what these tests check.
FAST = ["--min-time", "0.05", "--max-time", "0.3", "--warmup-iters", "1", "--warmup-time", "0"]


def effbench(
    args: Sequence[str],
    timeout: float = 300,
    process: bool = False,
    env: dict[str, str] | None = None,
    **kw: object,
) -> subprocess.CompletedProcess[str]:
    """Run the command line as `python -m bench` would, in the project's root.

    In this process (`bench.cli.main`, its standard output and error captured), unless
    ``process``, a keyword of `subprocess.run` (``input``, ...) or an ``env`` that changes
    more than effbench's own run-time variables asks for a process of its own: a test of
    exit-time or signal behaviour, or of another ``PYTHONPATH``, ``EFFBENCH_PLUGINS`` (this
    process's registries are loaded once) or ``TMPDIR``. In this process a sweep's workers
    come from this process's fork server, started by the first sweep and replaced when the
    environment changes (bench.executor), so a test pays neither the command's imports
    (about 4 s) nor, mostly, a fork server's (about 2.5 s). ``timeout`` bounds only a
    process of its own."""
    changed = _changed_variables(env) if env is not None else {}
    if process or kw or not all(_RUN_TIME_VARIABLE.fullmatch(k) for k in changed):
        return subprocess.run(
            [sys.executable, "-m", "bench", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
            **kw,  # type: ignore[arg-type]
        )
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.chdir(ROOT),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        for name, value in changed.items():
            if value is None:
                mp.delenv(name)
            else:
                mp.setenv(name, value)
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, --version, a usage error
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "bench", *args], code, out.getvalue(), err.getvalue()
    )


# effbench's variables that the command reads when it runs, not when it imports
_RUN_TIME_VARIABLE = re.compile(r"EFFBENCH_(?!PLUGINS$)\w+")


def one_line_error(stderr: str) -> str:
    """The one ``effbench: error:`` line of a command's standard error (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("effbench: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def run_main(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``bench.cli.main(args)`` in this process: its exit code and what it wrote to stderr."""
    from bench.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def _changed_variables(env: dict[str, str]) -> dict[str, str | None]:
    """The variables ``env`` sets to another value than this process's (None: unsets)."""
    return {k: env.get(k) for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


# What makes a test an integration test: it starts processes (the real command line, a
# sweep's workers, a browser, a load) or builds a whole report, itself, through one of its
# fixtures, or through a helper of its module that does.
_STARTS_PROCESSES = re.compile(
    r"\beffbench\(|\bsubprocess\.|\bPopen\(|\bCpuLoad\(|\[\s*\"(run|report)\",|"
    r"sys\.executable|\brun_task\(|\b(ForkServer|Local|Arm|Ray)Executor\b|webdriver|"
    r"\.Process\(|get_context\(|\bbuild_report\(|\b(call_in_fresh_process|_node_environment)\(|"
    r"\binterpreter_environment\("
)


@functools.cache
def _process_helpers(module: Any) -> frozenset[str]:
    """Names of the module's functions and classes (a fake executor, say) that start
    processes, directly or through another (once per module)."""
    sources = {}
    for name, obj in vars(module).items():
        ours = getattr(obj, "__module__", None) == module.__name__
        if ours and (inspect.isfunction(obj) or inspect.isclass(obj)):
            with contextlib.suppress(OSError, TypeError):
                sources[name] = inspect.getsource(obj)
    found = {n for n, src in sources.items() if _STARTS_PROCESSES.search(src)}
    grew = True
    while grew:
        calls = re.compile(r"\b(" + "|".join(map(re.escape, found)) + r")\(" if found else "^$")
        more = {n for n, src in sources.items() if n not in found and calls.search(src)}
        found |= more
        grew = bool(more)
    return frozenset(found)


def _starts_processes(item: pytest.Item) -> bool:
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        funcs += [d.func for d in defs if d.baseid]  # ours: pytest's own have no node id
    return any(_func_starts_processes(f) for f in funcs if f is not None)


@functools.cache
def _func_starts_processes(func: Any) -> bool:
    """Whether ``func``'s source starts processes or calls a helper of its module that
    does (once per function: parametrized tests and shared fixtures repeat)."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    module = inspect.getmodule(func)
    helpers = _process_helpers(module) if module is not None else frozenset()
    return bool(_STARTS_PROCESSES.search(source)) or any(
        re.search(r"\b" + re.escape(h) + r"\(", source) for h in helpers
    )


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    """A test that measures a cell or a ceiling in this process freezes its heap
    (bench.sampler.settle_heap, as a worker does before each window); thaw it after the
    test, so that the tests after it run in a process whose garbage is collected as usual."""
    yield
    gc.unfreeze()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Iterator[object]:
    with _no_current_test_variable():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[object]:
    with _no_current_test_variable():
        return (yield)


@contextlib.contextmanager
def _no_current_test_variable() -> Iterator[None]:
    """Hide ``PYTEST_CURRENT_TEST`` while a test or fixture runs: pytest gives it a new
    value in every phase of every test, and a sweep run in this process (`effbench`,
    `bench.cli.main`) replaces its fork server whenever the environment differs from the
    one the server started with (bench.executor), which would then be every time."""
    value = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if value is not None:
            os.environ["PYTEST_CURRENT_TEST"] = value


# marks whose nox passes collect only the files that say them (noxfile.py `_files_marked`)
_COLLECTED_BY_FILE = ("serial", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that start processes `integration` (`nox -s unit` leaves them out); skip
    `gpu` tests with a reason where no CUDA device is visible. A `serial` or `system` test
    must say so in its file (``pytest.mark.serial``, ``pytest.mark.system``): the serial
    pass and `nox -s system` collect those files only, so a mark given elsewhere would
    leave the test out of every pass."""
    texts: dict[Path, str] = {}
    for item in items:
        if _starts_processes(item):
            item.add_marker(pytest.mark.integration)
        for mark in _COLLECTED_BY_FILE:
            if item.get_closest_marker(mark) is None:
                continue
            text = texts.setdefault(item.path, item.path.read_text(encoding="utf-8"))
            if f"mark.{mark}" not in text:
                raise pytest.UsageError(
                    f"{item.nodeid} is marked {mark} but its file does not say "
                    f"`pytest.mark.{mark}`; mark it there (noxfile.py finds {mark} files so)"
                )
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""The import graph of `bench` and `models`: no cycle, every module importing only what its
row of docs/architecture.md's table allows (`ALLOWED`), and no import from a lower layer to
a higher one. Module-level and function-level imports both count."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours ``name`` refers to (an attribute import resolves to its module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for n in names:
            target = _resolve(n, modules)
            if target and target != module:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside one; a prefix with ``*`` is a pattern of
    names (``bench.*_executor``: every executor's module, so a new one needs no rule)."""
    return any(
        fnmatch.fnmatchcase(module, p) if "*" in p else module == p or module.startswith(p + ".")
        for p in prefixes
    )


HIGH = ("bench.cli", "bench.runner", "bench.executor", "bench.worker")
# (who, what it may never reach, directly or through another module)
FORBIDDEN = [
    (("bench.probes",), ("bench.cli", "bench.runner", "bench.executor", "bench.worker")),
    (("bench.report", "bench.compare"), ("bench.probes", *HIGH)),
    (
        (
            "bench.store",
            "bench.store_checks",
            "bench.schema",
            "bench.keys",
            "bench.plan",
            "bench.variants",
        ),
        HIGH,
    ),
    (("bench.stats",), HIGH),
    (("bench.plan", "bench.variants", "bench.keys", "bench.schema"), ("bench.probes", "models")),
    (("models",), HIGH),
    # measurements of the device and of layers are library code the CLI and runner call
    (
        (
            "bench.ceilings",
            "bench.profile",
            "bench.profile_layers",
            "bench.profile_format",
            "bench.layers",
            "bench.instructions",
        ),
        HIGH,
    ),
    (
        ("bench.report", "bench.compare"),
        ("bench.ceilings", "bench.profile", "bench.layers", "bench.instructions"),
    ),
    # the ping-pong worker is a worker; the ping-pong runner a runner
    (("bench.serve",), ("bench.cli", "bench.runner", "bench.executor", "bench.pingpong")),
    (("bench.pingpong",), ("bench.cli",)),
    # the host's evidence, its verdicts, the sampling loop and the allocators are below the
    # probes that use them
    (
        ("bench.host", "bench.quality", "bench.sampler", "bench.allocators", "bench.loadgen"),
        ("bench.probes", "models", *HIGH),
    ),
    (("bench.preflight",), ("bench.probes", "models", *HIGH)),
    (("bench.report", "bench.compare"), ("bench.serve", "bench.pingpong")),
    # the run session and the other subcommands sit below the CLI, which alone exits
    (("bench.session", "bench.commands"), ("bench.cli",)),
    # the runner's rooms: a run folder's set-up and the run's ceilings sit below it
    (
        ("bench.run_folder", "bench.run_ceilings"),
        ("bench.cli", "bench.runner", "bench.pingpong", "bench.parallel"),
    ),
]


# What each module may import of ours, directly (module level or inside a function):
# docs/architecture.md's table as data. Every module of bench and models falls under
# exactly one rule; a module inside a package (bench.compare, bench.probes, models, ...) may
# also import its own package's modules; ``never`` narrows a broad ``may``.
_LEAVES = ("bench.errors", "bench.keys", "bench.units", "bench.status", "bench.escape")
_PURE_PLAN = ("bench.plan", "bench.variants", "bench.configs", "bench.allocators")
_ABOVE_THE_RUNNER = ("bench.cli", "bench.session", "bench.commands", "bench.pingpong")
ALLOWED: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = [
    ((*_LEAVES, "bench.gate_choices", "bench.cli_help", "bench.schema", "bench.canaries"),
     ("bench.errors",), ()),
    (_PURE_PLAN, (*_PURE_PLAN, *_LEAVES), ()),
    (("bench.stats",), ("bench.errors",), ()),
    (("bench.host", "bench.quality"), ("bench.errors", "bench.status"), ()),
    (("bench.sampler",), ("bench.stats", "bench.errors"), ()),
    (("bench.preflight", "bench.loadgen"), ("bench.host", "bench.quality", "bench.errors"), ()),
    (("bench.store", "bench.store_checks"),
     ("bench.store", "bench.store_checks", "bench.schema", "bench.quality", *_LEAVES), ()),
    (("bench.probes",),
     ("bench.schema", "bench.plan", "bench.stats", "bench.sampler", "bench.host",
      "bench.config_apply", *_LEAVES), ()),
    (("bench.config_apply",), ("bench.configs", "bench.devices", *_LEAVES), ()),
    (("bench.devices",), ("bench.allocators", "bench.plan", "bench.probes.nvml", *_LEAVES), ()),
    (("models",), ("bench.errors", "bench.probes.sizes"), ()),
    (("bench.catalog",), ("models", "bench.probes.sizes"), ()),
    (("bench.ceilings", "bench.profile", "bench.profile_layers", "bench.profile_format",
      "bench.layers"),
     ("bench.probes", "models", "bench.devices", "bench.stats", "bench.sampler", "bench.plan",
      "bench.schema", "bench.configs", "bench.config_apply", "bench.layers", "bench.profile",
      "bench.profile_layers", *_LEAVES), ()),
    (("bench.worker",),
     ("bench.probes", "models", "bench.devices", "bench.sampler", "bench.schema", "bench.stats",
      "bench.config_apply", *_PURE_PLAN, *_LEAVES), ()),
    (("bench.ceiling_worker",), ("bench.worker", "bench.ceilings"), ()),
    (("bench.executor",),
     ("bench.worker", "bench.ceiling_worker", "bench.probes.gpu_processes", *_PURE_PLAN,
      *_LEAVES), ()),
    (("bench.worker_preload", "bench.worker_preload_all"),
     ("bench.worker", "bench.probes.macs", "models"), ()),
    (("bench.discovery",), ("bench.devices", "bench.executor", "bench.errors"), ()),
    (("bench.executor_registry",), ("bench.executor", "bench.ray_executor"), ()),
    (("bench.*_executor",),  # an executor's own module: bench/<name>_executor.py
     ("bench.executor", "bench.worker", "bench.devices", "bench.discovery", "models",
      *_PURE_PLAN, *_LEAVES), ()),
    (("bench.instructions",),
     ("models", "bench.config_apply", "bench.devices", *_PURE_PLAN, *_LEAVES), ()),
    (("bench.serve",),
     ("bench.worker", "bench.worker_preload", "bench.probes", "bench.sampler", "bench.stats",
      "bench.devices", "models", *_LEAVES), ()),
    (("bench.run_folder", "bench.run_ceilings"),
     ("bench.plan", "bench.store", "bench.schema", "bench.quality", "bench.executor",
      "bench.ceiling_worker", "bench.ceilings", "bench.probes.power", *_LEAVES), ()),
    (("bench.report", "bench.compare"),
     ("bench.store", "bench.schema", "bench.stats", "bench.quality", "bench.gate_choices",
      *_LEAVES), ()),
    (("bench.runner",), ("bench", "models"), (*_ABOVE_THE_RUNNER, "bench.parallel")),
    (("bench.parallel",), ("bench.runner", "bench.executor", "bench.plan", "bench.errors"), ()),
    (("bench.pingpong",),
     ("bench.runner", "bench.executor", "bench.worker", "bench.serve", "bench.store",
      "bench.schema", "bench.quality", "bench.probes.registry", "bench.probes.gpu_processes",
      *_PURE_PLAN, *_LEAVES), ()),
    (("bench.session", "bench.commands"), ("bench", "models"), ("bench.cli",)),
    (("bench.cli", "bench.__main__"), ("bench", "models"), ()),
]  # fmt: skip
_PACKAGE_INIT = {"bench": ("bench.errors", "bench.store")}  # `load_results`, imported on call


def _own_package(module: str) -> str | None:
    """The package whose modules ``module`` may import besides its rule's: ``models`` for a
    network, ``bench.X`` for a module under bench/X/, none for a module of bench itself."""
    parts = module.split(".")
    if parts[0] == "models":
        return "models"
    return ".".join(parts[:2]) if (ROOT / "bench" / parts[1]).is_dir() else None


def _not_allowed(graph: dict[str, set[str]], rules: list[Any]) -> dict[str, list[str]]:
    """Per module: the rules naming it (when not exactly one) or its imports no rule allows."""
    found: dict[str, list[str]] = {}
    for module, imported in graph.items():
        if module in _PACKAGE_INIT:
            bad = sorted(imported - set(_PACKAGE_INIT[module]))
        else:
            matching = [r for r in rules if _under(module, r[0])]
            if len(matching) != 1:
                found[module] = [f"under {len(matching)} rules"]
                continue
            _, may, never = matching[0]
            own = _own_package(module)
            bad = sorted(
                w
                for w in imported
                if not (_under(w, may) or (own and _under(w, (own,)))) or _under(w, never)
            )
        if bad:
            found[module] = bad
    return found


def test_every_module_imports_only_what_its_rule_allows() -> None:
    assert _not_allowed(_graph(), ALLOWED) == {}


def test_the_allowlist_checker_finds_an_import_outside_a_rule_and_a_module_under_none() -> None:
    rules = [(("bench.keys",), ("bench.errors",), ()), (("bench.compare",), ("bench.store",), ())]
    graph = {
        "bench.keys": {"bench.errors", "bench.store"},  # not allowed
        "bench.compare.gate": {"bench.compare.results", "bench.store"},  # own package: fine
        "bench.units": set(),  # under no rule
    }
    assert _not_allowed(graph, rules) == {
        "bench.keys": ["bench.store"],
        "bench.units": ["under 0 rules"],
    }
    # a new executor's module is under the executors' rule by its name, with no row of its own
    executor = {"bench.slurm_executor": {"bench.executor", "bench.plan"}}
    assert _not_allowed(executor, ALLOWED) == {}
    assert _not_allowed({"bench.slurm_executor": {"bench.cli"}}, ALLOWED) == {
        "bench.slurm_executor": ["bench.cli"]
    }
    # and the real graph under a rule narrowed by one module fails
    narrowed = [(w, tuple(m for m in may if m != "bench.stats"), n) for w, may, n in ALLOWED]
    assert "bench.sampler" in _not_allowed(_graph(), narrowed)


def test_there_is_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize(("who", "never"), FORBIDDEN)
def test_no_import_runs_back_up_the_layers(who: tuple[str, ...], never: tuple[str, ...]) -> None:
    graph = _graph()
    bad = {
        m: sorted(w for w in _reach(graph, m) if _under(w, never)) for m in graph if _under(m, who)
    }
    assert {m: w for m, w in bad.items() if w} == {}


def test_the_checker_sees_function_level_imports_and_cycles() -> None:
    # the checker itself must be able to fail: a function-level import closing a loop
    modules = {"a": Path("a.py"), "b": Path("b.py")}
    tree = "def f():\n    from b import g\n"
    found = set()
    for node in ast.walk(ast.parse(tree)):
        if isinstance(node, ast.ImportFrom):
            found.add(_resolve(f"{node.module}.g", modules))
    assert found == {"b"}
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_the_pure_modules_import_neither_pandas_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import bench.keys, bench.plan, bench.variants, bench.stats, bench.quality, "
        "bench.gate_choices, bench.cli_help, "
        "bench.status, "
        "bench.host; "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

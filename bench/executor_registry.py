"""The executors `effbench run --executor NAME` offers: name -> the class that runs the
workers, loaded on demand (Ray stays an optional extra: ``bench.ray_executor`` imports Ray
only when it connects). The CLI's choices and help come from :data:`BUILTIN`; the run
session's checks ask the class's :class:`~bench.executor.Capabilities`, never its name.

A new executor is a module with its class (``bench.executor.Executor``: ``capabilities``,
``prepare``, ``cancel``, ``run``) and one line in :data:`BUILTIN`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.executor import Capabilities, Executor


@dataclass(frozen=True, slots=True)
class ExecutorEntry:
    """One choice of ``--executor``: its name, where its class is (``module:Class``) and
    what ``--help`` says of it."""

    name: str
    target: str
    summary: str


BUILTIN: tuple[ExecutorEntry, ...] = (
    ExecutorEntry("fork", "bench.executor:ForkServerExecutor",
                  "fork workers from a server with torch imported"),
    ExecutorEntry("subprocess", "bench.executor:LocalExecutor",
                  "start a new interpreter per worker"),
    ExecutorEntry("ray", "bench.ray_executor:RayExecutor",
                  "run each group as a Ray task (docs/scale-out.md)"),
)  # fmt: skip
DEFAULT = "fork"
_EXTRA: dict[str, tuple[ExecutorEntry, type[Executor]]] = {}


def register_executor(name: str, cls: type[Executor], summary: str = "") -> type[Executor]:
    """Offer ``cls`` as ``--executor name`` in this process (tests, embedding code); a name
    already taken raises. Built-in executors are lines of :data:`BUILTIN` instead."""
    if name in executor_names():
        raise ValueError(f"executor {name!r} is already registered")
    _EXTRA[name] = (ExecutorEntry(name, f"{cls.__module__}:{cls.__qualname__}", summary), cls)
    return cls


def unregister_executor(name: str) -> None:
    """Withdraw an executor :func:`register_executor` offered (a test's clean-up)."""
    del _EXTRA[name]


def entries() -> tuple[ExecutorEntry, ...]:
    return (*BUILTIN, *(entry for entry, _ in _EXTRA.values()))


def executor_names() -> tuple[str, ...]:
    """The ``--executor`` choices, the default first."""
    return tuple(e.name for e in entries())


def executor_class(name: str) -> type[Executor]:
    """The class of ``--executor name`` (imported now)."""
    if name in _EXTRA:
        return _EXTRA[name][1]
    for entry in BUILTIN:
        if entry.name == name:
            module, _, attr = entry.target.partition(":")
            cls: type[Executor] = getattr(importlib.import_module(module), attr)
            return cls
    raise KeyError(f"unknown executor {name!r}; choose from {', '.join(executor_names())}")


def capabilities(name: str) -> Capabilities:
    return executor_class(name).capabilities


def names_where(wanted: str, value: bool = True) -> list[str]:
    """The executors whose capability ``wanted`` is ``value`` (for error messages)."""
    return [n for n in executor_names() if getattr(capabilities(n), wanted) is value]

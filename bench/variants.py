"""What `--variant` and `--memory-cap` say, parsed and checked before anything runs:
an A/B run's arms (``NAME:VAR=VALUE,...`` environment or ``NAME:python=PATH``
interpreter) and sizes such as ``8GiB``. Pure: no torch, no pandas."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bench.errors import InvalidOption


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an interleaved A/B run: a name, the environment its workers get and, for
    an arm in another environment (``NAME:python=PATH``), their interpreter."""

    name: str
    env: tuple[tuple[str, str], ...] = ()
    python: str | None = None  # absolute path of another interpreter (a virtualenv's python)

    def worker_env(
        self, inherited_pythonpath: str | None, own_checkout: str
    ) -> tuple[tuple[str, str], ...]:
        """The variables this arm's workers get. An arm with its own interpreter also gets
        ``PYTHONPATH``: its own ``NAME:PYTHONPATH=...`` entries first, then the runner's
        (plugin folders), without the runner's own checkout, so that the interpreter imports
        the effbench installed in it, not this one. Entries are made absolute: such workers
        start in a neutral folder (see :class:`bench.executor.LocalExecutor`)."""
        if self.python is None:
            return self.env
        own = os.path.realpath(own_checkout)
        env = dict(self.env)
        entries = [*env.get("PYTHONPATH", "").split(os.pathsep)]
        entries += [
            p
            for p in (inherited_pythonpath or "").split(os.pathsep)
            if p and os.path.realpath(p) != own
        ]
        paths = [os.path.abspath(p) for p in entries if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return tuple(sorted(env.items()))


_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# set by the suite itself (threads are part of the cell; the worker protocol needs the rest)
RESERVED_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "EFFBENCH_PARENT_PID",
    "EFFBENCH_RUNNER_PID",
    "PYTHONPATH",
)


INTERPRETER = "python"  # NAME:python=PATH: the arm's interpreter, not a variable


def parse_variants(texts: Sequence[str]) -> tuple[Variant, ...]:
    """``--variant NAME``, ``--variant NAME:VAR=VALUE`` (repeat the flag for more
    variables of one variant) or ``--variant NAME:python=PATH``, in order of first mention.

    Variables are set in the worker before the model is built; they cannot change threads
    (use ``--threads``), and they change code (``PYTHONPATH``) only in an arm with its own
    interpreter, whose workers are new processes of that interpreter. ``PATH`` must be an
    executable file; it is recorded as an absolute path (not resolved: a virtualenv's
    ``python`` is a link to its base interpreter, and the link is what selects the
    virtualenv).
    """
    envs: dict[str, dict[str, str]] = {}
    pythons: dict[str, str] = {}
    for text in texts:
        name, sep, assignment = text.partition(":")
        if not _VARIANT_NAME.fullmatch(name):
            raise InvalidOption(
                f"--variant {text!r}: a variant is named with letters, digits, '_', '.' or '-' "
                "and may add one VAR=VALUE after a colon, e.g. --variant fast:MY_FLAG=1"
            )
        env = envs.setdefault(name, {})
        if not sep:
            continue
        var, eq, value = assignment.partition("=")
        if not eq or not _ENV_NAME.fullmatch(var):
            raise InvalidOption(
                f"--variant {text!r}: write the variable as NAME:VAR=VALUE, e.g. "
                "--variant fast:MY_FLAG=1"
            )
        if var == INTERPRETER:
            python = check_interpreter(value, f"--variant {text!r}")
            if pythons.setdefault(name, python) != python:
                raise InvalidOption(f"--variant {name}: python= is given twice")
            continue
        if var in env and env[var] != value:
            raise InvalidOption(f"--variant {name}: {var} is given twice with different values")
        env[var] = value
    for name, env in envs.items():
        for var in env:
            if var in RESERVED_ENV and not (var == "PYTHONPATH" and name in pythons):
                raise InvalidOption(
                    f"--variant {name}:{var}=...: {var} is set by effbench itself; use "
                    "--threads for threads, and give the arm its own interpreter to change "
                    f"code (--variant {name}:python=PATH; docs/compare.md)"
                )
    variants = tuple(Variant(n, tuple(sorted(e.items())), pythons.get(n)) for n, e in envs.items())
    if len(variants) == 1:
        raise InvalidOption(
            "one --variant given; an interleaved run needs two or more (e.g. --variant base "
            "--variant fast:MY_FLAG=1)"
        )
    return variants


def check_interpreter(path: str, what: str = "python") -> str:
    """``path`` made absolute (not resolved), if it names an executable file; else a
    one-line :class:`InvalidOption`."""
    if not path:
        raise InvalidOption(f"{what}: give the path of a Python interpreter after python=")
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise InvalidOption(
            f"{what}: no interpreter at {full}; give the path of another environment's "
            "python, e.g. ../base-venv/bin/python"
        )
    if not os.access(full, os.X_OK):
        raise InvalidOption(f"{what}: {full} is not executable")
    return full


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size_bytes(text: str) -> int:
    """Parse '512MiB', '2G', '1048576' into bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidOption(f"cannot read size {text!r}; write it like 512MiB or 2GiB")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _UNITS[unit])

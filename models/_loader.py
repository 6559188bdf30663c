"""Loading the registry, in two stages: first every model module that does not need
torchvision, then the plugin modules named in ``$EFFBENCH_PLUGINS``; second (only when a
name is not found among those, or for a listing or a suite) torchvision's zoo and our
networks built on torchvision's modules (:data:`ZOO`). Importing torchvision costs 1.1 s
here (1.0 s of it ``torch._dynamo``), so a run of our networks or a plugin's, its fork
server and its instruction counts never pay it.

Imports point one way: this module imports ``models.registry`` and the model modules, and
``models/__init__`` hands :func:`load_own` and :func:`load_zoo` to the registry
(``registry.set_loader``), which calls them at the first lookup that needs each; the
registry imports none of them.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from bench.errors import InvalidOption, UnknownModel
from models.registry import PLUGINS_ENV, NameTaken, registered_names

PACKAGE = "models"
# Named suites first: model modules join them.
FIRST = ("suites",)
# The second stage: the modules that import torchvision (tests/test_registry.py checks that
# the first stage does not import it, so a new such module fails there until listed here).
ZOO = ("torchvision_zoo", "deform_resnet", "senet")
_PLUGIN_NAMES: dict[str, str] = {}  # a name a plugin registered -> the plugin module


def model_modules() -> list[str]:
    """Every module of the ``models`` package that registers networks, in load order:
    :data:`FIRST`, the others alphabetically, then :data:`ZOO`; ``_``-prefixed modules
    and the registry are not model modules."""
    here = [str(Path(__file__).resolve().parent)]
    rest = sorted(
        info.name
        for info in pkgutil.iter_modules(here)
        if not info.name.startswith("_") and info.name not in {"registry", *FIRST, *ZOO}
    )
    return [f"{PACKAGE}.{name}" for name in (*FIRST, *rest, *ZOO)]


def plugin_modules() -> list[str]:
    """Module names in ``$EFFBENCH_PLUGINS`` (comma-separated)."""
    return [m for m in (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(",")) if m]


def load_own() -> None:
    """The first stage: import every model module but :data:`ZOO`'s, then every plugin
    module (worker processes inherit ``$EFFBENCH_PLUGINS``, so they see the same networks)."""
    zoo = {f"{PACKAGE}.{name}" for name in ZOO}
    for name in model_modules():
        if name not in zoo:
            importlib.import_module(name)
    for name in plugin_modules():
        before = registered_names()
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UnknownModel(
                f"cannot import plugin module {name!r} named in ${PLUGINS_ENV} ({e}); "
                "check the name and PYTHONPATH"
            ) from e
        except Exception as e:  # a plugin is anyone's code: its SyntaxError, a taken name
            first = (str(e).strip().splitlines() or [""])[0]
            raise InvalidOption(
                f"plugin module {name!r} named in ${PLUGINS_ENV} failed while loading "
                f"({type(e).__name__}: {first}); fix it or leave it out of ${PLUGINS_ENV}"
            ) from e
        _PLUGIN_NAMES.update(dict.fromkeys(registered_names() - before, name))


def load_zoo() -> None:
    """The second stage: torchvision's zoo and our networks built on it. A name a plugin
    took first is refused here, naming the plugin (it cannot shadow torchvision's)."""
    for name in ZOO:
        try:
            importlib.import_module(f"{PACKAGE}.{name}")
        except NameTaken as e:
            if e.name not in _PLUGIN_NAMES:
                raise
            raise InvalidOption(
                f"plugin module {_PLUGIN_NAMES[e.name]!r} named in ${PLUGINS_ENV} registers "
                f"{e.name!r}, a name {PACKAGE}.{name} registers too; rename the plugin's "
                f"network or leave the plugin out of ${PLUGINS_ENV}"
            ) from e

"""Loading the registry: import every model module (each registers its networks), then the
plugin modules named in ``$EFFBENCH_PLUGINS``.

Imports point one way: this module imports ``models.registry`` and the model modules, and
``models/__init__`` hands :func:`load_all` to the registry (``registry.set_loader``), which
calls it at the first lookup; the registry imports none of them.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from bench.errors import InvalidOption, UnknownModel
from models.registry import PLUGINS_ENV

PACKAGE = "models"
# Named suites first (model modules join them), then torchvision's zoo, then ours.
FIRST = ("suites", "torchvision_zoo")


def model_modules() -> list[str]:
    """Every module of the ``models`` package that registers networks, in load order:
    :data:`FIRST`, then the others alphabetically; ``_``-prefixed modules and the
    registry are not model modules."""
    here = [str(Path(__file__).resolve().parent)]
    rest = sorted(
        info.name
        for info in pkgutil.iter_modules(here)
        if not info.name.startswith("_") and info.name not in {"registry", *FIRST}
    )
    return [f"{PACKAGE}.{name}" for name in (*FIRST, *rest)]


def plugin_modules() -> list[str]:
    """Module names in ``$EFFBENCH_PLUGINS`` (comma-separated)."""
    return [m for m in (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(",")) if m]


def load_all() -> None:
    """Import every model module, then every plugin module (worker processes inherit
    ``$EFFBENCH_PLUGINS``, so they see the same networks)."""
    for name in model_modules():
        importlib.import_module(name)
    for name in plugin_modules():
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

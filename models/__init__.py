"""Architecture registry and our own implementations of the networks the suite benchmarks.

Importing this package imports only the registry; the model modules and plugins are
imported at the first lookup (``list_models``, ``get_spec``, ...) by ``models._loader``,
torchvision's zoo only when a lookup needs it.
"""

from models import _loader
from models.registry import (
    ModelSource,
    ModelSpec,
    Reference,
    extend_suite,
    get_model,
    get_spec,
    list_models,
    list_suites,
    register_model,
    register_source,
    register_suite,
    resolve_model_names,
    set_loader,
    suite_models,
)

set_loader(_loader.load_own, _loader.load_zoo)

__all__ = [
    "ModelSource",
    "ModelSpec",
    "Reference",
    "extend_suite",
    "get_model",
    "get_spec",
    "list_models",
    "list_suites",
    "register_model",
    "register_source",
    "register_suite",
    "resolve_model_names",
    "suite_models",
]

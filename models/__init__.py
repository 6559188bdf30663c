"""Architecture registry and our own implementations of the networks the suite benchmarks."""

from models.registry import (
    ModelSpec,
    Reference,
    extend_suite,
    get_model,
    get_spec,
    list_models,
    list_suites,
    register_model,
    register_suite,
    resolve_model_names,
    suite_models,
)

__all__ = [
    "ModelSpec",
    "Reference",
    "extend_suite",
    "get_model",
    "get_spec",
    "list_models",
    "list_suites",
    "register_model",
    "register_suite",
    "resolve_model_names",
    "suite_models",
]

"""The architecture registry: every benchmarkable network by name, with its input shape,
its builder and the published reference figures that come with it.

Modelled on torchvision's ``models/_api.py`` (``register_model`` / ``list_models`` /
``get_model``) and timm's ``_registry.py``: a builder is registered under a unique name,
and suites are named tuples of registered names.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from bench.errors import UnknownModel, UnknownSuite

Builder = Callable[[], nn.Module]


@dataclass(frozen=True, slots=True)
class Reference:
    """Published figures for a network, each traceable to ``source``.

    ``source`` names the paper (or metadata) and the table or figure each number comes from;
    it contains the word "unverified" where the figures were typed from the paper without
    being checked against its text. ``verified`` says where they were checked (address and
    section), empty if they were not. ``gmacs`` is multiply-adds per image in billions, as
    published (torchvision's ``_ops`` is rounded to 3 decimals). ``top1``/``top5`` are
    percentages on ``dataset``.
    """

    source: str
    top1: float | None = None
    top5: float | None = None
    params: int | None = None
    gmacs: float | None = None
    dataset: str = "ImageNet-1K"
    verified: str = ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A registered network: how to build it and what input it takes (C×H×W)."""

    name: str
    family: str
    builder: Builder = field(repr=False, compare=False)
    image_size: int
    in_chans: int = 3
    origin: str = "effbench"
    reference: Reference | None = None
    description: str = ""

    def build(self) -> nn.Module:
        """Build the network without weights, in its inference configuration (``eval()``)."""
        return self.builder().eval()


_REGISTRY: dict[str, ModelSpec] = {}
_SUITES: dict[str, tuple[str, ...]] = {}
_SUITE_DOCS: dict[str, str] = {}
_LOADED = False


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry; a name may be registered once only."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_suite(name: str, models: Iterable[str], doc: str = "") -> None:
    """Name a tuple of registered models; ``all`` is implicit and cannot be redefined."""
    if name == "all" or name in _SUITES:
        raise ValueError(f"suite {name!r} is already defined")
    _SUITES[name] = tuple(models)
    _SUITE_DOCS[name] = doc


def extend_suite(name: str, models: Iterable[str]) -> None:
    """Append registered models to an existing suite (our own implementations use this)."""
    if name not in _SUITES:
        raise ValueError(f"suite {name!r} is not defined")
    _SUITES[name] = _SUITES[name] + tuple(m for m in models if m not in _SUITES[name])


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from models import suites, torchvision_zoo  # noqa: F401  (registration side effects)

        _load_extra_modules()


PLUGINS_ENV = "EFFBENCH_PLUGINS"


def _load_extra_modules() -> None:
    """Import our own implementations (they register themselves on import), then any
    modules named in ``$EFFBENCH_PLUGINS`` (comma-separated), which is how users add
    their own networks; worker processes inherit the variable."""
    import importlib
    import os
    import pkgutil

    import models as pkg

    skip = {"registry", "suites", "torchvision_zoo"}  # timm_zoo imports timm only on demand
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"models.{info.name}")
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UnknownModel(
                f"cannot import plugin module {name!r} named in ${PLUGINS_ENV} ({e}); "
                "check the name and PYTHONPATH"
            ) from e


def list_models(include: str | None = None, exclude: str | None = None) -> list[str]:
    """Registered names, sorted; ``include``/``exclude`` are fnmatch patterns."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if include:
        names = [n for n in names if fnmatch.fnmatch(n, include)]
    if exclude:
        names = [n for n in names if not fnmatch.fnmatch(n, exclude)]
    return names


def list_suites() -> dict[str, str]:
    """Suite name to its one-line description, ``all`` included."""
    _ensure_loaded()
    return {**_SUITE_DOCS, "all": "every registered model"}


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


TIMM_PREFIX = "timm:"
_GLOB_CHARS = frozenset("*?[")


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``, or timm's network for ``timm:NAME``; unknown names
    raise with close matches (a ``timm:`` name without timm installed says how to install it)."""
    _ensure_loaded()
    if name.startswith(TIMM_PREFIX):
        from models import timm_zoo

        return timm_zoo.timm_spec(name[len(TIMM_PREFIX) :])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}{_suggest(name, _REGISTRY)}; see `effbench models` for the list"
        ) from None


def resolve_model_names(names: Sequence[str], cap: int = 50) -> tuple[str, ...]:
    """Expand and validate model names for a sweep, in order, each once.

    A name with ``*``, ``?`` or ``[`` is an fnmatch pattern: ``timm:PATTERN`` over
    ``timm.list_models()``, any other over the registry; a pattern matching nothing or more
    than ``cap`` networks raises. Every other name is checked with :func:`get_spec` (unknown
    names raise with close matches). Returns the canonical names (``timm:`` names keep
    their prefix).
    """
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if _GLOB_CHARS & set(name):
            expanded = _expand_pattern(name)
            if not expanded:
                raise UnknownModel(
                    f"no model matches {name!r}; see `effbench models` (or timm.list_models())"
                )
            if len(expanded) > cap:
                raise UnknownModel(
                    f"{name!r} matches {len(expanded)} models, more than the cap of {cap}; "
                    "narrow the pattern"
                )
            out.extend(expanded)
        else:
            out.append(get_spec(name).name)
    return tuple(dict.fromkeys(out))


def _expand_pattern(pattern: str) -> list[str]:
    if pattern.startswith(TIMM_PREFIX):
        from models import timm_zoo

        return [TIMM_PREFIX + n for n in timm_zoo.list_timm(pattern[len(TIMM_PREFIX) :])]
    return list_models(include=pattern)


def get_model(name: str) -> nn.Module:
    """Build the registered network ``name`` without weights, in ``eval()`` mode."""
    return get_spec(name).build()


def suite_models(name: str) -> tuple[str, ...]:
    """Names in suite ``name`` (``all`` is every registered model)."""
    _ensure_loaded()
    if name == "all":
        return tuple(sorted(_REGISTRY))
    try:
        names = _SUITES[name]
    except KeyError:
        known = [*_SUITES, "all"]
        raise UnknownSuite(
            f"unknown suite {name!r}{_suggest(name, known)}; known suites: {', '.join(known)}"
        ) from None
    # timm names stay (built on demand); registry names missing here (an older torchvision)
    # are left out.
    return tuple(n for n in names if n in _REGISTRY or n.startswith(TIMM_PREFIX))

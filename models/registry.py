"""The architecture registry: every benchmarkable network by name, with its input shape,
its builder and the published reference figures that come with it.

Modelled on torchvision's ``models/_api.py`` (``register_model`` / ``list_models`` /
``get_model``) and timm's ``_registry.py``: a builder is registered under a unique name,
and suites are named tuples of registered names. Two ways to register::

    @register_model(name="lenet5", family="lenet", image_size=32, reference=Reference(...))
    class LeNet5(nn.Module): ...

    register_model(ModelSpec(name="tiny", family="test", builder=Tiny, image_size=8))

This module imports no model module: ``models/__init__`` installs the function that does
(:func:`set_loader`), and other libraries' zoos (timm) add themselves as a
:class:`ModelSource`, so the imports all point one way, into this module.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

from torch import nn

from bench.errors import BenchError, InvalidOption, UnknownModel, UnknownSuite

Builder = Callable[..., nn.Module]
# A FlopCounterMode formula: (input shapes..., out_shape=...) -> FLOPs (2 per multiply-add).
MacsFormula = Callable[..., int]
B = TypeVar("B", bound=Builder)

TIMM_PREFIX = "timm:"
PLUGINS_ENV = "EFFBENCH_PLUGINS"
_GLOB_CHARS = frozenset("*?[")


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


def _frozen_formulas(formulas: Mapping[Any, MacsFormula] | None) -> Mapping[Any, MacsFormula]:
    return MappingProxyType(dict(formulas or {}))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A registered network: how to build it and what input it takes (C×H×W).

    ``suites`` are the suites the network joins when registered (besides ``all``).
    ``macs_formulas`` maps an operator packet (``torch.ops.NS.OP``) that torch's
    ``FlopCounterMode`` does not know to its FLOP formula; the MAC counters pass it as
    ``FlopCounterMode(custom_mapping=...)``, so nothing global is changed.
    """

    name: str
    family: str
    builder: Builder = field(repr=False, compare=False)
    image_size: int
    in_chans: int = 3
    origin: str = "effbench"
    reference: Reference | None = None
    description: str = ""
    suites: tuple[str, ...] = ()
    macs_formulas: Mapping[Any, MacsFormula] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def build(self, **options: Any) -> nn.Module:
        """Build the network without weights, in inference mode (``eval()``);
        ``options`` go to the builder (``num_classes=10``); an option it lacks raises."""
        _check_options(self, options)
        try:
            model = self.builder(**options)
        except TypeError as e:
            if options and "unexpected keyword argument" in str(e):
                raise InvalidOption(
                    f"model {self.name!r} cannot be built with {_listed(options)} ({e}); "
                    "leave the option out or see the builder's arguments"
                ) from e
            raise
        if not isinstance(model, nn.Module):
            raise InvalidOption(
                f"the builder of model {self.name!r} returned {type(model).__name__}, not a "
                "torch.nn.Module; fix the builder (a plugin's? see $EFFBENCH_PLUGINS)"
            )
        return model.eval()


@contextlib.contextmanager
def model_failures(name: str) -> Iterator[None]:
    """Inside the block, an exception that a network's own code raises (its builder or its
    forward; a plugin's network is anyone's code) becomes one :class:`InvalidOption` line
    naming the network. For the commands that build one to look at it (`models`,
    `inspect`, `profile`); a sweep records such a failure as the cell's error row."""
    try:
        yield
    except BenchError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InvalidOption(
            f"model {name!r} failed ({type(e).__name__}: {first}); its builder or forward "
            "is broken (a plugin's? see $EFFBENCH_PLUGINS)"
        ) from e


def _listed(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _check_options(spec: ModelSpec, options: Mapping[str, Any]) -> None:
    """Refuse options the builder's signature cannot take (a ``**kwargs`` builder is asked)."""
    if not options:
        return
    try:
        params = inspect.signature(spec.builder).parameters.values()
    except (TypeError, ValueError):  # not introspectable: let the builder decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in options if k not in takes]
    if unknown:
        raise InvalidOption(
            f"model {spec.name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(map(repr, takes)) if takes else 'no options'}"
        )


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Networks named ``prefix + NAME``, built on demand by another library (timm).

    ``spec(NAME)`` returns the spec (raising ``UnknownModel`` with close matches);
    ``names(PATTERN)`` lists the library's names (without the prefix) matching an fnmatch
    pattern.
    """

    prefix: str
    spec: Callable[[str], ModelSpec]
    names: Callable[[str], list[str]]


class NameTaken(ValueError):
    """A network registered under a name that is already taken (``name``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is already registered")
        self.name = name


_REGISTRY: dict[str, ModelSpec] = {}
_SUITES: dict[str, tuple[str, ...]] = {}
_SUITE_DOCS: dict[str, str] = {}
_SOURCES: dict[str, ModelSource] = {}
_LOADERS: tuple[Callable[[], None], ...] = ()
_LOADED = 0  # how many of the loaders' stages have run (or are running)


@overload
def register_model(spec: ModelSpec, /) -> ModelSpec: ...


@overload
def register_model(
    spec: None = None,
    /,
    *,
    name: str | None = None,
    family: str,
    image_size: int,
    in_chans: int = 3,
    origin: str = "effbench",
    reference: Reference | None = None,
    description: str = "",
    suites: Iterable[str] = (),
    macs_formulas: Mapping[Any, MacsFormula] | None = None,
) -> Callable[[B], B]: ...


def register_model(spec: ModelSpec | None = None, /, **meta: Any) -> ModelSpec | Callable[[B], B]:
    """Add a network to the registry; a name may be registered once only.

    ``register_model(ModelSpec(...))`` registers a spec and returns it (the plugin form).
    ``@register_model(name=..., family=..., image_size=..., reference=...)`` on a builder
    (a function or a class) registers it with that metadata and returns the builder
    unchanged; ``name`` defaults to the builder's ``__name__``.
    """
    if spec is not None:
        if meta:
            raise TypeError("register_model takes a ModelSpec or keyword metadata, not both")
        _add(spec)
        return spec

    def decorate(builder: B) -> B:
        fields = {"name": getattr(builder, "__name__", ""), **meta}
        fields["suites"] = tuple(fields.get("suites", ()))
        fields["macs_formulas"] = _frozen_formulas(fields.get("macs_formulas"))
        _add(ModelSpec(builder=builder, **fields))
        return builder

    return decorate


def _add(spec: ModelSpec) -> None:
    if spec.name in _REGISTRY:
        raise NameTaken(spec.name)
    if "all" in spec.suites:
        raise ValueError(f"model {spec.name!r}: every model is in suite 'all'; leave it out")
    _REGISTRY[spec.name] = spec


def register_suite(name: str, models: Iterable[str], doc: str = "") -> None:
    """Name a tuple of registered models; ``all`` is implicit and cannot be redefined."""
    if name == "all" or name in _SUITES:
        raise ValueError(f"suite {name!r} is already defined")
    _SUITES[name] = tuple(models)
    _SUITE_DOCS[name] = doc


def extend_suite(name: str, models: Iterable[str]) -> None:
    """Append registered models to an existing suite (or name ``suites=`` when registering)."""
    if name not in _SUITES:
        raise ValueError(f"suite {name!r} is not defined")
    _SUITES[name] = _SUITES[name] + tuple(m for m in models if m not in _SUITES[name])


def register_source(source: ModelSource) -> None:
    """Let names starting with ``source.prefix`` be built by ``source`` (timm's zoo does)."""
    if source.prefix in _SOURCES:
        raise ValueError(f"model source {source.prefix!r} is already registered")
    _SOURCES[source.prefix] = source


def set_loader(*stages: Callable[[], None]) -> None:
    """Install the functions that import the model modules and plugins, in stages; each
    runs once, at the first lookup that needs it (``models/__init__`` installs
    ``models._loader``'s two: our networks and the plugins, then torchvision's zoo).

    A name is looked up stage by stage, so a lookup of one of our networks or a plugin's
    never imports torchvision (1.1 s here); listings and suites load every stage."""
    global _LOADERS
    _LOADERS = stages


def load(stages: int | None = None) -> None:
    """Load the registry's first ``stages`` stages now (every stage by default): run those
    loaders that have not run yet."""
    global _LOADED
    want = len(_LOADERS) if stages is None else min(stages, len(_LOADERS))
    while want > _LOADED:
        _LOADED += 1  # counted first: modules being loaded may look names up
        _LOADERS[_LOADED - 1]()
        for spec in _REGISTRY.values():
            missing = [s for s in spec.suites if s not in _SUITES]
            if missing:
                raise ValueError(
                    f"model {spec.name!r} names undefined suite(s) "
                    f"{', '.join(map(repr, missing))}; define them with register_suite "
                    f"(known: {', '.join(_SUITES)})"
                )


def registered_names() -> frozenset[str]:
    """The names registered so far, without loading anything (for the loader)."""
    return frozenset(_REGISTRY)


def list_models(include: str | None = None, exclude: str | None = None) -> list[str]:
    """Registered names, sorted; ``include``/``exclude`` are fnmatch patterns."""
    load()
    names = sorted(_REGISTRY)
    if include:
        names = [n for n in names if fnmatch.fnmatch(n, include)]
    if exclude:
        names = [n for n in names if not fnmatch.fnmatch(n, exclude)]
    return names


def list_suites() -> dict[str, str]:
    """Suite name to its one-line description, ``all`` included."""
    load()
    return {**_SUITE_DOCS, "all": "every registered model"}


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _source_of(name: str) -> ModelSource | None:
    return next((s for p, s in _SOURCES.items() if name.startswith(p)), None)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``, or timm's network for ``timm:NAME``; unknown names
    raise with close matches (a ``timm:`` name without timm installed says how to install it)."""
    stage = 1
    load(stage)
    while (source := _source_of(name)) is None and name not in _REGISTRY:
        if stage >= len(_LOADERS):
            break
        stage += 1
        load(stage)
    if source is not None:
        return source.spec(name[len(source.prefix) :])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}{_suggest(name, _REGISTRY)}; see `effbench models` for the list"
        ) from None


def get_model(name: str, **options: Any) -> nn.Module:
    """Build network ``name`` without weights, in ``eval()`` mode; ``options`` go to its
    builder (``get_model("resnet18", num_classes=10)``); an option it cannot take raises
    ``InvalidOption``."""
    return get_spec(name).build(**options)


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
    load()
    source = _source_of(pattern)
    if source is not None:
        return [source.prefix + n for n in source.names(pattern[len(source.prefix) :])]
    return list_models(include=pattern)


def suite_models(name: str) -> tuple[str, ...]:
    """Names in suite ``name`` (``all`` is every registered model): the suite's own list,
    then the models that named it in ``suites=``, in registration order."""
    load()
    if name == "all":
        return tuple(sorted(_REGISTRY))
    try:
        names = _SUITES[name]
    except KeyError:
        known = [*_SUITES, "all"]
        raise UnknownSuite(
            f"unknown suite {name!r}{_suggest(name, known)}; known suites: {', '.join(known)}"
        ) from None
    joined = tuple(n for n, s in _REGISTRY.items() if name in s.suites and n not in names)
    # names of a source (timm) stay, built on demand; registry names missing here (an older
    # torchvision) are left out.
    return tuple(n for n in (*names, *joined) if n in _REGISTRY or _source_of(n) is not None)

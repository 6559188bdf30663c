"""Configurations: how a model is run, a sweep axis beside models, batch sizes, devices and
dtypes. Pure Python (no torch): the plan parses and checks them, the worker applies them.

A configuration is a ``+``-joined set of parts, written in one canonical order:

- ``channels_last``: model and input in ``torch.channels_last`` memory format;
- ``autocast``: weights and input stay float32, the forward runs under ``torch.autocast``
  to the row's dtype (float16 or bfloat16), unlike ``--dtypes``, which casts the model;
- one compiler part: ``compile`` (``torch.compile``, inductor, default mode),
  ``compile-max-autotune`` (inductor, ``mode="max-autotune"``), ``compile:BACKEND``
  (another dynamo backend, default mode) or ``cudagraphs`` (inductor,
  ``mode="reduce-overhead"``: CUDA graphs; CUDA only);
- one allocator part (CPU only; :mod:`bench.allocators`): ``malloc:tuned`` (glibc with fixed
  mmap and trim thresholds), ``malloc:jemalloc`` or ``malloc:tcmalloc`` (preloaded into a
  new worker interpreter).

``eager`` is the configuration with none of them (today's behaviour): the worker then runs
under the allocator a user's process has by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.allocators import MALLOCS, PRELOADED, unavailable_reason
from bench.errors import InvalidOption

EAGER = "eager"
_BACKEND = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# Largest |output - eager float32 output| / largest |eager float32 output| accepted as the
# same model, by the row's dtype: float32 allows reordered reductions and other kernels
# (compile, channels_last); half precisions their 10- and 7-bit mantissas through a deep net.
TOLERANCE = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 1e-1}


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration; ``name`` is its canonical text."""

    channels_last: bool = False
    autocast: bool = False
    compiler: str | None = None  # None, "compile", "compile-max-autotune", "cudagraphs"
    backend: str = "inductor"
    malloc: str | None = None  # None (the process's default allocator), or one of MALLOCS

    @property
    def name(self) -> str:
        parts = []
        if self.channels_last:
            parts.append("channels_last")
        if self.autocast:
            parts.append("autocast")
        if self.compiler == "compile" and self.backend != "inductor":
            parts.append(f"compile:{self.backend}")
        elif self.compiler:
            parts.append(self.compiler)
        if self.malloc:
            parts.append(f"malloc:{self.malloc}")
        return "+".join(parts) or EAGER

    @property
    def compiled(self) -> bool:
        return self.compiler is not None

    @property
    def mode(self) -> str | None:
        """``torch.compile``'s ``mode``."""
        return {"compile-max-autotune": "max-autotune", "cudagraphs": "reduce-overhead"}.get(
            self.compiler or ""
        )

    @property
    def preloaded(self) -> bool:
        """The allocator is a preloaded library, so the worker must be a new interpreter."""
        return self.malloc in PRELOADED

    @property
    def is_reference(self) -> bool:
        """Eager: with float32 it is the reference every output is checked against."""
        return self.name == EAGER


def parse_config(text: str) -> Config:
    """``channels_last+compile`` and the like; see the module docstring for the parts."""
    parts = [p.strip() for p in text.split("+")]
    if not text.strip() or not all(parts):
        raise InvalidOption(f"configuration {text!r} has an empty part; e.g. channels_last+compile")
    if parts == [EAGER]:
        return Config()
    seen: set[str] = set()
    flags = {"channels_last": False, "autocast": False}
    compiler, backend, malloc = None, "inductor", None
    for part in parts:
        if part in seen:
            raise InvalidOption(f"configuration {text!r} names {part!r} twice")
        seen.add(part)
        if part in flags:
            flags[part] = True
            continue
        name, colon, arg = part.partition(":")
        if colon and not arg and name != "malloc":
            raise InvalidOption(
                f"{part!r} names no backend; write compile:BACKEND (e.g. compile:aot_eager) "
                "or compile alone for inductor"
            )
        if name == EAGER:
            raise InvalidOption(f"{text!r}: eager is the configuration with no other part")
        if name == "malloc" and colon:
            if arg not in MALLOCS:
                raise InvalidOption(
                    f"configuration part {part!r} names no allocator effbench knows; use "
                    + ", ".join(f"malloc:{m}" for m in MALLOCS)
                )
            if malloc is not None:
                raise InvalidOption(
                    f"{text!r}: choose one allocator, not malloc:{malloc} and {part}"
                )
            malloc = arg
            continue
        if name not in ("compile", "compile-max-autotune", "cudagraphs") or (
            arg and name != "compile"
        ):
            raise InvalidOption(
                f"unknown configuration part {part!r}; use eager, channels_last, autocast, "
                "compile, compile-max-autotune, compile:BACKEND, cudagraphs or "
                "malloc:ALLOCATOR, joined by '+'"
            )
        if compiler is not None:
            raise InvalidOption(f"{text!r}: choose one compiler part, not {compiler} and {part}")
        if arg and not _BACKEND.fullmatch(arg):
            raise InvalidOption(f"{part!r}: a backend is a name such as inductor or aot_eager")
        compiler, backend = name, (arg or "inductor")
    return Config(flags["channels_last"], flags["autocast"], compiler, backend, malloc)


def check_config(config: Config, device: str, dtype: str) -> None:
    """Refuse a configuration this device and dtype cannot run, before anything runs."""
    if config.compiler == "cudagraphs" and not device.startswith("cuda"):
        raise InvalidOption(
            f"configuration {config.name} needs CUDA graphs, which {device} does not have; "
            "drop it or run on --devices cuda"
        )
    if config.malloc and device != "cpu":
        raise InvalidOption(
            f"configuration {config.name} sets the C allocator of a CPU forward, and this one "
            f"runs on {device}; drop malloc:{config.malloc} or run on --devices cpu"
        )
    if config.autocast and dtype == "float32":
        raise InvalidOption(
            f"configuration {config.name} autocasts to the row's dtype, which is float32 here; "
            "add --dtypes float16 or bfloat16 (or drop autocast)"
        )


def check_allocator(config: Config, available: frozenset[str]) -> None:
    """Refuse a ``malloc:`` part this machine cannot run (``available``: the parts it can,
    :attr:`bench.plan.Inventory.allocators`), with the command that installs it."""
    if config.malloc is not None and config.malloc not in available:
        raise InvalidOption(unavailable_reason(config.malloc))

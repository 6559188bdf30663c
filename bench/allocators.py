"""The C allocator a CPU worker runs under: the ``malloc:`` part of a configuration
(:mod:`bench.configs`, docs/configs.md). Pure Python (no torch).

Without a ``malloc:`` part the worker leaves the allocator exactly as a user's process has
it: glibc's malloc with its dynamic thresholds, no ``mallopt``, no environment change.

- ``malloc:tuned``: glibc with two fixed thresholds, set with ``mallopt`` in the worker
  before the model is built. ``M_MMAP_THRESHOLD`` 32 MiB: the largest value ``mallopt``
  accepts on 64-bit Linux (glibc's ``DEFAULT_MMAP_THRESHOLD_MAX``) and the ceiling its own
  dynamic adjustment reaches, so every block under 32 MiB comes from the heap and is
  reused, instead of being mapped, unmapped and faulted in again on every forward.
  ``M_TRIM_THRESHOLD`` 64 MiB: twice that, the ratio glibc's dynamic adjustment keeps, so
  freed activations stay in the heap between forwards. Setting either turns glibc's dynamic
  adjustment off for good, which is why it is a configuration and never a side effect.
- ``malloc:jemalloc``, ``malloc:tcmalloc``: the library is preloaded (``LD_PRELOAD``) into a
  new interpreter for the worker (a forked worker already runs glibc's malloc); the worker
  checks that the library is mapped before it builds the model.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError, InvalidOption

TUNED = "tuned"
# glibc's mallopt parameters (malloc.h) and the values of malloc:tuned (see above).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TUNED_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TUNED_TRIM_THRESHOLD_BYTES = 2 * TUNED_MMAP_THRESHOLD_BYTES
PROC_MAPS = Path("/proc/self/maps")


@dataclass(frozen=True, slots=True)
class Library:
    """An allocator preloaded as a shared library: its file names, most wanted first, and
    the Debian/Ubuntu package that installs it."""

    sonames: tuple[str, ...]
    package: str

    @property
    def install(self) -> str:
        return f"apt-get install {self.package}"


PRELOADED: Mapping[str, Library] = {
    "jemalloc": Library(("libjemalloc.so.2",), "libjemalloc2"),
    # the minimal build has no heap profiler (google-perftools' libtcmalloc.so.4 has one)
    "tcmalloc": Library(("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), "libtcmalloc-minimal4"),
}
MALLOCS: tuple[str, ...] = (TUNED, *PRELOADED)


def _library_dirs() -> list[Path]:
    arch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    dirs = [f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/lib64", "/lib64", "/usr/lib", "/lib"]
    return [Path(d) for d in (*dirs, "/usr/local/lib", os.path.join(sys.prefix, "lib"))]


def find_library(name: str, dirs: list[Path] | None = None) -> Path | None:
    """The file of preloaded allocator ``name`` on this machine, or None."""
    for soname in PRELOADED[name].sonames:
        for d in _library_dirs() if dirs is None else dirs:
            if (d / soname).is_file():
                return d / soname
    return None


def is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def available() -> frozenset[str]:
    """The ``malloc:`` parts this machine can run: ``tuned`` on glibc, and each preloaded
    allocator whose library is installed (Linux only: ``LD_PRELOAD``)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    found = {name for name in PRELOADED if find_library(name) is not None}
    return frozenset({TUNED} if is_glibc() else set()) | found


def unavailable_reason(name: str) -> str:
    """Why ``malloc:NAME`` cannot run here, and what to do: one line."""
    if name == TUNED:
        return (
            "configuration part malloc:tuned sets glibc's malloc thresholds, and this machine's "
            "workers do not run on glibc; drop it"
        )
    lib = PRELOADED[name]
    return (
        f"configuration part malloc:{name} preloads {lib.sonames[0]}, which is not installed "
        f"here: {lib.install} (Debian/Ubuntu), or drop it"
    )


def preload_env(malloc: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a new worker interpreter needs for ``malloc`` (``LD_PRELOAD`` with the
    library first, ahead of any the environment already preloads); none for the others."""
    if malloc not in PRELOADED:
        return {}
    path = find_library(malloc)
    if path is None:
        raise InvalidOption(unavailable_reason(malloc))
    before = environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{path}:{before}" if before else str(path)}


def mapped_library(name: str, maps: Path = PROC_MAPS) -> str | None:
    """The file of allocator ``name`` mapped into this process, or None (a soname is often
    a link: ``libtcmalloc_minimal.so.4`` maps as ``libtcmalloc_minimal.so.4.5.10``)."""
    sonames = PRELOADED[name].sonames
    for line in maps.read_text().splitlines():
        fields = line.split()
        path = fields[5] if len(fields) >= 6 else ""
        if os.path.basename(path).startswith(sonames):
            return path
    return None


def tune_glibc(libc: Any) -> None:
    """``malloc:tuned``: fix glibc's mmap and trim thresholds (see the module docstring)."""
    for param, value in (
        (M_MMAP_THRESHOLD, TUNED_MMAP_THRESHOLD_BYTES),
        (M_TRIM_THRESHOLD, TUNED_TRIM_THRESHOLD_BYTES),
    ):
        if libc.mallopt(param, value) != 1:
            raise BenchError(f"malloc:tuned: glibc refused mallopt({param}, {value})")


def apply_malloc(malloc: str | None, libc: Any = None, maps: Path = PROC_MAPS) -> None:
    """In the worker, before the model is built: set ``malloc:tuned``'s thresholds, or check
    that the preloaded allocator is really the one this process runs; nothing without a
    ``malloc:`` part. Raises :class:`BenchError` where the allocator is not as asked."""
    if malloc is None:
        return
    if malloc == TUNED:
        if not is_glibc():
            raise BenchError(unavailable_reason(TUNED))
        if libc is None:
            import ctypes

            libc = ctypes.CDLL(None)
        tune_glibc(libc)
        return
    if mapped_library(malloc, maps) is None:
        raise BenchError(
            f"malloc:{malloc}: {PRELOADED[malloc].sonames[0]} is not loaded in this worker "
            "(it must start as a new interpreter with LD_PRELOAD; see bench.executor)"
        )

"""Display units: the stored columns keep the probes' units (bytes, multiply-adds, counts,
milliseconds); what a person reads is converted here, once, by these names.

Pure and import-free, so that the CLI and the report (which never import torch) share it.
The functions take a number or anything that divides like one (a pandas Series, a numpy
array) and return the same kind.
"""

from __future__ import annotations

from typing import TypeVar

MIB = 1024**2  # bytes per mebibyte (MiB)
GIGA = 1e9  # multiply-adds per G-MAC
MEGA = 1e6  # parameters per million
MS_PER_S = 1e3  # milliseconds per second

T = TypeVar("T")


def to_mib(n_bytes: T) -> T:
    """Bytes → mebibytes (2**20 bytes)."""
    return n_bytes / MIB  # type: ignore[operator]


def to_gmacs(macs: T) -> T:
    """Multiply-adds → G-MACs (10**9 multiply-adds)."""
    return macs / GIGA  # type: ignore[operator]


def to_millions(count: T) -> T:
    """A count (parameters) → millions."""
    return count / MEGA  # type: ignore[operator]


def ms_to_s(ms: T) -> T:
    """Milliseconds → seconds."""
    return ms / MS_PER_S  # type: ignore[operator]

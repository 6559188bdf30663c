"""The host's usual speed-canary rate (bench.probes.canary), kept across runs.

A run that happens to fall in one of the host's slow phases cannot tell from its own
canaries that the host can run faster; the record remembers, per thread count, the medians
of the canaries of past sessions (those with at least :data:`MIN_CELLS` CPU cells), the
:data:`KEEP` fastest of them, in ``$EFFBENCH_CACHE_DIR`` (default ``~/.cache/effbench``)
``/canary.json``. The reference a session is compared with (:meth:`CanaryRecord.best`) is
the median of those: one 25 ms canary varies by ±20% on this project's VM, one session's
median far less, and one lucky session does not make every later one look slow.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
from dataclasses import dataclass, field
from pathlib import Path

CACHE_ENV = "EFFBENCH_CACHE_DIR"
KEEP = 9  # fastest session medians kept per thread count; the reference is their median
MIN_CELLS = 5  # CPU cells a session needs for its median to join the record
FILE = "canary.json"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "effbench")


def _host() -> str:
    return socket.gethostname()


@dataclass
class CanaryRecord:
    """The fastest session-median canary rates (MACs/s) of one host, by thread count."""

    rates: dict[int, list[float]] = field(default_factory=dict)
    path: Path | None = None
    host: str = field(default_factory=_host)

    def add(self, threads: int, rate: float | None) -> None:
        if rate is None or not rate > 0:
            return
        kept = sorted([*self.rates.get(threads, []), float(rate)], reverse=True)
        self.rates[threads] = kept[:KEEP]

    def best(self, threads: int) -> float | None:
        """The reference rate at ``threads``: the median of the fastest kept (None before
        any)."""
        kept = self.rates.get(threads)
        return statistics.median(kept) if kept else None

    @classmethod
    def load(cls, directory: Path | None = None) -> CanaryRecord:
        """This host's record; empty when there is none or it cannot be read (a damaged
        record only loses the memory of past speed, never a run)."""
        path = (directory or cache_dir()) / FILE
        record = cls(path=path)
        try:
            data = json.loads(path.read_text())
            mine = data.get(record.host, {})
            record.rates = {int(t): [float(r) for r in v][:KEEP] for t, v in mine.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            record.rates = {}
        return record

    def save(self) -> None:
        """Write the record back (other hosts' entries kept); a cache that cannot be
        written is skipped: it is a memory, not a result."""
        if self.path is None:
            return
        try:
            try:
                data = json.loads(self.path.read_text())
                if not isinstance(data, dict):
                    data = {}
            except (OSError, ValueError):
                data = {}
            data[self.host] = {str(t): v for t, v in sorted(self.rates.items())}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
        except OSError:
            return

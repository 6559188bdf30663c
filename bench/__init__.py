"""effbench: efficiency benchmarks for image-classification networks.

The one loader of results is :func:`load_results`; everything else is reached through the
``effbench`` command line (``bench.cli``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BenchError", "load_results"]


def load_results(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    expected_rows: int | None = None,
) -> pd.DataFrame:
    """Read any mix of run folders, folders of runs and part files into one DataFrame
    (:func:`bench.store.load_results`; imported on call, so that ``import bench.keys`` and
    the other pure modules do not pull in pandas and pyarrow)."""
    from bench.store import load_results as load

    return load(paths, expected_rows)


__version__ = "0.1.0"

"""bench/stats/ stays pure, and the rank test's exact-null limit is a parameter.

The numbers of the two-sample statistics (t distribution, Benjamini-Hochberg, Welch, the
rank test) are checked through the regression gate in tests/test_compare.py.
"""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import numpy as np

from bench.stats.inference import EXACT_RANK_LIMIT, rank_estimate, welch

STATS = Path(__file__).resolve().parent.parent / "bench" / "stats"
ALLOWED = {"__future__", "collections", "dataclasses", "functools", "math", "numpy", "bench"}


def test_statistics_import_only_numpy_and_the_standard_library() -> None:
    for path in sorted(STATS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"
                if name.startswith("bench"):
                    assert name in ("bench.errors", *(f"bench.stats.{p.stem}" for p in
                                                      STATS.glob("*.py"))), name  # fmt: skip


def test_rank_estimate_is_exact_up_to_the_limit_it_is_given() -> None:
    rng = random.Random(2)
    b = np.array([math.exp(rng.gauss(0, 0.1)) for _ in range(8)])
    c = np.array([math.exp(rng.gauss(0.05, 0.1)) for _ in range(9)])
    assert EXACT_RANK_LIMIT >= 8 * 9 and rank_estimate(b, c, 0.0).exact
    assert not rank_estimate(b, c, 0.0, exact_limit=71).exact


def test_yuen_without_anything_to_cut_is_welch() -> None:
    b, c = np.array([10.0, 10.2, 9.9]), np.array([11.0, 10.8])
    assert welch(b, c, 0.0, trim=0.2) == welch(b, c, 0.0)

"""A refactoring guard for `effbench compare`'s three output formats.

The golden files under ``tests/data/compare_golden/`` were written by the code *before*
``bench/compare.py`` became the ``bench/compare/`` package (issue 12), from the constructed
comparisons below; the test asserts that markdown, JSON and JUnit stay byte for byte what
that code wrote. They guard a refactoring, not a specification: when an output is changed on
purpose, regenerate them with ``python tests/test_compare_golden.py --write`` and review
the diff.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from factories import make_row

from bench import compare as cmp
from bench.schema import Row

GOLDEN = Path(__file__).resolve().parent / "data" / "compare_golden"
ENV = {"torch_version": "2.14.1+cu130", "cuda_version": "13.0", "cudnn_version": None}
JITTER = (1.0, 1.01, 0.99, 1.005, 0.995, 1.02, 0.985, 1.0, 1.012, 0.992)
SKEW = (1.0, 1.02, 1.41, 0.99, 1.0, 1.38, 1.01, 0.995, 1.43, 1.005, 1.0, 1.02)


def _row(model: str, batch: int, value: float, repeat: int, **kw: object) -> Row:
    """A row whose repeat measured ``value`` ms (four samples around it), with memory,
    energy and a torch version to compare."""
    fields: dict[str, object] = dict(
        family="test",
        image_size=64,
        device_name="Test CPU",
        latency_ms_median=value,
        latency_ms_p10=0.9 * value,
        latency_ms_samples=(0.98 * value, value, 1.03 * value, 1.01 * value),
        peak_memory_bytes=1_000_000 + int(value),
        energy_j=0.01 * value,
        torch_version="2.14.1+cu130",
    )
    return make_row(model, batch, repeat, **{**fields, **kw})


def _side(label: str, rows: list[Row], env: dict | None = None) -> cmp.Side:
    return cmp.Side(label, pd.DataFrame([r.to_dict() for r in rows]), (env or ENV,))


def _cell(model: str, batch: int, values: list[float], **kw: object) -> list[Row]:
    return [_row(model, batch, v, i, **kw) for i, v in enumerate(values)]


def _scaled(ratio: float, jitter: tuple[float, ...] = JITTER, n: int = 5) -> list[float]:
    return [10.0 * ratio * j for j in jitter[:n]]


def _welch_mixed() -> cmp.Comparison:
    """Welch on repeats: regression, improvement, unchanged, inconclusive; memory too;
    sides apart in time (drift allowance); cells on one side only; hostile names."""
    t0, t1 = "2026-11-01T10:00:00+00:00", "2026-11-02T10:00:00+00:00"
    base = [
        *_cell("slow", 1, _scaled(1.0), timestamp=t0),
        *_cell("fast", 2, _scaled(1.0, n=10), timestamp=t0),
        *_cell("same", 1, _scaled(1.0, n=10), timestamp=t0),
        *_cell("noisy|<b>[x](y)", 4, _scaled(1.0), timestamp=t0),
        *_cell("gone\x07", 1, _scaled(1.0), timestamp=t0),
    ]
    cand = [
        *_cell("slow", 1, _scaled(1.6), timestamp=t1),
        *_cell("fast", 2, _scaled(0.5, n=10), timestamp=t1),
        *_cell("same", 1, _scaled(1.0, n=10), timestamp=t1),
        *_cell("noisy|<b>[x](y)", 4, _scaled(1.0, (1.0, 1.3, 0.85, 1.2, 1.05)), timestamp=t1),
        *_cell("new", 8, _scaled(1.0), timestamp=t1),
    ]
    settings = cmp.Settings(metrics=("latency", "memory"))
    return cmp.compare_sides(_side("base", base), _side("cand *x*", cand), settings)


def _rank_p10() -> cmp.Comparison:
    """The rank test on 10th percentiles: skewed repeats, ties, too few repeats; the sides
    interleaved in time (no drift allowance); an environment difference compared anyway."""
    stamp = "2026-11-01T10:00:00+00:00"
    base = [
        *_cell("skew", 1, [10.0 * s for s in SKEW], timestamp=stamp),
        *_cell("ties", 1, [10.0, 10.0, 11.0, 10.0, 11.0, 10.0], timestamp=stamp),
        *_cell("few", 2, _scaled(1.0, n=3), timestamp=stamp),
    ]
    cand = [
        *_cell("skew", 1, [11.0 * s for s in reversed(SKEW)], timestamp=stamp),
        *_cell("ties", 1, [10.0, 11.0, 11.0, 10.0, 11.0, 10.0], timestamp=stamp),
        *_cell("few", 2, _scaled(1.5, n=3), timestamp=stamp),
    ]
    settings = cmp.Settings(
        threshold=cmp.Threshold(0.025), latency_statistic="p10", test="rank", alpha=0.05
    )
    env = {**ENV, "cuda_version": "12.4"}
    return cmp.compare_sides(_side("b", base), _side("c", cand, env), settings)


def _single_and_failed() -> cmp.Comparison:
    """One repeat per side (samples, single values), one against many (borrowed spread),
    failed cells (candidate only, both alike, both differently), a cell without data."""
    base = [
        *_cell("single", 1, [10.0]),
        *_cell("borrow", 1, _scaled(1.0, n=10)),
        *_cell("crash", 1, _scaled(1.0)),
        *_cell("oom_both", 1, [0.0], status="oom", latency_ms_median=None, energy_j=None,
               peak_memory_bytes=None, latency_ms_samples=()),
        *_cell("mixed_fail", 1, [0.0], status="crashed", latency_ms_median=None,
               energy_j=None, peak_memory_bytes=None, latency_ms_samples=()),
        *_cell("nodata", 1, _scaled(1.0)),
    ]  # fmt: skip
    cand = [
        *_cell("single", 1, [12.5]),
        *_cell("borrow", 1, [13.0]),
        *_cell("crash", 1, [0.0], status="crashed", latency_ms_median=None, energy_j=None,
               peak_memory_bytes=None, latency_ms_samples=()),
        *_cell("oom_both", 1, [0.0], status="oom", latency_ms_median=None, energy_j=None,
               peak_memory_bytes=None, latency_ms_samples=()),
        *_cell("mixed_fail", 1, [0.0], status="timeout", latency_ms_median=None,
               energy_j=None, peak_memory_bytes=None, latency_ms_samples=()),
        *_cell("nodata", 1, [0.0], status="skipped", latency_ms_median=None, energy_j=None,
               peak_memory_bytes=None, latency_ms_samples=()),
    ]  # fmt: skip
    return cmp.compare_sides(_side("base", base), _side("cand", cand), cmp.Settings())


def _trimmed() -> cmp.Comparison:
    """Yuen's trimmed test with a lower single-run floor and drift floor."""
    base = [*_cell("a", 1, _scaled(1.0, n=10)), *_cell("b", 1, [10.0])]
    cand = [*_cell("a", 1, _scaled(1.08, tuple(reversed(JITTER)), n=10)),
            *_cell("b", 1, [10.9])]  # fmt: skip
    settings = cmp.Settings(
        metrics=("latency", "energy"),
        trim=0.2,
        single_run_floor=math.log1p(0.3),
        drift_floor=math.log1p(0.1),
    )
    return cmp.compare_sides(_side("base", base), _side("cand", cand), settings)


CASES: dict[str, Callable[[], cmp.Comparison]] = {
    "welch_mixed": _welch_mixed,
    "rank_p10": _rank_p10,
    "single_and_failed": _single_and_failed,
    "trimmed": _trimmed,
}
SUFFIX = {"md": "md", "json": "json", "junit": "xml"}


def _render(case: str, fmt: str) -> str:
    return cmp.render(CASES[case](), fmt)


@pytest.mark.parametrize("fmt", sorted(SUFFIX))
@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_what_the_code_before_the_refactoring_wrote(case: str, fmt: str) -> None:
    expected = (GOLDEN / f"{case}.{SUFFIX[fmt]}").read_text(encoding="utf-8")
    got = _render(case, fmt)
    if fmt == "json":  # full-precision floats: the last bit follows numpy's summation order
        assert _approx(json.loads(got)) == json.loads(expected)
    else:
        assert got == expected


def _approx(value: object) -> object:
    """``value`` (parsed JSON) with every float replaced by ``pytest.approx`` to 1e-12."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12, abs=0.0)
    return value


def _write() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        for fmt, suffix in SUFFIX.items():
            (GOLDEN / f"{case}.{suffix}").write_text(_render(case, fmt), encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()

"""Made-up result rows for the tests of the loader, the report and the comparison.

Importable from any test module as ``from factories import make_row`` (pytest puts
``tests/`` on ``sys.path``). The rows are SYNTHETIC: valid against the schema, never
measured.
"""

from __future__ import annotations

from bench.schema import Row


def make_row(model: str, batch_size: int, repeat: int = 0, **fields: object) -> Row:
    """An ``ok`` row of ``model`` at ``batch_size`` on one CPU thread in float32, run ``r``,
    with three latency samples (1, 2, 3 ms, median 2 ms); ``fields`` set or override any
    other column."""
    values: dict[str, object] = dict(
        run_id="r",
        repeat=repeat,
        timestamp="t",
        model=model,
        family="f",
        batch_size=batch_size,
        image_size=8,
        in_chans=3,
        device="cpu",
        device_name="cpu",
        dtype="float32",
        threads=1,
        status="ok",
        latency_ms_samples=(1.0, 2.0, 3.0),
        latency_ms_median=2.0,
    )
    values.update(fields)
    return Row(**values)  # type: ignore[arg-type]

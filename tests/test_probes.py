"""The probe window protocol: a new probe is one file plus one registration line, its
columns reach the parquet with their declared types, and a failing probe loses nothing
but its own columns."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FAST, effbench

from bench import load_results


def _run(tmp_path: Path, plugin: str, model: str = "lenet5") -> Path:
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = f"effbench_test_models,{plugin}"
    args = ["run", "--models", model, "--batch-sizes", "1,4", "--threads", "1", *FAST]
    r = effbench([*args, "--out", str(tmp_path), "--run-id", "p"], env=env)
    assert r.returncode == 0, r.stderr
    return tmp_path / "p"


def test_an_example_probe_fills_its_declared_columns(tmp_path: Path) -> None:
    run = _run(tmp_path, "effbench_cpu_time_probe")
    df = load_results([run])
    assert list(df["status"]) == ["ok", "ok"]
    part = next(run.glob("part-*.parquet"))
    assert str(pq.read_schema(part).field("cpu_time_ms").type) == "double"
    assert set(df["cpu_time_source"]) == {"process_time"}
    # one thread: over the window (forwards and the loop around them) the process is busy
    # most of the wall time and can never be busy much more than all of it
    share = df["cpu_busy_share"]
    assert ((share > 0.2) & (share < 1.3)).all(), share.tolist()
    # and a forward costs at least some CPU: per forward, CPU time is a real share of latency
    assert (df["cpu_time_ms"] > 0.2 * df["latency_ms_mean"]).all()


def test_a_plugin_measurement_reaches_the_report_and_the_gate(tmp_path: Path) -> None:
    """Its declarations travel with the rows: the report summarises its columns by their
    ``agg`` and the gate compares its ``gate`` metric, neither importing the plugin."""
    from bench.compare import Settings, compare_paths, to_junit, to_markdown
    from bench.report.data import load_report_data
    from bench.report.summary import summary_table

    run = _run(tmp_path, "effbench_cpu_time_probe")
    rows = load_results([run])
    data = load_report_data([run])
    assert [c.name for c in data.extra] == ["cpu_time_ms", "cpu_busy_share", "cpu_time_source"]
    cells = data.cells.set_index("batch_size")
    for b in (1, 4):  # one repeat: the cell's median is the row's value
        row = rows[rows["batch_size"] == b].iloc[0]
        assert cells.loc[b, "cpu_time_ms"] == pytest.approx(row["cpu_time_ms"], rel=1e-12)
        assert cells.loc[b, "cpu_time_source"] == "process_time"
    table = summary_table(data)
    bs1 = rows.loc[rows["batch_size"] == 1, "cpu_time_ms"].iloc[0]
    assert table["cpu_time_ms_bs1"].iloc[0] == pytest.approx(bs1, rel=1e-12)
    assert "cpu_time_source_bs1" not in table.columns  # text: not a number to summarise
    comparison = compare_paths(run, run, Settings(metrics=("cpu_time",)))
    assert comparison.metrics == ("cpu_time",)
    assert {r.metric for r in comparison.results} == {"cpu_time"}
    assert len(comparison.results) == 2 and all(r.ratio == 1.0 for r in comparison.results)
    assert f"{bs1:.4g} ms" in to_markdown(comparison)
    assert f"baseline {bs1:.4g} ms" in to_junit(comparison)


def test_a_failing_probe_records_its_error_and_keeps_the_latency(tmp_path: Path) -> None:
    df = load_results([_run(tmp_path, "effbench_failing_probe")])
    assert list(df["status"]) == ["ok", "ok"]
    assert df["flaky_source"].str.startswith("failed: OSError: sensor unplugged").all()
    assert df["flaky_value"].isna().all()
    assert (df["latency_ms_median"] > 0).all() and df["peak_memory_bytes"].notna().all()


def test_a_probe_may_not_take_a_contract_column() -> None:
    from bench.probes.base import WINDOW_ONLY, Measurement
    from bench.probes.registry import register_measurement
    from bench.schema import Column

    class Clash(Measurement):
        columns = (Column("latency_ms_median", "float?", "ms", "taken"),)
        note_column = "latency_ms_median"
        phases = WINDOW_ONLY

    with pytest.raises(ValueError, match="already taken"):
        register_measurement(Clash)


def test_a_probe_may_not_take_a_built_in_gate_metric() -> None:
    from bench.probes.base import WINDOW_ONLY, Measurement
    from bench.probes.registry import register_measurement
    from bench.schema import Column, Gate

    class Clash(Measurement):
        columns = (Column("my_latency_ms", "float?", "ms", "mine", gate=Gate("latency")),)
        note_column = "my_latency_ms"
        phases = WINDOW_ONLY

    with pytest.raises(ValueError, match="gate metrics already taken"):
        register_measurement(Clash)

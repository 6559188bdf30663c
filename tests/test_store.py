"""The loader: any mix of run folders and files; schema migration; corrupt input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import make_row

from bench.errors import ResultsCorrupt
from bench.keys import CellKey, RowKey
from bench.schema import COLUMNS, Row
from bench.store import done_keys, load_results, write_manifest, write_row


def _run(tmp_path: Path, name: str, rows: list[Row]) -> Path:
    d = tmp_path / name
    d.mkdir()
    write_manifest(d, {"run_id": name})
    for i, r in enumerate(rows):
        write_row(d, f"c{i}", r)
    return d


def test_mix_of_folders_and_files(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    a = _run(tmp_path / "results", "a", [make_row("m1", 1), make_row("m1", 2)])
    b = _run(tmp_path / "results", "b", [make_row("m2", 1)])
    part = next(b.glob("part-*.parquet"))
    assert len(load_results([a, part])) == 3
    assert len(load_results([tmp_path / "results"])) == 3  # a folder of runs
    assert len(load_results([a, a / "part-c0.parquet"])) == 2  # no double counting
    df = load_results([a])
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert df["latency_ms_samples"].iloc[0].tolist() == [1.0, 2.0, 3.0]


def test_old_files_without_new_columns_still_load(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    table = pa.table(
        {
            "run_id": ["x"],
            "model": ["m"],
            "batch_size": [1],
            "device": ["cpu"],
            "dtype": ["float32"],
            "status": ["ok"],
        }
    )
    pq.write_table(table, d / "part-old.parquet")
    df = load_results([d])
    assert set(COLUMNS) <= set(df.columns)
    assert pd.isna(df["energy_j"].iloc[0])


def test_foreign_parquet_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1], "b": [2]}), f)
    with pytest.raises(ResultsCorrupt, match="not an effbench result"):
        load_results([f])


def test_corrupt_parquet_is_refused(tmp_path: Path) -> None:
    d = _run(tmp_path, "c", [make_row("m", 1)])
    (d / "part-broken.parquet").write_bytes(b"garbage")
    with pytest.raises(ResultsCorrupt, match=r"part-broken\.parquet"):
        load_results([d])


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ResultsCorrupt, match="no effbench results"):
        load_results([tmp_path])


def test_done_keys_and_idempotent_rewrite(tmp_path: Path) -> None:
    d = _run(tmp_path, "k", [make_row("m", 1), make_row("m", 2, repeat=1)])
    assert done_keys(d) == {
        RowKey(CellKey("m", "cpu", "float32", 1, 8, 1), 0),
        RowKey(CellKey("m", "cpu", "float32", 2, 8, 1), 1),
    }
    write_row(d, "c0", make_row("m", 1))  # the same cell again replaces its part
    assert len(load_results([d])) == 2
    assert not list(d.glob(".*"))  # no temporary files left


def test_a_plugin_columns_declaration_travels_with_its_rows(tmp_path: Path) -> None:
    """A column outside the contract is read back with the declaration it was written with
    (unit, agg, gate); a file whose declaration is not one is refused, naming the file."""
    from bench.schema import MEDIAN, Column, Gate
    from bench.store import discover, load_discovered

    col = Column("joules_x", "float?", "J", "a plugin's value", agg=MEDIAN, gate=Gate("jx"))
    d = tmp_path / "a"
    d.mkdir()
    write_manifest(d, {"run_id": "a"})
    write_row(d, "c0", make_row("m", 1, extra=(("joules_x", 2.5),)), [col])
    write_row(d, "c1", make_row("m", 2))  # an older file of the run, without the column
    loaded = load_discovered(discover([d]))
    assert loaded.extra == (col,)
    assert sorted(loaded.rows["joules_x"].dropna()) == [2.5]
    part = d / "part-c0.parquet"
    table = pq.read_table(part)
    field = table.schema.field("joules_x")
    bad = table.schema.set(
        table.schema.get_field_index("joules_x"),
        field.with_metadata({b"effbench_column": b'{"name": "joules_x", "kind": "complex"}'}),
    )
    pq.write_table(table.cast(bad), part)
    with pytest.raises(ResultsCorrupt, match=r"part-c0\.parquet.*not a column declaration"):
        load_results([d])

"""One identity per cell: names that slug alike, long names and file-name safety."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from bench.keys import CellKey, RowKey


def _key(model: str, **kw: object) -> CellKey:
    values: dict[str, object] = dict(
        model=model, device="cpu", dtype="float32", batch_size=1, image_size=8, threads=1
    )
    values.update(kw)
    return CellKey(**values)  # type: ignore[arg-type]


def test_names_that_slug_alike_get_different_files() -> None:
    # 'my net', 'my-net', 'my/net' and 'my:net' all map to 'my-net' in the readable part
    keys = [_key(m) for m in ("my net", "my-net", "my/net", "my:net", "my\\net")]
    stems = {k.stem(0) for k in keys}
    assert len(stems) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) for s in stems)


def test_every_key_field_and_the_repeat_change_the_file_name() -> None:
    base = _key("m")
    variants = [
        _key("n"),
        _key("m", device="cuda:0"),
        _key("m", dtype="float16"),
        _key("m", batch_size=2),
        _key("m", image_size=9),
        _key("m", threads=2),
    ]
    stems = {base.stem(0), base.stem(1), *(k.stem(0) for k in variants)}
    assert len(stems) == 2 + len(variants)


def test_a_long_model_name_fits_the_file_system(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("x" * 240, "y" * 5000, "é" * 300):
        stem = RowKey(_key(name), 3).stem
        file_name = f"part-{stem}.parquet"
        assert len(file_name.encode()) <= limit
        (tmp_path / file_name).write_bytes(b"")  # the file system takes it
    # two long names that differ only past the readable cut still differ
    assert _key("z" * 300 + "a").stem(0) != _key("z" * 300 + "b").stem(0)


def test_row_key_reads_a_row_with_numpy_numbers() -> None:
    np = pytest.importorskip("numpy")
    row = dict(
        model="m",
        device="cpu",
        dtype="float32",
        batch_size=np.int64(4),
        image_size=np.int64(8),
        threads=np.int64(1),
        repeat=np.int64(2),
    )
    assert RowKey.of(row) == RowKey(_key("m", batch_size=4), 2)
    assert tuple(f.name for f in dataclasses.fields(CellKey)) == CellKey.COLUMNS

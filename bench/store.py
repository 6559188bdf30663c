"""Result storage: one parquet part per row, written atomically, plus ``manifest.json``.

Layout of a run folder::

    results/<run_id>/manifest.json
    results/<run_id>/part-<cell slug>.parquet     (one row each)

A part is written to a temporary name and renamed into place, so a killed sweep leaves
whole parts only; parts are named after their cell, so a resumed sweep cannot duplicate a
row. No torch import.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.errors import OutputNotWritable, ResultsCorrupt
from bench.schema import ARROW_SCHEMA, CELL_KEY, COLUMNS, REQUIRED_COLUMNS, Row

MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        raise OutputNotWritable(
            f"cannot write results to {folder}: {e.strerror or e}; "
            "choose another folder with --out or fix its permissions"
        ) from e


def _atomic_write_bytes(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_row(run_dir: Path, slug: str, row: Row) -> Path:
    """Write ``row`` as ``part-<slug>.parquet`` in ``run_dir``, atomically."""
    table = pa.Table.from_pylist([row.to_dict()], schema=ARROW_SCHEMA)
    path = run_dir / f"part-{slug}.parquet"
    try:
        _atomic_write_bytes(path, lambda f: pq.write_table(table, f))
    except OSError as e:
        raise OutputNotWritable(
            f"cannot write {path}: {e}; check free space and permissions"
        ) from e
    return path


def write_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    try:
        _atomic_write_bytes(run_dir / MANIFEST, lambda f: f.write(data))
    except OSError as e:
        raise OutputNotWritable(f"cannot write {run_dir / MANIFEST}: {e}") from e


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsCorrupt(
            f"{run_dir} has no {MANIFEST}; it is not an effbench run folder "
            "(give the folder `effbench run` wrote, e.g. results/<run_id>)"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsCorrupt(f"cannot read {path}: {e}") from e


def _read_part(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ResultsCorrupt(
            f"cannot read {path} as parquet ({e}); delete it and run "
            "`effbench run --resume <run folder>` to measure that cell again"
        ) from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ResultsCorrupt(
            f"{path} is not an effbench result (missing columns {', '.join(missing)}); "
            "give only files and folders written by `effbench run`"
        )
    return table.to_pandas()


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Schema migration on read: add columns that older files lack, in contract order."""
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[[*COLUMNS, *extra]]


def _expand(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        parts = sorted(path.glob(PART_GLOB))
        if parts or (path / MANIFEST).exists():
            return parts
        # a folder of run folders, such as results/
        nested = sorted(p for d in sorted(path.iterdir()) if d.is_dir() for p in d.glob(PART_GLOB))
        if nested:
            return nested
        raise ResultsCorrupt(
            f"{path} holds no effbench results (no {PART_GLOB} and no {MANIFEST}); "
            "run `effbench run --out ...` first"
        )
    raise ResultsCorrupt(f"{path} does not exist; give a run folder, results/ or a parquet file")


def load_results(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Read any mix of run folders, folders of runs and part files into one DataFrame."""
    files: list[Path] = []
    for p in paths:
        files.extend(_expand(Path(p)))
    if not files:
        return _normalize(pd.DataFrame(columns=list(COLUMNS)))
    frames = [_read_part(f) for f in dict.fromkeys(files)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return _normalize(pd.DataFrame(columns=list(COLUMNS)))
    return _normalize(pd.concat(frames, ignore_index=True))


def load_run(run_dir: Path) -> pd.DataFrame:
    """The rows already written in ``run_dir`` (empty when it has none yet)."""
    if not any(run_dir.glob(PART_GLOB)):
        return _normalize(pd.DataFrame(columns=list(COLUMNS)))
    return load_results([run_dir])


def row_keys(df: pd.DataFrame) -> set[tuple[Any, ...]]:
    """Keys (cell key + repeat) of the rows in ``df``."""
    cols = [*CELL_KEY, "repeat"]
    return {tuple(r) for r in df[cols].itertuples(index=False, name=None)}


def done_keys(run_dir: Path) -> set[tuple[Any, ...]]:
    """Keys (cell key + repeat) of the rows already written in ``run_dir``."""
    return row_keys(load_run(run_dir))

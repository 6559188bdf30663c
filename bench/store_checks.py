"""Reading results back, the checks and migrations of ``bench.store``: every value of a
part file checked against its column's kind and range, rows that share an identity
refused (naming their files), each file's contract version read and checked, and rows of
an older version migrated (:data:`MIGRATIONS`: key values they lack taken from their run's
manifest). What a message advises is said here once. Also the rules of a run id (a folder
name), re-exported by ``bench.store``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.errors import InvalidOption, ResultsCorrupt, ResultsTooNew
from bench.keys import CellKey
from bench.schema import DECLARED, SCHEMA_VERSION, Column
from bench.status import STATUSES

# Key columns older files may lack, and what they are filled with when the run's manifest
# does not say (README, "Columns"): 0 means "not recorded".
NOT_RECORDED = 0


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if value >= 1 and float(value).is_integer() else None


def _recorded(manifest: Mapping[str, Any], column: str) -> int | None:
    """A key value every row of the run shares, as its manifest records it."""
    options = manifest.get("options")
    options = options if isinstance(options, Mapping) else {}
    value = _positive_int(options.get(column))
    if value is None and column == "threads":  # the sweep ran with the machine's default
        env = manifest.get("environment")
        value = _positive_int(env.get("default_threads")) if isinstance(env, Mapping) else None
    return value


def _device_name(manifest: Mapping[str, Any], device: object) -> str:
    """The device's name as the run's environment record gives it; else ``device``."""
    env = manifest.get("environment")
    env = env if isinstance(env, Mapping) else {}
    text = str(device)
    if text == "cpu" and isinstance(env.get("cpu_model"), str):
        return env["cpu_model"]
    gpus = env.get("gpus")
    m = re.fullmatch(r"cuda:(\d+)", text)
    if m and isinstance(gpus, list) and int(m.group(1)) < len(gpus):
        gpu = gpus[int(m.group(1))]
        if isinstance(gpu, Mapping) and isinstance(gpu.get("name"), str):
            return gpu["name"]
    return text


def file_version(table: pa.Table, path: Path, advice: str) -> int:
    """The row-contract version of a part file (bench.schema.SCHEMA_HISTORY): its
    ``schema_version`` column, else its arrow metadata, else 1 (files from before either).
    :class:`ResultsTooNew` for a version newer than this code's; :class:`ResultsCorrupt` for
    a value that is not a version, rows of two versions in one file, or a file that lacks a
    column its version writes (``Column.since``)."""
    if "schema_version" in table.column_names:
        values = set(table.column("schema_version").to_pylist()) - {None}
    else:
        meta = (table.schema.metadata or {}).get(b"effbench_schema_version")
        values = {meta.decode(errors="replace")} if meta is not None else set()
    if len(values) > 1:
        raise ResultsCorrupt(
            f"{path} holds rows of contract versions {sorted(map(str, values))}; one file is "
            f"written by one effbench: {advice}"
        )
    version = _positive_int(_as_number(next(iter(values)))) if values else 1
    if version is None:
        raise ResultsCorrupt(f"{path}: schema_version {_shown(next(iter(values)))} is not a "
                             f"version (a whole number from 1); {advice}")  # fmt: skip
    if version > SCHEMA_VERSION:
        raise ResultsTooNew(
            f"{path} was written by a newer effbench (row contract version {version}; this "
            f"one reads versions up to {SCHEMA_VERSION}): read it with the effbench that "
            "wrote it, or upgrade this one (`pip install -U effbench`, or the newer checkout)"
        )
    names = set(table.column_names)
    lacking = [c.name for c in DECLARED if c.since <= version and c.name not in names]
    if lacking:
        more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
        shown = ", ".join(lacking[:5]) + more
        raise ResultsCorrupt(
            f"{path} says it is of row contract version {version} but lacks the column(s) "
            f"{shown}, which every file of that version has; {advice}"
        )
    return version


def _as_number(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def migrate(
    df: pd.DataFrame,
    versions: np.ndarray,
    source: np.ndarray,
    manifests: Sequence[Mapping[str, Any]],
) -> tuple[str, ...]:
    """Bring every row of ``df`` (in place) to :data:`SCHEMA_VERSION`, one version at a
    time (:data:`MIGRATIONS`); ``versions[i]`` is row i's version, ``source[i]`` the index of
    its run's manifest. Returns one note per change made."""
    notes: list[str] = []
    for version in range(1, SCHEMA_VERSION):  # every step runs: each also sets its dtypes
        older = versions <= version
        notes += [f"{n} (row contract version {version})"
                  for n in MIGRATIONS[version](df, older, source, manifests)]  # fmt: skip
    return tuple(notes)


def _migrate_keys(
    df: pd.DataFrame,
    older: np.ndarray,
    source: np.ndarray,
    manifests: Sequence[Mapping[str, Any]],
) -> list[str]:
    """The migration from version 1 (bench.schema.SCHEMA_HISTORY): fill the cell-key
    columns that ``older`` rows lack (or leave empty), in place: ``image_size`` and
    ``threads`` from the run's manifest, else ``NOT_RECORDED``; ``repeat`` 0 (one repeat per
    cell before ``--repeats``); ``attempt`` 0 (before re-measurement); ``config`` eager (the
    only configuration before ``--configs``); ``variant`` from the manifest of an A/B arm;
    ``device_name`` from the run's environment record, else the device. ``source[i]``
    indexes the manifest of row i. A newer row without one of them is refused. Returns one
    note per column filled."""
    notes = []
    for col in ("image_size", "threads", "repeat", "batch_size"):
        raw = _column(df, col)
        values = pd.to_numeric(raw, errors="coerce")
        bad = (values.isna() & raw.notna()) | (values.notna() & (values % 1 != 0))
        if bad.any():
            raise ResultsCorrupt(
                f"{col} {_shown(raw[bad].iloc[0])} is not a whole number in some row; give "
                "only files written by `effbench run`"
            )
        gap = _gap(values, older, col)
        if gap.any():
            recorded = [_recorded(m, col) if col != "repeat" else 0 for m in manifests]
            fill = np.array([recorded[s] for s in source[gap]], dtype=object)
            unknown = int(sum(v is None for v in fill))
            fill[[v is None for v in fill]] = NOT_RECORDED
            values[gap] = fill.astype(np.int64)
            known = int(gap.sum()) - unknown
            how = ["set to 0 (one repeat per cell)"] if col == "repeat" else []
            how += [f"{known} from the run's manifest"] if known and col != "repeat" else []
            how += [f"{unknown} set to {NOT_RECORDED} (not recorded)"] if unknown else []
            notes.append(f"{int(gap.sum())} row(s) lack {col}: {', '.join(how)}")
        df[col] = values.astype(np.int64)
    # rows written before re-measurement are the only attempt of their cell
    values = pd.to_numeric(_column(df, "attempt"), errors="coerce")
    df["attempt"] = values.where(~_gap(values, older, "attempt"), 0).astype(np.int64)
    raw = _column(df, "config")
    gap = _gap(raw, older, "config")
    if gap.any():  # before configurations were a sweep axis, every row ran eager
        df["config"] = raw.astype(object).where(~gap, "eager")
        notes.append(f"{int(gap.sum())} row(s) lack config: set to eager (written before it)")
    notes += _migrate_variant(df, older, source, manifests)
    raw = _column(df, "device_name")
    gap = _gap(raw, older, "device_name")
    if gap.any():
        names = [
            _device_name(manifests[s], d)
            for s, d in zip(source[gap], df["device"].to_numpy()[gap], strict=True)
        ]
        df["device_name"] = raw.astype(object).where(~gap, pd.Series(names, index=df.index[gap]))
        notes.append(f"{int(gap.sum())} row(s) lack device_name: named from the run's environment")
    return notes


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """``df[name]``, or a column of nulls where the frame has none."""
    if name in df.columns:
        return df[name]
    return pd.Series([None] * len(df), dtype=object, index=df.index)


def _gap(values: pd.Series, older: np.ndarray, name: str) -> np.ndarray:
    """Where ``values`` is empty in an ``older`` row (to be filled); :class:`ResultsCorrupt`
    where it is empty in a newer row, whose contract always fills it."""
    empty = values.isna().to_numpy()
    if (empty & ~older).any():
        raise ResultsCorrupt(
            f"a row has no {name}, which every row of row contract version 2 and later has; "
            "give only files written by `effbench run`"
        )
    return empty & older


# Per version v: the migration of rows of version v to version v + 1 (in place; returns
# notes). bench.schema.SCHEMA_HISTORY says what each version changed.
MIGRATIONS: dict[int, Callable[..., list[str]]] = {1: _migrate_keys}


def _variant(manifest: Mapping[str, Any]) -> str | None:
    """The arm of an A/B run (``effbench run --variant``) as its manifest records it."""
    options = manifest.get("options")
    value = options.get("variant") if isinstance(options, Mapping) else None
    return value if isinstance(value, str) and value else None


def _migrate_variant(
    df: pd.DataFrame,
    older: np.ndarray,
    source: np.ndarray,
    manifests: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Fill ``variant`` where a row lacks it but its run's manifest names the arm (rows
    written before the column; every row of an arm's run folder is that arm), in place.
    Rows of runs that were not A/B runs keep no variant, and need no note."""
    raw = _column(df, "variant")
    arms = np.array([_variant(m) for m in manifests], dtype=object)
    fill = arms[source] if len(source) else np.array([], dtype=object)
    named = np.array([v is not None for v in fill], dtype=bool)
    gap = (raw.isna() | raw.astype(object).eq("")).to_numpy() & named & older
    df["variant"] = raw.astype(object).where(~gap, pd.Series(fill, index=df.index))
    if not gap.any():
        return []
    return [f"{int(gap.sum())} row(s) lack variant: named from the run's manifest (an A/B arm)"]


# The identity of a row of one run: its run, its cell and its repeat. A run holds one row
# per identity; a second is a copied part or a doubled row (refused on read). Issue 20's
# ``attempt`` (re-measurements of a contended cell: more rows of the same cell and repeat,
# attempt 1, 2, ...) joins it where the rows carry it: see :func:`row_identity`.
ROW_IDENTITY: tuple[str, ...] = ("run_id", *CellKey.COLUMNS, "repeat")


def row_identity(df: pd.DataFrame) -> list[str]:
    """The columns that identify a row of ``df``: :data:`ROW_IDENTITY`, and ``attempt``
    where the frame has it."""
    return [*ROW_IDENTITY, *(["attempt"] if "attempt" in df.columns else [])]


def _check_unique_rows(df: pd.DataFrame, file_of_row: np.ndarray, files: Sequence[Path]) -> None:
    """Refuse rows that share an identity (:func:`row_identity`), naming their files."""
    key = row_identity(df)
    doubled = df.duplicated(key, keep=False).to_numpy()
    if not doubled.any():
        return
    ids = df[key].astype(str).agg("\x1f".join, axis=1)
    first = df[doubled].iloc[0]
    same = (ids == ids[doubled].iloc[0]).to_numpy()
    where = sorted({str(files[i]) for i in file_of_row[same]})
    cell = ", ".join(f"{c}={first[c]}" for c in key)
    shown = "; ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
    raise ResultsCorrupt(
        f"{int(same.sum())} rows of one cell and repeat ({cell}) in {shown}: a run has one "
        "row per cell and repeat (a part copied under another name, or doubled rows); "
        "delete the copies, keeping one part per cell"
    )


_KIND_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false"}
# Ranges beyond the kind, checked on read: finite and at least this.
_AT_LEAST: dict[str, float] = {
    "batch_size": 1,
    "in_chans": 1,
    "image_size": 1,
    "threads": 1,
    "repeat": 0,
    "n_samples": 0,
    **{c: 0.0 for c in ("latency_ms_median", "latency_ms_mean", "latency_ms_p10")},
    **{c: 0.0 for c in ("latency_ms_p90", "latency_ms_iqr", "latency_ms_ci_low")},
    **{c: 0.0 for c in ("latency_ms_ci_high", "time_per_image_ms", "throughput_ips")},
}


def _bad_values(col: pd.Series, column: Column) -> tuple[np.ndarray, str]:
    """Which values of ``col`` are not of ``column``'s kind or range, and what they should
    be. Nulls (and NaN) are what a missing value reads as, and pass."""
    kind = column.kind.rstrip("?")
    if kind in _LIST_WORDS:
        kinds, words = _LIST_WORDS[kind]
        ok = col.map(lambda v: not _is_listed(v) or _all_of(v, kinds)).to_numpy()
        return ~ok, words
    present = col.notna().to_numpy()
    if kind == "str":
        if pd.api.types.is_string_dtype(col) and not pd.api.types.is_object_dtype(col):
            return np.zeros(len(col), dtype=bool), ""
        return present & ~col.map(lambda v: isinstance(v, str)).to_numpy(), "text"
    if kind == "bool":
        if pd.api.types.is_bool_dtype(col):
            return np.zeros(len(col), dtype=bool), ""
        return present & ~col.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(), (
            "true/false"
        )
    if pd.api.types.is_numeric_dtype(col):
        numbers = col.astype(float)
    else:  # mixed or text: a string that reads as a number is still text
        numbers = pd.to_numeric(col.map(lambda v: None if isinstance(v, str | bytes) else v),
                                errors="coerce")  # fmt: skip
    bad = present & numbers.isna().to_numpy()
    what = _KIND_WORDS[kind]
    with np.errstate(invalid="ignore"):
        values = numbers.to_numpy(dtype=float, na_value=np.nan)
        if kind == "int":
            bad |= present & ~bad & (values % 1 != 0)
        low = _AT_LEAST.get(column.name)
        if low is not None:
            bad |= present & ~bad & ~(np.isfinite(values) & (values >= low))
            what = f"{what} of at least {low:g}"
    return bad, what


def _is_listed(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


# list kinds: the numpy dtype kinds their elements may have, and what they should be
_LIST_WORDS = {
    "floats": ("fiu", "a list of finite numbers"),
    "ints": ("iu", "a list of whole numbers"),
    "bools": ("b", "a list of true/false"),
}


def _all_of(value: object, kinds: str) -> bool:
    """Whether ``value`` is a list whose elements are all of the numpy dtype ``kinds``
    (and finite); an empty list passes."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return False
    if arr.size == 0:
        return True
    if arr.dtype.kind not in kinds:
        return False
    return arr.dtype.kind == "b" or bool(np.isfinite(arr.astype(float)).all())


def _check_values(
    df: pd.DataFrame, file_of_row: np.ndarray, files: Sequence[Path], advice: Sequence[str]
) -> None:
    """Refuse a value that is not of its declared kind (bench.schema) or out of range, or
    a status that is not one of :data:`bench.status.STATUSES`, naming the file."""
    for column in DECLARED:
        if column.name not in df.columns:
            continue
        bad, what = _bad_values(df[column.name], column)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = _shown(df[column.name].iloc[i])
            raise ResultsCorrupt(
                f"{files[file_of_row[i]]}: {column.name} {value} is not {what}; "
                f"{advice[file_of_row[i]]}"
            )
    bad = ~df["status"].isin(STATUSES).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ResultsCorrupt(
            f"{files[file_of_row[i]]}: status {_shown(df['status'].iloc[i])} is not one of "
            f"{', '.join(STATUSES)}; {advice[file_of_row[i]]}"
        )


def _advice(run: Path | None) -> str:
    if run is None:
        return "give only files written by `effbench run`"
    return f"delete it and run `effbench run --resume {run}` to measure that cell again"


# Bytes, not characters: a file name holds 255 bytes; the rest is room for the names made
# from a run id (an A/B run's `<run-id>-<variant>` folders are checked as run ids too)
MAX_RUN_ID = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def run_id_problem(text: object) -> str | None:
    """Why ``text`` cannot name a run folder, or ``None`` when it is a plain folder name."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not text"
    if not text:
        return "is empty"
    if text in {".", ".."}:
        return "names the current or the parent folder"
    if "/" in text or "\\" in text:
        return "contains a path separator"
    if _CONTROL.search(text):
        return "contains a control character"
    if len(os.fsencode(text)) > MAX_RUN_ID:  # file names are limited in bytes, not characters
        return f"is longer than {MAX_RUN_ID} bytes (UTF-8)"
    return None


def validate_run_id(text: object) -> str:
    """``text`` when it is a plain folder name (non-empty, no '/', '\\', '.' or '..', no
    control characters, at most ``MAX_RUN_ID`` bytes); else :class:`InvalidOption`."""
    problem = run_id_problem(text)
    if problem is not None:
        raise InvalidOption(
            f"run id {_shown(text)} {problem}; it must be a plain folder name (no '/', '\\', "
            f"'..' or control characters, at most {MAX_RUN_ID} bytes), "
            "e.g. --run-id nightly-2026-01-01"
        )
    assert isinstance(text, str)
    return text

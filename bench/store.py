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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.errors import OutputNotWritable, ResultsCorrupt, RunLocked
from bench.keys import CellKey, RowKey
from bench.quality import rank
from bench.schema import (
    ARROW_SCHEMA,
    COLUMNS,
    REQUIRED_COLUMNS,
    Column,
    Row,
    arrow_schema,
    declared_extra,
)
from bench.store_checks import MAX_RUN_ID as MAX_RUN_ID  # the run id's rules, re-exported
from bench.store_checks import (
    _advice,
    _check_unique_rows,
    _check_values,
    _shown,
    file_version,
    migrate,
)
from bench.store_checks import run_id_problem as run_id_problem
from bench.store_checks import validate_run_id as validate_run_id

MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"
CEILINGS = "ceilings.parquet"  # a run's measured device ceilings (bench.ceilings)
PROFILE_GLOB = "profile-*.parquet"  # per-layer profiles (`effbench profile --out`)


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


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: Path, write: Any) -> None:
    """Write to a temporary file beside ``path``, fsync, rename into place. The file gets
    the mode any new file would (0666 less the umask; mkstemp alone gives 0600)."""
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_row(run_dir: Path, stem: str, row: Row, extra: Sequence[Column] = ()) -> Path:
    """Write ``row`` as ``part-<stem>.parquet`` in ``run_dir``, atomically. The runner names
    a part after its :class:`bench.keys.RowKey` (``key.stem``), so each cell has one file.
    ``extra`` declares the columns of probes outside the contract that the row carries."""
    schema = arrow_schema(extra) if extra else ARROW_SCHEMA
    table = pa.Table.from_pylist([row.to_dict()], schema=schema)
    path = run_dir / f"part-{stem}.parquet"
    _write_parquet(path, table)
    return path


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically; :class:`OutputNotWritable` if it cannot."""
    try:
        _atomic_write_bytes(path, lambda f: pq.write_table(table, f))
    except OSError as e:
        raise OutputNotWritable(
            f"cannot write {path}: {e}; check free space and permissions"
        ) from e


LOCK = ".lock"


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run_dir>/.lock``, held while one runner writes the
    folder; the kernel releases it when the process ends, however it ends."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl

        self.path = run_dir / LOCK
        self._fd: int | None = _open_lock(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise RunLocked(
                f"{run_dir} is being written by another effbench process (PID {holder}); "
                "wait for it to finish or stop it, then resume"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without following a link (a link would have the
    runner truncate and write whatever it points to) and only if it is a regular file."""
    import stat

    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise OutputNotWritable(_not_a_lock(path)) from e
        raise OutputNotWritable(f"cannot create {path}: {e.strerror or e}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputNotWritable(_not_a_lock(path))
    return fd


def _not_a_lock(path: Path) -> str:
    return (
        f"{path} is a link or not a regular file; effbench writes only its own files in a "
        "run folder: remove it (and check who put it there), then run again"
    )


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes that never finished (a SIGKILL between a
    part's temporary write and its rename). Call it holding the folder's :class:`RunLock`:
    no other writer can then be mid-write. Finished parts are never touched."""
    removed = []
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    try:
        _atomic_write_bytes(run_dir / MANIFEST, lambda f: f.write(data))
    except OSError as e:
        raise OutputNotWritable(f"cannot write {run_dir / MANIFEST}: {e}") from e


# --------------------------------------------------------------------------- reading


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``run_dir``'s manifest; :class:`ResultsCorrupt` when it is missing, unreadable, not
    a JSON object, or names the run by something that is not a plain folder name."""
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsCorrupt(
            f"{run_dir} has no {MANIFEST}; it is not an effbench run folder "
            "(give the folder `effbench run` wrote, e.g. results/<run_id>)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsCorrupt(f"cannot read {path}: {e}") from e
    if not isinstance(manifest, dict):
        raise ResultsCorrupt(
            f"{path} is not an effbench manifest (a JSON object); give a folder written by "
            "`effbench run`"
        )
    if "run_id" in manifest and (problem := run_id_problem(manifest["run_id"])):
        raise ResultsCorrupt(
            f"{path} names its run {_shown(manifest['run_id'])}, which {problem}; a run id "
            "must be a plain folder name. Give a folder written by `effbench run`, or set "
            "run_id in that manifest to the folder's name"
        )
    return manifest


@dataclass(frozen=True, slots=True)
class RunFolder:
    """A run folder (one holding ``manifest.json``) and the part files read from it."""

    path: Path
    manifest_path: Path
    manifest: Mapping[str, Any]
    parts: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Discovery:
    """What a list of paths holds: run folders, and part files outside any run folder
    (stray parts beside run folders, parts of folders without a manifest). Every part file
    appears once, however many times and however spelled it was given."""

    runs: tuple[RunFolder, ...]
    loose: tuple[Path, ...]
    profiles: tuple[Path, ...] = ()  # per-layer profile files (`effbench profile --out`)

    @property
    def files(self) -> tuple[Path, ...]:
        return (*(p for r in self.runs for p in r.parts), *self.loose)


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(PART_GLOB) if p.is_file())


def _is_run(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def discover(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> Discovery:
    """Find the run folders and part files behind ``paths``: run folders, folders of run
    folders (such as ``results/``, stray parts in it included) and part files, in any mix.
    Paths are told apart by what they resolve to, so a run given twice is read once."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs: dict[Path, tuple[Path, dict[str, Any], list[Path]]] = {}
    loose: list[Path] = []
    profiles: list[Path] = []
    seen: set[Path] = set()

    def add(folder: Path | None, files: Iterable[Path]) -> None:
        if folder is not None and folder.resolve() not in runs:
            runs[folder.resolve()] = (folder, read_manifest(folder), [])
        for f in files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            if f.match(PROFILE_GLOB):
                profiles.append(f)
            else:
                (runs[folder.resolve()][2] if folder is not None else loose).append(f)

    for p in map(Path, paths):
        try:
            _discover_one(p, add)
        except OSError as e:
            raise ResultsCorrupt(f"cannot read {p}: {e.strerror or e}") from e
    folders = tuple(
        RunFolder(path, path / MANIFEST, manifest, tuple(parts))
        for path, manifest, parts in runs.values()
    )
    return Discovery(folders, tuple(loose), tuple(profiles))


def _profiles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(PROFILE_GLOB) if p.is_file())


def _discover_one(p: Path, add: Callable[[Path | None, Iterable[Path]], None]) -> None:
    if p.is_file():
        _check_part_name(p)
        add(p.parent if _is_run(p.parent) and not p.match(PROFILE_GLOB) else None, [p])
    elif p.is_dir() and _is_run(p):
        add(p, _parts(p))
        add(None, _profiles(p))
    elif p.is_dir():
        subs = [d for d in sorted(p.iterdir()) if d.is_dir() and (_is_run(d) or _parts(d))]
        own = _parts(p)
        profiled = [d for d in (p, *sorted(p.iterdir())) if d.is_dir() and _profiles(d)]
        for d in profiled:
            add(None, _profiles(d))
        if not subs and not own and not profiled:
            raise ResultsCorrupt(
                f"{p} holds no effbench results (no {PART_GLOB} and no {MANIFEST}); "
                "run `effbench run --out ...` first"
            )
        for d in subs:
            add(d if _is_run(d) else None, _parts(d))
        add(None, own)
    else:
        raise ResultsCorrupt(
            f"{p} does not exist; give a run folder (results/<run_id>), a folder of runs "
            "such as results/, or a part file"
        )


def _check_part_name(path: Path) -> None:
    if path.name == MANIFEST:
        raise ResultsCorrupt(
            f"{path} is a run's manifest, not its results; give the run folder, not its "
            f"manifest: {path.parent}"
        )
    if path.suffix != ".parquet":
        raise ResultsCorrupt(
            f"{path} is not a parquet part file; give a run folder (results/<run_id>), a "
            "folder of runs such as results/, or a part-*.parquet file"
        )


def _read_part(path: Path, run: Path | None) -> tuple[pd.DataFrame, tuple[Column, ...]]:
    """One part file as a frame, its ``schema_version`` the file's (1 where it has none),
    and the declarations of its columns outside the contract; :class:`ResultsCorrupt`
    unless it is an effbench result with every required column filled and every column its
    version writes, :class:`ResultsTooNew` for a newer one."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        advice = (
            f"delete it and run `effbench run --resume {run}` to measure that cell again"
            if run is not None
            else "give only files written by `effbench run`"
        )
        raise ResultsCorrupt(f"cannot read {path} as parquet ({e}); {advice}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ResultsCorrupt(
            f"{path} is not an effbench result (missing columns {', '.join(missing)}); "
            "give only files and folders written by `effbench run`"
        )
    empty = [c for c in REQUIRED_COLUMNS if table.column(c).null_count]
    if empty:
        raise ResultsCorrupt(
            f"{path} has rows without {', '.join(empty)}; it was not written by "
            "`effbench run`: delete it or give only files written by `effbench run`"
        )
    version = file_version(table, path, _advice(run))
    try:
        extra = declared_extra(table.schema)
    except ValueError as e:
        raise ResultsCorrupt(f"{path}: {e}; {_advice(run)}") from e
    frame = table.to_pandas()
    frame["schema_version"] = np.full(len(frame), version, dtype=np.int64)
    return frame, extra


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Schema migration on read: add columns that older files lack, in contract order."""
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[[*COLUMNS, *extra]]


@dataclass(frozen=True, slots=True)
class Loaded:
    """Rows read from a :class:`Discovery`: ``counts[i]`` rows came from ``files[i]``, and
    ``notes`` say which key columns were filled by the migration on read."""

    rows: pd.DataFrame
    files: tuple[Path, ...]
    counts: tuple[int, ...]
    notes: tuple[str, ...]
    # columns outside the contract (plugin measurements), as their files declare them
    extra: tuple[Column, ...] = ()

    def rows_of(self, parts: Iterable[Path]) -> int:
        """How many rows came from ``parts`` (part paths as the discovery named them)."""
        count = dict(zip(self.files, self.counts, strict=True))
        return sum(count.get(p, 0) for p in parts)


def load_discovered(found: Discovery) -> Loaded:
    """Read every part file of ``found`` into one frame, migrating older files on read;
    :class:`ResultsCorrupt` for a value of the wrong kind or range, or for two rows of one
    cell and repeat in a run (naming the files)."""
    manifests: list[Mapping[str, Any]] = [r.manifest for r in found.runs] + [{}]
    sources = [(i, f) for i, r in enumerate(found.runs) for f in r.parts]
    sources += [(len(found.runs), f) for f in found.loose]
    read = [_read_part(f, found.runs[i].path if i < len(found.runs) else None)
            for i, f in sources]  # fmt: skip
    frames = [frame for frame, _ in read]
    extra = {c.name: c for _, declared in reversed(read) for c in declared}  # first file wins
    counts = tuple(len(f) for f in frames)
    kept = [f for f in frames if len(f)]
    df = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(COLUMNS))
    source = np.repeat(np.array([i for i, _ in sources], dtype=np.int64), counts)
    file_of_row = np.repeat(np.arange(len(sources), dtype=np.int64), counts)
    files = [f for _, f in sources]
    advice = [_advice(found.runs[i].path if i < len(found.runs) else None) for i, _ in sources]
    _check_values(df, file_of_row, files, advice)
    notes = migrate(df, df["schema_version"].to_numpy(dtype=np.int64), source, manifests)
    _check_unique_rows(df, file_of_row, files)
    rows = _normalize(df)
    if len(rows) != sum(counts):  # a part must contribute exactly its rows
        raise ResultsCorrupt(
            f"read {len(rows)} rows from {len(frames)} part files holding {sum(counts)}"
        )
    declared = tuple(extra[n] for n in rows.columns if n in extra)
    return Loaded(rows, tuple(f for _, f in sources), counts, notes, declared)


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to parquet at ``path`` atomically (ceilings, profiles)."""
    _write_parquet(path, pa.Table.from_pandas(frame, preserve_index=False))


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as e:
        raise ResultsCorrupt(f"cannot read {path}: {e}; delete it or restore it") from e


def read_ceilings(run_dir: Path) -> pd.DataFrame:
    """The ceilings measured for a run (``ceilings.parquet``); empty when there are none;
    :class:`ResultsCorrupt` when the file is not what ``bench.ceilings`` writes (see
    :func:`check_ceilings`). Files written before the closing canary lack ``phase``:
    theirs were measured at the start."""
    path = run_dir / CEILINGS
    if not path.is_file():
        return pd.DataFrame()
    df = _read_table(path)
    if "phase" not in df.columns:
        df["phase"] = "start"
    check_ceilings(df, path)
    return df


# What a ceilings file must hold (bench.ceilings.CEILING_COLUMNS has more, all optional
# here); one row per key.
CEILING_KEY = ("device", "dtype", "threads", "kind", "source", "phase")


def check_ceilings(df: pd.DataFrame, path: Path) -> None:
    """Refuse a ceilings table with a key column missing or not text, threads that are not
    a whole number >= 0, a value that is not a finite positive rate, or two rows of one
    key: its values set every compute fraction of the run."""
    fix = "delete it (a resume measures the ceilings again) or restore it"
    missing = [c for c in (*CEILING_KEY, "value") if c not in df.columns]
    if missing:
        raise ResultsCorrupt(f"{path} lacks the column(s) {', '.join(missing)}; {fix}")
    if not len(df):
        return
    for c in ("device", "dtype", "kind", "source", "phase"):
        bad = ~df[c].map(lambda v: isinstance(v, str) and bool(v))
        if bad.any():
            raise ResultsCorrupt(f"{path}: {c} {_shown(df[c][bad].iloc[0])} is not a name; {fix}")
    for c, low, what in (("threads", 0, "a whole number >= 0"), ("value", 0, "a rate > 0")):
        raw = df[c].map(lambda v: None if isinstance(v, str | bytes | bool) else v)
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values < low if c == "threads" else values <= low)
            if c == "threads":
                bad |= values % 1 != 0
        if bad.any():
            shown = _shown(df[c].iloc[int(np.flatnonzero(bad)[0])])
            raise ResultsCorrupt(f"{path}: {c} {shown} is not {what}; {fix}")
    doubled = df.duplicated(list(CEILING_KEY), keep=False)
    if doubled.any():
        key = ", ".join(f"{c}={df[doubled].iloc[0][c]}" for c in CEILING_KEY)
        raise ResultsCorrupt(f"{path} has {int(doubled.sum())} rows of one ceiling ({key}); {fix}")


def load_ceilings(found: Discovery) -> pd.DataFrame:
    """Every run's ceilings, one row per (run, device, dtype, threads, kind), with the
    run's ``run_id``; empty when no run measured any."""
    frames = []
    for run in found.runs:
        df = read_ceilings(run.path)
        if len(df):
            frames.append(df.assign(run_id=str(run.manifest.get("run_id", run.path.name))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_profiles(found: Discovery) -> pd.DataFrame:
    """Every per-layer profile file found (one row per profiled layer); empty if none."""
    frames = [_read_table(p) for p in found.profiles]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_results(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    expected_rows: int | None = None,
) -> pd.DataFrame:
    """Read any mix of run folders, folders of runs and part files into one DataFrame.

    Every part file is read once and contributes exactly its rows; with ``expected_rows``
    a different total is :class:`ResultsCorrupt`."""
    loaded = load_discovered(discover(paths))
    if expected_rows is not None and len(loaded.rows) != expected_rows:
        raise ResultsCorrupt(
            f"expected {expected_rows} rows, found {len(loaded.rows)} in "
            f"{len(loaded.files)} part files; some cells are missing or were written twice"
        )
    return loaded.rows


def load_run(run_dir: Path) -> pd.DataFrame:
    """The rows already written in ``run_dir`` (empty when it has none yet)."""
    if not any(run_dir.glob(PART_GLOB)):
        return _normalize(pd.DataFrame(columns=list(COLUMNS)))
    return load_results([run_dir])


def best_attempts(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, cell, repeat): of the attempts of a cell (``attempt``; the runner
    re-measures cells judged ``contended``), the one with the best ``quality``
    (bench.quality.rank: clean, noisy, implausible, contended, then unjudged), the latest
    among equals. What the report and compare read; every attempt stays on disk."""
    if not len(df) or "attempt" not in df.columns or (df["attempt"] == 0).all():
        return df
    keys = ["run_id", *CellKey.COLUMNS, "repeat"]
    order = df.assign(
        _rank=df["quality"].map(rank) if "quality" in df.columns else 0,
        _pos=np.arange(len(df)),
    ).sort_values([*keys, "_rank", "attempt"], ascending=[*(True,) * len(keys), True, False])
    kept = order.drop_duplicates(keys, keep="first").sort_values("_pos")
    return kept.drop(columns=["_rank", "_pos"])


def row_keys(df: pd.DataFrame) -> set[RowKey]:
    """Keys (cell key + repeat) of the rows in ``df``; rows lacking a key value (files
    older than a key column) match no planned cell and are left out."""
    cols = [*CellKey.COLUMNS, "repeat"]
    keys = set()
    for values in df[cols].to_dict(orient="records"):
        try:
            keys.add(RowKey.of(values))
        except (TypeError, ValueError):
            continue
    return keys


def done_keys(run_dir: Path) -> set[RowKey]:
    """Keys (cell key + repeat) of the rows already written in ``run_dir``."""
    return row_keys(load_run(run_dir))

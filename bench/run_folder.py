"""A run folder before its first cell: a new one created, locked and given its manifest
(the resolved options and the plan), or an existing one checked, locked and its recorded
plan read back for a resume. The runner measures into what this returns."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DeviceUnavailable, InvalidOption, ResultsCorrupt
from bench.plan import (
    Group,
    Inventory,
    ModelShape,
    Options,
    all_cells,
    check_recorded,
    check_runnable,
    expand_plan,
)
from bench.schema import SCHEMA_VERSION
from bench.store import (
    MANIFEST,
    RunLock,
    ensure_writable,
    load_run,
    read_manifest,
    validate_run_id,
    write_manifest,
)


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def start_run(
    out: Path,
    run_id: str | None,
    options: Options,
    groups: Sequence[Group],
    environment: Mapping[str, Any],
    argv: Sequence[str],
) -> tuple[Path, RunLock]:
    """Create ``out/<run_id>``, lock it and write its manifest: the resolved options and the
    plan (every group, as it will be measured), so that a resume runs exactly this plan.
    Refuses a folder that already holds a run."""
    run_id = run_id or new_run_id()
    run_dir = check_new_run(out, run_id)
    ensure_writable(run_dir)
    lock = RunLock(run_dir)
    try:
        check_new_run(out, run_id)  # again under the lock: another runner may have won
        write_manifest(
            run_dir,
            {
                "run_id": run_id,
                "schema_version": SCHEMA_VERSION,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                "argv": list(argv),
                "options": options.to_dict(),
                "plan": [g.to_dict() for g in groups],
                "planned_cells": len(all_cells(tuple(groups))),
                "environment": dict(environment),
                "sessions": [],
            },
        )
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def check_new_run(out: Path, run_id: str) -> Path:
    """``out/<run_id>``, after checking that it can be written and holds no run yet."""
    validate_run_id(run_id)
    run_dir = out / run_id
    for folder in (out.resolve(), *out.resolve().parents):
        if (folder / MANIFEST).is_file():
            raise InvalidOption(
                f"--out {out} is inside the run folder {folder}; a run folder holds one run: "
                "give an --out outside it (e.g. results)"
            )
    if run_dir.is_symlink():
        raise InvalidOption(
            f"{run_dir} is a link to {os.path.realpath(run_dir)}; a new run gets a folder of "
            "its own: choose another --run-id, or give the link's target as --out"
        )
    ensure_writable(out)
    if run_dir.exists() and any(
        p.name == MANIFEST or p.name.startswith("part-") for p in run_dir.iterdir()
    ):
        raise InvalidOption(
            f"{run_dir} already holds a run; continue it with `effbench run --resume {run_dir}` "
            "or choose another --run-id"
        )
    return run_dir


@dataclass(frozen=True, slots=True)
class Resumed:
    """A run folder to finish: its lock (held), id, recorded options and plan."""

    run_dir: Path
    lock: RunLock
    run_id: str
    options: Options
    groups: tuple[Group, ...]


def resume_run(run_dir: Path, catalog: Mapping[str, ModelShape], inventory: Inventory) -> Resumed:
    """Lock ``run_dir`` and read the plan its manifest records; refuse when this machine
    cannot run that plan as recorded (see :func:`bench.plan.check_runnable`)."""
    if not run_dir.is_dir():
        raise InvalidOption(f"cannot resume {run_dir}: no such folder")
    check_run_folder(run_dir)  # before the lock: it creates a file there
    lock = RunLock(run_dir)
    try:
        manifest = read_manifest(run_dir)
        run_id, options, groups = _recorded_plan(run_dir, manifest, catalog, inventory)
        check_runnable(groups, catalog, inventory)
        check_pinned_cores(groups)
    except BaseException:
        lock.release()
        raise
    return Resumed(run_dir, lock, run_id, options, groups)


def check_run_folder(run_dir: Path) -> None:
    """Refuse, before anything is written there, a folder that holds no run: a folder of
    runs (named in the message), ``/``, any other folder."""
    if (run_dir / MANIFEST).is_file():
        return
    with contextlib.suppress(OSError):
        runs = sorted(d for d in run_dir.iterdir() if (d / MANIFEST).is_file())
        if runs:
            more = f" (and {len(runs) - 1} more)" if len(runs) > 1 else ""
            raise InvalidOption(
                f"{run_dir} is a folder of runs, not a run; resume the runs themselves, "
                f"e.g. `effbench run --resume {runs[0]}`{more}"
            )
    read_manifest(run_dir)  # says that it is not a run folder


def check_pinned_cores(groups: Sequence[Group]) -> None:
    """Refuse a plan whose workers are pinned (``--parallel``) to cores this process may
    not use (a resume under ``taskset``, or on another machine): they would measure on
    other cores than recorded."""
    allowed = os.sched_getaffinity(0)
    for g in groups:
        if missing := sorted(set(g.cpus) - allowed):
            raise DeviceUnavailable(
                f"the plan pins the workers of {g.device} to cores {list(g.cpus)}, but cores "
                f"{missing} are not available to this process (taskset/cgroup?); give it "
                "those cores, or start a new run"
            )


def _recorded_plan(
    run_dir: Path,
    manifest: Mapping[str, Any],
    catalog: Mapping[str, ModelShape],
    inventory: Inventory,
) -> tuple[str, Options, tuple[Group, ...]]:
    where = f"{run_dir / MANIFEST}"
    try:
        run_id = validate_run_id(manifest["run_id"])
        options = Options.from_dict(manifest["options"])
        recorded = manifest.get("plan")
        if recorded is not None:
            if not isinstance(recorded, list):
                raise InvalidOption(f"plan must be a list of groups, not {recorded!r}")
            groups = tuple(Group.from_dict(g) for g in recorded)
            check_recorded(options, groups)
            return run_id, options, groups
    except KeyError as e:
        raise ResultsCorrupt(f"{where} lacks {e}; it was not written by `effbench run`") from e
    except (InvalidOption, ResultsCorrupt) as e:
        raise ResultsCorrupt(f"{where} holds an invalid plan: {e}") from e
    # Written before plans were recorded: expand its options, with the thread count its rows
    # were measured at (the machine's default may differ now).
    if options.threads is None:
        threads = set(load_run(run_dir)["threads"].dropna().astype(int))
        if len(threads) > 1:
            raise ResultsCorrupt(
                f"{where} records no thread count and its rows mix {sorted(threads)}; "
                "start a new run with --threads"
            )
        if threads:
            options = dataclasses.replace(options, threads=threads.pop())
    try:
        return run_id, options, expand_plan(options, catalog, inventory)
    except InvalidOption as e:
        raise ResultsCorrupt(f"{where}: cannot run its plan here: {e}") from e


def record_preflight(run_dir: Path, check: Mapping[str, Any]) -> None:
    """Add the pre-flight check of this session (bench.preflight) to the manifest's
    ``preflight`` list, before the first cell."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("preflight", []).append(
        {"at": dt.datetime.now(dt.timezone.utc).isoformat(), **check}
    )
    write_manifest(run_dir, manifest)


def record_session(
    run_dir: Path,
    argv: Sequence[str],
    wall_s: float,
    written: int,
    timed_s: float,
    interrupted: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Add this session (its command, wall and timed seconds, rows written, and ``extra``:
    the ceilings' drift, the host's speed) to the manifest's ``sessions`` list."""
    manifest = read_manifest(run_dir)
    session: dict[str, Any] = {
        "argv": list(argv),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "wall_s": round(wall_s, 3),
        "rows_written": written,
        "timed_s": round(timed_s, 3),
        **(extra or {}),
    }
    if interrupted:
        session["interrupted_by"] = interrupted
    manifest.setdefault("sessions", []).append(session)
    write_manifest(run_dir, manifest)

"""A short adversarial pass (issue 21): a run folder is damaged one way at a time (corrupt
parts, a corrupt manifest, a corrupt or hostile ceilings.parquet, links where effbench
expects its own files) and handed to the commands that read or resume it. Each must answer
with one `effbench: error:` line and exit 2, measure nothing, and write nothing outside the
run folder. The run is SYNTHETIC (made-up rows of the test network tiny_mlp, valid for this
machine's plan), so nothing here is measured and every case fails before a worker starts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import make_row

from bench.cli import main
from bench.plan import Group, Options
from bench.store import write_manifest, write_row

CORES = len(os.sched_getaffinity(0))
RUN_ID = "victim-run"


def _valid_run(folder: Path) -> Path:
    """A run of tiny_mlp at batch 1 and 2 on this machine's cores, batch 2 not measured
    yet: a resume would have one cell to measure."""
    folder.mkdir(parents=True)
    options = Options(models=("tiny_mlp",), batch_sizes=(1, 2), threads=CORES)
    group = Group("tiny_mlp", "cpu", "float32", 8, 3, CORES, 0, (1, 2))
    write_manifest(
        folder,
        {
            "run_id": RUN_ID,
            "schema_version": 1,
            "options": options.to_dict(),
            "plan": [group.to_dict()],
            "planned_cells": 2,
            "environment": {"default_threads": CORES},
            "sessions": [],
        },
    )
    row = make_row("tiny_mlp", 1, run_id=RUN_ID, threads=CORES, memory_method="m")
    write_row(folder, "tiny_mlp-1", row)
    return folder


def _part(run: Path) -> Path:
    return next(run.glob("part-*.parquet"))


def _set(run: Path, **columns: object) -> None:
    df = pq.read_table(_part(run)).to_pandas()
    for name, value in columns.items():
        df[name] = pd.Series([value] * len(df), dtype=object)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), _part(run))


def _manifest(run: Path, edit: Callable[[dict], object]) -> None:
    m = json.loads((run / "manifest.json").read_text())
    edit(m)
    (run / "manifest.json").write_text(json.dumps(m))


def _ceilings(run: Path, **change: object) -> None:
    """A SYNTHETIC ceilings table (made-up rates) with ``change`` applied to every row."""
    _manifest(run, lambda m: m["options"].update(ceilings=True))
    df = pd.DataFrame(
        {"device": ["cpu"], "dtype": ["float32"], "threads": [CORES], "kind": ["gemm"],
         "value": [1e10], "unit": ["MACs/s"], "source": ["measured"]}
    )  # fmt: skip
    for k, v in change.items():
        if v is None:
            df = df.drop(columns=[k])
        else:
            df[k] = [v] * len(df)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), run / "ceilings.parquet")


def _duplicate_ceiling(run: Path, _outside: Path) -> None:
    _ceilings(run)
    df = pq.read_table(run / "ceilings.parquet").to_pandas()
    df = pd.concat([df, df.assign(value=1e11)], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), run / "ceilings.parquet")


def _link(run: Path, name: str, target: Path) -> None:
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(target)


READ = ("show", "report", "compare", "resume")  # every reader, and the runner
RESUME = ("resume",)

# name -> (damage done to the run folder, given the folder outside it; commands that must refuse)
CASES: dict[str, tuple[Callable[[Path, Path], object], tuple[str, ...]]] = {
    "part: not parquet": (lambda r, o: _part(r).write_bytes(b"PAR1 garbage"), READ),
    "part: latency 'fast'": (lambda r, o: _set(r, latency_ms_median="fast"), READ),
    "part: batch size -5": (lambda r, o: _set(r, batch_size=-5), READ),
    "part: unknown status": (lambda r, o: _set(r, status="great"), READ),
    "part: copied": (lambda r, o: shutil.copy(_part(r), r / "part-copy.parquet"), READ),
    "part: 100 rows": (
        lambda r, o: pq.write_table(pa.concat_tables([pq.read_table(_part(r))] * 100), _part(r)),
        READ,
    ),
    "part: no status column": (
        lambda r, o: pq.write_table(pq.read_table(_part(r)).drop(["status"]), _part(r)),
        READ,
    ),
    "manifest: not JSON": (lambda r, o: (r / "manifest.json").write_text("{"), READ),
    "manifest: a list": (lambda r, o: (r / "manifest.json").write_text("[]"), READ),
    "manifest: run id ../../x": (
        lambda r, o: _manifest(r, lambda m: m.update(run_id="../../x")),
        READ,
    ),
    "manifest: batch size -2": (
        lambda r, o: _manifest(r, lambda m: m["plan"][0].update(batch_sizes=[1, -2])),
        RESUME,
    ),
    "manifest: threads 0": (
        lambda r, o: _manifest(r, lambda m: m["plan"][0].update(threads=0)),
        RESUME,
    ),
    "manifest: timeout 1e300": (
        lambda r, o: _manifest(r, lambda m: m["options"].update(cell_timeout_s=1e300)),
        RESUME,
    ),
    "manifest: timing 1e12 s": (
        lambda r, o: _manifest(
            r, lambda m: m["options"]["timing"].update(min_time_s=1e12, max_time_s=1e12)
        ),
        RESUME,
    ),
    "manifest: interpreter": (
        lambda r, o: _manifest(
            r, lambda m: m["options"].update(python=str(o / "evil.sh"), variant="arm")
        ),
        RESUME,
    ),
    "ceilings: no value column": (lambda r, o: _ceilings(r, value=None), ("report", "resume")),
    "ceilings: value 'big'": (lambda r, o: _ceilings(r, value="big"), ("report", "resume")),
    "ceilings: value -1e10": (lambda r, o: _ceilings(r, value=-1e10), ("report", "resume")),
    "ceilings: duplicate key": (_duplicate_ceiling, ("report", "resume")),
    "link: .lock to a file outside": (lambda r, o: _link(r, ".lock", o / "victim"), RESUME),
    "link: part to a file outside": (
        lambda r, o: _link(r, "part-linked.parquet", o / "victim"),
        READ,
    ),
    "link: ceilings to a file outside": (
        lambda r, o: (_ceilings(r), _link(r, "ceilings.parquet", o / "victim")),
        ("report", "resume"),
    ),
}


def _snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``top`` but ``skip``: (size, mtime, link target)."""
    out = {}
    for p in top.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st = p.lstat()
        target = os.readlink(p) if p.is_symlink() else ""
        out[str(p)] = (st.st_size, st.st_mtime_ns, target)
    return out


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_run_folder_is_one_line_exit_2_and_nothing_written_outside_it(
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    marker = outside / "ran"
    (outside / "evil.sh").write_text(f"#!/bin/sh\necho ran > {marker}\n")
    (outside / "evil.sh").chmod(0o755)
    base = _valid_run(tmp_path / "base")
    run = _valid_run(tmp_path / "run")
    damage, commands = CASES[case]
    damage(run, outside)
    parts = sorted(p.name for p in run.glob("part-*.parquet"))
    before = _snapshot(tmp_path, skip=run)
    monkeypatch.chdir(outside)  # a default output folder (reports/) would land here
    argv = {
        "show": ["show", str(run)],
        "report": ["report", str(run), "--out", str(tmp_path / "report")],
        "compare": ["compare", str(base), str(run)],
        "resume": ["run", "--resume", str(run)],
    }
    for command in commands:
        code = main(argv[command])
        err = capsys.readouterr().err
        assert code == 2, (command, err)
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("effbench: error:")]
        assert len(errors) == 1, (command, err)
    assert _snapshot(tmp_path, skip=run) == before  # nothing written outside the run
    assert (outside / "victim").read_text() == "precious\n"
    assert not marker.exists()  # no program named by the manifest ran
    assert sorted(p.name for p in run.glob("part-*.parquet")) == parts  # nothing measured

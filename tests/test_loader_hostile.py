"""The loader and the report under hostile or odd input: one discovery for every reader,
no dropped or doubled rows, older files migrated, run ids that cannot leave their folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import make_row

from bench.cli import main
from bench.errors import InvalidOption, OutputNotWritable, ResultsCorrupt, ResultsTooNew
from bench.report import FIGURE_DIR, build_report
from bench.report.data import load_report_data
from bench.schema import ARROW_SCHEMA, SCHEMA_VERSION, Row
from bench.store import (
    discover,
    load_discovered,
    load_results,
    validate_run_id,
    write_manifest,
    write_row,
)
from bench.store_checks import NOT_RECORDED


def _run(folder: Path, rows: list[Row], manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    write_manifest(folder, {"run_id": folder.name, **(manifest or {})})
    for i, r in enumerate(rows):
        write_row(folder, f"{r.model}-{r.batch_size}-{r.repeat}-{i}", r)
    return folder


def _old_part(path: Path, n: int, model: str = "old", **extra: list) -> Path:
    """A part as an older effbench wrote it: the required columns and a latency, nothing
    else (no image_size, threads, repeat or device_name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {
        "run_id": [path.parent.name] * n,
        "model": [model] * n,
        "batch_size": [2**i for i in range(n)],
        "device": ["cpu"] * n,
        "dtype": ["float32"] * n,
        "status": ["ok"] * n,
        "latency_ms_median": [1.0 + i for i in range(n)],
        **extra,
    }
    pq.write_table(pa.table(table), path)
    return path


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --------------------------------------------------------------------------- discovery


def test_folder_of_runs_with_a_stray_part_loads_every_row(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _run(results / "a", [make_row("m", b) for b in (1, 2, 4, 8, 16, 32)])
    _run(results / "b", [make_row("n", b, run_id="b") for b in (1, 2, 4, 8, 16, 32)])
    write_row(results, "stray", make_row("stray", 1, run_id="stray"))
    df = load_results([results])
    assert len(df) == 6 + 6 + 1
    assert sorted(df["model"].value_counts().items()) == [("m", 6), ("n", 6), ("stray", 1)]
    found = discover([results])
    assert [r.path.name for r in found.runs] == ["a", "b"]
    assert [p.name for p in found.loose] == ["part-stray.parquet"]


def test_same_run_given_relative_absolute_and_linked_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _run(tmp_path / "results" / "a", [make_row("m", b) for b in (1, 2, 4)])
    (tmp_path / "alias").symlink_to(a, target_is_directory=True)
    part = sorted(a.glob("part-*.parquet"))[0]
    monkeypatch.chdir(tmp_path)
    given = ["results/a", str(a), "alias", "results/a/../a", str(part), "results"]
    assert len(load_results(given)) == 3
    found = discover(given)
    assert len(found.runs) == 1 and len(found.files) == 3 and not found.loose


def test_a_single_path_string_is_one_path_not_its_characters(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [make_row("m", 1), make_row("m", 2)])
    assert len(load_results(str(a))) == 2
    assert len(load_results(a)) == 2


def test_a_part_contributes_exactly_its_rows_and_the_count_can_be_checked(
    tmp_path: Path,
) -> None:
    d = _run(tmp_path / "r", [make_row("m", 1)])
    _old_part(d / "part-three.parquet", 3)  # an older file with several rows in one part
    loaded = load_discovered(discover([d]))
    assert sorted(loaded.counts) == [1, 3] and len(loaded.rows) == 4
    assert load_results([d], expected_rows=4).shape[0] == 4
    with pytest.raises(ResultsCorrupt, match="expected 5 rows, found 4 in 2 part files"):
        load_results([d], expected_rows=5)


# --------------------------------------------------------------------------- migration


def test_old_parts_take_missing_keys_from_their_manifest(tmp_path: Path) -> None:
    env = {"default_threads": 6, "cpu_model": "Some CPU"}
    run = tmp_path / "run"
    run.mkdir()
    write_manifest(
        run, {"run_id": "run", "options": {"image_size": 160, "threads": None}, "environment": env}
    )
    _old_part(run / "part-old.parquet", 2)
    df = load_results([run])
    assert df["image_size"].tolist() == [160, 160]
    assert df["threads"].tolist() == [6, 6]  # no --threads: the machine's default ran
    assert df["repeat"].tolist() == [0, 0]
    assert df["device_name"].tolist() == ["Some CPU", "Some CPU"]


def test_old_parts_without_a_manifest_get_the_documented_sentinel(tmp_path: Path) -> None:
    _old_part(tmp_path / "loose" / "part-old.parquet", 3)
    loaded = load_discovered(discover([tmp_path / "loose"]))
    assert loaded.rows["image_size"].tolist() == [NOT_RECORDED] * 3
    assert loaded.rows["threads"].tolist() == [NOT_RECORDED] * 3
    assert any("3 row(s) lack image_size" in n for n in loaded.notes)
    assert loaded.rows["image_size"].dtype == "int64"


def _versioned_part(path: Path, version: int, drop: str = "") -> Path:
    """A part of ``make_row``'s row with every column, its ``schema_version`` column and
    arrow metadata set to ``version``; without the column ``drop`` when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([make_row("v", 1, schema_version=version).to_dict()],
                                 schema=ARROW_SCHEMA)  # fmt: skip
    table = table.replace_schema_metadata({b"effbench_schema_version": str(version).encode()})
    if drop:
        table = table.drop_columns([drop])
    pq.write_table(table, path)
    return path


def test_a_file_of_a_newer_contract_version_is_refused_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    _versioned_part(run / "part-new.parquet", SCHEMA_VERSION + 1)
    write_manifest(run, {"run_id": "run"})
    with pytest.raises(ResultsTooNew, match=rf"version {SCHEMA_VERSION + 1}.*upgrade"):
        load_results([run])
    assert main(["show", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbench: error:") and "newer effbench" in err


def test_a_current_file_must_have_its_columns_and_an_old_one_is_migrated(tmp_path: Path) -> None:
    """Version 2 writes every column: a version-2 file without ``threads`` is damaged (not
    filled in from the manifest as a version-1 file's would be), and the rows of a version-1
    file keep their version and are filled in."""
    run = tmp_path / "run"
    run.mkdir()
    write_manifest(run, {"run_id": "run"})
    _versioned_part(run / "part-ok.parquet", SCHEMA_VERSION)
    assert load_results([run])["schema_version"].tolist() == [SCHEMA_VERSION]
    _versioned_part(run / "part-damaged.parquet", SCHEMA_VERSION, drop="threads")
    with pytest.raises(ResultsCorrupt, match=r"part-damaged\.parquet.*lacks the column\(s\) thr"):
        load_results([run])
    (run / "part-damaged.parquet").unlink()
    _old_part(run / "part-old.parquet", 1, schema_version=[1])
    loaded = load_discovered(discover([run]))
    assert sorted(loaded.rows["schema_version"]) == [1, SCHEMA_VERSION]
    assert any("lack threads" in n and "(row contract version 1)" in n for n in loaded.notes)
    _old_part(run / "part-odd.parquet", 1, model="odd", schema_version=["two"])
    with pytest.raises(ResultsCorrupt, match="schema_version 'two' is not a version"):
        load_results([run])


def test_report_keeps_rows_of_old_parts_without_image_size(tmp_path: Path) -> None:
    _old_part(tmp_path / "old" / "part-a.parquet", 3, model="a")
    _old_part(tmp_path / "old" / "part-b.parquet", 2, model="b")
    new = _run(tmp_path / "new", [make_row("c", 1), make_row("c", 2)])
    data = load_report_data([tmp_path / "old", new])
    assert len(data.rows) == 3 + 2 + 2
    assert len(data.cells) == 3 + 2 + 2  # every cell is plotted, none lost to a NaN key
    assert sorted(r.rows for r in data.runs) == [2, 5]
    assert data.notes  # the report says what it filled in


def test_compare_matches_old_parts_without_image_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for side in ("base", "cand"):
        _old_part(tmp_path / side / "part-old.parquet", 3)
    rc = main(["compare", str(tmp_path / "base"), str(tmp_path / "cand"), "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert len({(r["model"], r["batch_size"]) for r in d["results"]}) == 3


def test_rows_with_unreadable_or_empty_keys_are_refused(tmp_path: Path) -> None:
    _old_part(tmp_path / "a" / "part-x.parquet", 1, image_size=["big"])
    with pytest.raises(ResultsCorrupt, match="image_size 'big' is not a whole number"):
        load_results([tmp_path / "a"])
    table = pa.table({c: [None] for c in ("run_id", "batch_size", "device", "dtype", "status")})
    pq.write_table(table.append_column("model", pa.array(["m"])), tmp_path / "part-y.parquet")
    with pytest.raises(ResultsCorrupt, match="rows without run_id, batch_size"):
        load_results([tmp_path / "part-y.parquet"])


# --------------------------------------------------------------------------- run ids

BAD_RUN_IDS = ["../../x", "/tmp/abs", "", ".", "..", "a\\b", "a\x00b", "line\nbreak", "x" * 201, 7]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS, ids=repr)
def test_manifest_run_id_that_is_not_a_folder_name_is_corrupt(
    tmp_path: Path, run_id: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "work" / "dir"
    run = work / "results" / "r"
    run.mkdir(parents=True)
    write_manifest(run, {"run_id": run_id})
    write_row(run, "c0", make_row("m", 1))
    with pytest.raises(ResultsCorrupt, match="must be a plain folder name"):
        load_results([run])
    before = _files_under(tmp_path)
    monkeypatch.chdir(work)
    assert main(["report", "results/r"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbench: error:") and "\n" not in err and "run_id" in err
    assert main(["compare", "results/r", "results/r"]) == 2
    assert _files_under(tmp_path) == before  # nothing written anywhere


@pytest.mark.parametrize("run_id", BAD_RUN_IDS, ids=repr)
def test_validate_run_id_refuses_what_is_not_a_folder_name(run_id: object) -> None:
    with pytest.raises(InvalidOption, match="plain folder name"):
        validate_run_id(run_id)


def test_validate_run_id_accepts_plain_names() -> None:
    for ok in ("20260101T000000", "nightly-a.b_c", "é-run", "x" * 200, "...x"):
        assert validate_run_id(ok) == ok


def test_stale_figure_cleanup_never_deletes_outside_the_report(tmp_path: Path) -> None:
    run = _run(tmp_path / "r", [make_row("m", 1, params=10, macs=100), make_row("m", 2)])
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("01-accuracy.png", "99-stale.png"):
        (victim / name).write_text("keep")
    out = tmp_path / "report"
    out.mkdir()
    (out / FIGURE_DIR).symlink_to(victim, target_is_directory=True)
    with pytest.raises(OutputNotWritable, match="is a link to another folder"):
        build_report([run], out)
    (out / FIGURE_DIR).unlink()
    (out / FIGURE_DIR).mkdir()
    (out / FIGURE_DIR / "99-stale.png").symlink_to(victim / "99-stale.png")
    (out / "index.html").symlink_to(victim / "01-accuracy.png")
    build_report([run], out)
    assert sorted(p.read_text() for p in victim.iterdir()) == ["keep", "keep"]
    assert not (out / FIGURE_DIR / "99-stale.png").is_symlink()
    assert (out / "index.html").read_text().startswith("<!doctype html>")

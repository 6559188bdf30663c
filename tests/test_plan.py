"""The plan is pure: options + catalog + inventory -> groups of cells."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.errors import DeviceUnavailable, InvalidOption
from bench.plan import (
    Inventory,
    ModelShape,
    Options,
    Timing,
    all_cells,
    expand_plan,
)
from bench.variants import parse_size_bytes, parse_variants

CATALOG = {"a": ModelShape(224), "b": ModelShape(32, in_chans=1)}
CPU_ONLY = Inventory({"cpu": frozenset({"float32", "bfloat16"})}, default_threads=2)
TWO_GPUS = Inventory(
    {
        "cpu": frozenset({"float32"}),
        "cuda:0": frozenset({"float32", "float16", "bfloat16"}),
        "cuda:1": frozenset({"float32", "float16", "bfloat16"}),
    },
    default_threads=8,
)


def test_plan_module_does_not_import_torch() -> None:
    import subprocess

    code = "import bench.plan, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_expansion_counts_and_order() -> None:
    opts = Options(models=("a", "b"), batch_sizes=(4, 1, 2, 2), repeats=2)
    groups = expand_plan(opts, CATALOG, CPU_ONLY)
    assert len(groups) == 2 * 2  # models x repeats
    assert [g.repeat for g in groups] == [0, 0, 1, 1]  # repeats are the outer loop
    assert all(g.batch_sizes == (1, 2, 4) for g in groups)  # ascending, de-duplicated
    cells = all_cells(groups)
    assert len(cells) == 2 * 3 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert groups[1].in_chans == 1 and groups[1].image_size == 32
    assert all(c.threads == 2 for c in cells)


def test_image_size_override_and_threads() -> None:
    groups = expand_plan(Options(models=("a",), image_size=64, threads=1), CATALOG, CPU_ONLY)
    assert groups[0].image_size == 64 and groups[0].threads == 1


def test_cuda_means_every_visible_gpu() -> None:
    groups = expand_plan(
        Options(models=("a",), devices=("cuda",), dtypes=("float16",)), CATALOG, TWO_GPUS
    )
    assert [g.device for g in groups] == ["cuda:0", "cuda:1"]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (Options(models=("zzz",)), InvalidOption, "unknown model"),
        (Options(models=("a",), batch_sizes=(0,)), InvalidOption, "batch size 0"),
        (Options(models=("a",), batch_sizes=(-2,)), InvalidOption, "batch size -2"),
        (Options(models=("a",), dtypes=("float64",)), InvalidOption, "unknown dtype"),
        (Options(models=("a",), devices=("cuda",)), DeviceUnavailable, "no CUDA GPU"),
        (Options(models=("a",), devices=("cuda:3",)), DeviceUnavailable, "not present"),
        (Options(models=("a",), devices=("tpu",)), InvalidOption, "unknown device"),
        (Options(models=("a",), dtypes=("float16",)), DeviceUnavailable, "not supported on cpu"),
        (Options(models=("a",), repeats=0), InvalidOption, "repeats"),
        (
            Options(models=("a",), timing=Timing(min_time_s=3, max_time_s=1)),
            InvalidOption,
            "min-time",
        ),
        (Options(models=()), InvalidOption, "no models"),
    ],
)
def test_impossible_cells_fail_before_anything_runs(
    options: Options, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        expand_plan(options, CATALOG, CPU_ONLY)


def test_options_round_trip_through_manifest_dict() -> None:
    opts = Options(models=("a", "b"), batch_sizes=(1, 8), repeats=3, timing=Timing(min_time_s=0.5))
    assert Options.from_dict(opts.to_dict()) == opts


def test_cell_file_stems_are_file_safe_and_unique() -> None:
    groups = expand_plan(
        Options(models=("a",), devices=("cuda",), batch_sizes=(1, 2)), CATALOG, TWO_GPUS
    )
    stems = [c.key.stem for c in all_cells(groups)]
    assert len(set(stems)) == 4
    assert all(":" not in s and "/" not in s for s in stems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MiB", 512 * 2**20), ("2G", 2 * 2**30), ("1048576", 2**20), ("1.5KiB", 1536)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size_bytes(text) == expected


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(InvalidOption, match="512MiB"):
        parse_size_bytes("lots")


def test_variants_are_parsed_in_order_with_their_variables() -> None:
    v = parse_variants(["base", "fast:A=1", "fast:B=x=y", "other:EMPTY="])
    assert [x.name for x in v] == ["base", "fast", "other"]
    assert (
        v[0].env == () and v[1].env == (("A", "1"), ("B", "x=y")) and v[2].env == (("EMPTY", ""),)
    )
    assert parse_variants([]) == ()
    # recorded in the options and read back from a manifest
    o = Options(models=("a",), variant="fast", env=v[1].env)
    assert Options.from_dict(o.to_dict()) == o


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["only"], "needs two or more"),
        (["a", "b c"], "a variant is named with"),
        (["a", "b:NOEQUALS"], "NAME:VAR=VALUE"),
        (["a", "b:1BAD=2"], "NAME:VAR=VALUE"),
        (["a", "b:PYTHONPATH=/x"], "set by effbench itself"),
        (["a", "b:OMP_NUM_THREADS=4"], "--threads"),
        (["a", "b:X=1", "b:X=2"], "given twice"),
    ],
)
def test_bad_variants_say_what_to_write(texts: list[str], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_variants(texts)


def test_a_variant_names_another_interpreter(tmp_path: Path, monkeypatch) -> None:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)  # a virtualenv's python: kept as the link, not resolved
    monkeypatch.chdir(tmp_path)
    v = parse_variants(["base", "pr:python=venv/bin/python", "pr:PYTHONPATH=plugins", "pr:A=1"])
    assert v[0].python is None and v[1].python == str(python)
    # its workers' PYTHONPATH: its own entries, then the runner's without the runner's checkout
    env = dict(v[1].worker_env(os.pathsep.join(["/ckout", "/plug", ""]), "/ckout"))
    assert env == {"A": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), "/plug"])}
    assert v[0].worker_env("/ckout", "/ckout") == ()  # a fork-server arm: its variables only
    o = Options(models=("a",), variant="pr", env=tuple(sorted(env.items())), python=v[1].python)
    assert Options.from_dict(o.to_dict()) == o


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["a", "b:python=/no/such/python"], "no interpreter at /no/such/python"),
        (["a", "b:python="], "give the path of a Python interpreter"),
        (["a", "b:python=" + __file__], "is not executable"),
        (["a", "b:python=" + sys.executable, "b:python=/bin/sh"], "given twice"),
        (["a:PYTHONPATH=/x", "b:python=" + sys.executable], "a:python=PATH"),
    ],
)
def test_bad_interpreters_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_variants(texts)

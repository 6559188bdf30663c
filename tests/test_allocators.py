"""The allocator as a configuration (bench/allocators.py, the ``malloc:`` part of
bench/configs.py): parsing and the plan's refusals, what the worker does for each part, and
real sweeps whose workers report the allocator they were built under (the
``malloc_state`` test model's width: 16, +1 glibc's default thresholds, +2 jemalloc
mapped, +4 tcmalloc mapped)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import FAST, effbench

from bench import allocators
from bench.allocators import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    apply_malloc,
    find_library,
    mapped_library,
    preload_env,
)
from bench.cli import main
from bench.configs import parse_config
from bench.errors import BenchError, InvalidOption
from bench.plan import Inventory, ModelShape, Options, expand_plan
from bench.report.data import load_report_data
from bench.report.summary import summary_table
from bench.store import load_results

CATALOG = {"m": ModelShape(8)}
GLIBC_ONLY = Inventory({"cpu": frozenset({"float32"})}, 1, frozenset({"tuned"}))
EVERY = Inventory({"cpu": frozenset({"float32"})}, 1, frozenset({"tuned", "jemalloc", "tcmalloc"}))


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("malloc:tuned", "malloc:tuned"),
        ("malloc:jemalloc+channels_last", "channels_last+malloc:jemalloc"),
        ("malloc:tcmalloc+compile", "compile+malloc:tcmalloc"),
    ],
)
def test_an_allocator_part_combines_with_the_others_in_one_canonical_name(
    text: str, name: str
) -> None:
    config = parse_config(text)
    assert config.name == name and parse_config(name) == config
    assert config.preloaded == (config.malloc != "tuned")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("malloc:", "names no allocator"),
        ("malloc:foo", "names no allocator"),
        ("malloc", "unknown configuration part 'malloc'"),
        ("malloc:tuned+malloc:jemalloc", "choose one allocator"),
        ("eager+malloc:tuned", "no other part"),
    ],
)
def test_a_bad_allocator_part_says_what_to_write(text: str, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_config(text)


def test_the_plan_refuses_an_allocator_that_is_not_installed_with_its_install_command() -> None:
    for name, package in (("jemalloc", "libjemalloc2"), ("tcmalloc", "libtcmalloc-minimal4")):
        opts = Options(models=("m",), configs=("eager", f"malloc:{name}"))
        with pytest.raises(InvalidOption, match=f"apt-get install {package}"):
            expand_plan(opts, CATALOG, GLIBC_ONLY)
        groups = expand_plan(opts, CATALOG, EVERY)
        assert [g.config for g in groups] == ["eager", f"malloc:{name}"]
    tuned = Options(models=("m",), configs=("malloc:tuned",))
    with pytest.raises(InvalidOption, match="glibc"):
        expand_plan(tuned, CATALOG, Inventory({"cpu": frozenset({"float32"})}))
    devices = {"cpu": frozenset({"float32"}), "cuda:0": frozenset({"float32"})}
    on_gpu = dataclasses.replace(tuned, devices=("cuda:0",))
    with pytest.raises(InvalidOption, match="--devices cpu"):
        expand_plan(on_gpu, CATALOG, Inventory(devices, 1, EVERY.allocators))


def test_a_library_is_found_by_its_soname_in_the_library_folders(tmp_path: Path) -> None:
    assert find_library("tcmalloc", [tmp_path]) is None
    (tmp_path / "libtcmalloc.so.4").write_bytes(b"")
    assert find_library("tcmalloc", [tmp_path]) == tmp_path / "libtcmalloc.so.4"
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")  # preferred: no heap profiler
    assert find_library("tcmalloc", [tmp_path]) == tmp_path / "libtcmalloc_minimal.so.4"


def test_the_preloaded_library_goes_first_and_nothing_else_is_preloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(allocators, "find_library", lambda name: Path(f"/lib/{name}.so"))
    assert preload_env("jemalloc", {}) == {"LD_PRELOAD": "/lib/jemalloc.so"}
    assert preload_env("jemalloc", {"LD_PRELOAD": "x.so"}) == {
        "LD_PRELOAD": "/lib/jemalloc.so:x.so"
    }
    assert preload_env("tuned", {}) == {} and preload_env(None, {}) == {}
    monkeypatch.setattr(allocators, "find_library", lambda name: None)
    with pytest.raises(InvalidOption, match="apt-get install libjemalloc2"):
        preload_env("jemalloc", {})


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_tuned_sets_the_two_thresholds_and_no_part_sets_nothing() -> None:
    libc = FakeLibc()
    apply_malloc(None, libc)
    assert libc.calls == []  # eager: the allocator a user's process has
    apply_malloc("tuned", libc)
    assert libc.calls == [(M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 64 * 2**20)]
    with pytest.raises(BenchError, match="refused"):
        apply_malloc("tuned", FakeLibc(answer=0))


def test_a_preloaded_allocator_must_be_mapped_in_the_worker(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    line = "7f00-7f10 r-xp 00000000 08:01 42 {}\n"
    maps.write_text(line.format("/usr/lib/x86_64-linux-gnu/libc.so.6"))
    with pytest.raises(BenchError, match=r"libjemalloc\.so\.2 is not loaded"):
        apply_malloc("jemalloc", maps=maps)
    # a soname is often a link to a longer file name
    maps.write_text(line.format("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10"))
    assert mapped_library("tcmalloc", maps) == "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10"
    apply_malloc("tcmalloc", maps=maps)  # mapped: no error
    assert mapped_library("jemalloc", maps) is None


def _widths(run: Path) -> dict[str, int]:
    df = load_results([run])
    assert (df["status"] == "ok").all(), df[["config", "error"]].to_string()
    width = {
        c: {int(p) // (3 * 8 * 8 + 1)} for c, p in zip(df["config"], df["params"], strict=True)
    }
    return {c: w.pop() for c, w in width.items()}


def test_eager_workers_keep_glibcs_default_and_tuned_ones_get_its_thresholds(
    out_dir: Path,
) -> None:
    args = ["run", "--models", "malloc_state", "--batch-sizes", "1,2", "--threads", "1"]
    args += ["--configs", "eager,malloc:tuned", "--out", str(out_dir), "--run-id", "m", *FAST]
    r = effbench(args)
    assert r.returncode == 0, r.stderr
    # eager: glibc mapped the 30 MiB block itself (no mallopt in the worker); tuned: the heap
    assert _widths(out_dir / "m") == {"eager": 17, "malloc:tuned": 16}
    # the report shows the configuration's speed-up over eager, as it does compile's
    report = out_dir / "report"
    assert main(["report", str(out_dir / "m"), "--out", str(report)]) == 0
    doc = json.loads((report / "report.json").read_text())
    (fig,) = [f for f in doc["figures"] if f["name"] == "11-speedup-vs-eager"]
    assert not fig.get("skipped") and "malloc:tuned" in fig["reading"]
    assert (report / "figures" / "11-speedup-vs-eager.png").stat().st_size > 0
    table = summary_table(load_report_data([out_dir / "m"])).set_index("config")
    assert table.loc["eager", "speedup_bs1"] == 1.0
    assert table.loc["malloc:tuned", "speedup_bs1"] > 0


@pytest.mark.parametrize(("name", "width"), [("jemalloc", 18), ("tcmalloc", 20)])
def test_a_preloaded_allocator_is_the_one_the_worker_runs_under(
    out_dir: Path, name: str, width: int
) -> None:
    """Under the default (fork) executor too: such a task gets a new interpreter."""
    if find_library(name) is None:
        pytest.skip(f"{allocators.PRELOADED[name].install} to test malloc:{name}")
    args = ["run", "--models", "malloc_state", "--batch-sizes", "1", "--threads", "1"]
    args += ["--configs", f"malloc:{name}", "--out", str(out_dir), "--run-id", "p", *FAST]
    r = effbench(args)
    assert r.returncode == 0, r.stderr
    assert _widths(out_dir / "p") == {f"malloc:{name}": width}

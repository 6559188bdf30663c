"""The regression gate (bench/compare.py) on constructed per-repeat values, and its CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import re
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import make_row

from bench import compare as cmp
from bench.cli import main
from bench.errors import InvalidOption, NothingCompared, ResultsCorrupt
from bench.schema import Row
from bench.store import write_manifest, write_row

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUN = ROOT / "tests" / "data" / "runs" / "cpu-sample"
# Multiplicative run-to-run jitter of five repeats, spread about ±1%.
JITTER = (1.0, 1.01, 0.99, 1.005, 0.995)
ENV = {"torch_version": "2.14.1+cu130", "cuda_version": "13.0", "cudnn_version": None}


def _row(model: str, batch: int, value: float, repeat: int, **kw: object) -> Row:
    """A row whose repeat measured ``value`` ms (three equal samples), with a memory and a
    torch version to compare."""
    fields: dict[str, object] = dict(
        family="test",
        image_size=64,
        device_name="Test CPU",
        latency_ms_median=value,
        latency_ms_samples=(value,) * 3,
        peak_memory_bytes=1_000_000,
        torch_version="2.14.1+cu130",
    )
    return make_row(model, batch, repeat, **{**fields, **kw})


def _rows(cells: dict[tuple[str, int], list[float]], **kw: object) -> list[Row]:
    return [
        _row(m, b, v, i, **kw) for (m, b), values in cells.items() for i, v in enumerate(values)
    ]


def _side(rows: list[Row], label: str = "side", env: dict | None = None) -> cmp.Side:
    return cmp.Side(label, pd.DataFrame([r.to_dict() for r in rows]), (env or ENV,))


def _compare(base: dict, cand: dict, **settings: object) -> cmp.Comparison:
    s = cmp.Settings(metrics=("latency",), **settings)  # type: ignore[arg-type]
    return cmp.compare_sides(_side(_rows(base), "base"), _side(_rows(cand), "cand"), s)


def _scaled(ratio: float, jitter: tuple[float, ...] = JITTER) -> list[float]:
    return [10.0 * ratio * j for j in jitter]


def _write_run(folder: Path, rows: list[Row], env: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    write_manifest(folder, {"run_id": folder.name, "environment": env or ENV})
    for i, r in enumerate(rows):
        write_row(folder, f"{r.model}_bs{r.batch_size}_r{r.repeat}_{i}", r)
    return folder


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("q", "df", "table"),
    # Student's t quantiles as printed in standard tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
    [(0.975, 1, 12.706), (0.975, 4, 2.776), (0.995, 10, 3.169), (0.975, 30, 2.042)],
)
def test_t_quantiles_match_published_tables(q: float, df: float, table: float) -> None:
    assert cmp.t_ppf(q, df) == pytest.approx(table, abs=6e-4)


def test_t_tail_is_symmetric_and_tends_to_the_normal() -> None:
    assert cmp.t_sf(1.3, 7) + cmp.t_sf(-1.3, 7) == pytest.approx(1.0, abs=1e-12)
    assert cmp.t_ppf(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)


def test_benjamini_hochberg_steps_up() -> None:
    # thresholds k * 0.05 / 3 = .0167, .0333, .05: the first p-value alone fails its
    # threshold, yet all three are rejected because the largest passes (step-up).
    assert cmp.bh_discoveries([0.022, 0.02, 0.021], 0.05) == 3
    # Benjamini & Hochberg (1995)-style example: only the two smallest survive
    ps = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert cmp.bh_discoveries(ps, 0.05) == 2
    assert cmp.bh_discoveries([0.5, 0.9], 0.05) == 0


# --------------------------------------------------------------------------- verdicts


def test_each_verdict_on_constructed_repeats() -> None:
    c = _compare(
        {("slow", 1): _scaled(1), ("fast", 1): _scaled(1), ("same", 1): _scaled(1),
         ("noisy", 1): _scaled(1), ("small", 1): _scaled(1)},
        {("slow", 1): _scaled(1.20), ("fast", 1): _scaled(0.80), ("same", 1): _scaled(1.001),
         ("noisy", 1): _scaled(1.0, (1.0, 1.3, 0.85, 1.2, 1.05)),
         ("small", 1): _scaled(1.04)},
    )  # fmt: skip
    verdicts = {r.key[0]: r.verdict for r in c.results}
    assert verdicts == {
        "slow": "regression",
        "fast": "improvement",
        "same": "unchanged",
        "noisy": "inconclusive",
        "small": "inconclusive",
    }
    small = next(r for r in c.results if r.key[0] == "small")
    # a real change (interval above 1) that may or may not exceed 5%: not a silent pass
    assert small.ci_low > 1.0 and small.ratio < 1.05 < small.ci_high
    slow = next(r for r in c.results if r.key[0] == "slow")
    assert slow.ratio == pytest.approx(1.20)
    assert 1.0 < slow.ci_low < 1.20 < slow.ci_high
    assert slow.evidence == "repeats" and (slow.n_base, slow.n_cand) == (5, 5)
    # severity order: regression first, unchanged last
    order = [r.verdict for r in c.results]
    assert order == ["regression", "inconclusive", "inconclusive", "improvement", "unchanged"]
    assert c.exit_code() == 1


def test_significant_change_below_threshold_is_not_a_regression() -> None:
    base = {("m", 1): _scaled(1, (1.0, 1.001, 0.999, 1.0005, 0.9995))}
    cand = {("m", 1): _scaled(1.03, (1.0, 1.001, 0.999, 1.0005, 0.9995))}
    (r,) = _compare(base, cand).results
    assert r.ci_low > 1.0  # a real 3% change ...
    assert r.verdict == "unchanged"  # ... inside the ±5% threshold
    (r,) = _compare(base, cand, threshold=cmp.Threshold(0.02)).results
    assert r.verdict == "regression"


def test_correction_for_many_cells_turns_a_lone_weak_signal_inconclusive() -> None:
    weak_b = _scaled(1, (1.0, 1.03, 0.97, 1.02, 0.98))
    weak_c = _scaled(1.08, (1.0, 1.03, 0.97, 1.02, 0.98))
    alone = _compare({("weak", 1): weak_b}, {("weak", 1): weak_c})
    (r,) = alone.results
    assert r.verdict == "regression" and r.p_value < 0.01
    nulls_b = {(f"null{i}", 1): _scaled(1) for i in range(30)}
    crowd = _compare({("weak", 1): weak_b, **nulls_b}, {("weak", 1): weak_c, **nulls_b})
    weak = next(r for r in crowd.results if r.key[0] == "weak")
    assert weak.p_value == pytest.approx(r.p_value)
    assert weak.p_value > 0.01 / 31  # no BH discovery among 31 tests
    assert weak.verdict == "inconclusive"
    assert crowd.tests == 31 and crowd.discoveries == 0
    assert crowd.confidence == pytest.approx(1 - 0.01 / 31)


def test_interval_excludes_one_exactly_for_bh_discoveries() -> None:
    base = {(f"m{i}", 1): _scaled(1) for i in range(6)}
    cand = {(f"m{i}", 1): _scaled(1 + 0.03 * i) for i in range(6)}
    c = _compare(base, cand)
    assert c.discoveries > 0
    for r in c.results:
        assert (r.ci_low > 1 or r.ci_high < 1) == (r.p_value <= 0.01 * c.discoveries / c.tests)


def test_single_repeat_falls_back_to_samples_with_a_noise_floor() -> None:
    def one(value: float) -> list[Row]:
        samples = tuple(value * j for j in (1.0, 1.002, 0.998) * 20)
        return [_row("m", 1, value, 0, latency_ms_samples=samples)]

    s = cmp.Settings(metrics=("latency",))
    small = cmp.compare_sides(_side(one(10.0)), _side(one(13.0)), s)
    (r,) = small.results
    assert r.evidence == "samples" and "noise floor" in r.note
    assert r.verdict != "regression"  # 30% is within the single-run floor (a factor of 2)
    assert r.ci_low < 1.0 < r.ci_high
    assert r.ci_high > 2 * 1.3 and r.ci_low < 1.3 / 2
    big = cmp.compare_sides(_side(one(10.0)), _side(one(25.0)), s)
    assert big.results[0].verdict == "regression"
    assert "noise floor" in cmp.to_markdown(small)
    # a quiet runner may lower the floor
    quiet = cmp.Settings(metrics=("latency",), single_run_floor=math.log(1.05))
    assert cmp.compare_sides(_side(one(10.0)), _side(one(13.0)), quiet).results[0].verdict == (
        "regression"
    )


def test_single_candidate_repeat_borrows_the_baseline_spread() -> None:
    base = {("m", 1): _scaled(1, (*JITTER, *JITTER))}
    (slow,) = _compare(base, {("m", 1): [12.0]}).results
    assert slow.evidence == "borrowed spread" and (slow.n_base, slow.n_cand) == (10, 1)
    assert slow.verdict == "regression"
    (same,) = _compare(base, {("m", 1): [10.0]}).results
    assert same.verdict != "regression"
    # the spread of 10 baseline repeats (~1%) sets the width, not a fixed floor
    assert same.ci_high / same.ci_low < 1.2


def test_deterministic_memory_uses_exact_values() -> None:
    rows_b = _rows({("m", 1): _scaled(1)}, peak_memory_bytes=100 * 2**20)
    rows_c = _rows({("m", 1): _scaled(1)}, peak_memory_bytes=130 * 2**20)
    c = cmp.compare_sides(_side(rows_b), _side(rows_c), cmp.Settings(metrics=("memory",)))
    (r,) = c.results
    assert r.verdict == "regression" and r.ratio == pytest.approx(1.3)
    assert r.ci_low == pytest.approx(1.3) and r.ci_high == pytest.approx(1.3)


def test_candidate_failure_is_a_regression() -> None:
    base = _rows({("m", 2): _scaled(1)})
    cand = [_row("m", 2, None, i, status="oom", latency_ms_samples=()) for i in range(5)]
    c = cmp.compare_sides(_side(base), _side(cand), cmp.Settings(metrics=("latency",)))
    (r,) = c.results
    assert (r.verdict, r.evidence) == ("regression", "failed")
    assert "oom" in r.note


# --------------------------------------------------------------------------- matching


def test_unmatched_cells_are_listed_in_every_format() -> None:
    c = _compare(
        {("m", 1): _scaled(1), ("m", 2): _scaled(1)},
        {("m", 1): _scaled(1), ("m", 4): _scaled(1)},
    )
    cell = dict.fromkeys(cmp.MATCH_KEY)
    assert [dict(zip(cell, k, strict=True))["batch_size"] for k in c.only_baseline] == [2]
    assert [dict(zip(cell, k, strict=True))["batch_size"] for k in c.only_candidate] == [4]
    assert len(c.results) == 1
    assert c.exit_code() == 0
    assert c.exit_code(fail_on_inconclusive=True) == 2  # a baseline cell went unmeasured
    md = cmp.to_markdown(c)
    assert "Only in the baseline" in md and "m bs=2" in md and "m bs=4" in md
    d = json.loads(cmp.to_json(c))
    assert [x["batch_size"] for x in d["only_baseline"]] == [2]
    assert [x["batch_size"] for x in d["only_candidate"]] == [4]
    junit = ET.fromstring(cmp.to_junit(c))
    assert any("bs=2" in (t.get("name") or "") for t in junit.iter("testcase"))


def test_cells_match_on_device_name_and_threads() -> None:
    base = _rows({("m", 1): _scaled(1)})
    s = cmp.Settings(metrics=("latency",))
    for differ in ({"threads": 2}, {"device_name": "Other CPU"}):
        cand = _rows({("m", 1): _scaled(1)}, **differ)
        (col,) = differ
        with pytest.raises(NothingCompared, match=rf"differ in {col} "):
            cmp.compare_sides(_side(base), _side(cand), s)


# --------------------------------------------------------------------------- environments


def test_environment_mismatch_is_refused_and_shown(tmp_path: Path) -> None:
    rows = _rows({("m", 1): _scaled(1)})
    _write_run(tmp_path / "base", rows)
    other = {**ENV, "cuda_version": "12.4"}
    _write_run(tmp_path / "cand", _rows({("m", 1): _scaled(1)}, dtype="float32"), env=other)
    s = cmp.Settings(metrics=("latency",))
    with pytest.raises(cmp.EnvironmentMismatch, match=r"cuda_version: 13.0 vs 12.4"):
        cmp.compare_paths(tmp_path / "base", tmp_path / "cand", s)
    c = cmp.compare_paths(tmp_path / "base", tmp_path / "cand", s, allow_env_mismatch=True)
    assert c.env_differences == (("cuda_version", "13.0", "12.4"),)
    assert "Environments differ" in cmp.to_markdown(c)


def test_row_level_environment_differences_are_found() -> None:
    base = _side(_rows({("m", 1): _scaled(1)}))
    cand = _side(_rows({("m", 1): _scaled(1)}, torch_version="2.15.0", device_name="Other"))
    diffs = {k for k, _, _ in cmp.environment_differences(base, cand)}
    assert diffs == {"torch_version", "device_name"}


def _current_cpu_memory_method() -> str:
    """What a CPU worker of this version writes in ``memory_method``."""
    from bench.probes.memory import CpuAllocatorPeak, MemoryPass, rss_for

    return MemoryPass(CpuAllocatorPeak(), rss_for("cpu")).method


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # issue 16's pass fixed glibc's thresholds, which changed CPU latencies and memory
        ("cpu_vmhwm_above_baseline", "cpu_vmhwm_above_baseline; own pass, glibc malloc"),
        # issue 22 gave the thresholds back to glibc, and peak memory is the allocator's
        ("cpu_vmhwm_above_baseline; own pass, glibc malloc", None),
        # the pass moved from after the window to the cell's first forward: the allocator's
        # peak is the same, the resident-set mark no longer holds the pass's forward
        ("cpu_allocator_peak; one forward after the timed window; rss: vmhwm over the cell", None),
    ],
)
def test_a_baseline_of_another_memory_method_is_refused(
    tmp_path: Path, old: str, new: str | None
) -> None:
    new = new or _current_cpu_memory_method()
    assert new != old
    _write_run(tmp_path / "base", _rows({("m", 1): _scaled(1)}, memory_method=old))
    _write_run(tmp_path / "cand", _rows({("m", 1): _scaled(1)}, memory_method=new))
    s = cmp.Settings(metrics=("latency",))
    with pytest.raises(cmp.EnvironmentMismatch, match="memory_method"):
        cmp.compare_paths(tmp_path / "base", tmp_path / "cand", s)
    failed = _side(_rows({("m", 1): _scaled(1)}, memory_method="failed: OSError"))
    same = _side(_rows({("m", 1): _scaled(1)}, memory_method=new))
    assert cmp.environment_differences(same, failed) == ()  # a probe's error is not a method


# --------------------------------------------------------------------------- formats


def _mixed() -> cmp.Comparison:
    return _compare(
        {("slow", 1): _scaled(1), ("same", 1): _scaled(1), ("noisy", 1): _scaled(1)},
        {("slow", 1): _scaled(1.2), ("same", 1): _scaled(1.0),
         ("noisy", 1): _scaled(1.0, (1.0, 1.3, 0.85, 1.2, 1.05))},
    )  # fmt: skip


def test_junit_has_one_failure_per_regression() -> None:
    root = ET.fromstring(cmp.to_junit(_mixed()))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests", "-1")) == 3
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name", "").split()[0] for c in failed] == ["slow"]
    assert suite.get("failures") == "1"
    assert [c.get("name", "").split()[0] for c in cases if c.find("skipped") is not None] == [
        "noisy"
    ]


def test_markdown_is_a_table_sorted_by_severity() -> None:
    lines = cmp.to_markdown(_mixed()).splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + 3
    widths = {ln.count("|") for ln in table}
    assert len(widths) == 1  # every row has the header's column count
    assert set(table[1].replace("|", "").replace("-", "").replace(":", "")) <= {" ", ""}
    assert [ln.split("|")[1].strip() for ln in table[2:]] == [
        "**regression**",
        "inconclusive",
        "unchanged",
    ]


def test_json_carries_verdicts_intervals_and_settings() -> None:
    d = json.loads(cmp.to_json(_mixed()))
    assert d["summary"] == {"regression": 1, "inconclusive": 1, "improvement": 0, "unchanged": 1}
    assert d["settings"]["threshold"] == 0.05 and d["settings"]["alpha"] == 0.01
    slow = d["results"][0]
    assert slow["model"] == "slow" and slow["ci_low"] < slow["ratio"] < slow["ci_high"]


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_out_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _write_run(tmp_path / "base", _rows({("m", 1): _scaled(1), ("n", 1): _scaled(1)}))
    same = _write_run(tmp_path / "same", _rows({("m", 1): _scaled(1), ("n", 1): _scaled(1)}))
    slow = _write_run(tmp_path / "slow", _rows({("m", 1): _scaled(1.3), ("n", 1): _scaled(1)}))
    noisy = _write_run(
        tmp_path / "noisy",
        _rows({("m", 1): _scaled(1.0, (1.0, 1.3, 0.85, 1.2, 1.05)), ("n", 1): _scaled(1)}),
    )
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(slow), "--metric", "latency"]) == 1
    assert main(["compare", str(base), str(noisy)]) == 0
    assert main(["compare", str(base), str(noisy), "--fail-on-inconclusive"]) == 2
    out = tmp_path / "report.xml"
    assert main(["compare", str(base), str(slow), "--format", "junit", "--out", str(out)]) == 1
    assert ET.parse(out).getroot().find("testsuite").get("failures") == "1"  # type: ignore[union-attr]
    capsys.readouterr()


def test_cli_on_a_real_run_compared_with_itself(capsys: pytest.CaptureFixture) -> None:
    rc = main(["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert d["summary"]["regression"] == 0 and d["only_baseline"] == []
    ok = [r for r in d["results"] if r["evidence"] == "samples"]
    assert ok and all(r["ratio"] == pytest.approx(1.0) for r in ok)
    rc = main(["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--format", "json",
               "--latency-stat", "p10", "--metric", "latency"])  # fmt: skip
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["settings"]["latency_column"] == "latency_ms_p10"
    assert {r["metric"] for r in d["results"]} == {"latency"}


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbench: error: ") and "\n" not in err
    return err


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "does not exist" in _error(["compare", str(tmp_path / "nope"), str(SAMPLE_RUN)], capsys)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pq.write_table(pa.table({"name": ["x"], "time": [1.0]}), foreign / "part-bench.parquet")
    assert "not an effbench result" in _error(["compare", str(foreign), str(SAMPLE_RUN)], capsys)
    err = _error(["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--metric", "energy"], capsys)
    assert "'energy' has no data" in err
    assert "threshold" in _error(
        ["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--threshold", "five"], capsys
    )
    assert "unknown metric" in _error(
        ["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--metric", "speed"], capsys
    )
    assert "alpha" in _error(["compare", str(SAMPLE_RUN), str(SAMPLE_RUN), "--alpha", "2"], capsys)
    # rows written without a 10th percentile cannot be compared on it
    old = _write_run(tmp_path / "old", _rows({("m", 1): _scaled(1)}))
    err = _error(["compare", str(old), str(old), "--latency-stat", "p10", "--metric", "latency"],
                 capsys)  # fmt: skip
    assert "latency_ms_p10" in err and "has no data" in err


def test_env_mismatch_from_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _write_run(tmp_path / "base", _rows({("m", 1): _scaled(1)}))
    cand = _write_run(tmp_path / "cand", _rows({("m", 1): _scaled(1)}, torch_version="2.15.0"))
    err = _error(["compare", str(base), str(cand)], capsys)
    assert "torch_version" in err and "--allow-env-mismatch" in err
    assert main(["compare", str(base), str(cand), "--allow-env-mismatch"]) == 0


def test_threshold_parsing() -> None:
    assert cmp.Threshold.parse("5%").fraction == pytest.approx(0.05)
    assert cmp.Threshold.parse("0.1").fraction == pytest.approx(0.1)
    assert cmp.Threshold.parse("2.5 %").log_bound == pytest.approx(math.log(1.025))
    for bad in ("", "-5%", "150%", "0"):
        with pytest.raises(InvalidOption):
            cmp.Threshold.parse(bad)
    # the single-run floor may exceed 100% (a factor of 2 and more)
    assert cmp.Threshold.parse("100%", upper=10).log_bound == pytest.approx(math.log(2))
    # and the floors may be switched off (a runner that does not drift)
    assert cmp.Threshold.parse("0%", upper=10, allow_zero=True).fraction == 0.0


def test_empty_side_is_refused() -> None:
    empty = cmp.Side("empty", pd.DataFrame(columns=["status", *cmp.MATCH_KEY]))
    with pytest.raises(ResultsCorrupt, match="no result rows"):
        cmp.compare_sides(empty, _side(_rows({("m", 1): _scaled(1)})), cmp.Settings())


def test_compare_does_not_import_torch() -> None:
    code = "import sys, bench.compare; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_trimmed_test_resists_one_disturbed_repeat() -> None:
    ten = (*JITTER, *(j * 1.002 for j in JITTER))
    base = {("m", 1): _scaled(1, ten)}
    disturbed = (*ten[:9], 2.5)  # one repeat ran while another process held the core
    cand = {("m", 1): _scaled(1.2, disturbed)}
    (plain,) = _compare(base, cand).results
    (yuen,) = _compare(base, cand, trim=0.2).results
    assert plain.verdict == "inconclusive"
    assert yuen.verdict == "regression" and yuen.ratio == pytest.approx(1.2, rel=0.01)
    # with nothing to cut (n < 5 at 20%), Yuen's test is Welch's test
    small_b, small_c = {("m", 1): _scaled(1, JITTER[:4])}, {("m", 1): _scaled(1.1, JITTER[:4])}
    (w,) = _compare(small_b, small_c).results
    (y,) = _compare(small_b, small_c, trim=0.2).results
    assert (y.ci_low, y.ci_high, y.p_value) == (w.ci_low, w.ci_high, w.p_value)


def test_each_metric_is_its_own_family() -> None:
    cells = {(f"m{i}", 1): _scaled(1) for i in range(4)}
    base = _rows(cells, peak_memory_bytes=100 * 2**20)
    cand = _rows(cells, peak_memory_bytes=101 * 2**20)  # exact, tiny, "significant"
    c = cmp.compare_sides(_side(base), _side(cand), cmp.Settings(metrics=("latency", "memory")))
    fam = {name: (m, r) for name, m, r, _ in c.families}
    assert fam == {"latency": (4, 0), "memory": (4, 4)}
    assert {r.verdict for r in c.results if r.metric == "memory"} == {"unchanged"}
    assert "latency 4 tests, 0 discoveries" in cmp.to_markdown(c)


def test_latency_statistic_picks_the_per_repeat_column() -> None:
    # medians say 20% slower, the 10th percentiles say unchanged: each setting reads its own
    base = [_row("m", 1, v, i, latency_ms_p10=v) for i, v in enumerate(_scaled(1))]
    cand = [
        _row("m", 1, v, i, latency_ms_p10=p)
        for i, (v, p) in enumerate(zip(_scaled(1.2), _scaled(1.001), strict=True))
    ]
    by_median = cmp.compare_sides(_side(base), _side(cand), cmp.Settings(metrics=("latency",)))
    by_p10 = cmp.compare_sides(
        _side(base), _side(cand), cmp.Settings(metrics=("latency",), latency_statistic="p10")
    )
    assert [r.verdict for r in by_median.results] == ["regression"]
    assert by_median.results[0].ratio == pytest.approx(1.2)
    assert [r.verdict for r in by_p10.results] == ["unchanged"]
    assert by_p10.results[0].ratio == pytest.approx(1.001)
    assert cmp.to_dict(by_p10)["settings"]["latency_column"] == "latency_ms_p10"
    assert "p10 of its iterations" in cmp.to_markdown(by_p10)
    with pytest.raises(InvalidOption, match="unknown latency statistic 'p99'"):
        cmp.compare_sides(
            _side(base), _side(cand), cmp.Settings(metrics=("latency",), latency_statistic="p99")
        )


def test_spread_and_the_repeats_a_change_needs() -> None:
    (r,) = _compare({("m", 1): _scaled(1)}, {("m", 1): _scaled(1.2)}).results
    # both sides carry the same jitter, so the pooled spread is its own sd of logs
    assert r.spread == pytest.approx(statistics.stdev(math.log(j) for j in JITTER))
    z = statistics.NormalDist().inv_cdf

    def powered(spread: float, n: int) -> bool:
        # the estimate, 1.645 standard errors below a true 10%, clears the interval
        # (alpha = 0.01) and the 5% threshold
        se = spread * math.sqrt(2 / n)
        return math.log(1.10) - z(0.95) * se >= max(z(0.995) * se, math.log(1.05))

    for spread in (0.02, 0.1, 0.18):
        n = cmp.repeats_needed(spread, 0.10, 0.05, 0.01)
        assert powered(spread, n) and not powered(spread, n - 1)
    with pytest.raises(InvalidOption, match="cannot exceed"):
        cmp.repeats_needed(0.1, 0.04, 0.05, 0.01)
    c = _compare({("m", 1): _scaled(1)}, {("m", 1): _scaled(1.0)})
    assert c.repeats_for("latency") == cmp.repeats_needed(r.spread, 0.10, 0.05, 0.01)
    assert "Run-to-run spread" in cmp.to_markdown(c)
    assert cmp.to_dict(c)["families"][0]["repeats_for_twice_threshold"] == c.repeats_for("latency")


def test_sides_measured_at_different_times_are_called_out() -> None:
    def at(hour: int, ratio: float) -> list[Row]:
        return [
            _row("m", 1, v, i, timestamp=f"2026-11-22T{hour:02d}:{i:02d}:00+00:00")
            for i, v in enumerate(_scaled(ratio))
        ]

    s = cmp.Settings(metrics=("latency",))
    apart = cmp.compare_sides(_side(at(9, 1)), _side(at(11, 1)), s)
    # measured apart, a clear 15% change stays within the ±20% drift allowance; 60% does not
    (r,) = cmp.compare_sides(_side(at(9, 1)), _side(at(11, 1.15)), s).results
    assert r.verdict == "inconclusive" and "drift allowance" in r.note
    assert r.ci_low < 1.0 and r.ci_high > 1.15 * 1.2
    (r,) = cmp.compare_sides(_side(at(9, 1)), _side(at(11, 1.6)), s).results
    assert r.verdict == "regression"
    # interleaved, or with the allowance set to 0, the same 15% is a regression
    (r,) = cmp.compare_sides(_side(at(9, 1)), _side(at(9, 1.15)), s).results
    assert r.verdict == "regression" and r.note == ""
    no_drift = cmp.Settings(metrics=("latency",), drift_floor=0.0)
    (r,) = cmp.compare_sides(_side(at(9, 1)), _side(at(11, 1.15)), no_drift).results
    assert r.verdict == "regression"
    together = cmp.compare_sides(_side(at(9, 1)), _side(at(9, 1)), s)
    assert apart.interleaved is False and together.interleaved is True
    assert "not interleaved" in cmp.to_markdown(apart)
    assert "not interleaved" not in cmp.to_markdown(together)
    assert cmp.to_dict(apart)["interleaved"] is False
    # rows without readable timestamps say nothing either way
    assert _compare({("m", 1): _scaled(1)}, {("m", 1): _scaled(1)}).interleaved is None


# --------------------------------------------------------------------------- rank test


def _brute_u(n: int, m: int) -> list[int]:
    """U for every way of placing n baseline values among n + m distinct ranks."""
    counts = [0] * (n * m + 1)
    for base_ranks in itertools.combinations(range(n + m), n):
        taken = set(base_ranks)
        cand_ranks = [r for r in range(n + m) if r not in taken]
        counts[sum(c > b for b in base_ranks for c in cand_ranks)] += 1
    return counts


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (3, 3), (4, 6), (5, 5), (7, 4)])
def test_rank_null_distribution_matches_enumeration(n: int, m: int) -> None:
    counts = cmp.rank_sum_counts(n, m)
    assert list(counts) == _brute_u(n, m)
    assert sum(counts) == math.comb(n + m, n)


@pytest.mark.parametrize(("n", "critical"), [(5, 2), (8, 13), (10, 23), (20, 127)])
def test_rank_critical_values_match_published_tables(n: int, critical: int) -> None:
    """Two-sided 5% critical values of the Mann-Whitney U for equal samples (e.g. the
    tables of Milton 1964 reproduced in most textbooks): P(U <= crit) <= 2.5% < P(U <= crit+1)."""
    counts = cmp.rank_sum_counts(n, n)
    total = math.comb(2 * n, n)
    assert sum(counts[: critical + 1]) / total <= 0.025 < sum(counts[: critical + 2]) / total


def _lognormal(rng: random.Random, n: int, ratio: float, sd: float = 0.1) -> list[float]:
    return [10.0 * ratio * math.exp(rng.gauss(0, sd)) for _ in range(n)]


def test_rank_estimate_is_the_median_pairwise_ratio_and_interval_matches_p() -> None:
    rng = random.Random(7)
    for trial in range(40):
        n, m = rng.randint(5, 12), rng.randint(5, 12)
        b = _lognormal(rng, n, 1.0)
        c = _lognormal(rng, m, 1.0 + 0.02 * (trial % 8))
        (r,) = _compare({("m", 1): b}, {("m", 1): c}, test="rank").results
        ratios = sorted(y / x for x in b for y in c)
        # an even count of ratios: the geometric midpoint of the middle two
        logs = [math.log(x) for x in ratios]
        assert r.ratio == pytest.approx(math.exp(statistics.median(logs)), rel=1e-12)
        # the interval's ends are pairwise ratios: (c - 1) cut from each end
        for end in (r.ci_low, r.ci_high):
            assert any(math.isclose(end, x, rel_tol=1e-12) for x in ratios)
        # one test: the interval excludes 1 exactly when p <= alpha
        assert (r.ci_low > 1 or r.ci_high < 1) == (r.p_value <= 0.01)


def test_rank_test_holds_its_level_on_skewed_noise() -> None:
    """A/A on bimodal noise like a contended machine's (most repeats fast, a third 40%
    slower): the exact rank test rejects at most alpha of the time."""
    rng = random.Random(11)

    def skewed(n: int) -> list[float]:
        return [10.0 * (1.4 if rng.random() < 0.33 else 1.0) * math.exp(rng.gauss(0, 0.02))
                for _ in range(n)]  # fmt: skip

    trials = 400
    p = [cmp._rank(np.array(skewed(12)), np.array(skewed(12)), 0.0).p_value()
         for _ in range(trials)]  # fmt: skip
    rejected = sum(x <= 0.05 for x in p) / trials
    assert rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert rejected > 0.01  # not a test that never rejects


def test_rank_test_beats_welch_on_skewed_noise() -> None:
    rng = random.Random(3)

    def skewed(n: int, ratio: float) -> list[float]:
        return [10.0 * ratio * (1.4 if rng.random() < 0.33 else 1.0)
                * math.exp(rng.gauss(0, 0.02)) for _ in range(n)]  # fmt: skip

    base = {(f"m{i}", 1): skewed(30, 1.0) for i in range(10)}
    cand = {(f"m{i}", 1): skewed(30, 1.06) for i in range(10)}
    rank = _compare(base, cand, test="rank", threshold=cmp.Threshold(0.025))
    welch = _compare(base, cand, threshold=cmp.Threshold(0.025))
    assert rank.count("regression") >= 8
    assert welch.count("regression") <= 2


def test_rank_normal_approximation_agrees_with_the_exact_null(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    b, c = np.array(_lognormal(rng, 40, 1.0)), np.array(_lognormal(rng, 45, 1.04))
    exact = cmp._rank(b, c, 0.0)
    monkeypatch.setattr(cmp, "EXACT_RANK_LIMIT", 0)
    approx = cmp._rank(b, c, 0.0)
    assert exact.exact and not approx.exact
    assert 0.001 < exact.p_value() < 0.5
    # U's exact tails are lighter than the normal's: the approximation errs on the safe side
    assert exact.p_value() <= approx.p_value() <= 1.15 * exact.p_value()
    for alpha in (0.05, 0.01):
        lo_e, hi_e = exact.interval(alpha)
        lo_a, hi_a = approx.interval(alpha)
        assert abs(lo_a - lo_e) < 0.005 and abs(hi_a - hi_e) < 0.005


def test_rank_verdicts_ties_and_too_few_repeats() -> None:
    rng = random.Random(9)
    base = {
        ("slow", 1): _lognormal(rng, 20, 1.0, 0.02),
        ("same", 1): _lognormal(rng, 20, 1.0, 0.005),
        ("few", 1): _scaled(1, JITTER[:3]),
    }
    cand = {
        ("slow", 1): _lognormal(rng, 20, 1.3, 0.02),
        ("same", 1): _lognormal(rng, 20, 1.0, 0.005),
        ("few", 1): _scaled(2, JITTER[:3]),
    }
    c = _compare(base, cand, test="rank")
    r = {x.key[0]: x for x in c.results}
    assert r["slow"].verdict == "regression" and r["same"].verdict == "unchanged"
    # 3 repeats per side: the smallest two-sided p is 2/20, never below alpha
    assert r["few"].verdict == "inconclusive" and r["few"].ci_low is None
    assert "too few repeats for the rank test" in r["few"].note
    assert "Hodges–Lehmann" in cmp.to_markdown(c)
    assert cmp.to_dict(c)["settings"]["test"] == "rank"
    json.loads(cmp.to_json(c))
    # identical memory on every repeat (all values tied): unchanged, ratio exactly 1
    rows_b = _rows({("m", 1): _scaled(1)})
    rows_c = _rows({("m", 1): _scaled(1.01)})
    mem = cmp.compare_sides(_side(rows_b), _side(rows_c),
                            cmp.Settings(metrics=("memory",), test="rank"))  # fmt: skip
    (m,) = mem.results
    assert m.verdict == "unchanged" and m.ratio == 1.0 and m.p_value == 1.0


def test_rank_test_choice_is_validated(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InvalidOption, match="unknown test"):
        cmp.Settings(test="bogus").validate()
    with pytest.raises(InvalidOption, match="welch test only"):
        cmp.Settings(test="rank", trim=0.2).validate()
    assert main(["compare", "a", "b", "--test", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


# --------------------------------------------------------------------------- hostile input


def _unescaped_pipes(line: str) -> int:
    return line.count("|") - line.count("\\|")


def test_compare_given_a_manifest_says_give_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = _write_run(tmp_path / "run", _rows({("m", 1): _scaled(1)}))
    err = _error(["compare", str(run), str(run / "manifest.json")], capsys)
    assert "give the run folder, not its manifest" in err and str(run) in err
    assert "delete" not in err
    (tmp_path / "notes.txt").write_text("x")
    err = _error(["compare", str(run), str(tmp_path / "notes.txt")], capsys)
    assert "not a parquet part file" in err and "delete" not in err


def test_nothing_compared_exits_2_and_says_what_each_side_has(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = _write_run(tmp_path / "base", _rows({("resnet18", 1): _scaled(1)}))
    cand = _write_run(tmp_path / "cand", _rows({("alexnet", 1): _scaled(1)}))
    for fmt in ("md", "json", "junit"):
        err = _error(["compare", str(base), str(cand), "--format", fmt], capsys)
        assert "nothing was compared" in err
        assert "differ in model (resnet18 vs alexnet)" in err
        assert "resnet18 bs=1" in err and "alexnet bs=1" in err


def test_markdown_escapes_html_and_markdown_in_names() -> None:
    evil = "<img src=x onerror=alert(1)>|*bold*|[link](javascript:alert(1))"
    rows = {(evil, 1): _scaled(1), ("plain", 1): _scaled(1)}
    base = _side(_rows(rows, device_name="<b>GPU</b>"), "`base`|<i>")
    cand = _side(_rows({(evil, 1): _scaled(1.3), ("plain", 2): _scaled(1)},
                       device_name="<b>GPU</b>"), "cand")  # fmt: skip
    md = cmp.to_markdown(cmp.compare_sides(base, cand, cmp.Settings(metrics=("latency",))))
    assert "<img" not in md and "<b>" not in md and "<i>" not in md
    assert not re.search(r"(?<!\\)\]\(javascript", md)  # no link
    assert not re.search(r"(?<!\\)\*bold", md)  # no emphasis
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 1  # header, rule, the one matched cell
    assert len({_unescaped_pipes(ln) for ln in table}) == 1  # no cell broke the table
    assert "&lt;img src=x onerror=alert(1)&gt;" in md


# --------------------------------------------------------------------------- configurations


def test_cells_are_compared_only_with_their_own_configuration() -> None:
    # compile is twice as fast as eager on both sides; the candidate's compile regressed by
    # 20% and its eager did not move. Matched across configurations, the ratios would be
    # 0.5 or 2.4, not 1.0 and 1.2.
    base = _rows({("m", 1): _scaled(1)}) + _rows({("m", 1): _scaled(0.5)}, config="compile")
    cand = _rows({("m", 1): _scaled(1)}) + _rows({("m", 1): _scaled(0.6)}, config="compile")
    c = cmp.compare_sides(_side(base), _side(cand), cmp.Settings(metrics=("latency",)))
    assert "config" in cmp.MATCH_KEY
    by_config = {r.cell["config"]: r for r in c.results}
    assert sorted(by_config) == ["compile", "eager"]
    assert by_config["eager"].ratio == pytest.approx(1.0)
    assert by_config["eager"].verdict == "unchanged"
    assert by_config["compile"].ratio == pytest.approx(1.2)
    assert by_config["compile"].verdict == "regression"
    assert c.only_baseline == () and c.only_candidate == ()
    # a configuration on one side only is unmatched, never compared with another one
    cand_eager = _rows({("m", 1): _scaled(1)})
    c = cmp.compare_sides(_side(base), _side(cand_eager), cmp.Settings(metrics=("latency",)))
    assert [r.cell["config"] for r in c.results] == ["eager"]
    assert [dict(zip(cmp.MATCH_KEY, k, strict=True))["config"] for k in c.only_baseline] == [
        "compile"
    ]
    with pytest.raises(NothingCompared, match=r"differ in config \(compile vs eager\)"):
        cmp.compare_sides(
            _side(_rows({("m", 1): _scaled(0.5)}, config="compile")),
            _side(cand_eager),
            cmp.Settings(metrics=("latency",)),
        )


def test_a_run_written_before_configurations_matches_an_eager_run(tmp_path: Path) -> None:
    old = _write_run(tmp_path / "old", _rows({("m", 1): _scaled(1), ("m", 2): _scaled(1)}))
    config_columns = ["config", "compile_s", "graph_breaks", "recompiled", "max_abs_err",
                      "max_rel_err", "output_ok"]  # fmt: skip
    for part in old.glob("part-*.parquet"):  # as the code before --configs wrote them
        table = pq.read_table(part)
        table = table.drop_columns([c for c in config_columns if c in table.schema.names])
        at = table.schema.get_field_index("schema_version")  # row contract version 1
        table = table.set_column(at, "schema_version", pa.array([1] * len(table), pa.int64()))
        pq.write_table(table.replace_schema_metadata(None), part)
        assert "config" not in pq.read_schema(part).names
    new = _write_run(
        tmp_path / "new",
        _rows({("m", 1): _scaled(1.2), ("m", 2): _scaled(1)}, config="eager")
        + _rows({("m", 1): _scaled(0.5)}, config="compile"),
    )
    c = cmp.compare_sides(
        cmp.load_side(old), cmp.load_side(new), cmp.Settings(metrics=("latency",))
    )
    got = {(r.cell["batch_size"], r.cell["config"]): r for r in c.results}
    assert sorted(got) == [(1, "eager"), (2, "eager")]
    assert got[(1, "eager")].ratio == pytest.approx(1.2)
    assert got[(1, "eager")].verdict == "regression"
    assert got[(2, "eager")].verdict == "unchanged"
    assert c.only_baseline == ()
    assert [dict(zip(cmp.MATCH_KEY, k, strict=True))["config"] for k in c.only_candidate] == [
        "compile"
    ]


# --------------------------------------------------------------------------- contention


def test_a_contended_cell_is_inconclusive_contended_never_a_verdict() -> None:
    base = _rows({("m", 1): _scaled(1), ("n", 1): _scaled(1)}, quality="clean")
    cand = _rows({("m", 1): _scaled(2)}, quality="clean")
    # a 2x slowdown, but the host contended one candidate repeat of cell n
    cand += [r if r.repeat else dataclasses.replace(r, quality="contended")
             for r in _rows({("n", 1): _scaled(2)}, quality="clean")]  # fmt: skip
    c = cmp.compare_sides(_side(base), _side(cand), cmp.Settings(metrics=("latency",)))
    verdicts = {r.key[0]: (r.verdict, r.evidence, r.shown_verdict) for r in c.results}
    assert verdicts["m"][0] == "regression"
    assert verdicts["n"] == ("inconclusive", "contended", "inconclusive (contended)")
    md = cmp.to_markdown(c)
    assert "| inconclusive (contended) |" in md and "1 of 5 candidate repeat(s)" in md
    assert "1 inconclusive because the host was contended" in cmp.summary_line(c)


def test_compare_reads_the_best_attempt_of_a_re_measured_cell(tmp_path: Path) -> None:
    base = _write_run(tmp_path / "b", _rows({("m", 1): _scaled(1)}, quality="clean"))
    first = _rows({("m", 1): _scaled(3)}, quality="contended")
    again = _rows({("m", 1): _scaled(1)}, quality="clean", attempt=1)
    cand = _write_run(tmp_path / "c", [*first, *again])
    c = cmp.compare_paths(base, cand, cmp.Settings(metrics=("latency",)))
    (r,) = c.results
    assert (r.verdict, r.n_cand) == ("unchanged", 5)  # the contended first attempts left out


def test_the_gates_metrics_are_the_declared_columns_that_name_one() -> None:
    """bench.compare.METRICS comes from bench.schema: a gated column, its unit and its
    samples column (which must exist), timed metrics before counted ones."""
    from bench.compare.settings import gate_metrics
    from bench.schema import DECLARED, Column, Gate

    names = {c.name: c for c in DECLARED}
    assert cmp.METRICS["latency"].column == "latency_ms_median"
    assert cmp.METRICS["latency"].samples_column == "latency_ms_samples"
    assert names["latency_ms_samples"].kind == "floats"
    assert cmp.METRICS["instructions"].unit == "instr" and cmp.METRICS["instructions"].counted
    assert cmp.METRICS["memory"].unit == names["peak_memory_bytes"].unit == "bytes"
    counted = [m.counted for m in cmp.METRICS.values()]
    assert counted == sorted(counted) and any(counted) and not all(counted)
    # a new gated column is one declaration: its metric follows
    extra = Column("widgets", "float?", "w", "a test column", gate=Gate("widgets", counted=True))
    plain = Column("other", "float?", "", "not gated")
    found = gate_metrics([extra, plain, names["latency_ms_median"]])
    assert list(found) == ["latency", "widgets"]
    assert found["widgets"] == cmp.Metric("widgets", "widgets", "w", None, True)

"""Ping-pong arms (`effbench run --variant ... --pingpong`: bench.pingpong, bench.serve) and
compare's paired reading of their bursts (bench.compare.pairing): rows, sessions, failures,
resume, and verdicts from constructed bursts."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import effbench
from factories import make_row

from bench import compare as cmp
from bench import load_results
from bench.compare.pairing import burst_values, cell_pairs
from bench.pingpong import shared_cpus
from bench.plan import Group
from bench.serve import pooled_evidence

QUICK = ["--bursts", "4", "--burst-time", "0.02", "--warmup-iters", "1", "--warmup-time", "0"]


# ------------------------------------------------------------------------- the runner's side


def test_both_arms_alternate_bursts_and_share_one_session_per_cell(tmp_path: Path) -> None:
    r = effbench(
        ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", "--threads", "1", *QUICK,
         "--out", str(tmp_path), "--run-id", "pp", "--variant", "a", "--variant", "b",
         "--pingpong"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = load_results([tmp_path / "pp-a", tmp_path / "pp-b"])
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    # one session per cell, its id on both arms' rows, new for the next cell
    sessions = rows.groupby("batch_size")["pair_id"].agg(["nunique", "count"])
    assert sessions["nunique"].tolist() == [1, 1] and sessions["count"].tolist() == [2, 2]
    assert rows["pair_id"].nunique() == 2
    # both arms' workers ran on the same core(s): one of this machine's, for one thread
    cores = sorted(os.sched_getaffinity(0))
    pinned = {tuple(c) for c in rows["cpus"]}
    assert pinned == ({(cores[-1],)} if len(cores) > 1 else {()})
    for row in rows.itertuples():
        assert len(row.burst_sizes) == 4 and len(row.burst_contended) == 4
        assert sum(row.burst_sizes) == row.n_samples == len(row.latency_ms_samples)
        # every burst ran its 0.02 s: tiny_mlp's forward takes well under a millisecond
        assert min(row.burst_sizes) > 1
        assert row.contention_source.endswith("pooled over 4 bursts")
        assert row.power_source.startswith("not measured in ping-pong mode")
        # the memory pass runs before the bursts (it failed on every ping-pong row before)
        assert row.memory_method.startswith("cpu_allocator_peak; one forward before the bursts")
        assert row.peak_memory_bytes >= row.weights_bytes
    # the manifest records the mode, so a resume ping-pongs again
    r = effbench(["run", "--resume", str(tmp_path / "pp-a"), str(tmp_path / "pp-b")])
    assert r.returncode == 0 and "0 rows" in r.stderr


def _group(threads: int, cpus: tuple[int, ...] = ()) -> Group:
    return Group("m", "cpu", "float32", 8, 3, threads, 0, (1,), cpus=cpus)


@pytest.mark.parametrize(
    ("threads", "allowed", "expected"),
    [
        ((1, 1), [0, 1], (1,)),  # one thread each: the same one core for both arms
        ((2, 2), [0, 1], ()),  # they need every core: nothing to choose
        ((1, 3), [0, 2, 4, 6], (2, 4, 6)),  # the widest arm decides, from the allowed cores
        ((4,), [0, 1], ()),
    ],
)
def test_every_arm_of_a_step_is_pinned_to_the_same_cores(
    threads: tuple[int, ...], allowed: list[int], expected: tuple[int, ...]
) -> None:
    assert shared_cpus([_group(t) for t in threads], allowed) == expected


def test_a_crashing_arm_gets_the_failure_policy_and_the_other_goes_on(tmp_path: Path) -> None:
    """crash_at2 aborts its worker at batch 2: batch 1 ok, 2 crashed, 4 skipped, in both
    arms (each arm's worker crashes on its own)."""
    r = effbench(
        ["run", "--models", "crash_at2", "--batch-sizes", "1,2,4", "--threads", "1", *QUICK,
         "--out", str(tmp_path), "--run-id", "pp", "--variant", "a", "--variant", "b",
         "--pingpong"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = load_results([tmp_path / "pp-a", tmp_path / "pp-b"]).sort_values("batch_size")
    for _, arm in rows.groupby("run_id"):
        assert arm["status"].tolist() == ["ok", "crashed", "skipped"]
        assert "SIGABRT" in arm["error"].iloc[1]


def test_a_cell_resumed_in_one_arm_only_runs_alone_and_unpaired(tmp_path: Path) -> None:
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--threads", "1", *QUICK]
    args += ["--out", str(tmp_path), "--run-id", "pp", "--variant", "a", "--variant", "b"]
    assert effbench([*args, "--pingpong"]).returncode == 0
    next((tmp_path / "pp-b").glob("part-*.parquet")).unlink()
    r = effbench(["run", "--resume", str(tmp_path / "pp-a"), str(tmp_path / "pp-b")])
    assert r.returncode == 0, r.stderr
    b = load_results([tmp_path / "pp-b"])
    assert len(b) == 1 and b["pair_id"].isna().all() and len(b["burst_sizes"].iloc[0]) == 4


def _python_arms() -> list[str]:
    return ["--variant", f"a:python={sys.executable}", "--variant", f"b:python={sys.executable}"]


@pytest.mark.system
def test_a_python_arm_forks_every_session_from_one_interpreter(tmp_path: Path) -> None:
    """Each ``python=`` arm's interpreter starts once per run (bench.serve.session_server)
    and forks one worker per session: three sessions, three workers, one parent per arm."""
    log = tmp_path / "pids.log"
    r = effbench(
        ["run", "--models", "pid_logged", "--batch-sizes", "1", "--threads", "1", *QUICK,
         "--repeats", "3", "--out", str(tmp_path), "--run-id", "pp", *_python_arms(),
         "--pingpong"],
        env={**os.environ, "EFFBENCH_TEST_PID_LOG": str(log)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = load_results([tmp_path / "pp-a", tmp_path / "pp-b"])
    assert len(rows) == 6 and set(rows["status"]) == {"ok"} and rows["pair_id"].nunique() == 3
    builds = [tuple(int(x) for x in line.split()) for line in log.read_text().splitlines()]
    workers, parents = {pid for pid, _ in builds}, {ppid for _, ppid in builds}
    assert len(builds) == len(workers) == 6  # a worker of its own for every session and arm
    assert len(parents) == 2  # the two arms' servers


@pytest.mark.system
def test_a_python_arms_crashed_or_hung_session_does_not_end_the_next(tmp_path: Path) -> None:
    """A session's worker that aborts is reported with its signal (by the server that forked
    it), one that hangs is killed with its server at the timeout, and the sessions after
    each are served."""
    r = effbench(
        ["run", "--models", "crash_at2,hang_at2,tiny_mlp", "--batch-sizes", "1,2",
         "--threads", "1", *QUICK, "--cell-timeout", "3", "--out", str(tmp_path),
         "--run-id", "pp", *_python_arms(), "--pingpong"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = load_results([tmp_path / "pp-a", tmp_path / "pp-b"])
    for _, arm in rows.groupby("run_id"):
        arm = arm.sort_values(["timestamp", "batch_size"])
        assert arm["model"].drop_duplicates().tolist() == ["crash_at2", "hang_at2", "tiny_mlp"]
        assert arm["status"].tolist() == ["ok", "crashed", "ok", "timeout", "ok", "ok"]
        assert "SIGABRT" in arm["error"].iloc[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pingpong"], "give two or more --variant arms"),
        (["--variant", "a", "--variant", "b", "--bursts", "5"], "go with --pingpong"),
        (["--variant", "a", "--variant", "b", "--pingpong", "--bursts", "1"], "--bursts 1"),
        (["--variant", "a", "--variant", "b", "--pingpong", "--parallel"], "drop --executor"),
    ],
)
def test_bad_pingpong_options_are_one_line_errors(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    r = effbench(["run", "--models", "tiny_mlp", "--out", str(tmp_path), *extra])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("effbench: error:") and message in last
    assert not any(tmp_path.iterdir())


def test_a_rows_contention_evidence_is_pooled_over_its_bursts_by_wall_time() -> None:
    bursts = [
        (0.1, {"run_wait_share": 0.0, "others_cpu_cores": 0.2, "involuntary_switches": 3,
               "host_runnable_begin": 1, "host_runnable_end": 2, "contention_source": "proc"}),
        (0.3, {"run_wait_share": 0.4, "others_cpu_cores": 0.6, "involuntary_switches": 5,
               "host_runnable_begin": 7, "host_runnable_end": 9, "contention_source": "proc"}),
    ]  # fmt: skip
    out = pooled_evidence(bursts)
    assert out["run_wait_share"] == pytest.approx(0.3)  # (0.1 * 0 + 0.3 * 0.4) / 0.4
    assert out["others_cpu_cores"] == pytest.approx(0.5)
    assert out["involuntary_switches"] == 8
    assert (out["host_runnable_begin"], out["host_runnable_end"]) == (1, 9)
    assert out["contention_source"] == "proc; pooled over 2 bursts"


# --------------------------------------------------------------------------- compare's side


def _pp_row(
    run: str,
    values: list[float],
    pair: str | None,
    contended: list[bool] | None = None,
    **kw: object,
) -> dict:
    """A ping-pong row whose bursts have three samples each, their median ``values[i]``."""
    samples = [v * j for v in values for j in (0.99, 1.0, 1.02)]
    return make_row(
        "m", 1, run_id=run, timestamp="2026-01-01T00:00:00+00:00", pair_id=pair,
        latency_ms_samples=tuple(samples), latency_ms_median=float(np.median(samples)),
        latency_ms_p10=float(np.percentile(samples, 10)), burst_sizes=(3,) * len(values),
        burst_contended=tuple(contended or [False] * len(values)), **kw,
    ).to_dict()  # fmt: skip


def _sides(base: list[dict], cand: list[dict]) -> tuple[cmp.Side, cmp.Side]:
    return cmp.Side("base", pd.DataFrame(base)), cmp.Side("cand", pd.DataFrame(cand))


def _host(n: int, seed: int) -> np.ndarray:
    """Burst medians on a host that switches between a fast and a 40% slower state that
    lasts several bursts: both arms of a pair see the same state."""
    rng = np.random.default_rng(seed)
    state = np.repeat(rng.choice([1.0, 1.4], size=n // 5 + 1), 5)[:n]
    return 10.0 * state


def test_burst_values_split_the_samples_by_burst_sizes() -> None:
    row = pd.Series({"latency_ms_samples": [1.0, 2.0, 3.0, 10.0, 20.0], "burst_sizes": [3, 2]})
    assert burst_values(row, "median").tolist() == [2.0, 15.0]
    assert burst_values(row, "p10") == pytest.approx([1.2, 11.0])


def test_a_5_percent_slowdown_is_flagged_from_pairs_under_host_states_repeats_cannot_see() -> None:
    host = _host(30, 1)
    rng = np.random.default_rng(2)
    jitter = np.exp(rng.normal(0, 0.01, (2, 30)))
    base = _pp_row("a", list(host * jitter[0]), "s1")
    cand = _pp_row("b", list(host * 1.05 * jitter[1]), "s1")
    # on a machine whose sessions carry no offsets of their own (--session-spread 0)
    s = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.025), session_spread=0.0)
    (r,) = cmp.compare_sides(*_sides([base], [cand]), s).results
    assert r.evidence == "paired bursts" and r.n_base == 30
    assert r.verdict == "regression" and r.ratio == pytest.approx(1.05, abs=0.01)
    assert "30 adjacent burst pairs in 1 session(s)" in r.note
    # by default one session's pairs cannot tell 5% from the offset its workers may carry
    d = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.025))
    (r,) = cmp.compare_sides(*_sides([base], [cand]), d).results
    assert r.verdict == "inconclusive" and "offset of 3.0% allowed (--session-spread)" in r.note
    # the same bursts, unpaired (pair ids differ): one repeat a side, nothing to see
    cand_unpaired = {**cand, "pair_id": "other"}
    (u,) = cmp.compare_sides(*_sides([base], [cand_unpaired]), s).results
    assert u.evidence != "paired bursts" and u.verdict == "inconclusive"


def test_identical_arms_are_unchanged_and_never_regressions() -> None:
    flagged = 0
    for seed in range(40):
        host = _host(20, seed)
        rng = np.random.default_rng(100 + seed)
        jitter = np.exp(rng.normal(0, 0.02, (2, 20)))
        base = _pp_row("a", list(host * jitter[0]), f"s{seed}")
        cand = _pp_row("b", list(host * jitter[1]), f"s{seed}")
        s = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.025))
        (r,) = cmp.compare_sides(*_sides([base], [cand]), s).results
        flagged += r.verdict in ("regression", "improvement")
    assert flagged == 0


def _sessions(n: int, offsets: np.ndarray, change: float, seed: int) -> tuple[list, list]:
    """``n`` sessions of 10 pairs each: the candidate's worker runs ``offsets[i]`` apart from
    the baseline's for the whole of session i (a process effect), times ``change``."""
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for i in range(n):
        host = _host(10, seed * 100 + i)
        jitter = np.exp(rng.normal(0, 0.01, (2, 10)))
        base.append(_pp_row("a", list(host * jitter[0]), f"s{seed}-{i}", repeat=i))
        cand.append(_pp_row("b", list(host * jitter[1] * change * math.exp(offsets[i])),
                            f"s{seed}-{i}", repeat=i))  # fmt: skip
    return base, cand


def test_a_sessions_own_offset_is_never_taken_for_a_change() -> None:
    """A/A sessions whose workers run 3% apart (sd) for their whole life, as measured on
    this machine: with the pairs' interval alone many are flagged; allowing the offset, none."""
    rng = np.random.default_rng(7)
    flagged = {0.0: 0, cmp.Settings().session_spread: 0}
    for seed in range(30):
        base, cand = _sessions(1, rng.normal(0, 0.03, 1), 1.0, seed)
        for spread in flagged:
            s = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.025),
                             session_spread=spread)  # fmt: skip
            (r,) = cmp.compare_sides(*_sides(base, cand), s).results
            flagged[spread] += r.verdict in ("regression", "improvement")
    assert flagged[0.0] >= 5 and flagged[cmp.Settings().session_spread] == 0, flagged


def test_many_sessions_measure_their_offsets_and_still_see_a_5_percent_change() -> None:
    rng = np.random.default_rng(11)
    base, cand = _sessions(12, rng.normal(0, 0.03, 12), 1.05, 3)
    s = cmp.Settings(metrics=("latency",), threshold=cmp.Threshold(0.025))
    (r,) = cmp.compare_sides(*_sides(base, cand), s).results
    assert r.verdict == "regression" and r.ratio == pytest.approx(1.05, abs=0.02)
    assert "in 12 session(s)" in r.note
    # sessions whose offsets spread wider than the assumed 3% say so, and are believed
    offsets = np.array([0.08, -0.08, 0.06, -0.06, 0.0, 0.02])
    base, cand = _sessions(6, offsets, 1.05, 4)
    (r,) = cmp.compare_sides(*_sides(base, cand), s).results
    assert r.verdict == "inconclusive" and "measured from their means" in r.note


def test_contended_bursts_drop_their_pairs_and_too_few_left_is_inconclusive_contended() -> None:
    values = [10.0] * 8
    base = _pp_row("a", values, "s", contended=[True] * 5 + [False] * 3)
    cand = _pp_row("b", [v * 1.2 for v in values], "s", contended=[False] * 8)
    s = cmp.Settings(metrics=("latency",))
    (r,) = cmp.compare_sides(*_sides([base], [cand]), s).results
    assert r.verdict == "inconclusive" and r.shown_verdict == "inconclusive (contended)"
    assert "5 of 8 burst pairs ran on a contended host, 3 left" in r.note
    pairs = cell_pairs(pd.DataFrame([base]), pd.DataFrame([cand]), "median")
    assert pairs is not None and (pairs.used, pairs.dropped, pairs.total) == (3, 5, 8)
    # with enough left, the contended pairs are simply dropped
    base = _pp_row("a", values, "s", contended=[True] * 2 + [False] * 6)
    (r,) = cmp.compare_sides(*_sides([base], [cand]), s).results
    assert r.verdict == "regression" and "2 contended pair(s) dropped" in r.note
    assert r.ratio == pytest.approx(1.2)


def test_sessions_of_several_repeats_pool_their_pairs() -> None:
    base = [_pp_row("a", [10.0, 11.0, 12.0], f"s{i}", repeat=i) for i in range(3)]
    cand = [_pp_row("b", [10.5, 11.55, 12.6], f"s{i}", repeat=i) for i in range(3)]
    s = cmp.Settings(metrics=("latency",))
    (r,) = cmp.compare_sides(*_sides(base, cand), s).results
    assert r.n_base == 9 and "in 3 session(s)" in r.note
    assert math.log(r.ratio) == pytest.approx(math.log(1.05))

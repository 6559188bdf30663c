"""The verdict rules of bench.quality, one by one, on rows whose evidence is set by hand
(the fast, deterministic version of each rule of docs/noise.md), and the pick of a cell's
best attempt."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.quality import (
    OTHERS_CORES_LIMIT,
    RUN_WAIT_LIMIT,
    SLOW_LIMIT,
    STEAL_LIMIT,
    Roof,
    host_speed,
    judge,
    rank,
    summary,
)
from bench.store import best_attempts

# A quiet, converged CPU row: resnet18-like, 1.8 GMACs per image at 25 ms for batch 1.
QUIET = dict(
    status="ok", device="cpu", batch_size=1, macs=1_800_000_000, converged=True,
    latency_ms_median=25.0, latency_ms_ci_low=24.9, latency_ms_ci_high=25.1, n_samples=80,
    run_wait_share=0.001, others_cpu_cores=0.02, steal_share=0.0, cpu_share=0.99,
)  # fmt: skip


def test_a_quiet_converged_row_is_clean() -> None:
    v = judge(QUIET)
    assert v.quality == "clean"


@pytest.mark.parametrize(
    ("column", "limit"),
    [("run_wait_share", RUN_WAIT_LIMIT), ("others_cpu_cores", OTHERS_CORES_LIMIT),
     ("steal_share", STEAL_LIMIT)],
)  # fmt: skip
def test_each_contention_signal_above_its_limit_makes_a_row_contended(
    column: str, limit: float
) -> None:
    assert judge({**QUIET, column: limit * 0.99}).quality == "clean"
    v = judge({**QUIET, column: limit * 1.01})
    assert v.quality == "contended"
    assert v.reason and v.reason.count(";") == 0  # one reason: only this signal


def test_a_session_whose_median_canary_is_below_the_slow_limit_of_the_usual_says_so() -> None:
    usual = 100e9
    assert host_speed(2, [usual * SLOW_LIMIT * 1.01] * 3, usual) is None
    said = host_speed(2, [50e9, 60e9, 200e9], usual)  # the median, not the mean, counts
    assert said and "60% of this host's best at 2 thread(s) (60.0 of 100.0 GMAC/s" in said
    assert host_speed(2, [50e9], None) is None  # nothing to compare with yet
    assert host_speed(2, [], usual) is None
    # a canary never makes a row contended on its own
    assert judge({**QUIET, "canary_macs_per_s": 1e9}).quality == "clean"


def test_other_processes_on_other_cores_do_not_contend_a_gpu_cell() -> None:
    # a GPU cell needs one launching thread; a busy core elsewhere on the host is not its
    gpu = {**QUIET, "device": "cuda:0", "others_cpu_cores": 3.0}
    assert judge(gpu).quality == "clean"
    assert judge({**gpu, "gpu_other_processes": 1}).quality == "contended"
    assert judge({**gpu, "throttle_reasons": "sw_power_cap"}).quality == "clean"
    v = judge({**gpu, "throttle_reasons": "sw_power_cap,hw_thermal"})
    assert v.quality == "contended" and "hw_thermal" in (v.reason or "")


def test_a_missed_precision_target_is_noisy_and_says_how_far() -> None:
    v = judge({**QUIET, "converged": False, "latency_ms_ci_low": 24.0,
               "latency_ms_ci_high": 26.0}, target_ci=0.01)  # fmt: skip
    assert v.quality == "noisy"
    assert "±4.0%" in (v.reason or "") and "±1%" in (v.reason or "")  # (26-24)/2/25


def test_a_rate_above_the_roof_beyond_both_intervals_is_implausible() -> None:
    # achieved at the slow end of the CI: 1.8e9 / 0.0251 s = 71.7 GMAC/s
    slow_end = 1_800_000_000 / 0.0251
    below = Roof(slow_end / 1.05 * 1.001, ci_rel=0.05)  # roof x 1.05 just above: plausible
    above = Roof(slow_end / 1.05 * 0.999, ci_rel=0.05)  # just below: implausible
    assert judge(QUIET, below).quality == "clean"
    v = judge(QUIET, above)
    assert v.quality == "implausible"
    assert "roof" in (v.reason or "")


def test_contended_wins_over_implausible_and_noisy_and_every_reason_is_listed() -> None:
    row = {**QUIET, "run_wait_share": 0.3, "converged": False}
    v = judge(row, Roof(1e9))
    assert v.quality == "contended"
    assert v.reason and len(v.reason.split("; ")) == 3


def test_a_row_without_contention_evidence_says_it_was_not_read() -> None:
    bare = {k: v for k, v in QUIET.items() if k not in ("run_wait_share", "others_cpu_cores",
                                                        "steal_share")}  # fmt: skip
    v = judge(bare)
    assert v.quality == "clean" and "contention not read (not recorded)" in (v.reason or "")
    assert "no sign of contention" in (judge(QUIET).reason or "")


def test_contention_can_be_recorded_without_being_judged() -> None:
    row = {**QUIET, "run_wait_share": 0.3, "converged": False}
    v = judge(row, contention=False)
    assert v.quality == "noisy"  # what remains once contention is not judged
    assert v.reason and v.reason.endswith("contention not judged: its threads waited for a "
                                          "CPU 30% of the window")  # fmt: skip
    assert judge({**QUIET, "run_wait_share": 0.3}, contention=False).quality == "clean"


def test_rows_that_are_not_ok_get_no_verdict() -> None:
    assert judge({**QUIET, "status": "oom"}).quality is None


def test_rank_orders_clean_noisy_implausible_contended_then_unjudged() -> None:
    order = ["clean", "noisy", "implausible", "contended", None, float("nan")]
    assert [rank(q) for q in order] == [0, 1, 2, 3, 4, 4]
    assert summary({"contended": 50, "clean": 10, None: 2}) == "10 clean, 50 contended"


def test_best_attempts_keeps_the_best_quality_and_the_latest_among_equals() -> None:
    base = dict(run_id="r", model="m", device="cpu", dtype="float32", image_size=8,
                threads=1, config="eager", repeat=0)  # fmt: skip
    df = pd.DataFrame([
        {**base, "batch_size": 1, "attempt": 0, "quality": "contended", "latency_ms_median": 9.0},
        {**base, "batch_size": 1, "attempt": 1, "quality": "clean", "latency_ms_median": 5.0},
        {**base, "batch_size": 1, "attempt": 2, "quality": "contended", "latency_ms_median": 8.0},
        {**base, "batch_size": 2, "attempt": 0, "quality": "contended", "latency_ms_median": 9.0},
        {**base, "batch_size": 2, "attempt": 1, "quality": "contended", "latency_ms_median": 7.0},
        {**base, "batch_size": 4, "attempt": 0, "quality": None, "latency_ms_median": 3.0},
    ])  # fmt: skip
    kept = best_attempts(df)
    assert list(zip(kept["batch_size"], kept["attempt"], strict=True)) == [(1, 1), (2, 1), (4, 0)]
    assert list(kept["latency_ms_median"]) == [5.0, 7.0, 3.0]


def test_the_closing_line_counts_the_cells_and_says_what_to_do_for_each_kind() -> None:
    from bench.quality import session_line

    clean = session_line({"clean": 3}, 0, "results/r")
    assert clean == "3 cells: 3 clean: every cell clean"
    mixed = session_line({"noisy": 2, "clean": 1, "contended": 4}, 3, "results/r")
    # counted in the verdicts' order whatever the mapping's; re-measurements named
    assert mixed.startswith("7 cells: 1 clean, 2 noisy, 4 contended, after 3 re-measurement(s) — ")
    assert "`effbench run --resume results/r`" in mixed and "--threads" in mixed
    assert "raise --max-time" in mixed and "implausible" not in mixed
    assert "every cell clean" not in mixed


def test_the_noisy_advice_names_the_reached_precision_and_the_options_to_change() -> None:
    from bench.quality import NoisyPrecision, session_line

    line = session_line({"clean": 4, "noisy": 56}, 0, "r", NoisyPrecision(0.01, 2.0, 0.0163))
    assert line.startswith("60 cells: 4 clean, 56 noisy — ")
    assert "missed the ±1% precision target (their CIs: ±1.6% at the median" in line
    assert "--max-time 2 s)" in line and "accept ±2% with --target-ci 0.02" in line
    # no CI formed (too few samples in the budget): only more time helps
    line = session_line({"noisy": 3}, 0, "r", NoisyPrecision(0.01, 4.0, None))
    assert "within --max-time 4 s (raise it)" in line and "--target-ci" not in line


def test_noisy_precision_is_the_median_ci_of_the_noisy_cells_best_attempts() -> None:
    from factories import make_row

    from bench.plan import Timing
    from bench.runner import best_rows, noisy_precision

    def row(model: str, quality: str, half: float | None, attempt: int = 0):  # ci of 100 ms
        low, high = (None, None) if half is None else (100 * (1 - half), 100 * (1 + half))
        return make_row(model, 1, latency_ms_median=100.0, latency_ms_ci_low=low,
                        latency_ms_ci_high=high, quality=quality, attempt=attempt)  # fmt: skip

    rows = [
        row("a", "contended", 0.10),  # re-measured: its noisy attempt is what a reader keeps
        row("a", "noisy", 0.02, attempt=1),
        row("b", "noisy", 0.04),
        row("c", "clean", 0.005),
        row("d", "noisy", None),  # no CI formed: not in the median
        row("e", "noisy", 0.10),  # a worse attempt than its clean one: not what is kept
        row("e", "clean", 0.005, attempt=1),
    ]
    timing = Timing(max_time_s=3.0, target_ci=0.01)
    got = noisy_precision(best_rows(rows), timing)
    assert (got.target_ci, got.max_time_s) == (0.01, 3.0)
    assert got.reached_ci == pytest.approx(0.03)  # median of 2% and 4%
    assert noisy_precision([row("c", "clean", 0.005)], timing).reached_ci is None

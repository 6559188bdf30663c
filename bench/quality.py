"""The verdict on a row: ``clean``, ``noisy``, ``contended`` or ``implausible``, and why.

Pure (standard library only): the runner judges every ``ok`` row with it before writing,
again after the run's closing ceilings (``implausible`` depends on the roof), and the
readers use :data:`RANK` to keep the best attempt of a cell. The rules and their measured
rates are in docs/noise.md.

- ``contended``: the evidence of the timed window says the cell did not get its CPU or GPU:
  its threads waited runnable for a CPU more than :data:`RUN_WAIT_LIMIT` of the window,
  other processes kept more than :data:`OTHERS_CORES_LIMIT` cores busy on its CPUs (CPU
  cells), the hypervisor stole more than :data:`STEAL_LIMIT` of the CPUs' time, another process
  used the GPU, or the GPU slowed itself down (thermal or hardware slowdown).
- ``implausible``: the achieved multiply-add rate, even at the slow end of the latency's
  confidence interval, is above the highest measured compute ceiling at the high end of its
  own interval: the roof (measured at a busier moment) or the count is wrong, and the point
  must not be read as a fraction of that roof.
- ``noisy``: the median's confidence interval missed the precision target (``converged``
  false): fair conditions, but the number is less precise than asked.
- ``clean``: none of these.

A row can meet several; the verdict is the first of contended, implausible, noisy, and
``quality_reason`` lists every one met.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.status import OK

QUALITIES = ("clean", "noisy", "implausible", "contended")
# Best first: the readers keep the attempt of a cell with the lowest rank (bench.store).
RANK = {q: i for i, q in enumerate(QUALITIES)}
UNJUDGED_RANK = len(QUALITIES)  # rows that are not ok, or were written before verdicts

RUN_WAIT_LIMIT = 0.05  # share of the window the worker's threads waited for a CPU
OTHERS_CORES_LIMIT = 0.25  # cores other processes kept busy on the worker's CPUs
STEAL_LIMIT = 0.05  # share of the CPUs' time the hypervisor took
# A session whose median speed canary (bench.probes.canary) is below this share of the
# host's best canary rate ran on a slower host than it can be, whatever /proc says.
SLOW_LIMIT = 0.85
# Clock-event reasons under which a GPU runs below its clocks for reasons outside the work
# (bench.probes.nvml.THROTTLE_BITS); a software power cap is the normal state of a busy GPU.
GPU_SLOWDOWNS = ("hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake")


@dataclass(frozen=True, slots=True)
class Roof:
    """The highest compute ceiling measured for a row's setup (MACs/s) and the relative
    half-width of its 95% confidence interval (0 when unknown)."""

    macs_per_s: float
    ci_rel: float = 0.0
    kind: str = "gemm"


@dataclass(frozen=True, slots=True)
class Verdict:
    quality: str | None
    reason: str | None


def _number(values: Mapping[str, Any], name: str) -> float | None:
    v = values.get(name)
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def contention_reasons(values: Mapping[str, Any]) -> list[str]:
    """What in a row's window evidence says the cell did not get its CPU or GPU."""
    out = []
    cpu = str(values.get("device") or "") == "cpu"
    wait = _number(values, "run_wait_share")
    if wait is not None and wait > RUN_WAIT_LIMIT:
        out.append(f"its threads waited for a CPU {wait:.0%} of the window")
    others = _number(values, "others_cpu_cores")
    if cpu and others is not None and others > OTHERS_CORES_LIMIT:
        out.append(f"other processes kept {others:.2f} cores of its CPUs busy")
    steal = _number(values, "steal_share")
    if steal is not None and steal > STEAL_LIMIT:
        out.append(f"the hypervisor took {steal:.0%} of its CPUs' time")
    gpu_others = _number(values, "gpu_other_processes")
    if gpu_others:
        out.append(f"{int(gpu_others)} other process(es) used the GPU")
    reasons = str(values.get("throttle_reasons") or "")
    slow = [r for r in GPU_SLOWDOWNS if r in reasons.split(",")]
    if slow:
        out.append(f"the GPU slowed down ({', '.join(slow)})")
    return out


def above_roof(values: Mapping[str, Any], roof: Roof | None) -> str | None:
    """Why the row's achieved rate cannot be below ``roof``, or None when it can."""
    macs, batch = _number(values, "macs"), _number(values, "batch_size")
    slow_ms = _number(values, "latency_ms_ci_high") or _number(values, "latency_ms_median")
    if roof is None or not macs or not batch or not slow_ms or roof.macs_per_s <= 0:
        return None
    lowest = macs * batch / (slow_ms / 1e3)
    highest_roof = roof.macs_per_s * (1 + roof.ci_rel)
    if lowest <= highest_roof:
        return None
    return (
        f"{lowest / 1e9:.1f} GMAC/s (at the slow end of its latency CI) is above the measured "
        f"{roof.kind} roof {roof.macs_per_s / 1e9:.1f} GMAC/s ±{roof.ci_rel:.1%}: the roof "
        "was measured at a busier moment, or the count is wrong"
    )


def judge(
    values: Mapping[str, Any],
    roof: Roof | None = None,
    target_ci: float = 0.01,
    *,
    contention: bool = True,
) -> Verdict:
    """The verdict on one row (a dict of its columns); ``None`` for rows that are not ok.
    With ``contention`` false (a test suite on a shared machine) the evidence is kept and
    named in the reason, but no row is judged ``contended``."""
    if values.get("status") != OK:
        return Verdict(None, None)
    contended = contention_reasons(values)
    implausible = above_roof(values, roof)
    noisy = _missed_precision(values, target_ci)
    reasons = [*contended, *([implausible] if implausible else []), *([noisy] if noisy else [])]
    if contended and contention:
        return Verdict("contended", "; ".join(reasons))
    if not contention and contended:
        reasons = [*reasons[len(contended) :], "contention not judged: " + ", ".join(contended)]
    if implausible:
        return Verdict("implausible", "; ".join(reasons))
    if noisy:
        return Verdict("noisy", "; ".join(reasons))
    read = any(
        values.get(c) is not None
        for c in ("run_wait_share", "others_cpu_cores", "steal_share", "gpu_other_processes")
    )
    if reasons:
        return Verdict("clean", "; ".join(reasons))
    if read:
        return Verdict("clean", "no sign of contention; precision target met")
    # a worker without the contention probe (an older checkout's arm), or no /proc
    why = values.get("contention_source") or "not recorded"
    return Verdict("clean", f"precision target met; contention not read ({why})")


def reached_ci(values: Mapping[str, Any]) -> float | None:
    """The half-width of a row's 95% CI of the median ÷ the median, or None where no CI
    formed (too few samples)."""
    median = _number(values, "latency_ms_median")
    low, high = _number(values, "latency_ms_ci_low"), _number(values, "latency_ms_ci_high")
    return (high - low) / 2 / median if median and low is not None and high is not None else None


def _missed_precision(values: Mapping[str, Any], target_ci: float) -> str | None:
    """Why the row missed its precision target (``converged`` false), or None."""
    if values.get("converged") is not False:
        return None
    ci = reached_ci(values)
    reached = "not formed" if ci is None else f"±{ci:.1%}"
    return (
        f"the median's 95% CI is {reached} after {values.get('n_samples')} samples, "
        f"not the ±{target_ci:.0%} asked for"
    )


def rank(quality: object) -> int:
    """Lower is better: clean, noisy, implausible, contended, then unjudged."""
    return RANK.get(quality, UNJUDGED_RANK) if isinstance(quality, str) else UNJUDGED_RANK


def summary(counts: Mapping[str | None, int]) -> str:
    """ "10 clean, 50 contended" in the order of :data:`QUALITIES` (unjudged rows left out)."""
    return ", ".join(f"{counts[q]} {q}" for q in QUALITIES if counts.get(q))


@dataclass(frozen=True, slots=True)
class NoisyPrecision:
    """A run's ``--target-ci`` and ``--max-time`` (s), and the CI its noisy cells reached
    (:func:`reached_ci`, the median over their kept rows; None where none formed)."""

    target_ci: float
    max_time_s: float
    reached_ci: float | None


def session_line(
    qualities: Mapping[str, int],
    remeasured: int,
    run_dir: object,
    noisy: NoisyPrecision | None = None,
) -> str:
    """A run's closing line: the verdicts of its cells (their best attempts, ``qualities``)
    and what to do about each kind that is not clean; with ``noisy`` the advice for noisy
    cells names numbers."""
    cells = sum(qualities.values())
    again = f", after {remeasured} re-measurement(s)" if remeasured else ""
    text = f"{cells} cells: {summary(qualities)}{again}"
    todo = []
    if qualities.get("contended"):
        todo.append(
            "contended cells ran while other processes took their CPUs (or GPU) and read "
            f"slow; measure them again on a quiet host with `effbench run --resume {run_dir}`, "
            "or leave cores free with a lower --threads (docs/noise.md)"
        )
    if qualities.get("implausible"):
        todo.append(
            "implausible cells beat the measured compute ceiling (measured at a busier "
            "moment?); see their quality_reason"
        )
    if qualities.get("noisy"):
        todo.append(_noisy_advice(noisy))
    if not todo:
        return f"{text}: every cell clean"
    return f"{text} — " + "; ".join(todo)


def _noisy_advice(noisy: NoisyPrecision | None) -> str:
    if noisy is None:
        return "noisy cells missed the precision target (raise --max-time)"
    target, max_time_s, reached = noisy.target_ci, noisy.max_time_s, noisy.reached_ci
    if reached is None or reached <= target:
        return (
            f"noisy cells missed the ±{target:.0%} precision target within --max-time "
            f"{max_time_s:g} s (raise it)"
        )
    accept = math.ceil(reached * 100) / 100  # the next whole percent
    return (
        f"noisy cells missed the ±{target:.0%} precision target (their CIs: ±{reached:.1%} "
        f"at the median, within --max-time {max_time_s:g} s): raise --max-time, or accept "
        f"±{accept:.0%} with --target-ci {accept:g} (docs/noise.md)"
    )


def host_speed(threads: int, rates: Sequence[float], best: float | None) -> str | None:
    """A sentence when a session's speed canaries at ``threads`` (MACs/s, one per CPU cell)
    ran, at their median, below :data:`SLOW_LIMIT` of the host's best (``best``): the host
    was slower than it can be for much of the session. Not a verdict on any one cell: one
    25 ms canary is too noisy for that (docs/noise.md)."""
    if not rates or not best:
        return None
    typical = statistics.median(rates)
    if typical >= SLOW_LIMIT * best:
        return None
    return (
        f"the host ran slower than it can during this session: a reference GEMM beside "
        f"each window ran at {typical / best:.0%} of this host's best at {threads} "
        f"thread(s) ({typical / 1e9:.1f} of {best / 1e9:.1f} GMAC/s, median of "
        f"{len(rates)} cells), which /proc does not show (a neighbour on the same physical "
        "cores, a lower clock); latencies may read slow by as much, clean or not"
    )

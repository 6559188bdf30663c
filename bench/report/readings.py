"""The sentences under the report's figures, from the numbers of :mod:`bench.report.analyses`
and the tidy tables of :mod:`bench.report.data`: pure text, no matplotlib.

Numbers are written for people: percentages with two significant digits and never in
exponent form, rates in G or T per second, and a sentence names what it could not read
(a network without a published accuracy, a cell whose number cannot be trusted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from bench.report.analyses import (
    Fit,
    LayerShares,
    Speedup,
    Standing,
    above_the_roof,
    batching_gains,
    untrusted,
    unverified,
)
from bench.report.data import BANDWIDTH_ROOF, COMPUTE_ROOF, Roofs
from bench.units import GIGA, MS_PER_S, to_mib

DRIFT_NOTED = 0.1  # a ceiling's start/end change the roofline's reading calls a busier machine

# --------------------------------------------------------------------------- words


def names(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def percent(value: float) -> str:
    """A percentage with two significant digits, never in exponent form (100%, 6.9%, 0.43%)."""
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def pct(fraction: float) -> str:
    return percent(100 * fraction)


def rate(per_s: float, unit: str) -> str:
    """A rate in G``unit``/s, or T``unit``/s from a thousand G up (``unit``: MAC or B)."""
    if abs(per_s) >= 1e12:
        return f"{per_s / 1e12:.3g} T{unit}/s"
    return f"{per_s / GIGA:.3g} G{unit}/s"


def span(lo: str, hi: str) -> str:
    """``lo–hi``, or one number where both read the same."""
    return lo if lo == hi else f"{lo}–{hi}"


# --------------------------------------------------------------------------- accuracy


def no_accuracy_note(missing: Sequence[str]) -> str:
    if not missing:
        return ""
    has, be = ("has", "is") if len(missing) == 1 else ("have", "are")
    return f" {names(missing)} {has} no published accuracy and {be} left out."


def unverified_note(per_model: pd.DataFrame) -> str:
    found = unverified(per_model)
    if not found:
        return ""
    return f" The accuracy of {names(found)} is unverified (not checked against the paper's text)."


def accuracy_sources(per_model: pd.DataFrame) -> str:
    """The sources of the published accuracies, their common prefix said once."""
    sources = sorted({str(s) for s in per_model["accuracy_source"].dropna()})
    if not sources:
        return ""
    prefix = ""
    if len(sources) > 1:
        for chars in zip(*sources, strict=False):
            if len(set(chars)) > 1:
                break
            prefix += chars[0]
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    if len(prefix) >= 10:
        text = prefix.strip() + " (" + ", ".join(s[len(prefix) :] for s in sources) + ")"
    else:
        text = "; ".join(sources)
    return " Accuracy is as published, not measured here: " + text + "."


# --------------------------------------------------------------------------- verdicts


def hollow_note(cells: pd.DataFrame) -> str:
    """The caption's list of the hollow points among the drawn ``cells`` ("" when none)."""
    bad = cells[untrusted(cells["quality"])]
    if bad.empty:
        return ""
    bad = bad.sort_values(["setup", "model", "batch_size"], kind="stable")
    several = cells["setup"].nunique() > 1
    where = [
        f"{r.model} at batch {int(r.batch_size)}{f' on {r.setup}' if several else ''} ({r.quality})"
        for r in bad.itertuples()
    ]
    return (
        " Hollow markers are cells whose number cannot be trusted (contended: the cell did "
        "not get its CPU or GPU; implausible: faster than the measured roof; docs/noise.md): "
        + "; ".join(where)
        + "."
    )


# --------------------------------------------------------------------------- time, memory


def batching_gain(sc: pd.DataFrame, setup: str) -> str:
    """How much batching divides the time per image on one setup, best and worst network."""
    found = batching_gains(sc)
    gains = found.gains
    if not gains:
        return ""
    best = max(gains, key=lambda m: gains[m])
    worst = min(gains, key=lambda m: gains[m])
    return (
        f"On {setup}, going from batch {found.lo} to {found.hi} divides the time per image by "
        f"{gains[best]:.2f} for {best} and by {gains[worst]:.2f} for {worst}."
    )


def memory_method(methods: Sequence[str]) -> str:
    """What ``peak_memory_bytes`` is for the ``memory_method`` values of one setup
    (``bench.probes.memory``: the probe, then how the pass ran)."""
    parts = []
    for m in sorted(set(methods)):
        own = "own pass" in m or "one forward" in m
        if m.startswith("cpu_allocator_peak"):
            parts.append(
                "the peak of bytes held by PyTorch's CPU allocator in one forward after the "
                "timed window, weights and input included (the profiler's memory events; "
                "oneDNN's own buffers and what glibc keeps are not in it, the resident set's "
                f"mark peak_rss_bytes has them) (memory_method {m})"
            )
        elif m.startswith("cpu"):
            how = (
                " in one forward of its own, glibc returning freed memory so that it follows "
                "live memory"
                if own and "glibc" in m
                else " in one forward of its own"
                if own
                else " over the timed forwards, what the allocator kept from earlier forwards "
                "included"
            )
            parts.append(
                f"the resident set's high-water mark above the worker's pre-model baseline{how}"
                f" (memory_method {m})"
            )
        elif m.startswith("cuda"):
            how = " in one forward of its own" if own else " over the timed forwards"
            parts.append(
                "the CUDA caching allocator's max_memory_allocated above the pre-model "
                f"baseline{how} (memory_method {m})"
            )
        else:
            parts.append(f"not measured (memory_method {m})")
    return "; ".join(parts) if parts else "of an unrecorded method"


def memory_sentence(cells: pd.DataFrame, setup: str) -> str:
    methods = [str(m) for m in cells["memory_method"].dropna()]
    return f"On {setup}, peak memory is {memory_method(methods)}."


def counted_ratio(sc: pd.DataFrame) -> str:
    """Measured peak ÷ counted (weights + activation peak) at the largest batch size."""
    both = sc.dropna(subset=["peak_memory_bytes", "counted_memory_bytes"])
    both = both[both["counted_memory_bytes"] > 0]
    if both.empty:
        return ""
    top = int(both["batch_size"].max())
    at = both[both["batch_size"] == top]
    ratio = at["peak_memory_bytes"].astype(float) / at["counted_memory_bytes"]
    spread = span(f"{ratio.min():.2f}", f"{ratio.max():.2f}")
    return f" At batch {top} the measured peak is {spread}× the counted one."


def weights_share(sc: pd.DataFrame) -> str:
    """The weights' share of the measured peak at the setup's smallest batch size."""
    smallest = int(sc["batch_size"].astype(int).min())
    b1 = sc[sc["batch_size"] == smallest]
    share = (b1["weights_mib"] / b1["peak_memory_mib"]).dropna()
    if not len(share):
        return ""
    return f" Weights are {share.min():.0%}–{share.max():.0%} of the peak at batch {smallest}."


def memory_fit_sentence(fit: Fit) -> str:
    line = fit.line
    return (
        f"On {fit.setup}, each parameter adds {line.slope:.2f} bytes of peak memory at batch 1 "
        f"(float32 weights alone are 4), above a fixed {to_mib(line.intercept):.1f} MiB "
        f"(R² = {line.r2:.3f}, {line.n} networks)."
    )


def ops_fit_sentence(fit: Fit) -> str:
    line = fit.line
    effective = MS_PER_S / line.slope if line.slope > 0 else float("nan")
    return (
        f"{fit.setup}, batch {fit.batch_size}: {line.slope:.3g} ms per G-MAC, R² = "
        f"{line.r2:.3f} ({line.n} networks; {effective:.3g} G-MAC/s effective)."
    )


# --------------------------------------------------------------------------- speed-ups


def speedup_phrase(p: Speedup, with_px: bool) -> str:
    px = f", {p.image_size} px" if with_px else ""
    return f"{p.ratio:.2f}× ({p.model}, {p.config}, batch {p.batch_size}{px})"


def speedup_sentence(base: str, points: Sequence[Speedup], with_px: bool) -> str:
    """A panel's largest and smallest speed-up."""
    best = max(points, key=lambda p: (p.ratio, -p.batch_size))
    worst = min(points, key=lambda p: (p.ratio, p.batch_size))
    return (
        f"On {base}, the largest speed-up is {speedup_phrase(best, with_px)} and the "
        f"smallest {speedup_phrase(worst, with_px)}."
    )


def compile_times(cells: pd.DataFrame, several_setups: bool) -> str:
    """Median ``compile_s`` per compiled configuration (and base setup, when there are
    several), as a sentence; "" when no cell recorded one. Cells with a wrong output count:
    their compile time was measured all the same."""
    timed = cells.dropna(subset=["compile_s"])
    if timed.empty:
        return ""
    parts = []
    for (base, config), g in timed.groupby(["base_setup", "config"], sort=True):
        where = f" on {base}" if several_setups else ""
        parts.append(f"{config} {float(g['compile_s'].median()):.3g} s{where}")
    return (
        " Compile time (median of the cells' compile_s, never counted in the latency): "
        + "; ".join(parts)
        + "."
    )


def hollow_speedups(points: Sequence[Speedup], several_setups: bool) -> str:
    """The caption's list of the hollow speed-ups ("" when none)."""
    if not points:
        return ""
    where = [
        f"{p.model} {p.config} at batch {p.batch_size}"
        f"{f' on {p.base_setup}' if several_setups else ''} ({p.quality})"
        for p in points
    ]
    return (
        " Hollow markers are speed-ups whose cell or eager reference was contended or "
        "implausible, so the ratio cannot be trusted (docs/noise.md): " + "; ".join(where) + "."
    )


# --------------------------------------------------------------------------- roofline


def of_the_roof(fraction: float, what: str) -> str:
    """``fraction`` of a roof in words: a percentage up to 100%, and above it (within the
    roof's uncertainty: a point above the roof by more is left out before) "at" the roof,
    never a percentage of it."""
    return f"{pct(fraction)} of {what}" if fraction <= 1 else f"at {what}, within its uncertainty"


def drift_sentence(roofs: Roofs) -> str:
    """The roofs measured at the start and again at the end of their runs."""
    if not roofs.drift:
        return ""
    units = {COMPUTE_ROOF: "MAC", BANDWIDTH_ROOF: "B"}
    parts = [
        f"the {d.kind} ceiling read {rate(d.start, units.get(d.kind, 'MAC'))} at the run's "
        f"start and {rate(d.end, units.get(d.kind, 'MAC'))} at its end ({d.change:+.0%})"
        for d in roofs.drift
    ]
    busier = any(abs(d.change) > DRIFT_NOTED for d in roofs.drift)
    return (
        " Measured twice, " + names(parts) + "; the higher of each is drawn, since contention "
        "only lowers a measured ceiling"
        + (": the machine was busier at one end of the run" if busier else "")
        + "."
    )


def above_sentence(cells: pd.DataFrame, roofs: Roofs) -> str:
    """The cells above the compute roof, named with their rates (never as a fraction)."""
    above = cells[above_the_roof(cells, roofs)].sort_values(["model", "batch_size"])
    if above.empty:
        return ""
    roof = (
        f"the measured compute roof ({rate(roofs.compute_macs_per_s, 'MAC')}"
        + (f" ±{roofs.compute_ci_rel:.1%})" if roofs.compute_ci_rel else ")")
        if math.isfinite(roofs.compute_macs_per_s)
        else "the compute roof their run measured"
    )
    items = [
        f"{r.model} at batch {int(r.batch_size)} ({rate(float(r.achieved_macs_per_s), 'MAC')})"
        for r in above.itertuples()
    ]
    return (
        f" Above {roof}, so implausible and drawn hollow, not read as a fraction of it: "
        + names(items)
        + ". The roof was measured at a busier moment than these cells, or their MAC count "
        "is wrong; measure the ceilings again on a quiet machine (`effbench peak`)."
    )


def measured_roofs(roofs: Roofs, form: str) -> list[str]:
    """The measured roofs (gemm, then triad) that exist, each as ``form`` with ``rate``
    (human units) and ``kind`` filled."""
    pairs = (
        (roofs.compute_macs_per_s, "MAC", "gemm"),
        (roofs.bandwidth_bytes_per_s, "B", "triad"),
    )
    return [
        form.format(rate=rate(v, unit), kind=kind) for v, unit, kind in pairs if math.isfinite(v)
    ]


def _roofs_sentence(setup: str, roofs: Roofs) -> str:
    """A panel's roofs: measured, the 3×3 convolution, the datasheet's, and their drift."""
    if roofs.measured:
        text = (
            f"On {setup}, the measured roofs are {rate(roofs.compute_macs_per_s, 'MAC')} "
            f"(gemm) and {rate(roofs.bandwidth_bytes_per_s, 'B')} (triad), meeting at "
            f"{roofs.ridge_macs_per_byte:.3g} MACs/byte"
        )
    else:
        have = measured_roofs(roofs, "{rate} ({kind})")
        text = f"On {setup}, " + (
            f"only one roof was measured, {have[0]}"
            if have
            else "no ceilings were measured (no ceilings.parquet for this machine, device, "
            "dtype and threads), so only the points are drawn"
        )
    if math.isfinite(roofs.conv3x3_macs_per_s):
        text += f"; a 3×3 convolution reaches {rate(roofs.conv3x3_macs_per_s, 'MAC')}"
    sheet = [
        rate(v, unit)
        for v, unit in (
            (roofs.datasheet_compute_macs_per_s, "MAC"),
            (roofs.datasheet_bandwidth_bytes_per_s, "B"),
        )
        if math.isfinite(v)
    ]
    if sheet:
        cite = f" ({roofs.datasheet_citation})" if roofs.datasheet_citation else ""
        text += f"; the datasheet gives {' and '.join(sheet)}{cite}"
    return text + "." + drift_sentence(roofs)


def roofline_sentence(
    setup: str, roofs: Roofs, standings: Sequence[Standing], cells: pd.DataFrame
) -> str:
    """A panel's reading: its roofs (and their drift), the networks nearest the compute roof
    and those farthest from both (each at its best batch size), and the cells above the
    compute roof."""
    text = _roofs_sentence(setup, roofs)
    ranked = sorted(
        (s for s in standings if math.isfinite(s.compute_fraction)),
        key=lambda s: (-s.compute_fraction, s.model),
    )
    k = 2 if len(standings) >= 4 else 1
    near = ranked[:k]
    if near:
        phrases = [f"{s.model} ({of_the_roof(s.compute_fraction, 'it')} at batch "
                   f"{s.compute_batch})" for s in near]  # fmt: skip
        text += " Nearest the compute roof: " + names(phrases) + "."
    elif standings and not above_the_roof(cells, roofs).any():
        fastest = max(standings, key=lambda s: (s.achieved_macs_per_s, s.model))
        text += f" Highest rate: {fastest.model} ({rate(fastest.achieved_macs_per_s, 'MAC')})."
    named = {s.model for s in near}
    far = sorted(
        (
            s
            for s in standings
            if math.isfinite(s.roofline_fraction) and s.roofline_fraction <= 1
            and s.model not in named
        ),
        key=lambda s: (s.roofline_fraction, s.model),
    )[:k]  # fmt: skip
    if far:
        text += (
            " Farthest from both roofs: "
            + names(
                [
                    f"{s.model} (at best {pct(s.roofline_fraction)} of the roofline bound, "
                    f"at batch {s.roofline_batch} and {s.intensity_macs_per_byte:.3g} MACs/byte)"
                    for s in far
                ]
            )
            + "."
        )
    return text + above_sentence(cells, roofs)


# --------------------------------------------------------------------------- layer types


def px(p: LayerShares) -> str:
    """`` · N px`` unless the image is 224 px, the size of most networks here, or unknown."""
    return "" if p.image_size == 224 else f" · {p.image_size} px" if p.image_size else ""


def profile_sentence(p: LayerShares) -> str:
    over = p.excess()[:2]
    text = f"{p.model} on {p.setup}, batch {p.batch_size}{px(p)}: "
    if over:
        text += "; ".join(
            f"{g} layers take {pct(t)} of the layer time for {pct(m)} of the MACs"
            for g, t, m in over
        )
    else:
        text += "time follows the MACs (no group's time share exceeds its MAC share)"
    if math.isfinite(p.forward_ms) and p.forward_ms > 0:
        text += (
            f"; the layers add up to {p.sum_layers_ms:.3g} ms against {p.forward_ms:.3g} ms "
            f"for the plain forward ({p.sum_layers_ms / p.forward_ms:.2f}×)"
        )
    return text + "."

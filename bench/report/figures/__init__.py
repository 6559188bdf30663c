"""The report's figures, after Canziani, Paszke & Culurciello (2016), "An Analysis of Deep
Neural Network Models for Practical Applications" (arXiv:1605.07678), and their registry.

Each figure is a function of the tidy :class:`~bench.report.data.ReportData` that returns a
:class:`~bench.report.canvas.Drawn`: a matplotlib figure and a short reading of it, or a
sentence saying why it is left out. A module of this package holds one family of them
(accuracy, latency, power, memory, configurations, roofline, layers). :data:`FIGURES` lists
them in the order the page shows them: a figure's number is its position there, and its
file name is ``NN-slug``; no other place types a number. A new figure is one function (in
a module here) plus one line in :data:`FIGURES`; ``python -m bench.report.figures`` prints
the table docs/report.md carries.

Setups (machine, device, dtype, threads, arm, configuration) get one panel each and are
never averaged together (:func:`bench.report.analyses.by_setup` is the one place a figure
splits cells into panels); the speed-up figure alone puts the configurations of one
machine/device/dtype side by side, as ratios to eager. Cells whose output was wrong are not
in ``data.cells`` and so in no figure.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from matplotlib.figure import Figure

from bench.report.analyses import Fit
from bench.report.canvas import Drawn
from bench.report.data import ReportData
from bench.report.figures import accuracy, configs, latency, layers, memory, power, roofline

# What one panel of a figure shows: a setup, a machine/device/dtype (its configurations
# side by side), a per-layer profile, or everything in one panel.
Panels = Literal["setup", "machine", "profile", "one"]
PANELS_TEXT = {"setup": "setup", "machine": "machine · device · dtype",
               "profile": "per-layer profile", "one": "–"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FigureResult:
    """A built figure (``fig``), or ``fig=None`` and ``skipped`` saying why."""

    name: str
    title: str
    fig: Figure | None
    reading: str
    skipped: str | None = None
    fits: tuple[Fit, ...] = ()
    labels: tuple[Any, ...] = field(default=())
    number: int = 0  # its position in FIGURES


@dataclass(frozen=True, slots=True)
class ReportFigure:
    """A registered figure: its number (its position in :data:`FIGURES`), file-name slug,
    title, the function that draws it and what each of its panels shows."""

    number: int
    slug: str
    title: str
    draw: Callable[[ReportData], Drawn]
    panels: Panels

    @property
    def name(self) -> str:
        """The figure's file name without suffix: ``NN-slug``."""
        return f"{self.number:02d}-{self.slug}"

    @property
    def summary(self) -> str:
        """What it draws: the first paragraph of its function's docstring, on one line."""
        doc = inspect.getdoc(self.draw) or self.title
        return " ".join(doc.split("\n\n")[0].split())

    def __call__(self, data: ReportData) -> FigureResult:
        drawn = self.draw(data)
        if drawn.fig is not None:
            drawn.fig.set_label(self.title)
        return FigureResult(self.name, self.title, drawn.fig, drawn.reading, drawn.skipped,
                            drawn.fits, drawn.labels, self.number)  # fmt: skip


def _numbered(
    entries: Sequence[tuple[str, str, Callable[[ReportData], Drawn], Panels]],
) -> tuple[ReportFigure, ...]:
    slugs = [slug for slug, *_ in entries]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"two figures share a slug: {slugs}")
    return tuple(ReportFigure(i, *entry) for i, entry in enumerate(entries, 1))


# (slug, title, function, what a panel shows), in the page's order
FIGURES: tuple[ReportFigure, ...] = _numbered((
    ("accuracy", "Top-1 accuracy per network", accuracy.accuracy_bar, "one"),
    ("accuracy-vs-ops", "Top-1 accuracy vs operations (bubble area: parameters)",
     accuracy.accuracy_vs_ops, "one"),
    ("time-per-image", "Time per image vs batch size", latency.time_vs_batch, "setup"),
    ("power", "Power vs batch size", power.power_vs_batch, "setup"),
    ("memory", "Peak memory vs batch size", memory.memory_vs_batch, "setup"),
    ("memory-vs-params", "Memory at batch 1 vs parameters", memory.memory_vs_params, "setup"),
    ("ops-vs-time", "Operations vs time per image", latency.ops_vs_time, "setup"),
    ("accuracy-vs-throughput", "Top-1 accuracy vs images per second (bubble area: operations)",
     accuracy.accuracy_vs_throughput, "setup"),
    ("accuracy-density", "Accuracy density: top-1 per million parameters",
     accuracy.accuracy_density, "one"),
    ("energy-vs-accuracy", "Energy per image vs top-1 accuracy", power.energy_vs_accuracy,
     "setup"),
    ("speedup-vs-eager", "Speed-up over eager per configuration", configs.speedup_vs_eager,
     "machine"),
    ("roofline", "Roofline: achieved rate vs arithmetic intensity", roofline.roofline, "setup"),
    ("layer-types", "Time share vs MAC share per layer type", layers.layer_types, "profile"),
))  # fmt: skip


SPEEDUP = "speedup-vs-eager"  # the figure that sets configurations against eager


def figure(slug: str) -> ReportFigure:
    """The registered figure ``slug`` (``roofline``, ``memory-vs-params``, ...)."""
    for f in FIGURES:
        if f.slug == slug:
            return f
    raise KeyError(f"no figure {slug!r}; the figures are {', '.join(f.slug for f in FIGURES)}")


def numbers_in_words(numbers: Sequence[int]) -> str:
    """Figure numbers as a person writes them: runs of three or more as ranges
    (``3 to 8, 10 and 12``)."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = []
    for run in runs:
        parts += [f"{run[0]} to {run[-1]}"] if len(run) > 2 else [str(n) for n in run]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def per_setup_numbers() -> str:
    """The numbers of the figures with a panel per setup, in words."""
    return numbers_in_words([f.number for f in FIGURES if f.panels == "setup"])


def markdown_table() -> str:
    """docs/report.md's table of the figures: number, file, title and what each draws."""
    lines = ["| # | file | title | a panel per | what it draws |", "|---|---|---|---|---|"]
    lines += [
        f"| {f.number} | `{f.name}` | {f.title} | {PANELS_TEXT[f.panels]} | {f.summary} |"
        for f in FIGURES
    ]
    return "\n".join(lines) + "\n"

"""`effbench report`: run folders → figures (PNG + SVG), ``index.html``, ``summary.md``,
``summary.csv`` and ``report.json``.

Reads parquet through :func:`bench.store.load_results` and manifests through
:func:`bench.store.read_manifest` only; it never imports torch, the runner or the probes.

The package, by what each module does (docs/report.md):

- ``data``: run folders → the tidy per-cell tables (``ReportData``); ``colors``: a colour
  per network from its name;
- ``analyses`` (the numbers figures draw: fits, best points, speed-ups, roofline
  standings, layer shares) and ``readings`` (the sentences under the figures): pure
  pandas, importable and testable without matplotlib;
- ``canvas`` (figures, panels, axes, markers, legends) and ``labels`` (placement of names
  and boxes where nothing else is);
- ``figures/``: one module per family of figures and the registry ``FIGURES`` that
  numbers them by position;
- ``summary`` (the summary table, CSV and Markdown), ``notice`` (the verdict banner and
  notes), ``page`` (``index.html`` with ``static/`` inline, and ``report.json``);
- ``build``: all of it, into a folder.

Importing this package imports neither matplotlib nor the figures: :func:`build_report`
does, when a report is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report.data import FIGURE_DIR

if TYPE_CHECKING:
    from bench.report.build import ReportResult

__all__ = ["FIGURE_DIR", "build_report"]


def build_report(paths: Sequence[str | Path], out: Path | None = None) -> ReportResult:
    """Build the report of the runs under ``paths`` into ``out`` (default
    ``reports/<name>``): :func:`bench.report.build.build_report`."""
    from bench.report.build import build_report as build

    return build(paths, out)

"""Building a report: the figures drawn and saved (PNG + SVG), stale figures removed, and
the page, summaries and ``report.json`` written (see :mod:`bench.report`).

The same input gives byte-identical outputs: no time stamps, a fixed SVG hash salt, no
dates in the image metadata, and a deterministic label placement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl

from bench.errors import InvalidOption, OutputNotWritable
from bench.report.canvas import DPI
from bench.report.data import FIGURE_DIR, ReportData, RunInfo, load_report_data
from bench.report.figures import FIGURES, FigureResult
from bench.report.page import index_html, report_json
from bench.report.summary import summary_csv, summary_markdown, summary_table
from bench.store import MANIFEST, run_id_problem

_FIGURE_FILE = re.compile(r"^\d\d-[a-z0-9-]+\.(png|svg)$")


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What a report wrote: its folder, the figures drawn and those left out (with why)."""

    out: Path
    data: ReportData
    figures: tuple[FigureResult, ...]
    files: tuple[Path, ...]


def render_style() -> dict[str, object]:
    """Matplotlib settings of every report figure (seaborn's whitegrid look, fixed hash salt
    so that SVG ids do not change between runs)."""
    import seaborn as sns

    rc: dict[str, object] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.78))
    rc.update(
        {
            "svg.hashsalt": "effbench-report",
            # names are data: a model called "a$\frac{$" is drawn as written, not as TeX
            "text.parse_math": False,
            "svg.fonttype": "path",
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titleweight": "bold",
            "grid.alpha": 0.5,
            "legend.fontsize": 7.5,
        }
    )
    return rc


def report_name(runs: Sequence[RunInfo]) -> str:
    """The default report folder name: the run id for one run (when it is a plain folder
    name, as :func:`bench.store.read_manifest` checks), else a short digest."""
    ids = sorted({r.run_id for r in runs})
    if len(ids) == 1 and run_id_problem(ids[0]) is None:
        return ids[0]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:8]
    return f"{len(ids)}-runs-{digest}"


def _png_size(path: Path) -> tuple[int, int]:
    with path.open("rb") as f:
        head = f.read(24)
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _prepare(out: Path) -> None:
    if (out / MANIFEST).exists():
        raise InvalidOption(
            f"{out} is an effbench run folder; write the report elsewhere with --out"
        )
    try:
        (out / FIGURE_DIR).mkdir(parents=True, exist_ok=True)
        inside = (out / FIGURE_DIR).resolve().parent == out.resolve()
    except OSError as e:
        raise OutputNotWritable(f"cannot create {out / FIGURE_DIR}: {e}") from e
    # the stale-figure clean-up deletes in this folder: it must be the report's own
    if (out / FIGURE_DIR).is_symlink() or not inside:
        raise OutputNotWritable(
            f"{out / FIGURE_DIR} is a link to another folder; remove it or choose another --out"
        )


def _unlink_link(path: Path) -> None:
    """Remove ``path`` if it is a symbolic link, so that writing it cannot write elsewhere."""
    if path.is_symlink():
        path.unlink()


def build_report(paths: Sequence[str | Path], out: Path | None = None) -> ReportResult:
    """Build the report of the runs under ``paths`` into ``out`` (default ``reports/<name>``)."""
    data = load_report_data(paths)
    out = Path(out) if out is not None else Path("reports") / report_name(data.runs)
    _prepare(out)
    written: list[Path] = []
    figures: list[FigureResult] = []
    images: dict[str, tuple[str, int, int]] = {}
    files: dict[str, list[str]] = {}
    try:
        with mpl.rc_context(render_style()):
            for make in FIGURES:
                result = make(data)
                if result.fig is not None:
                    rel = [f"{FIGURE_DIR}/{result.name}.png", f"{FIGURE_DIR}/{result.name}.svg"]
                    for r in rel:
                        _unlink_link(out / r)
                    result.fig.savefig(out / rel[0], format="png", metadata={"Software": None})
                    result.fig.savefig(out / rel[1], format="svg", metadata={"Date": None})
                    written += [out / r for r in rel]
                    images[result.name] = (rel[0], *_png_size(out / rel[0]))
                    files[result.name] = rel
                    result = dataclasses.replace(result, fig=None)
                figures.append(result)
        # Figures of an earlier report in the same folder that this input does not draw:
        # only files (or links, which unlink removes, not their targets) in figures/.
        for stale in sorted((out / FIGURE_DIR).iterdir()):
            if (
                _FIGURE_FILE.match(stale.name)
                and stale not in written
                and (stale.is_symlink() or stale.is_file())
            ):
                stale.unlink()
        table = summary_table(data)
        texts = {
            "index.html": index_html(data, table, figures, images),
            "summary.md": summary_markdown(data, table, figures),
            "summary.csv": summary_csv(table),
            "report.json": report_json(data, figures, files),
        }
        for name, text in texts.items():
            _unlink_link(out / name)
            (out / name).write_text(text, encoding="utf-8")
            written.append(out / name)
    except OSError as e:
        raise OutputNotWritable(f"cannot write the report to {out}: {e}") from e
    return ReportResult(out, data, tuple(figures), tuple(written))

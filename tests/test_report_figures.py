"""The report's figures as a package (bench/report/figures/): the registry that numbers them,
the stable colour of each network, and what a newcomer could not read in issue 23 (figure 3
with twelve networks, the statistics box of figure 7, the linear axes of figure 6, the
roofline's batch legend and its unjoined points).

Every run here is SYNTHETIC: rows written by ``factories.make_row`` with made-up numbers,
never measured; each test computes what the figure must show from those numbers.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import make_row
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from test_report import _assert_no_overlap, write_run

from bench.report.colors import HOME_SALT, PALETTE, home_slot, network_colors, rgb
from bench.report.data import load_report_data
from bench.report.figures import FIGURES, figure, markdown_table, numbers_in_words
from bench.units import MIB

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "bench" / "report"
DOCS = ROOT / "docs" / "report.md"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60  # a screen


def lab(colors: Any) -> np.ndarray:
    """sRGB (0..1) → CIELAB (D65), written out here rather than taken from the code."""
    c = np.asarray(colors, dtype=float)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)  # fmt: skip


def min_distance(colors: Any) -> float:
    """The smallest CIELAB distance (ΔE*76) between two of ``colors``."""
    points = lab([to_rgb(c) for c in colors])
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(points, 2))


# --------------------------------------------------------------------------- the registry


def test_figure_names_are_numbered_by_their_position_in_the_registry() -> None:
    assert [f.number for f in FIGURES] == list(range(1, len(FIGURES) + 1))
    assert [f.name for f in FIGURES] == [f"{i:02d}-{f.slug}" for i, f in enumerate(FIGURES, 1)]
    assert len({f.slug for f in FIGURES}) == len(FIGURES)
    assert figure("roofline").name.endswith("-roofline")
    with pytest.raises(KeyError, match="no figure 'nope'"):
        figure("nope")
    assert numbers_in_words([3, 4, 5, 6, 7, 8, 10, 12]) == "3 to 8, 10 and 12"
    assert numbers_in_words([1, 2, 9]) == "1, 2 and 9"
    assert numbers_in_words([11]) == "11"


def test_no_figure_number_is_typed_in_the_report_code() -> None:
    # a figure's number lives in FIGURES' order alone: no "12-roofline" and no "figure 11"
    # in a string literal of bench/report (docstrings included)
    typed = re.compile(r"\b\d\d-[a-z]+(-[a-z]+)*\b|\bfigures? \d+\b", re.I)
    found = []
    for path in sorted(REPORT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [f"{path.name}: {m.group(0)}" for m in typed.finditer(node.value)]
    assert found == []


def test_docs_figure_table_is_the_generated_one() -> None:
    block = re.search(r"<!-- figures:.*?-->\n(.*?)<!-- /figures -->", DOCS.read_text(), re.S)
    assert block is not None, "docs/report.md lost its generated figure table markers"
    assert block.group(1) == markdown_table(), "regenerate it: python -m bench.report.figures"


def test_report_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for path in sorted(REPORT.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.name}:{node.name} ({lines})")
    assert long_modules == [] and long_functions == []


# --------------------------------------------------------------------------- colours


def _accuracy_run(root: Path, run_id: str, models: list[str]) -> Path:
    rows = [make_row(m, 1, run_id=run_id, top1=60.0 + i, params=10**6 * (i + 1))
            for i, m in enumerate(models)]  # fmt: skip
    return write_run(root, run_id, rows)


def _bar_colors(result: Any) -> dict[str, tuple[float, ...]]:
    """Each network's bar colour in the accuracy figure, by its tick label."""
    (ax,) = result.fig.axes
    names = [t.get_text() for t in ax.get_yticklabels()]
    return {n: tuple(p.get_facecolor()[:3]) for n, p in zip(names, ax.patches, strict=True)}


def test_a_network_keeps_its_colour_in_a_report_of_other_networks(tmp_path: Path) -> None:
    smoke = ["mobilenet_v3_small", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1"]
    four = load_report_data([_accuracy_run(tmp_path, "four", smoke)])
    two = load_report_data([_accuracy_run(tmp_path, "two", ["resnet18", "squeezenet1_1"])])
    bars = figure("accuracy")
    in_four, in_two = _bar_colors(bars(four)), _bar_colors(bars(two))
    for m in ("resnet18", "squeezenet1_1"):
        assert in_four[m] == pytest.approx(in_two[m]), m
        assert four.colors[m] == two.colors[m] == rgb(PALETTE[home_slot(m)])
    assert len(set(in_four.values())) == 4


def test_networks_that_share_a_home_colour_still_get_colours_of_their_own() -> None:
    names = [f"net_{i}" for i in range(500)]
    a, b = next((a, b) for a, b in itertools.combinations(names, 2)
                if home_slot(a) == home_slot(b))  # fmt: skip
    first, second = sorted((a, b))
    colors = network_colors([second, first])
    assert colors[first] == rgb(PALETTE[home_slot(first)])  # the first by name keeps it
    assert colors[second] != colors[first] and colors[second] in {rgb(c) for c in PALETTE}
    assert network_colors([second])[second] == colors[first]  # alone, its home colour
    assert len(set(network_colors(names[:20]).values())) == 20  # twenty networks, twenty


def test_the_palette_has_twenty_colours_told_apart_on_white() -> None:
    assert len(PALETTE) == len(set(PALETTE)) == 20
    assert min_distance([rgb(c) for c in PALETTE]) >= 25  # tab20's near pairs are 16.6 apart
    lightness = lab([rgb(c) for c in PALETTE])[:, 0]
    assert lightness.min() >= 30 and lightness.max() <= 70  # no pale line, no black one


def test_the_default_suites_networks_each_have_a_home_colour() -> None:
    from models import suite_models

    names = sorted(set(suite_models("cpu-default")) | set(suite_models("smoke")))
    homes = {n: home_slot(n) for n in names}
    free = next(s for s in itertools.count()
                if len({home_slot(n, s) for n in names}) == len(names))  # fmt: skip
    assert len(set(homes.values())) == len(names), (
        f"two networks of the default suites share a colour ({homes}); set HOME_SALT = {free} "
        "in bench/report/colors.py"
    )
    assert free == HOME_SALT  # the first such salt: chosen, not tuned further


# --------------------------------------------------------------------------- figure 3

# SYNTHETIC: twelve networks, latency (ms per batch) = (2 + i) · b^0.8, p10 = 0.8× and
# p90 = 1.3× the median.
TWELVE = [f"net_{i:02d}" for i in range(12)]
BATCHES = (1, 2, 4)


def _latency_ms(i: int, b: int) -> float:
    return (2.0 + i) * b**0.8


def _twelve_networks(root: Path) -> Path:
    rows = []
    for i, m in enumerate(TWELVE):
        for b in BATCHES:
            lat = _latency_ms(i, b)
            timing = dict(latency_ms_median=lat, latency_ms_p10=0.8 * lat,
                          latency_ms_p90=1.3 * lat, time_per_image_ms=lat / b,
                          throughput_ips=b * 1e3 / lat)  # fmt: skip
            rows.append(make_row(m, b, run_id="twelve", **timing))
    return write_run(root, "twelve", rows)


def test_time_figure_of_twelve_networks_has_lines_bars_and_names_not_bands(tmp_path: Path):
    data = load_report_data([_twelve_networks(tmp_path)])
    result = figure("time-per-image")(data)
    (ax,) = result.fig.axes
    assert not any(isinstance(c, PolyCollection) for c in ax.collections)  # no bands
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    by_color = {tuple(np.round(c.get_colors()[0][:3], 6)): c for c in bars}
    assert len(by_color) == len(TWELVE)
    for i, m in enumerate(TWELVE):
        segments = by_color[tuple(np.round(data.colors[m], 6))].get_segments()
        expected = [[(b, 0.8 * _latency_ms(i, b) / b), (b, 1.3 * _latency_ms(i, b) / b)]
                    for b in BATCHES]  # fmt: skip
        assert np.allclose([s.tolist() for s in segments], expected), m
    lines = [ln.get_color() for ln in ax.get_lines() if len(ln.get_xdata()) == len(BATCHES)]
    assert len(lines) == len(TWELVE) and min_distance(lines) >= 25  # no near pairs
    # each network named once, at its largest batch, no two names overlapping
    assert sorted(a.get_text() for a in result.labels) == TWELVE
    ends = {a.get_text(): tuple(a.xy) for a in result.labels}
    assert ends == {m: pytest.approx((4, _latency_ms(i, 4) / 4)) for i, m in enumerate(TWELVE)}
    result.fig.canvas.draw()
    _assert_no_overlap(list(result.labels))


# --------------------------------------------------------------------------- figures 6, 7


def _pixels(ax: Any, xs: Any, ys: Any) -> np.ndarray:
    return ax.transData.transform(np.column_stack([xs, ys]).astype(float))


def _fit_boxes(fig: Any) -> dict[Any, Any]:
    """Each axes' box of fitted-line numbers (display pixels), after drawing."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = {}
    for ax in fig.axes:
        (box,) = [t for t in ax.texts if t.get_bbox_patch() is not None]
        out[ax] = (box, box.get_bbox_patch().get_window_extent(renderer))
    return out


def _inside(bb: Any, p: Any, margin: float) -> bool:
    return bb.x0 - margin < p[0] < bb.x1 + margin and bb.y0 - margin < p[1] < bb.y1 + margin


def _ops_run(root: Path, points: dict[str, tuple[float, float]]) -> Path:
    """SYNTHETIC batch-1 cells: per network (G-MACs per image, ms per image)."""
    rows = [make_row(m, 1, run_id="ops", macs=int(g * 1e9), latency_ms_median=ms,
                     time_per_image_ms=ms, throughput_ips=1e3 / ms)
            for m, (g, ms) in points.items()]  # fmt: skip
    return write_run(root, "ops", rows)


# efficientnet_b0 of the issue: few operations, slow, so in the top-left corner
TOP_LEFT = {"effnet": (0.4, 50.0), "r18": (1.8, 20.0), "r50": (4.1, 44.0), "mnet": (0.3, 8.0),
            "alex": (0.7, 6.0), "goog": (1.5, 18.0)}  # fmt: skip
FOUR_CORNERS = {"a": (0.1, 1.0), "b": (0.1, 10.0), "c": (5.0, 1.0), "d": (5.0, 10.0),
                "e": (2.5, 5.0)}  # fmt: skip


@pytest.mark.parametrize("points", [TOP_LEFT, FOUR_CORNERS], ids=["top-left", "four-corners"])
def test_the_fit_box_hides_no_point_and_no_name_prints_over_it(
    tmp_path: Path, points: dict[str, tuple[float, float]]
) -> None:
    result = figure("ops-vs-time")(load_report_data([_ops_run(tmp_path, points)]))
    (ax,) = result.fig.axes
    (text, box) = _fit_boxes(result.fig)[ax]
    xs, ys = zip(*points.values(), strict=True)
    radius = np.sqrt(30.0 / np.pi) * result.fig.dpi / 72  # the points' marker
    for name, p in zip(points, _pixels(ax, xs, ys), strict=True):
        assert not _inside(box, p, radius), f"the box covers {name}"
    renderer = result.fig.canvas.get_renderer()
    for label in result.labels:
        t = Text.get_window_extent(label, renderer)
        assert not (t.x1 > box.x0 and t.x0 < box.x1 and t.y1 > box.y0 and t.y0 < box.y1), label
    if points is TOP_LEFT:  # moved out of its usual corner, where effnet is
        assert (text.get_ha(), text.get_va()) != ("left", "top")
    else:  # every corner held a point: the axis grew above its usual 5% margin
        assert ax.get_ylim()[1] > 10.0 + 0.05 * (10.0 - 1.0) + 1e-9


# SYNTHETIC parameter counts (millions) spread like the default sweep's (1.2 to 61 M); peak
# memory at batch 1 = 4.5 bytes per parameter + 20 MiB.
PARAMS_M = {"n01": 1.24, "n02": 1.25, "n03": 2.28, "n04": 2.54, "n05": 3.5, "n06": 5.29,
            "n07": 5.48, "n08": 6.62, "n09": 7.98, "n10": 11.7, "n11": 25.6,
            "n12": 61.1}  # fmt: skip


def _memory_run(root: Path, zero: str | None = None) -> Path:
    rows = [make_row(m, 1, run_id="mem", params=int(p * 1e6),
                     peak_memory_bytes=0 if m == zero else int(4.5 * p * 1e6 + 20 * MIB))
            for m, p in PARAMS_M.items()]  # fmt: skip
    return write_run(root, "mem", rows)


def test_memory_figure_has_log_axes_that_spread_the_networks(tmp_path: Path) -> None:
    result = figure("memory-vs-params")(load_report_data([_memory_run(tmp_path)]))
    (ax,) = result.fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    result.fig.canvas.draw()
    xs = [p for p in PARAMS_M.values()]
    px = _pixels(ax, xs, [4.5 * p * 1e6 / MIB + 20 for p in xs])[:, 0]
    frame = ax.get_window_extent()
    crowded = int(((px - frame.x0) < 0.2 * frame.width).sum())
    assert crowded <= 6  # on linear axes 10 of the 12 sit in the leftmost fifth
    (fit,) = result.fits
    (line,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    x_bytes, y_bytes = np.asarray(line.get_xdata()) * 1e6, np.asarray(line.get_ydata()) * MIB
    assert np.allclose(y_bytes, fit.line.slope * x_bytes + fit.line.intercept)
    assert "both axes are logarithmic" in result.reading


def test_memory_figure_stays_linear_where_a_value_is_zero(tmp_path: Path) -> None:
    result = figure("memory-vs-params")(load_report_data([_memory_run(tmp_path, zero="n05")]))
    (ax,) = result.fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    assert "logarithmic" not in result.reading


# --------------------------------------------------------------------------- roofline


def _roofline_run(root: Path, batches: tuple[int, ...]) -> Path:
    """SYNTHETIC: three networks whose intensity (MACs/byte) and rate (MACs/s) grow with
    the batch size: intensity = (1 + i) · b^0.5, rate = 1e9 · (1 + i) · b^0.3."""
    rows = []
    for i, m in enumerate(("x", "y", "z")):
        for b in batches:
            rate = 1e9 * (1 + i) * b**0.3
            lat = 1e9 * b / rate * 1e3
            rows.append(make_row(m, b, run_id="rl", macs=10**9, latency_ms_median=lat,
                                 time_per_image_ms=lat / b, throughput_ips=b * 1e3 / lat,
                                 intensity_macs_per_byte=(1 + i) * b**0.5,
                                 achieved_macs_per_s=rate))  # fmt: skip
    return write_run(root, "rl", rows)


def _batch_entries(ax: Any) -> list[str]:
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in texts if t.startswith("batch ")]


def test_roofline_legend_names_every_batch_size_and_each_network_is_joined(tmp_path: Path):
    batches = (1, 2, 4, 8, 16)
    data = load_report_data([_roofline_run(tmp_path, batches)])
    result = figure("roofline")(data)
    (ax,) = [a for a in result.fig.axes if a.get_title()]
    assert _batch_entries(ax) == [f"batch {b}" for b in batches]  # 4 included
    for i, m in enumerate(("x", "y", "z")):
        (trail,) = [ln for ln in ax.get_lines()
                    if np.allclose(to_rgb(ln.get_color()), data.colors[m])]  # fmt: skip
        assert np.allclose(trail.get_xdata(), [(1 + i) * b**0.5 for b in batches])
        assert np.allclose(trail.get_ydata(), [(1 + i) * b**0.3 for b in batches])


def test_roofline_legend_of_many_batch_sizes_keeps_the_smallest_and_largest(tmp_path: Path):
    batches = (1, 2, 4, 8, 16, 32, 64, 128)
    result = figure("roofline")(load_report_data([_roofline_run(tmp_path, batches)]))
    (ax,) = [a for a in result.fig.axes if a.get_title()]
    entries = _batch_entries(ax)
    assert len(entries) == 6 and entries[0] == "batch 1" and entries[-1] == "batch 128"

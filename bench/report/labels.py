"""Label placement: names beside points, and boxes of text where no point is.

Placement works in display pixels after the layout is fixed
(:func:`bench.report.canvas.freeze_layout`): each label tries positions around its point,
nearest first, and takes the first one that overlaps nothing. Deterministic: the same
points give the same placement, so the same input gives byte-identical figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

LABEL_FONTSIZE = 7.5
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display pixels

_DIRECTIONS = (
    *((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)),
    *((1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1)),
)
# Beside the end of a line: to its right first, then higher or lower to the right.
RIGHTWARD = ((1, 0), (1, 0.5), (1, -0.5), (1, 1), (1, -1), (1, 1.5), (1, -1.5))
_GAPS_PX = (2.0, 8.0, 16.0, 28.0, 44.0, 64.0, 90.0, 120.0, 155.0, 195.0, 240.0)


def boxes_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The area (pixels²) two boxes (x0, y0, x1, y1) share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def darker(color: Any) -> tuple[float, float, float]:
    """A label's colour: its point's, darkened so that text stays readable on white."""
    r, g, b = color[:3]
    return (r * 0.7, g * 0.7, b * 0.7)


def point_boxes(ax: Any, xs: Sequence[float], ys: Sequence[float], radii_px: Any) -> list[Box]:
    """Each point (data coordinates) as an obstacle the size of its marker (at least a few
    pixels), in display pixels."""
    pts = ax.transData.transform(np.column_stack([xs, ys]).astype(float))
    return [
        (p[0] - max(r, 3.0), p[1] - max(r, 3.0), p[0] + max(r, 3.0), p[1] + max(r, 3.0))
        for p, r in zip(pts, radii_px, strict=True)
    ]


def place_labels(
    ax: Any,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    colors: Sequence[Any],
    sizes_pt2: Sequence[float] | None = None,
    avoid: Sequence[Box] = (),
    directions: Sequence[tuple[float, float]] = _DIRECTIONS,
) -> list[Any]:
    """Label points without overlaps: each label tries positions around its point, nearest
    first, and takes the first one that overlaps no label placed before it (nor a box of
    ``avoid``, display pixels), no other point and stays inside the axes; labels moved away
    get a thin leader line. ``directions`` are the (x, y) directions tried at each distance,
    in order (:data:`RIGHTWARD` names the ends of lines). Call after
    :func:`bench.report.canvas.freeze_layout`. Deterministic: the same points give the same
    placement."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    pts = ax.transData.transform(np.column_stack([xs, ys]).astype(float))
    radii = (
        np.sqrt(np.asarray(sizes_pt2, dtype=float) / math.pi) * px_per_pt
        if sizes_pt2 is not None
        else np.full(len(texts), 3.0 * px_per_pt)
    )
    frame = ax.get_window_extent(renderer)
    frame_box = (frame.x0, frame.y0, frame.x1, frame.y1)
    dims = _label_sizes(ax, renderer, texts)
    boxes = point_boxes(ax, xs, ys, radii)
    placed: list[Box] = list(avoid)
    annotations = []
    order = sorted(range(len(texts)), key=lambda i: (-pts[i][1], pts[i][0], texts[i]))
    for i in order:
        (px, py), r, (w, h) = pts[i], radii[i], dims[i]
        others = [b for j, b in enumerate(boxes) if j != i]
        cx, cy, gap = _label_position((px, py), r, (w, h), placed, others, frame_box, directions)
        placed.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        arrow = (
            {"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 0, "shrinkB": r / px_per_pt}
            if gap > 10
            else None
        )
        annotations.append(
            ax.annotate(
                texts[i],
                xy=(xs[i], ys[i]),
                xytext=((cx - px) / px_per_pt, (cy - py) / px_per_pt),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=LABEL_FONTSIZE,
                color=darker(colors[i]),
                arrowprops=arrow,
                annotation_clip=False,
            )
        )
    return annotations


def _label_sizes(ax: Any, renderer: Any, texts: Sequence[str]) -> list[tuple[float, float]]:
    """Each label's (width, height) in pixels as drawn, with a pixel or two of margin."""
    dims = []
    for t in texts:
        probe = ax.text(0, 0, t, fontsize=LABEL_FONTSIZE)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        dims.append((bb.width + 2.0, bb.height + 1.0))
    return dims


def _label_position(
    point: tuple[float, float],
    radius: float,
    size: tuple[float, float],
    placed: Sequence[Box],
    obstacles: Sequence[Box],
    frame_box: Box,
    directions: Sequence[tuple[float, float]] = _DIRECTIONS,
) -> tuple[float, float, float]:
    """The centre (pixels) and gap of the cheapest box of ``size`` around ``point``, nearest
    first: overlapping a placed label costs most, leaving the axes less, covering another
    point least; the first position that costs nothing is taken."""
    (px, py), r, (w, h) = point, radius, size
    best: tuple[float, float, float] | None = None
    best_cost = math.inf
    for gap in _GAPS_PX:
        for ux, uy in directions:
            cx = px + ux * (r + gap + w / 2)
            cy = py + uy * (r + gap + h / 2)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            cost = 1000.0 * sum(boxes_overlap(box, b) for b in placed)
            cost += 30.0 * sum(boxes_overlap(box, b) for b in obstacles)
            inside = boxes_overlap(box, frame_box)
            cost += 100.0 * (w * h - inside)
            if cost < best_cost:
                best_cost, best = cost, (cx, cy, gap)
            if cost == 0:
                break
        if best_cost == 0:
            break
    assert best is not None
    return best

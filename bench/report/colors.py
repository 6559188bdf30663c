"""One colour per network, the same in every figure and, by its name, in every report.

A network's colour comes from its name alone: the SHA-256 of the name (with
:data:`HOME_SALT`) picks its *home* in :data:`PALETTE`, 20 colours chosen to be told apart
on white (pairwise CIELAB distance at least 28, lightness 35 to 68 so that lines, bubbles
and darkened label text all read). So resnet18 is the same colour in a report of two
networks and in one of twelve. Only when two networks of one report share a home does one
of them move: the first by name keeps it, the others take the next colour (in palette
order) that no network of the report has as its home, so every network of a report with at
most 20 networks has its own colour. Twenty colours cannot give every registered network a
home of its own; the salt gives one to each network of the default CPU sweep and of the
smoke suite (``models/suites.py``), so that the reports a newcomer makes of those, and of
any subset, keep every colour. Beyond 20 networks colours repeat; labels name the points.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

RGB = tuple[float, float, float]
# The first salt (from 0) under which the networks of the suites "cpu-default" and "smoke"
# have homes of their own; tests/test_report.py checks it and names the next one.
HOME_SALT = 71

# Greedy farthest points in CIELAB (from tab10's blue) among sRGB colours of lightness
# 35-68 and chroma 30-70: saturated enough to tell apart, none pale on white.
PALETTE = (
    "#1e78b4", "#d2960f", "#c3005a", "#00b469", "#d278e1", "#784b2d", "#ff785a", "#3cb4b4",
    "#4b6900", "#e187a5", "#3c4bb4", "#b4a569", "#783c78", "#1e694b", "#78b43c", "#a51e1e",
    "#9696f0", "#a55a0f", "#b41e87", "#a5a500",
)  # fmt: skip


def rgb(hex_color: str) -> RGB:
    """``#rrggbb`` as (r, g, b) in 0..1."""
    return tuple(int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def home_slot(model: str, salt: int = HOME_SALT) -> int:
    """The index in :data:`PALETTE` of ``model``'s own colour: from its name alone."""
    digest = hashlib.sha256(f"{salt}:{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % len(PALETTE)


def network_colors(models: Sequence[str]) -> dict[str, RGB]:
    """Each network's colour in a report of ``models``: its home colour
    (:func:`home_slot`), unless a network before it by name has the same home; then the
    next colour no network of the report has as its home (or has taken)."""
    names = sorted(set(models))
    owner: dict[int, str] = {}
    for m in names:
        owner.setdefault(home_slot(m), m)
    taken = set(owner)
    slots = {m: s for s, m in owner.items()}
    for m in names:
        if m in slots:
            continue
        free = [(home_slot(m) + k) % len(PALETTE) for k in range(1, len(PALETTE))]
        slot = next((s for s in free if s not in taken), home_slot(m))  # over 20: repeat
        taken.add(slot)
        slots[m] = slot
    return {m: rgb(PALETTE[slots[m]]) for m in names}

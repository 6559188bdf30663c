"""One colour per network, the same in every figure of a report."""

from __future__ import annotations

from collections.abc import Sequence

RGB = tuple[float, float, float]


def network_colors(models: Sequence[str]) -> dict[str, RGB]:
    """One colour per network, the same in every figure (sorted names → a fixed palette)."""
    import seaborn as sns

    n = len(models)
    palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
    return {m: tuple(c) for m, c in zip(sorted(models), palette, strict=True)}

"""Process helpers for the tests that check no process of a sweep outlives it (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (a fork server and its workers, say)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return kids + [d for k in kids for d in descendants(k)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False

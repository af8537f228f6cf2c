"""Number formatting shared by the placement report, the deployability report and its
graph: one definition of how counts and sizes print."""

from __future__ import annotations


def si(n: float) -> str:
    """``1.2M`` style: one decimal with a G / M / k prefix, else the integer."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def size(n: float) -> str:
    """``2.7 MB`` style byte counts (decimal units)."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"

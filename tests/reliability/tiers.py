"""How hard the reliability suite pushes: the quick tier by default, the long tier with --runslow."""

from __future__ import annotations

LONG = False


def scale(quick, long):
    """The quick-tier value, or the long-tier one under --runslow."""
    return long if LONG else quick

"""Fixtures of the reliability suite: a store with data in it, and the shared store checks."""

from __future__ import annotations

import sys
from pathlib import Path

# storechecks (whole-store invariants) is shared with the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))


def pytest_configure(config):
    import tiers

    tiers.LONG = config.getoption("--runslow")

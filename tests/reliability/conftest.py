"""The reliability suite's tiers: --runslow runs its long tier (tiers.LONG)."""

from __future__ import annotations


def pytest_configure(config):
    import tiers

    tiers.LONG = config.getoption("--runslow")

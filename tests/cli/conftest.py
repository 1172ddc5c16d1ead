"""Fixtures for the command-line tests: a runner of the real `chunkstore` command per test."""

from __future__ import annotations

import pytest
from clirunner import TEST_AVG_SIZE, Chunkstore


@pytest.fixture
def uninitialized(tmp_path) -> Chunkstore:
    """A runner whose store folder does not exist yet; files for it go in its workdir."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Chunkstore(tmp_path / "store", workdir)


@pytest.fixture
def chunkstore(uninitialized) -> Chunkstore:
    """A runner with a fresh store of small chunks."""
    uninitialized("init", "--avg-size", TEST_AVG_SIZE)
    return uninitialized

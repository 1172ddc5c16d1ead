"""Fixtures for the command-line tests: a runner of the real `chunkstore` command per test.

Every test that uses a runner runs on both backends of `new_backend` (tests/conftest.py):
a store in a local folder and an s3:// store on the moto server; `local_only` and
`slow_on_s3` select and tier them.
"""

from __future__ import annotations

import pytest

from support.clirunner import TEST_AVG_SIZE, Chunkstore


@pytest.fixture
def uninitialized(new_backend, tmp_path) -> Chunkstore:
    """A runner whose store does not exist yet; files for it go in its workdir."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Chunkstore(new_backend(tmp_path), workdir)


@pytest.fixture
def chunkstore(uninitialized) -> Chunkstore:
    """A runner with a fresh storage format 1 store of small chunks (tests/cli/test_format2_cli.py
    and the format 2 suites cover format 2)."""
    uninitialized("init", "--format", "1", "--avg-size", TEST_AVG_SIZE)
    return uninitialized

"""Fixtures for the command-line tests: a runner of the real `chunkstore` command per test.

Every test that uses a runner runs twice: on a store in a local folder ("local") and on an
s3:// store on the moto server of tests/moto_fixtures.py ("s3"). A test about the local folder
itself is marked `local_only("why")`. A test whose s3 run takes too long for the default run is
marked `slow_on_s3`: its s3 run is then a `slow` test, run with --runslow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from clirunner import TEST_AVG_SIZE, Chunkstore, LocalObjects, S3Objects


def pytest_configure(config):
    config.addinivalue_line("markers", "local_only(reason): a command-line test about the local folder itself")
    config.addinivalue_line("markers", "slow_on_s3: the s3 run of this command-line test is slow (--runslow)")


def pytest_generate_tests(metafunc):
    if "new_backend" not in metafunc.fixturenames:
        return
    backends = [pytest.param("local")]
    if not metafunc.definition.get_closest_marker("local_only"):
        slow = metafunc.definition.get_closest_marker("slow_on_s3") is not None
        backends.append(pytest.param("s3", marks=[pytest.mark.slow] if slow else []))
    metafunc.parametrize("new_backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def new_backend(request) -> Callable[[Path], LocalObjects | S3Objects]:
    """Makes the place of a new store on this test's backend, given a folder of the test: the
    folder `store` in it, or a new bucket (prefix `store`) and an unused table name on moto."""
    if request.param == "local":
        return lambda folder: LocalObjects(folder / "store")
    request.getfixturevalue("moto_endpoint")
    from chunkstore.aws import AwsClients

    clients = AwsClients()
    return lambda folder: S3Objects.new(clients)


@pytest.fixture
def uninitialized(new_backend, tmp_path) -> Chunkstore:
    """A runner whose store does not exist yet; files for it go in its workdir."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Chunkstore(new_backend(tmp_path), workdir)


@pytest.fixture
def chunkstore(uninitialized) -> Chunkstore:
    """A runner with a fresh store of small chunks."""
    uninitialized("init", "--avg-size", TEST_AVG_SIZE)
    return uninitialized

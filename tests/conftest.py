"""Fixtures shared by every test: stores in a fresh folder or in memory, the --runslow switch,
and the backends a test can run on.

A test that asks for `new_backend` runs twice: on a store in a local folder ("local") and on
an s3:// store on the moto server of tests/support/moto_fixtures.py ("s3"). A test about the local
folder itself is marked `local_only("why")`. A test marked `also_in_memory` runs a third time,
on a memory:// store ("memory"); only a test that opens its stores through the library in
this process can be, not one that runs the command line (another process sees no memory://
store of this one). A test (or a parameter of it, with
`pytest.param(..., marks=pytest.mark.slow_on_s3)`) whose s3 run takes too long for the
default run is marked `slow_on_s3`: its s3 run is then a `slow` test, run with --runslow.

A test that needs a store but not any particular place for it asks for `memory_store_url`
(or overrides `store_url` with it in its module): a memory:// store is created and read
several times faster than a folder with its SQLite catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.chunking import FORMAT_1_AVG_SIZE
from support.storeobjects import LocalObjects, MemoryObjects, S3Objects

# The moto server (S3 and DynamoDB over HTTP) that the s3:// tests and the CLI tests share.
pytest_plugins = ["support.moto_fixtures"]

# Small chunks give a test thousands of chunks from a few megabytes.
SMALL_AVG_SIZE = 1024


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "local_only(reason): a test about the local folder itself")
    config.addinivalue_line("markers", "slow_on_s3: the s3 run of this test is slow (--runslow)")
    config.addinivalue_line("markers", "also_in_memory: run on a memory:// store too (an in-process test)")


def pytest_generate_tests(metafunc):
    if "new_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("local_only"):
        backends = ["local"]
    elif metafunc.definition.get_closest_marker("also_in_memory"):
        backends = ["local", "s3", "memory"]
    else:
        backends = ["local", "s3"]
    metafunc.parametrize("new_backend", backends, indirect=True, scope="session")


def is_slow(item) -> bool:
    """Marked slow, or the s3 run of a test (or parameter) marked slow_on_s3."""
    if "slow" in item.keywords:
        return True
    callspec = getattr(item, "callspec", None)
    on_s3 = callspec is not None and callspec.params.get("new_backend") == "s3"
    return on_s3 and item.get_closest_marker("slow_on_s3") is not None


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if is_slow(item):
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def new_backend(request) -> Callable[[Path], LocalObjects | S3Objects | MemoryObjects]:
    """Makes the place of a new store on this test's backend, given a folder of the test: the
    folder `store` in it, a new bucket (prefix `store`) and an unused table name on moto, or
    an unused memory:// name (whose stores are freed when the session ends)."""
    if request.param == "local":
        return lambda folder: LocalObjects(folder / "store")
    if request.param == "memory":
        made: list[MemoryObjects] = []

        def new_memory_store(folder: Path) -> MemoryObjects:
            made.append(MemoryObjects.new())
            return made[-1]

        request.addfinalizer(lambda: [objects.discard() for objects in made])
        return new_memory_store
    request.getfixturevalue("moto_endpoint")
    from chunkstore.backends.aws import AwsClients

    clients = AwsClients()
    return lambda folder: S3Objects.new(clients)


@pytest.fixture
def memory_store_url() -> Iterator[str]:
    """A memory:// URL where no store exists yet; whatever is stored there is freed after the test."""
    objects = MemoryObjects.new()
    yield objects.url
    objects.discard()


@pytest.fixture
def store_url(tmp_path) -> str:
    """Where the `store` fixture creates its store (nothing exists there until it does)."""
    return str(tmp_path / "store")


@pytest.fixture
def store(store_url):
    """A new storage format 1 store with the default chunker, 64 KiB chunks and zstd:3 (format 2
    stores have suites of their own)."""
    spec = ChunkerSpec.from_average(avg_size=FORMAT_1_AVG_SIZE)
    with Store.init(store_url, spec, CompressionSpec.parse("zstd:3"), storage_format=1) as opened:
        yield opened


@pytest.fixture
def small_chunk_store(store_url):
    """A new storage format 1 store with 1 KiB average chunks (fastcdc2020), zstd:3."""
    spec = ChunkerSpec.from_average(avg_size=SMALL_AVG_SIZE)
    with Store.init(store_url, spec, CompressionSpec.parse("zstd:3"), storage_format=1) as opened:
        yield opened

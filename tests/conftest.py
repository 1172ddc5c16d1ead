"""Fixtures shared by every test: stores in a fresh folder, and the --runslow switch."""

from __future__ import annotations

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store

# The moto server (S3 and DynamoDB over HTTP) that the s3:// tests and the CLI tests share.
pytest_plugins = ["moto_fixtures"]

# Small chunks give a test thousands of chunks from a few megabytes.
SMALL_AVG_SIZE = 1024


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def store_url(tmp_path) -> str:
    """Where the `store` fixture creates its store (nothing exists there until it does)."""
    return str(tmp_path / "store")


@pytest.fixture
def store(store_url):
    """A new store with the default chunker and zstd:3."""
    with Store.init(store_url, ChunkerSpec.from_average(), CompressionSpec.parse("zstd:3")) as opened:
        yield opened


@pytest.fixture
def small_chunk_store(store_url):
    """A new store with 1 KiB average chunks (fastcdc2020), zstd:3."""
    spec = ChunkerSpec.from_average(avg_size=SMALL_AVG_SIZE)
    with Store.init(store_url, spec, CompressionSpec.parse("zstd:3")) as opened:
        yield opened

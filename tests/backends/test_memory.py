"""The memory backend: both conformance suites, and memory://NAME stores opened through Store."""

from __future__ import annotations

import dataclasses
import io
import uuid

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.memory import BlobSpace, CatalogState, MemoryBlobStore, MemoryCatalog, discard_memory_store
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.core.config import CONFIG_KEY, StoreConfig
from chunkstore.errors import (
    ChunkstoreError,
    InvalidArgumentError,
    StoreExistsError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from support.blobstore_conformance import BlobStoreConformance
from support.catalog_conformance import CatalogConformance


class TestMemoryBlobStore(BlobStoreConformance):
    @pytest.fixture
    def make_blobstore(self):
        space = BlobSpace()
        return lambda: MemoryBlobStore(space)


class TestMemoryCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self):
        state = CatalogState()

        def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> MemoryCatalog:
            return MemoryCatalog(state, lease_seconds=lease_seconds)

        return make


@pytest.fixture
def memory_url():
    name = f"test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    discard_memory_store(name)


def new_store(url: str) -> Store:
    return Store.init(url, ChunkerSpec.from_average(avg_size=1024), CompressionSpec.parse("zstd:3"))


def test_a_store_opened_by_name_finds_what_init_and_put_left(memory_url):
    with new_store(memory_url) as store:
        assert store.config.catalog == {"type": "memory"}
        store.put_stream(io.BytesIO(b"kept in memory" * 1000), "note")
    with Store.open(memory_url) as reopened:
        output = io.BytesIO()
        reopened.get("note", output)
        assert output.getvalue() == b"kept in memory" * 1000
        assert reopened.verify(read_data=True).ok
        assert [snapshot.program for snapshot in reopened.catalog.list_snapshots()] == ["chunkstore library"]


def test_stores_of_other_names_are_apart(memory_url):
    new_store(memory_url).close()
    with pytest.raises(StoreNotFoundError):
        Store.open(f"{memory_url}-other")
    with pytest.raises(StoreExistsError):
        new_store(memory_url)


def test_a_discarded_store_is_gone(memory_url):
    new_store(memory_url).close()
    discard_memory_store(memory_url.removeprefix("memory://"))
    with pytest.raises(StoreNotFoundError):
        Store.open(memory_url)


@pytest.mark.parametrize(
    "section", [{"type": "sqlite", "path": "catalog.sqlite"}, {"type": "dynamodb", "table": "t"}, {}]
)
def test_a_config_naming_another_catalog_is_refused(memory_url, section):
    with new_store(memory_url) as store:
        config = StoreConfig.from_bytes(store.blobs.get(CONFIG_KEY))
        store.blobs.put(CONFIG_KEY, dataclasses.replace(config, catalog=section).to_bytes())
    with pytest.raises(UnsupportedFormatError, match="catalog"):
        Store.open(memory_url)


@pytest.mark.parametrize("options", [{"table": "t"}, {"create": True}])
def test_init_refuses_the_options_of_s3_stores(memory_url, options):
    with pytest.raises(InvalidArgumentError):
        Store.init(memory_url, ChunkerSpec.from_average(), CompressionSpec.parse("zstd:3"), **options)


def test_a_memory_url_needs_a_name():
    with pytest.raises(InvalidArgumentError):
        Store.open("memory://")


def test_a_read_only_store_refuses_writes(memory_url):
    new_store(memory_url).close()
    with Store.open(memory_url, read_only=True) as store:
        assert list(store.list()) == []
        with pytest.raises(ChunkstoreError, match="read-only"):
            store.put_stream(io.BytesIO(b"x"), "refused")

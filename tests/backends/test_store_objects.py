"""The views of tests/support/storeobjects.py agree with what the store itself reads, on every backend
(memory:// included): tests that damage a store through them damage what chunkstore reads."""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_key
from chunkstore.operations.read import iter_recipe
from support.storeobjects import CHUNKS, CONFIG_KEY, GARBLED_PAGE

CONTENT = b"the same line, over and over\n" * 5000


@pytest.fixture
def stored(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    assert objects.untouched()
    store = Store.init(
        objects.url,
        ChunkerSpec.from_average(avg_size=1024),
        CompressionSpec.parse("zstd:3"),
        storage_format=1,
        **objects.init_arguments(),
    )
    store.put_stream(io.BytesIO(CONTENT), "file")
    yield objects, store
    store.close()


@pytest.mark.also_in_memory
def test_objects_are_the_store_s_objects(stored):
    objects, store = stored
    assert not objects.untouched()
    assert {str(key) for key in objects.keys(CHUNKS)} == {info.key for info in store.blobs.list(CHUNK_KEY_PREFIX)}
    assert objects.exists(CONFIG_KEY) and objects.read(CONFIG_KEY) == store.blobs.get(str(CONFIG_KEY))
    first = sorted(objects.keys(CHUNKS))[0]
    objects.write(first, b"overwritten")
    assert store.blobs.get(str(first)) == b"overwritten"
    objects.delete(first)
    assert not objects.exists(first) and str(first) not in {info.key for info in store.blobs.list()}


@pytest.mark.also_in_memory
def test_everything_holds_every_part_of_the_catalog(stored):
    objects, store = stored
    everything = objects.everything()
    for pattern in objects.catalog_keys:
        assert any(re.fullmatch(pattern, key) for key in everything), pattern
    # Each backend stores the file's digest in its own form: raw, or in hex in an item's key.
    haystack = b"\0".join(key.encode() + b"\0" + data for key, data in everything.items())
    digest = store.catalog.get_version("file").digest
    assert digest in haystack or digest.hex().encode() in haystack


@pytest.mark.also_in_memory
def test_catalog_damage_is_what_the_store_reads(stored):
    objects, store = stored
    record = store.catalog.get_version("file")
    chunk = next(iter_recipe(store, record.digest)).chunk_id
    objects.set_chunk_count(chunk, 42)
    assert store.catalog.get_chunks([chunk])[chunk].refcount == 42
    assert objects.exists(PurePosixPath(chunk_key(chunk)))
    objects.garble_recipe(record.digest)
    assert next(iter(store.catalog.recipe_pages(record.digest))) == GARBLED_PAGE

"""Property tests: whatever goes in comes back byte-exact, through versions, removals and gc.

The stores are memory:// stores: the properties are the library's, not a backend's, and in
memory hypothesis runs its examples in a tenth of the time a folder takes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_key
from chunkstore.operations.read import iter_recipe
from support.storechecks import get_bytes
from support.storeobjects import MemoryObjects

# Blocks several times the 1 KiB average chunk: contents made of them share chunks.
BLOCKS = [blake3.blake3(b"block %d" % number).digest(length=3000 + 1500 * number) for number in range(4)]
TEXT_BLOCK = b"compressible text, repeated over and over\n" * 100

contents = st.one_of(
    st.binary(max_size=20_000),
    st.lists(st.one_of(st.sampled_from([*BLOCKS, TEXT_BLOCK]), st.binary(max_size=2000)), max_size=12).map(b"".join),
)
# Contents mostly made of shared blocks, so that removing one leaves its chunks in use by others.
block_contents = st.tuples(
    st.lists(st.sampled_from([*BLOCKS, TEXT_BLOCK]), min_size=1, max_size=4), st.binary(max_size=100)
).map(lambda parts: b"".join(parts[0]) + parts[1])
NAMES = ["a", "dir/b", "dir/sub/c"]


@contextmanager
def small_chunk_store() -> Iterator[Store]:
    """A new memory:// store of 1 KiB chunks, freed when the block ends."""
    objects = MemoryObjects.new()
    try:
        spec = ChunkerSpec.from_average(avg_size=1024)
        with Store.init(objects.url, spec, CompressionSpec.parse("zstd:3"), storage_format=1) as store:
            yield store
    finally:
        objects.discard()


@pytest.fixture(scope="module")
def shared_store():
    with small_chunk_store() as store:
        yield store


@pytest.fixture(scope="module")
def history():
    """What the shared store holds: each name's latest content, and the first name each content was stored under."""
    return {"latest": {}, "first_name": {}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=contents)
def test_put_stream_then_get_is_byte_exact(shared_store, history, name, data):
    result = shared_store.put_stream(io.BytesIO(data), name).results[0]
    latest, first_name = history["latest"], history["first_name"]
    if latest.get(name) == data:
        assert result.outcome == "unchanged"
    elif data in first_name:
        assert (result.outcome, result.duplicate_of) == ("duplicate", first_name[data])
    else:
        assert result.outcome == "stored"
        first_name[data] = name
    latest[name] = data
    assert result.size == len(data)
    assert get_bytes(shared_store, name) == data
    assert get_bytes(shared_store, name, version=result.version) == data


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(NAMES), st.one_of(block_contents, contents)),
        st.tuples(st.just("rm-version"), st.integers(0, 100)),
        st.tuples(st.just("rm-name"), st.sampled_from(NAMES)),
        st.tuples(st.just("gc")),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations)
def test_versions_survive_removals_and_gc(steps):
    stored: dict[tuple[str, int], bytes] = {}
    with small_chunk_store() as store:
        for step in steps:
            if step[0] == "put":
                _, name, data = step
                result = store.put_stream(io.BytesIO(data), name).results[0]
                versions = sorted(version for each, version in stored if each == name)
                if versions and stored[name, versions[-1]] == data:
                    assert (result.outcome, result.version) == ("unchanged", versions[-1])
                else:
                    assert result.outcome in ("stored", "duplicate")
                    assert all(result.version > version for version in versions)
                stored[name, result.version] = data
            elif step[0] == "rm-version" and stored:
                name, version = sorted(stored)[step[1] % len(stored)]
                store.remove([name], version=version)
                del stored[name, version]
            elif step[0] == "rm-name" and any(each == step[1] for each, _ in stored):
                store.remove([step[1]])
                stored = {key: data for key, data in stored.items() if key[0] != step[1]}
            elif step[0] == "gc":
                store.gc()

        store.gc()
        assert {(record.name, record.version) for record in store.list(all_versions=True)} == set(stored)
        for (name, version), data in stored.items():
            assert get_bytes(store, name, version) == data
        report = store.verify(read_data=True)
        assert report.ok, report.problems
        # gc left exactly the chunks the remaining versions use: nothing lost, nothing leaked.
        needed = {
            chunk_key(entry.chunk_id)
            for record in store.list(all_versions=True)
            for entry in iter_recipe(store, record.digest)
        }
        assert {info.key for info in store.blobs.list(CHUNK_KEY_PREFIX)} == needed

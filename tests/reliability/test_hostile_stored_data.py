"""Hostile stored data: chunk objects that decompress to far more than they claim, catalog rows
of the wrong type or with names chunkstore would never store, reference counts that disagree
with the recipes, and edits of an encrypted store's config."""

from __future__ import annotations

import io
import struct
import tracemalloc

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core import compression
from chunkstore.core.config import chunk_key
from chunkstore.core.objectformat import CIPHER_NONE, ObjectHeader
from chunkstore.errors import CorruptObjectError, IntegrityError
from chunkstore.operations.read import iter_recipe

ZSTD_MAGIC = 0xFD2FB528
# Frame header descriptor: an 8-byte content size field, single segment (no window byte).
SINGLE_SEGMENT_WITH_8_BYTE_SIZE = 0xE0
RLE_BLOCK = 1
GIB = 1 << 30
MEMORY_BOUND = 32 * 1024 * 1024


def zstd_bomb(declared_size: int) -> bytes:
    """A 16-byte zstd frame that declares declared_size bytes of content and holds one
    last RLE block of 128 KiB: a decoder that trusts the declaration allocates all of it."""
    block_header = 1 | (RLE_BLOCK << 1) | ((128 * 1024) << 3)
    return (struct.pack("<IBQ", ZSTD_MAGIC, SINGLE_SEGMENT_WITH_8_BYTE_SIZE, declared_size)
            + block_header.to_bytes(3, "little") + b"a")


def peak_memory_of(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_zstd_frame_declaring_a_gibibyte_is_refused_without_allocating_it():
    def decompress():
        with pytest.raises(CorruptObjectError):
            compression.decompress(compression.ZSTD_ID, zstd_bomb(GIB), 65536)

    assert peak_memory_of(decompress) < MEMORY_BOUND


def test_get_and_restore_of_a_chunk_holding_a_zstd_bomb_fail_with_bounded_memory(tmp_path):
    with Store.init(str(tmp_path / "store"), ChunkerSpec.from_average(avg_size=4096),
                    CompressionSpec.parse("zstd:3")) as store:
        store.put_stream(io.BytesIO(bytes(range(256)) * 100), "bomb/file")
        entry = next(iter_recipe(store, store.catalog.get_version("bomb/file").digest))
        bomb = ObjectHeader(compression.ZSTD_ID, CIPHER_NONE, entry.length).pack() + zstd_bomb(GIB)
        store.blobs.put(chunk_key(entry.chunk_id), bomb)

        def get():
            with pytest.raises(IntegrityError):
                store.get("bomb/file", io.BytesIO())

        def restore():
            (result,) = store.restore("bomb", tmp_path / "target").results
            assert result.exit_code == IntegrityError.exit_code, result.error

        assert peak_memory_of(get) < MEMORY_BOUND
        assert peak_memory_of(restore) < MEMORY_BOUND

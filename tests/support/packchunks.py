"""Synthetic chunks and a pack format for the tests of the pack writer and reader."""

from __future__ import annotations

import blake3

from chunkstore.backends.packs import PackFormat
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.crypto import Keys
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec

MAX_CHUNK = 32 * 1024
# Small packs, so that a few hundred chunks make several of them.
TARGET = 64 * 1024


def pack_format(keys: Keys | None = None) -> PackFormat:
    codec = ObjectCodec(Compressor(CompressionSpec("zstd", 3)), MAX_CHUNK, keys.objects if keys else None)
    hasher = Hasher(keys.chunk_id, keys.file_digest) if keys else Hasher()
    return PackFormat(codec, hasher, MAX_CHUNK, keys.pack_tables if keys else None)


def chunk(number: int) -> bytes:
    """2-10 KiB, half of it incompressible, different for every number."""
    noise = blake3.blake3(number.to_bytes(4, "big")).digest(length=1024 + number % 4096)
    return noise + f"chunk {number} compresses\n".encode() * (40 + number % 150)

"""Chunk IDs and whole-file digests: BLAKE3-256, keyed in encrypted stores.

blake3 releases the GIL for inputs of 2 KiB and more, so hashing in one thread
leaves the other cores to compression.
"""

from __future__ import annotations

import blake3

from chunkstore.errors import ChunkMismatchError


class Hasher:
    """Computes the IDs and digests of one store.

    With keys (an encrypted store) both are keyed BLAKE3, so nobody without the key
    can compute the ID of a known chunk and test whether a known file is stored."""

    def __init__(self, chunk_id_key: bytes | None = None, file_digest_key: bytes | None = None):
        self._chunk_id_key = chunk_id_key
        self._file_digest_key = file_digest_key

    def chunk_id(self, data: bytes) -> bytes:
        if self._chunk_id_key is None:
            return blake3.blake3(data).digest()
        return blake3.blake3(data, key=self._chunk_id_key).digest()

    def check_chunk(self, chunk_id: bytes, data: bytes) -> None:
        """Raise ChunkMismatchError unless data hashes to chunk_id (every read of a chunk checks this)."""
        if self.chunk_id(data) != chunk_id:
            raise ChunkMismatchError(f"chunk {chunk_id.hex()} does not match its ID (corrupt or swapped object)")

    def file_hasher(self) -> blake3.blake3:
        if self._file_digest_key is None:
            return blake3.blake3()
        return blake3.blake3(key=self._file_digest_key)

"""Verified chunks kept for reuse by one get or restore: the versions of a file share most of
their chunks, so restoring consecutive versions reads and decodes each shared chunk once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import KeysView

# A version of a 33 MB file fits, and most of one of the 59 MB Django 4.2.x sdists of the
# benchmark suite: restoring 13 generated versioned archives (154 MiB, 27x deduplicated) from a
# format 2 store decoded every chunk of every version without it.
CACHE_BYTES = 64 * 1024 * 1024


class ChunkCache:
    """Plaintext by chunk ID, least recently used first out once more than limit bytes are
    held. Only chunks already checked against their ID go in. Safe to share between threads
    (restore reads small files in a pool)."""

    def __init__(self, limit: int = CACHE_BYTES):
        self._limit = limit
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, chunk_id: bytes) -> bytes | None:
        with self._lock:
            data = self._chunks.get(chunk_id)
            if data is not None:
                self._chunks.move_to_end(chunk_id)
            return data

    def chunk_ids(self) -> KeysView[bytes]:
        """The IDs of the chunks held, a live view (a membership test costs no Python call)."""
        return self._chunks.keys()

    def add(self, chunk_id: bytes, data: bytes) -> None:
        with self._lock:
            if chunk_id in self._chunks:
                return
            self._chunks[chunk_id] = data
            self._bytes += len(data)
            while self._bytes > self._limit:
                _, evicted = self._chunks.popitem(last=False)
                self._bytes -= len(evicted)

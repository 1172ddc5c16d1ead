"""A blob store wrapper that records every get, so a test sees the requests a reader makes."""

from __future__ import annotations

import threading

from chunkstore.backends.blobstore import BlobStore, BlobStoreWrapper


class CountingBlobStore(BlobStoreWrapper):
    """Keeps the contract of inner and appends (key, offset, length) to gets for each get, ranged
    or not (length None: to the end), from whichever thread makes it."""

    def __init__(self, inner: BlobStore):
        super().__init__(inner)
        self.gets: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            self.gets.append((key, offset, length))
        return self.inner.get(key, offset, length)

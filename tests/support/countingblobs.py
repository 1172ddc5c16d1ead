"""A blob store wrapper that records every get, so a test sees the requests a reader makes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from chunkstore.backends.blobstore import BlobInfo, BlobStore


class CountingBlobStore(BlobStore):
    """Keeps the contract of inner and appends (key, offset, length) to gets for each get, ranged
    or not (length None: to the end), from whichever thread makes it."""

    def __init__(self, inner: BlobStore):
        self.inner = inner
        self.url = inner.url
        self.concurrency = inner.concurrency
        self.gets: list[tuple[str, int, int | None]] = []
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            self.gets.append((key, offset, length))
        return self.inner.get(key, offset, length)

    def stat(self, key: str) -> BlobInfo:
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return self.inner.list(prefix)

    def sync(self) -> None:
        self.inner.sync()

    def create(self) -> None:
        self.inner.create()

    def exists(self) -> bool:
        return self.inner.exists()

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        return self.inner.remove_stale_temporaries(older_than_seconds)

"""The blob store interface: a flat namespace of immutable objects under string keys.

Every implementation (a local folder, S3, wrappers that add faults or retries)
keeps this contract, and tests/blobstore_conformance.py checks it for each one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from chunkstore.errors import InvalidArgumentError


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int


# At most 255 characters a part: the longest file name Linux file systems accept.
_KEY_PART = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,254}$")
MAX_KEY_LENGTH = 1024


def is_valid_key(key: str) -> bool:
    """True for lower-case, slash-separated keys with no empty, '.' or '..' parts.

    The same rule on every backend keeps keys portable between a folder and a bucket
    and makes path traversal impossible by construction.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return False
    return all(_KEY_PART.match(part) and part not in (".", "..") for part in key.split("/"))


def validate_key(key: str) -> str:
    """Return key if is_valid_key accepts it, else raise InvalidArgumentError."""
    if not is_valid_key(key):
        raise InvalidArgumentError(f"invalid blob key {key!r}")
    return key


class BlobStore(ABC):
    """A store of immutable objects.

    Keys follow validate_key. Objects are written whole and never modified in place;
    writing a key that exists replaces it (callers only do so with identical bytes).
    """

    url: str
    # How many requests are worth running at once. None: calls cost CPU rather than waiting
    # (a local disk), so callers run one thread per core. S3 sets it to hide latency.
    concurrency: int | None = None

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store data under key. Visibility is atomic: a reader sees the old object,
        nothing, or all of the new one, never a part. The object is durable once
        sync() has returned after this call."""

    @abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or length bytes from offset (fewer at the end).
        Raise BlobNotFoundError when the key has no object."""

    @abstractmethod
    def stat(self, key: str) -> BlobInfo:
        """Return the object's size. Raise BlobNotFoundError when the key has no object."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object. Deleting a missing key is not an error (deletes are retried)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Yield every object whose key starts with prefix, in ascending key order."""

    def sync(self) -> None:
        """Make every put that has returned durable against a crash of the machine.

        Backends whose put is durable on return (S3) need do nothing."""

    def create(self) -> None:
        """Prepare an empty store location (init). Idempotent."""

    def exists(self) -> bool:
        """True when the location itself exists (not any particular key)."""
        return True

    def remove_stale_temporaries(self, older_than_seconds: float) -> int:
        """Remove what interrupted puts left behind (temporary files older than the given age)
        and return how many. Backends whose put leaves nothing behind (S3) have none."""
        return 0


class BlobStoreWrapper(BlobStore):
    """A blob store that passes every call to inner: wrappers (fault injection, request
    counting) subclass it and override only the calls they change."""

    def __init__(self, inner: BlobStore):
        self.inner = inner
        self.url = inner.url
        self.concurrency = inner.concurrency

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
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

"""S3 objects that are not part of a store: the inbox of ingest, the bucket a scan reads.

An object is read as a stream of ranged GETs run in parallel, each pinned to the object
version that was found first (its version ID, or its ETag through If-Match), so memory
stays at PARALLEL_PARTS x PART_SIZE whatever the object's size, and an object replaced
while it is read fails the read instead of mixing two versions.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from chunkstore.backends.aws import error_code, translate_errors
from chunkstore.errors import InvalidArgumentError, ObjectChangedError, ObjectMissingError

# 8 MiB ranges, 4 at a time: 32 MiB of buffers per object, and enough requests in flight
# to keep a Lambda function's network busy (one GET stream reaches ~90 MB/s).
PART_SIZE = 8 * 1024 * 1024
PARALLEL_PARTS = 4
# A range whose body breaks off mid-stream is not retried by botocore; retry it here.
_BODY_READ_ATTEMPTS = 3
_MISSING_CODES = ("404", "NoSuchKey", "NotFound", "NoSuchVersion")
_CHANGED_CODES = ("412", "PreconditionFailed")


@dataclass(frozen=True)
class S3Object:
    """One object version: where it is and what identifies it."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None  # without the quotes S3 puts around it
    version_id: str | None = None
    sequencer: str | None = None  # from an event notification only
    last_modified: datetime | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> str:
        """What tells this version from another of the same key: the version ID, else the ETag."""
        return self.version_id or self.etag or ""

    def pinned(self) -> dict:
        """Request parameters that address this very version."""
        if self.version_id:
            return {"VersionId": self.version_id}
        return {"IfMatch": f'"{self.etag}"'} if self.etag else {}


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://BUCKET[/PREFIX] -> (BUCKET, PREFIX)."""
    if not url.startswith("s3://") or not url[len("s3://") :].split("/", 1)[0]:
        raise InvalidArgumentError(f"{url!r} is not an s3://BUCKET[/PREFIX] URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix


def clean_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def list_objects(s3, bucket: str, prefix: str = "") -> Iterator[S3Object]:
    """Every object under prefix (current versions), in key order."""
    paginator = s3.get_paginator("list_objects_v2")
    with translate_errors(f"listing s3://{bucket}/{prefix}", missing=f"S3 bucket {bucket!r} does not exist"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield S3Object(
                    bucket,
                    entry["Key"],
                    entry["Size"],
                    clean_etag(entry.get("ETag")),
                    last_modified=entry.get("LastModified"),
                )


def head_object(s3, found: S3Object) -> S3Object:
    """The object as it is now, pinned to found's version (or ETag) when it has one.

    Raises ObjectMissingError when it (or that version) is gone, ObjectChangedError
    when another version has replaced it."""
    with _object_errors(found, "checking"):
        response = s3.head_object(Bucket=found.bucket, Key=found.key, **found.pinned())
    return replace(
        found,
        size=response["ContentLength"],
        etag=clean_etag(response.get("ETag")),
        version_id=response.get("VersionId") or found.version_id,
        last_modified=response.get("LastModified") or found.last_modified,
    )


def delete_object(s3, found: S3Object) -> bool:
    """Delete exactly this version: by version ID, else only while its ETag still matches.

    Returns False (and deletes nothing) when another version has replaced it meanwhile."""
    try:
        with _object_errors(found, "deleting"):
            s3.delete_object(Bucket=found.bucket, Key=found.key, **found.pinned())
    except ObjectChangedError:
        return False
    except ObjectMissingError:
        pass
    return True


class _ObjectErrors:
    """Maps a missing object to ObjectMissingError and a replaced one to ObjectChangedError;
    every other AWS error goes through translate_errors."""

    def __init__(self, found: S3Object, doing: str):
        self.found = found
        self.translated = translate_errors(f"{doing} {found.url}")

    def __enter__(self):
        self.translated.__enter__()
        return self

    def __exit__(self, kind, error, traceback):
        code = error_code(error) if error is not None else None
        if code in _MISSING_CODES:
            raise ObjectMissingError(f"{self.found.url} no longer exists") from None
        if code in _CHANGED_CODES:
            raise ObjectChangedError(f"{self.found.url} was replaced by a newer version") from None
        return self.translated.__exit__(kind, error, traceback)


def _object_errors(found: S3Object, doing: str) -> _ObjectErrors:
    return _ObjectErrors(found, doing)


class ObjectReader(io.RawIOBase):
    """A read-only binary stream over one object version: ranged GETs, parallel_parts at once.

    found must carry the size (from a listing or head_object). Close it to stop the GETs."""

    def __init__(self, s3, found: S3Object, *, part_size: int = PART_SIZE, parallel_parts: int = PARALLEL_PARTS):
        super().__init__()
        if found.size is None:
            raise InvalidArgumentError(f"the size of {found.url} is not known")
        self._s3 = s3
        self._found = found
        self._size: int = found.size
        self._part_size = part_size
        self._parallel = parallel_parts
        self._pool = ThreadPoolExecutor(parallel_parts, thread_name_prefix="chunkstore-get")
        self._parts: deque[Future] = deque()
        self._next_offset = 0
        self._current = memoryview(b"")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current:
            self._schedule()
            if not self._parts:
                return 0
            self._current = memoryview(self._parts.popleft().result())
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        self.bytes_read += count
        return count

    def _schedule(self) -> None:
        while len(self._parts) < self._parallel and self._next_offset < self._size:
            start = self._next_offset
            end = min(start + self._part_size, self._size)
            self._parts.append(self._pool.submit(self._get_range, start, end))
            self._next_offset = end

    def _get_range(self, start: int, end: int) -> bytes:
        found = self._found
        for attempt in range(1, _BODY_READ_ATTEMPTS + 1):
            with _object_errors(found, "reading"):
                response = self._s3.get_object(
                    Bucket=found.bucket, Key=found.key, Range=f"bytes={start}-{end - 1}", **found.pinned()
                )
                try:
                    data = response["Body"].read()
                except Exception:  # noqa: BLE001 - a body that broke off mid-stream is read again
                    if attempt == _BODY_READ_ATTEMPTS:
                        raise
                    continue
            if len(data) == end - start:
                return data
        raise ObjectChangedError(f"{found.url}: bytes {start}-{end - 1} came back short {_BODY_READ_ATTEMPTS} times")

    def close(self) -> None:
        if not self.closed:
            for part in self._parts:
                part.cancel()
            self._parts.clear()
            self._current = memoryview(b"")
            self._pool.shutdown(wait=True)
        super().close()

"""The put session both storage formats share: read, cut and hash files, queue their versions,
commit them. Each format's writer (objectput.ObjectWriter, packedput.PackedWriter) says how
chunks are stored and what recipe pages a content keeps; operations.put picks one.

The main thread reads and cuts chunks, a second thread hashes them, and a pool compresses
and writes the new ones; pyfastcdc, blake3 and zstd all release the GIL, so every core works.
"""

from __future__ import annotations

import contextlib
import itertools
import stat as stat_module
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from chunkstore.backends.catalog import CommitOutcome, FileStat, NewVersion, VersionRecord
from chunkstore.backends.packindex import RoundGuard
from chunkstore.core.chunking import Readable
from chunkstore.operations.context import StoreContext
from chunkstore.operations.results import FileResult

# Chunks are claimed in the catalog in batches of this many bytes (one transaction each).
BATCH_BYTES = 4 * 1024 * 1024
# Chunks being compressed and written at once: with the claim batch this bounds put's
# buffers to about 40 MiB whatever the file size.
MAX_UPLOAD_BYTES_IN_FLIGHT = 32 * 1024 * 1024
# ... and at most this many a worker: tiny chunks must not fill that with tens of thousands of
# queued tasks (a put of a million 256-byte chunks peaked at 250 MiB without it).
UPLOADS_IN_FLIGHT_PER_WORKER = 16
# Uploaded chunks are made durable and marked PRESENT at least this often (besides every
# commit), bounding the IDs a put of one huge file holds (36 bytes of recipe a chunk remain).
MARK_STORED_EVERY_CHUNKS = 65536
# A large file is hashed by a second thread in batches of this size, at most this many ahead.
HASH_BATCH_BYTES = 1024 * 1024
MAX_HASH_BATCHES_IN_FLIGHT = 8
# Commit versions at least this often: fewer, larger commits amortise the sync and the
# catalog transaction; these bounds keep what a crash throws away small.
COMMIT_EVERY_FILES = 2000
COMMIT_EVERY_BYTES = 256 * 1024 * 1024
COMMIT_EVERY_SECONDS = 5.0


class ChangedWhileReading(Exception):
    pass


@dataclass
class PendingFile:
    result: FileResult
    version: NewVersion
    # The time (UTC ns) the version is recorded at when it is not the writer's own (a migrated
    # version keeps the time it was stored at in its first store).
    at_ns: int | None = None


class Recipe(Protocol):
    """A file's recipe as its chunks come, in a store's storage format."""

    def add(self, chunk_id: bytes, chunk: bytes) -> None:
        """Take the file's next chunk (and see that it is stored)."""

    def finish(self, digest: bytes) -> tuple[int, list[bytes]]:
        """The file's chunk count and the recipe pages its content keeps in the catalog."""


class Writer(ABC):
    """One put session: a catalog session, a hashing thread and a pool, and the versions awaiting
    commit. ObjectWriter stores chunks as storage format 1 objects, PackedWriter in format 2
    packs; writer_for picks the one a store's config asks for."""

    def __init__(self, store: StoreContext, *, workers: int | None = None, at_ns: int | None = None):
        """at_ns: the time (UTC ns) the versions are recorded at; None for the time of each commit."""
        self.store = store
        self.at_ns = at_ns
        self.catalog = store.catalog
        self.workers = workers or store.workers
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="chunkstore-put")
        self._max_uploads_in_flight = UPLOADS_IN_FLIGHT_PER_WORKER * self.workers
        # One thread, so batches are hashed, and fed to the whole-file digest, in order.
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="chunkstore-hash")
        self.session = self.catalog.open_session("put")
        self._pending: list[PendingFile] = []
        self._pending_bytes = 0
        self._last_commit = time.monotonic()
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="chunkstore-heartbeat", daemon=True)
        self._heartbeat.start()

    def _heartbeat_loop(self) -> None:
        interval = self.catalog.lease_seconds / 4
        while not self._stop_heartbeat.wait(interval):
            # A missed heartbeat only shortens the lease.
            with contextlib.suppress(Exception):
                self.catalog.heartbeat(self.session)

    def close(self) -> None:
        self._stop_heartbeat.set()
        self._heartbeat.join()
        try:
            self._abandon()
        finally:
            self._hashing.shutdown(wait=True)
            self.pool.shutdown(wait=True)
            self.catalog.close_session(self.session)

    @abstractmethod
    def _new_recipe(self, result: FileResult, parent: VersionRecord | None) -> Recipe:
        """The recipe of a file being put; parent is its name's latest version, if any."""

    @abstractmethod
    def _make_durable(self) -> None:
        """Store and record everything the queued versions name, so that they can be committed."""

    @abstractmethod
    def _abandon(self) -> None:
        """Wait for what is still running at close. commit() has already waited for (and raised)
        the errors of everything it committed; what is left belongs to a put that is failing for
        another reason, whose error must not be hidden by one of these."""

    def discard(self, result: FileResult) -> None:
        """Forget what is buffered of a file that will not be committed."""

    # ---- one file --------------------------------------------------------------------

    def add_stream(
        self,
        stream: Readable,
        name: str,
        stat: FileStat | None,
        on_bytes: Callable[[int], None] | None = None,
        parent: VersionRecord | None = None,
    ) -> PendingFile:
        """Chunk and hash one stream; its version waits in the pending list for commit().

        A large file's chunks are hashed (IDs and whole-file digest) by a second thread in
        HASH_BATCH_BYTES batches while this one reads and cuts the next. The tail of a file,
        which is all of a small file, is hashed here: cheaper than a hand-off. parent is the
        name's latest version, which a format 2 put deduplicates against."""
        hasher = self.store.hasher
        file_digest = hasher.file_hasher()
        result = FileResult(name, "stored")
        recipe = self._new_recipe(result, parent)
        in_flight: deque[tuple[list[bytes], Future]] = deque()
        batch: list[bytes] = []
        batch_bytes = 0
        size = 0

        def take(chunks: list[bytes], ids: list[bytes]) -> None:
            for chunk_id, chunk in zip(ids, chunks, strict=True):
                recipe.add(chunk_id, chunk)

        try:
            for chunk in self.store.chunker(stream):
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= HASH_BATCH_BYTES:
                    in_flight.append((batch, self._hashing.submit(_hash_batch, hasher, file_digest, batch)))
                    size += batch_bytes
                    if on_bytes:
                        on_bytes(batch_bytes)
                    batch, batch_bytes = [], 0
                    while len(in_flight) > MAX_HASH_BATCHES_IN_FLIGHT:
                        chunks, ids = in_flight.popleft()
                        take(chunks, ids.result())
            while in_flight:
                chunks, ids = in_flight.popleft()
                take(chunks, ids.result())
            if batch:
                take(batch, _hash_batch(hasher, file_digest, batch))
                size += batch_bytes
                if on_bytes:
                    on_bytes(batch_bytes)
        except BaseException:
            for _, ids in in_flight:
                ids.cancel()
            self.discard(result)
            raise
        recorded_stat = stat if stat is not None else FileStat(size, time.time_ns(), stat_module.S_IFREG | 0o644)
        if recorded_stat.size != size:
            self.discard(result)
            raise ChangedWhileReading(f"size changed while reading ({recorded_stat.size} -> {size} bytes)")
        result.size = size
        digest = file_digest.digest()
        chunk_count, pages = recipe.finish(digest)
        return PendingFile(result, NewVersion(name, recorded_stat, digest, chunk_count, pages))

    def queue(self, pending: PendingFile) -> None:
        self._pending.append(pending)
        self._pending_bytes += pending.result.size

    def commit_due(self) -> bool:
        return (
            len(self._pending) >= COMMIT_EVERY_FILES
            or self._pending_bytes >= COMMIT_EVERY_BYTES
            or time.monotonic() - self._last_commit >= COMMIT_EVERY_SECONDS
        )

    def commit(self) -> list[FileResult]:
        """Make every queued file durable and visible; return their results."""
        self._make_durable()
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        self._last_commit = time.monotonic()
        if not pending:
            return []
        outcomes = []
        # One catalog commit per run of versions recorded at one time, all after one flush of the packs.
        for at_ns, group in itertools.groupby(
            pending, key=lambda item: self.at_ns if item.at_ns is None else item.at_ns
        ):
            outcomes += self.catalog.commit(
                self.session, [item.version for item in group], at_ns=at_ns, round_guard=self._round_guard()
            )
        self._next_batch()
        results = []
        for item, outcome in zip(pending, outcomes, strict=True):
            _apply_outcome(item.result, outcome)
            results.append(item.result)
        return results

    def _round_guard(self) -> RoundGuard | None:
        """What checks the gc round at commit (storage format 2); None where nothing needs it."""
        return None

    def _next_batch(self) -> None:
        """Called after each commit, before the next file is read."""


def _hash_batch(hasher, file_digest, chunks: list[bytes]) -> list[bytes]:
    """Chunk IDs of a batch, feeding the batch to the whole-file digest on the way."""
    ids = []
    for chunk in chunks:
        ids.append(hasher.chunk_id(chunk))
        file_digest.update(chunk)
    return ids


def _apply_outcome(result: FileResult, outcome: CommitOutcome) -> None:
    result.outcome = outcome.outcome
    result.version = outcome.version
    result.duplicate_of = outcome.duplicate_of
    if outcome.outcome != "stored":
        # Another writer stored the same chunks first, or the content already existed.
        result.new_bytes = 0
        result.stored_new_bytes = 0

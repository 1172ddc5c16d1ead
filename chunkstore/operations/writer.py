"""The put session both storage formats share: read, cut and hash files, queue their versions,
commit them. Each format's writer (objectput.ObjectWriter, packedput.PackedWriter) says how
chunks are stored and what recipe pages a content keeps; operations.put picks one.

The main thread stores a file's chunks; a second thread reads, cuts and hashes all but the first
MiB of a large regular file ahead of it (and only hashes those of other streams), and a pool
compresses and writes the new ones; pyfastcdc, blake3 and zstd all release the GIL, so every
core works. Reading and cutting on the second thread keeps the main thread from waiting to take
the GIL back after every read and every cut:
a put of 10 Django releases took 3.11-3.37 s against 3.37-3.73 s cutting on the main thread
(7 CLI runs each, alternating; docs/performance.md).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import stat as stat_module
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from chunkstore.backends.catalog import CommitOutcome, FileStat, NewVersion, VersionRecord
from chunkstore.backends.packindex import RoundGuard
from chunkstore.core.batching import fetch_in_order
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
# A large file is read, cut and hashed by a second thread in batches of this size, at most
# this many ahead of the thread that stores its chunks.
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

        The first HASH_BATCH_BYTES are read, cut and hashed on this thread, which is all of a
        small file: cheaper than a hand-off. The rest of a larger regular file is read, cut and
        hashed (chunk IDs and whole-file digest) by a second thread, a few batches ahead of this
        one, which stores the chunks. Any other stream (a pipe, a request body) may block on a
        read until its writer goes on, so it is read and cut here, where an interrupt stops the
        read, and only hashed by the second thread. parent is the name's latest version, which
        a format 2 put deduplicates against."""
        hasher = self.store.hasher
        file_digest = hasher.file_hasher()
        result = FileResult(name, "stored")
        recipe = self._new_recipe(result, parent)
        stream_batches = _batches(self.store.chunker(stream))
        size = 0
        later: _ReadAhead | Generator[tuple[list[bytes], list[bytes]], None, None] | None = None
        try:
            first = next(stream_batches, [])
            rest = itertools.chain([first], stream_batches)
            batches: Iterable[tuple[list[bytes], list[bytes]]]
            if sum(map(len, first)) < HASH_BATCH_BYTES:
                batches = [(first, _hash_batch(hasher, file_digest, first))]
            elif _is_regular_file(stream):
                batches = later = _ReadAhead(self._hashing, rest, hasher, file_digest)
            else:
                batches = later = fetch_in_order(
                    rest,
                    lambda batch: self._hashing.submit(_hash_batch, hasher, file_digest, batch),
                    MAX_HASH_BATCHES_IN_FLIGHT,
                )
            for batch, ids in batches:
                batch_bytes = sum(map(len, batch))
                size += batch_bytes
                if on_bytes:
                    on_bytes(batch_bytes)
                for chunk_id, chunk in zip(ids, batch, strict=True):
                    recipe.add(chunk_id, chunk)
        except BaseException:
            self.discard(result)
            raise
        finally:
            if later is not None:
                later.close()  # the batches of a stream that is not read to its end are dropped
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


def _is_regular_file(stream: Readable) -> bool:
    """Whether the stream reads a regular file, whose reads end without waiting on anyone."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return False
    try:
        return stat_module.S_ISREG(os.fstat(fileno()).st_mode)
    except (OSError, ValueError):  # no descriptor (io.UnsupportedOperation), or a closed one
        return False


def _batches(chunks: Iterator[bytes]) -> Iterator[list[bytes]]:
    """The stream's chunks in lists of HASH_BATCH_BYTES (the last may hold less)."""
    batch: list[bytes] = []
    batch_bytes = 0
    for chunk in chunks:
        batch.append(chunk)
        batch_bytes += len(chunk)
        if batch_bytes >= HASH_BATCH_BYTES:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


class _ReadAhead:
    """A stream's batches, read, cut and hashed by the hashing thread up to
    MAX_HASH_BATCHES_IN_FLIGHT ahead of the thread that iterates them. The stream is not read
    once close() has returned."""

    _END = object()

    def __init__(self, hashing: ThreadPoolExecutor, batches: Iterator[list[bytes]], hasher, file_digest):
        self._batches: queue.Queue = queue.Queue(MAX_HASH_BATCHES_IN_FLIGHT)
        self._stop = threading.Event()
        self._finished = False
        self._task = hashing.submit(self._produce, batches, hasher, file_digest)

    def _produce(self, batches: Iterator[list[bytes]], hasher, file_digest) -> None:
        try:
            for batch in batches:
                if self._stop.is_set():
                    break
                self._batches.put((batch, _hash_batch(hasher, file_digest, batch)))
            self._batches.put(self._END)
        except BaseException as error:  # handed to the thread that iterates, which raises it
            self._batches.put(error)

    def __iter__(self) -> Iterator[tuple[list[bytes], list[bytes]]]:
        while True:
            item = self._batches.get()
            if item is self._END:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    def close(self) -> None:
        """Stop reading, and wait until the hashing thread has let go of the stream."""
        self._stop.set()
        while not self._finished:
            # Taking what it made unblocks a hashing thread waiting for room in the queue.
            item = self._batches.get()
            self._finished = item is self._END or isinstance(item, BaseException)
        self._task.result()


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

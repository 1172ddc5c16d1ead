"""put: chunk, hash, deduplicate, compress and store files, then commit their versions.

Write order (a crash anywhere leaves garbage at worst, never a committed file that
cannot be restored):
  1. claim chunks in the catalog (pinned for this session; new ones get PENDING rows);
  2. write the objects of new chunks, then make them durable (one file-system sync per commit batch);
  3. mark them PRESENT;
  4. commit the versions: reference counts and recipes in the same atomic step.

The main thread reads and cuts chunks, a second thread hashes them, and a pool compresses
and writes the new ones; pyfastcdc, blake3 and zstd all release the GIL, so every core works.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat as stat_module
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from chunkstore.backends.catalog import CommitOutcome, FileStat, NewVersion, SnapshotRecord, VersionRecord
from chunkstore.backends.sessions import HOST, now_ns
from chunkstore.core import recipes
from chunkstore.core.chunking import Readable
from chunkstore.core.config import chunk_key
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.errors import ChunkMismatchError, IntegrityError, SourceError, StoreWriteError
from chunkstore.operations.context import StoreContext
from chunkstore.operations.results import FileResult, Progress, PutSummary
from chunkstore.operations.walk import (
    PathArgument,
    Source,
    collect_sources,
    file_stat,
    is_unchanged,
    stored_path_and_name,
    vanished_names,
)

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


class _ChangedWhileReading(Exception):
    pass


@dataclass
class _PendingFile:
    result: FileResult
    version: NewVersion


class Writer:
    """One put session: a catalog session with pins, a thread pool, and versions awaiting commit."""

    # Entries per recipe page; tests lower it to exercise paging with small files.
    page_entries = recipes.DEFAULT_PAGE_ENTRIES

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
        self._pending: list[_PendingFile] = []
        self._pending_bytes = 0
        self._last_commit = time.monotonic()
        self._unclaimed: list[tuple[bytes, bytes, FileResult]] = []
        self._unclaimed_bytes = 0
        self._uploaded_unmarked: list[tuple[bytes, int]] = []
        self._uploading: set[bytes] = set()
        self._uploads: deque[tuple[Future, int, FileResult]] = deque()
        self._upload_bytes = 0
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
            # commit() has already waited for (and raised) upload errors of everything it
            # committed; what is left belongs to a put that is failing for another reason,
            # whose error must not be hidden by one of these.
            for future, _, _ in self._uploads:
                future.exception()
            self._uploads.clear()
        finally:
            self._hashing.shutdown(wait=True)
            self.pool.shutdown(wait=True)
            self.catalog.close_session(self.session)

    # ---- one file --------------------------------------------------------------------

    def add_stream(
        self, stream: Readable, name: str, stat: FileStat | None, on_bytes: Callable[[int], None] | None = None
    ) -> _PendingFile:
        """Chunk and hash one stream; its version waits in the pending list for commit().

        A large file's chunks are hashed (IDs and whole-file digest) by a second thread in
        HASH_BATCH_BYTES batches while this one reads and cuts the next. The tail of a file,
        which is all of a small file, is hashed here: cheaper than a hand-off.
        Chunks then go to a claim buffer shared by consecutive files, so a folder of small
        files costs one catalog transaction per BATCH_BYTES, not one per file."""
        hasher = self.store.hasher
        file_digest = hasher.file_hasher()
        # Pages are encoded as they fill: a file of a million chunks holds 36 MB of recipe.
        recipe = recipes.PageBuilder(self.page_entries)
        result = FileResult(name, "stored")
        in_flight: deque[tuple[list[bytes], Future]] = deque()
        batch: list[bytes] = []
        batch_bytes = 0
        size = 0

        def take(chunks: list[bytes], ids: list[bytes]) -> None:
            for chunk_id, chunk in zip(ids, chunks, strict=True):
                recipe.add(recipes.RecipeEntry(chunk_id, len(chunk)))
                self._unclaimed.append((chunk_id, chunk, result))
                self._unclaimed_bytes += len(chunk)
            if self._unclaimed_bytes >= BATCH_BYTES:
                self._claim()

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
            raise _ChangedWhileReading(f"size changed while reading ({recorded_stat.size} -> {size} bytes)")
        result.size = size
        pages = recipe.finish()
        return _PendingFile(result, NewVersion(name, recorded_stat, file_digest.digest(), recipe.count, pages))

    def discard(self, result: FileResult) -> None:
        """Forget the not yet claimed chunks of a file that will not be committed."""
        self._unclaimed = [item for item in self._unclaimed if item[2] is not result]
        self._unclaimed_bytes = sum(len(item[1]) for item in self._unclaimed)

    def _claim(self) -> None:
        """Claim the buffered chunks in one catalog transaction and upload the new ones."""
        if not self._unclaimed:
            return
        batch, self._unclaimed, self._unclaimed_bytes = self._unclaimed, [], 0
        to_upload = self.catalog.claim_chunks(self.session, [(chunk_id, len(data)) for chunk_id, data, _ in batch])
        for chunk_id, data, result in batch:
            if chunk_id in to_upload and chunk_id not in self._uploading:
                self._uploading.add(chunk_id)
                result.new_bytes += len(data)
                self._schedule_upload(chunk_id, data, result)

    def _schedule_upload(self, chunk_id: bytes, data: bytes, result: FileResult) -> None:
        self._wait_uploads(MAX_UPLOAD_BYTES_IN_FLIGHT - len(data), self._max_uploads_in_flight - 1)
        future = self.pool.submit(self._upload, chunk_id, data)
        self._uploads.append((future, len(data), result))
        self._upload_bytes += len(data)

    def _upload(self, chunk_id: bytes, data: bytes) -> tuple[bytes, int]:
        blob = self.store.codec.encode(chunk_id, data)
        # Verify after encrypting, before the chunk counts as stored (restic does the same): a
        # fault in compression or encryption must not go unnoticed until restore.
        if self.store.encrypted and self.store.hasher.chunk_id(self.store.codec.decode(chunk_id, blob)) != chunk_id:
            raise ChunkMismatchError(f"chunk {chunk_id.hex()} did not survive encoding; nothing was stored")
        self.store.blobs.put(chunk_key(chunk_id), blob)
        return chunk_id, len(blob)

    def _wait_uploads(self, max_bytes: int, max_count: int = 0) -> None:
        while self._uploads and (self._upload_bytes > max_bytes or len(self._uploads) > max_count):
            future, size, result = self._uploads.popleft()
            self._upload_bytes -= size
            try:
                chunk_id, stored_size = future.result()
            except IntegrityError:
                raise
            except Exception as error:
                # Raised as what it is, a failure of the store, not of the file being read
                # when it surfaced (an OSError would be taken for that file's read error).
                raise StoreWriteError(f"storing a chunk of {result.name} failed: {error}") from error
            result.stored_new_bytes += stored_size
            self._uploaded_unmarked.append((chunk_id, stored_size))
        if len(self._uploaded_unmarked) >= MARK_STORED_EVERY_CHUNKS:
            self._mark_stored()

    def _mark_stored(self) -> None:
        """Make the uploaded chunks durable and PRESENT. Done at every commit, and within a file
        of very many new chunks, so the IDs waiting for it stay bounded."""
        if not self._uploaded_unmarked:
            return
        self.store.blobs.sync()
        self.catalog.chunks_stored(self.session, self._uploaded_unmarked)
        # PRESENT now: a later claim pins them instead of asking for an upload.
        self._uploading.difference_update(chunk_id for chunk_id, _ in self._uploaded_unmarked)
        self._uploaded_unmarked = []

    def queue(self, pending: _PendingFile) -> None:
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
        self._claim()
        self._wait_uploads(0)
        self._mark_stored()
        self._uploading.clear()
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        self._last_commit = time.monotonic()
        if not pending:
            return []
        outcomes = self.catalog.commit(self.session, [item.version for item in pending], at_ns=self.at_ns)
        results = []
        for item, outcome in zip(pending, outcomes, strict=True):
            _apply_outcome(item.result, outcome)
            results.append(item.result)
        return results


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


# ---- entry points ---------------------------------------------------------------------


def put(
    store: StoreContext,
    paths: Iterable[PathArgument],
    *,
    program: str,
    sync: bool = False,
    force_read: bool = False,
    at_ns: int | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> PutSummary:
    """Put files and folders and record the run as a snapshot. Every file gets a FileResult;
    unreadable ones an error result.

    program says what ran the put ("chunkstore put", "web upload", ...), for the snapshot.
    With sync, every stored name under a folder of paths that no longer exists there
    (gone, or now a folder itself) gets a deletion marker. A name put could not read,
    or below a folder it could not read, exists still and is left alone; so is every
    name under a path that is missing altogether (an unmounted disk is not a deletion).
    at_ns: the time the versions, markers and snapshot are recorded at (default: now)."""
    started = time.monotonic()
    paths = list(paths)
    at = now_ns() if at_ns is None else at_ns
    sources, problems = collect_sources(paths)
    summary = PutSummary()

    def report(results: Iterable[FileResult]) -> None:
        for result in results:
            summary.results.append(result)
            if on_result:
                on_result(result)

    report(problems)
    latest = _latest_versions(store, sources)
    total_bytes = sum(source.stat.st_size for source in sources)
    done_bytes = 0
    done_files = 0

    def progress(current: str | None) -> None:
        if on_progress:
            on_progress(Progress(done_files, len(sources), done_bytes, total_bytes, current))

    def on_bytes(count: int) -> None:
        nonlocal done_bytes
        done_bytes += count
        progress(None)

    writer = Writer(store, at_ns=at)
    try:
        for source in sources:
            progress(source.name)
            if not force_read and is_unchanged(latest.get(source.name), source.stat):
                report(
                    [
                        FileResult(
                            source.name,
                            "unchanged",
                            size=source.stat.st_size,
                            version=latest[source.name].version,
                            path=source.path,
                        )
                    ]
                )
                done_bytes += source.stat.st_size
            else:
                before = done_bytes
                try:
                    pending = _put_file(writer, source, on_bytes)
                    writer.queue(pending)
                except (OSError, _ChangedWhileReading, SourceError) as error:
                    message = getattr(error, "strerror", None) or str(error)
                    report(
                        [FileResult(source.name, "error", size=source.stat.st_size, path=source.path, error=message)]
                    )
                done_bytes = before + source.stat.st_size
            done_files += 1
            if writer.commit_due():
                report(writer.commit())
        report(writer.commit())
    finally:
        writer.close()
    progress(None)
    if sync:
        gone = vanished_names(store.catalog, paths, {result.name for result in summary.results})
        summary.deleted = store.catalog.mark_deleted(gone, at)
    summary.snapshot = _record_snapshot(store, program, at, [stored_path_and_name(item)[1] for item in paths], summary)
    summary.seconds = time.monotonic() - started
    return summary


def put_stream(
    store: StoreContext, stream: Readable, name: str, *, program: str, at_ns: int | None = None
) -> PutSummary:
    """Put one stream of unknown length (stdin, an upload, an S3 object) under name and record
    the run as a snapshot; its one result is summary.results[0]. program and at_ns as for put."""
    started = time.monotonic()
    name = normalize_name(name)
    at = now_ns() if at_ns is None else at_ns
    writer = Writer(store, at_ns=at)
    try:
        pending = writer.add_stream(stream, name, None)
        writer.queue(pending)
        summary = PutSummary(writer.commit())
    finally:
        writer.close()
    summary.snapshot = _record_snapshot(store, program, at, [name], summary)
    summary.seconds = time.monotonic() - started
    return summary


def _record_snapshot(
    store: StoreContext, program: str, at_ns: int, names: Sequence[str | None], summary: PutSummary
) -> SnapshotRecord:
    snapshot = SnapshotRecord(
        uuid.uuid4().hex,
        at_ns,
        HOST,
        tuple(name for name in names if name is not None),
        stored=summary.count("stored"),
        duplicate=summary.count("duplicate"),
        unchanged=summary.count("unchanged"),
        deleted=len(summary.deleted),
        errors=summary.count("error"),
        added_bytes=summary.new_bytes,
        added_stored_bytes=summary.stored_new_bytes,
        program=program,
    )
    store.catalog.record_snapshot(snapshot)
    return snapshot


def _latest_versions(store: StoreContext, sources: list[Source]) -> dict[str, VersionRecord]:
    """Latest versions of the names a put may touch, read once (not one query per file)."""
    if not sources:
        return {}
    wanted = {source.name for source in sources}
    common = os.path.commonpath([source.name for source in sources]) if len(sources) > 1 else sources[0].name
    prefix = normalize_prefix(common.replace(os.sep, "/"))
    return {record.name: record for record in store.catalog.list_versions(prefix) if record.name in wanted}


def _put_file(writer: Writer, source: Source, on_bytes) -> _PendingFile:
    if stat_module.S_ISLNK(source.stat.st_mode):
        return _put_symlink(writer, source)
    try:
        # Opened outside `with` so that only open's own error becomes a SourceError.
        handle = open(source.path, "rb", buffering=0)  # noqa: SIM115 - closed by the `with handle` below
    except OSError as error:
        raise SourceError(f"cannot open: {error.strerror}") from None
    with handle:
        before = os.fstat(handle.fileno())
        if not stat_module.S_ISREG(before.st_mode):
            raise SourceError("not a regular file")
        pending = writer.add_stream(handle, source.name, file_stat(before), on_bytes)
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        writer.discard(pending.result)
        raise _ChangedWhileReading("file changed while it was read; not stored (put it again)")
    pending.result.path = source.path
    return pending


def _put_symlink(writer: Writer, source: Source) -> _PendingFile:
    """A symlink is stored as a version whose content is its target and whose mode says link."""
    try:
        target = os.fsencode(os.readlink(source.path))
        st = os.lstat(source.path)
    except OSError as error:
        raise SourceError(f"cannot read link: {error.strerror}") from None
    if not stat_module.S_ISLNK(st.st_mode):
        raise _ChangedWhileReading("changed from a symlink while it was read; not stored (put it again)")
    pending = writer.add_stream(io.BytesIO(target), source.name, file_stat(st))
    pending.result.path = source.path
    return pending

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

import io
import os
import stat as stat_module
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from chunkstore.core import recipes
from chunkstore.backends.catalog import CommitOutcome, FileStat, NewVersion, VersionRecord
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.core.config import chunk_key
from chunkstore.errors import ChunkMismatchError, IntegrityError, InvalidArgumentError, SourceError, StoreWriteError
from chunkstore.core.names import normalize_name, normalize_prefix

if TYPE_CHECKING:
    from chunkstore.store import Store

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


# What an uploader (the web page, the ingest function) is told of each file.
UPLOAD_MESSAGES = {"stored": "File processed successfully", "duplicate": "Duplicate file detected"}


@dataclass(slots=True)
class FileResult:
    """The outcome of one file of a put."""

    name: str
    outcome: str  # "stored", "duplicate", "unchanged" or "error"
    size: int = 0
    version: int | None = None
    duplicate_of: str | None = None
    new_bytes: int = 0  # plaintext bytes of chunks this file added to the store
    stored_new_bytes: int = 0  # bytes of the objects written for them
    path: str | None = None
    error: str | None = None

    @property
    def upload_outcome(self) -> tuple[str, str | None]:
        """("stored" or "duplicate", the name it duplicates) as an upload is reported: the
        same content again under the same name, which adds no version, is a duplicate of itself."""
        if self.outcome == "unchanged":
            return "duplicate", self.name
        return self.outcome, self.duplicate_of

    @property
    def message(self) -> str:
        if self.outcome == "duplicate":
            return f"duplicate of {self.duplicate_of}"
        if self.outcome == "error":
            return f"error: {self.error}"
        return self.outcome

    def to_json(self) -> dict:
        return {"name": self.name, "outcome": self.outcome, "message": self.message, "size": self.size,
                "version": self.version, "duplicate_of": self.duplicate_of, "new_bytes": self.new_bytes,
                "stored_new_bytes": self.stored_new_bytes, "path": self.path, "error": self.error}


@dataclass
class PutSummary:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def logical_bytes(self) -> int:
        return sum(result.size for result in self.results if result.outcome != "error")

    @property
    def read_bytes(self) -> int:
        return sum(result.size for result in self.results if result.outcome in ("stored", "duplicate"))

    @property
    def new_bytes(self) -> int:
        return sum(result.new_bytes for result in self.results)

    @property
    def stored_new_bytes(self) -> int:
        return sum(result.stored_new_bytes for result in self.results)

    @property
    def dedup_ratio(self) -> float:
        """Bytes this put read, over the new bytes it had to store."""
        return self.read_bytes / self.new_bytes if self.new_bytes else float("inf") if self.read_bytes else 1.0

    @property
    def megabytes_per_second(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self, *, results_as_objects: bool = False) -> dict:
        """The totals and every file's result; results_as_objects leaves the results as
        FileResult objects (each with its own to_json), for a writer that streams them."""
        return {
            "files": len(self.results), "stored": self.count("stored"), "duplicate": self.count("duplicate"),
            "unchanged": self.count("unchanged"), "errors": self.count("error"),
            "logical_bytes": self.logical_bytes, "new_bytes": self.new_bytes,
            "stored_new_bytes": self.stored_new_bytes,
            "dedup_ratio": None if self.dedup_ratio == float("inf") else round(self.dedup_ratio, 4),
            "seconds": round(self.seconds, 4), "mb_per_second": round(self.megabytes_per_second, 2),
            "results": self.results if results_as_objects else [result.to_json() for result in self.results],
        }


@dataclass
class Progress:
    """What put reports while it runs."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str | None = None


@dataclass(slots=True)
class _Source:
    path: str  # not a Path: a put of 100,000 files holds one per file
    name: str
    stat: os.stat_result


def _file_stat(st: os.stat_result) -> FileStat:
    # The whole st_mode, type bits included: that is how a stored symlink is told from a file.
    return FileStat(st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns)


def _is_unchanged(previous: VersionRecord | None, st: os.stat_result) -> bool:
    if previous is None:
        return False
    recorded = previous.stat
    return (recorded.size == st.st_size and recorded.mtime_ns == st.st_mtime_ns
            and recorded.inode == st.st_ino and recorded.ctime_ns == st.st_ctime_ns)


PathArgument = str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]


def path_and_name(item: PathArgument) -> tuple[Path, str]:
    """The path of a put argument and the name it is stored under (raises InvalidArgumentError
    for a name that cannot be stored)."""
    raw, as_name = item if isinstance(item, tuple) else (item, None)
    return Path(raw), normalize_name(as_name if as_name is not None else os.fspath(raw))


def collect_sources(paths: Iterable[PathArgument]) -> tuple[list[_Source], list[FileResult]]:
    """Expand files and folders into the files to put; report what cannot be put.

    Each item is a path (stored under its own normalised name) or a (path, name)
    pair. Symlinks are stored as links (their target is the content; they are never
    followed). Sockets, FIFOs and devices are skipped with an error result: a backup
    that silently left them out would be a surprise at restore time."""
    sources: list[_Source] = []
    problems: list[FileResult] = []
    for item in paths:
        try:
            path, name = path_and_name(item)
        except InvalidArgumentError as error:
            raw = os.fspath(item[0] if isinstance(item, tuple) else item)
            problems.append(FileResult(raw, "error", path=raw, error=str(error)))
            continue
        try:
            st = path.lstat()
        except OSError as error:
            problems.append(FileResult(name, "error", path=str(path), error=error.strerror or str(error)))
            continue
        if stat_module.S_ISDIR(st.st_mode):
            _walk_folder(path, name, sources, problems)
        elif _is_storable(st):
            sources.append(_Source(os.fspath(path), name, st))
        else:
            problems.append(FileResult(name, "error", path=str(path), error=f"not a regular file ({_kind(st)}); skipped"))
    return sources, problems


def _is_storable(st: os.stat_result) -> bool:
    return stat_module.S_ISREG(st.st_mode) or stat_module.S_ISLNK(st.st_mode)


def _walk_folder(folder: Path, folder_name: str, sources: list[_Source], problems: list[FileResult]) -> None:
    def on_error(error: OSError) -> None:
        where = error.filename or str(folder)
        problems.append(FileResult(where, "error", path=where, error=f"cannot read folder: {error.strerror}"))

    for directory, subdirs, files in os.walk(folder, onerror=on_error):
        subdirs.sort()
        relative_dir = os.path.relpath(directory, folder)
        for file_name in sorted(files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]):
            full = os.path.join(directory, file_name)
            relative = file_name if relative_dir == "." else f"{relative_dir}/{file_name}"
            try:
                name = normalize_name(f"{folder_name}/{relative}")
                st = os.lstat(full)
            except InvalidArgumentError as error:
                problems.append(FileResult(full, "error", path=full, error=str(error)))
                continue
            except OSError as error:
                problems.append(FileResult(full, "error", path=full, error=error.strerror or str(error)))
                continue
            if _is_storable(st):
                sources.append(_Source(full, name, st))
            elif not stat_module.S_ISDIR(st.st_mode):
                problems.append(FileResult(name, "error", path=full, error=f"not a regular file ({_kind(st)}); skipped"))


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, label in ((stat_module.S_ISLNK, "symlink"), (stat_module.S_ISFIFO, "FIFO"),
                        (stat_module.S_ISSOCK, "socket"), (stat_module.S_ISCHR, "character device"),
                        (stat_module.S_ISBLK, "block device"), (stat_module.S_ISDIR, "folder")):
        if test(mode):
            return label
    return "special file"


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

    def __init__(self, store: "Store", *, workers: int | None = None, at_ns: int | None = None):
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
        interval = getattr(self.catalog, "lease_seconds", DEFAULT_LEASE_SECONDS) / 4
        while not self._stop_heartbeat.wait(interval):
            try:
                self.catalog.heartbeat(self.session)
            except Exception:  # noqa: BLE001 - a missed heartbeat only shortens the lease
                pass

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

    def add_stream(self, stream: BinaryIO, name: str, stat: FileStat | None,
                   on_bytes: Callable[[int], None] | None = None) -> _PendingFile:
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
            for chunk_id, chunk in zip(ids, chunks):
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
        file_stat = stat if stat is not None else FileStat(size, time.time_ns(), stat_module.S_IFREG | 0o644)
        if file_stat.size != size:
            self.discard(result)
            raise _ChangedWhileReading(f"size changed while reading ({file_stat.size} -> {size} bytes)")
        result.size = size
        pages = recipe.finish()
        return _PendingFile(result, NewVersion(name, file_stat, file_digest.digest(), recipe.count, pages))

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
        if self.store.encrypted:
            # Verify after encrypting, before the chunk counts as stored (restic does the
            # same): a fault in compression or encryption must not go unnoticed until restore.
            if self.store.hasher.chunk_id(self.store.codec.decode(chunk_id, blob)) != chunk_id:
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
        return (len(self._pending) >= COMMIT_EVERY_FILES or self._pending_bytes >= COMMIT_EVERY_BYTES
                or time.monotonic() - self._last_commit >= COMMIT_EVERY_SECONDS)

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
        for item, outcome in zip(pending, outcomes):
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


def put_paths(store: "Store", paths: Iterable[PathArgument], *, force_read: bool = False,
              on_result: Callable[[FileResult], None] | None = None,
              on_progress: Callable[[Progress], None] | None = None, at_ns: int | None = None) -> PutSummary:
    """Put files and folders. Every file gets a FileResult; unreadable ones an error result.
    at_ns: the time the new versions are recorded at (see Writer)."""
    started = time.monotonic()
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

    writer = Writer(store, at_ns=at_ns)
    try:
        for source in sources:
            progress(source.name)
            if not force_read and _is_unchanged(latest.get(source.name), source.stat):
                report([FileResult(source.name, "unchanged", size=source.stat.st_size,
                                   version=latest[source.name].version, path=source.path)])
                done_bytes += source.stat.st_size
            else:
                before = done_bytes
                try:
                    pending = _put_file(writer, source, on_bytes)
                    writer.queue(pending)
                except (OSError, _ChangedWhileReading, SourceError) as error:
                    message = getattr(error, "strerror", None) or str(error)
                    report([FileResult(source.name, "error", size=source.stat.st_size, path=source.path,
                                       error=message)])
                done_bytes = before + source.stat.st_size
            done_files += 1
            if writer.commit_due():
                report(writer.commit())
        report(writer.commit())
    finally:
        writer.close()
    progress(None)
    summary.seconds = time.monotonic() - started
    return summary


def _latest_versions(store: "Store", sources: list[_Source]) -> dict[str, VersionRecord]:
    """Latest versions of the names a put may touch, read once (not one query per file)."""
    if not sources:
        return {}
    wanted = {source.name for source in sources}
    common = os.path.commonpath([source.name for source in sources]) if len(sources) > 1 else sources[0].name
    prefix = normalize_prefix(common.replace(os.sep, "/"))
    return {record.name: record for record in store.catalog.list_versions(prefix) if record.name in wanted}


def _put_file(writer: Writer, source: _Source, on_bytes) -> _PendingFile:
    if stat_module.S_ISLNK(source.stat.st_mode):
        return _put_symlink(writer, source)
    try:
        handle = open(source.path, "rb", buffering=0)
    except OSError as error:
        raise SourceError(f"cannot open: {error.strerror}") from None
    with handle:
        before = os.fstat(handle.fileno())
        if not stat_module.S_ISREG(before.st_mode):
            raise SourceError("not a regular file")
        pending = writer.add_stream(handle, source.name, _file_stat(before), on_bytes)
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        writer.discard(pending.result)
        raise _ChangedWhileReading("file changed while it was read; not stored (put it again)")
    pending.result.path = source.path
    return pending


def _put_symlink(writer: Writer, source: _Source) -> _PendingFile:
    """A symlink is stored as a version whose content is its target and whose mode says link."""
    try:
        target = os.fsencode(os.readlink(source.path))
        st = os.lstat(source.path)
    except OSError as error:
        raise SourceError(f"cannot read link: {error.strerror}") from None
    if not stat_module.S_ISLNK(st.st_mode):
        raise _ChangedWhileReading("changed from a symlink while it was read; not stored (put it again)")
    pending = writer.add_stream(io.BytesIO(target), source.name, _file_stat(st))
    pending.result.path = source.path
    return pending


def put_stream(store: "Store", stream: BinaryIO, name: str, *, at_ns: int | None = None) -> FileResult:
    """Put one stream (stdin) of unknown length under name, its version recorded at at_ns (see Writer)."""
    name = normalize_name(name)
    writer = Writer(store, at_ns=at_ns)
    try:
        pending = writer.add_stream(stream, name, None)
        writer.queue(pending)
        results = writer.commit()
    finally:
        writer.close()
    return results[0]


"""get and restore: fetch chunks in parallel, verify each, write them in order.

Every chunk is re-hashed against its ID before a byte of it is written, and the
whole file against its recorded digest at the end. Files are written to a
temporary name and renamed into place only when both checks pass, so a corrupt
store never leaves a silently wrong file behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat as stat_module
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from chunkstore.backends.catalog import VersionRecord
from chunkstore.backends.packs import PackReader
from chunkstore.core import recipes
from chunkstore.core.batching import fetch_in_order
from chunkstore.core.chunkcache import CACHE_BYTES, ChunkCache
from chunkstore.core.config import chunk_key
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.errors import (
    BlobNotFoundError,
    ChunkMismatchError,
    ChunkstoreError,
    CorruptObjectError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    MissingChunkError,
    NameNotFoundError,
    NotFoundError,
    UnsafePathError,
)
from chunkstore.operations.contentpages import reread_page, stored_pages
from chunkstore.operations.context import StoreContext
from chunkstore.operations.pageread import PageReader

# Chunks fetched ahead of the one being written: enough to keep every core (and, on
# S3, enough requests) busy, while bounding memory to window x max chunk size.
READ_AHEAD_CHUNKS = 32
# Chunks are gathered into batches of this many bytes (_BatchWriter), each written with one write and handed to
# the whole-file digest thread at once: a hand-off per chunk cost the main thread a future and a
# thread wake-up 12,206 times a GB, and a write per 8 KiB chunk (format 2) 0.27 s of a 1.06 s
# restore of 154 MiB (cProfile, generated versioned archives); now ~1,000 of each a GB.
WRITE_BATCH_BYTES = 1024 * 1024
# restore reads a file of at most this size whole in a pool thread (catalog reads, chunk
# reads, checks, digest), up to FILES_AHEAD files ahead of the one being written, so that
# creating files overlaps with reading the next ones. Restoring 8,626 source files (155 MB)
# spent a third of its time in open(O_CREAT) and another third in per-file catalog reads
# and thread hand-offs, one file after the other. Memory: FILES_AHEAD x SMALL_FILE_BYTES.
SMALL_FILE_BYTES = 1024 * 1024
FILES_AHEAD = 32


def iter_recipe(store: StoreContext, digest: bytes) -> Iterator[recipes.RecipeEntry]:
    for page in store.catalog.recipe_pages(digest):
        yield from recipes.decode_page(page)


def read_chunk(store: StoreContext, chunk_id: bytes, expected_length: int | None = None) -> bytes:
    """Fetch, decode and check one chunk. Raises an IntegrityError naming the chunk."""
    try:
        blob = store.blobs.get(chunk_key(chunk_id))
    except BlobNotFoundError:
        raise MissingChunkError(f"chunk {chunk_id.hex()} is missing from the store") from None
    try:
        data = store.codec.decode(chunk_id, blob)
    except CorruptObjectError as error:
        raise CorruptObjectError(f"chunk {chunk_id.hex()} is corrupt: {error}") from None
    store.hasher.check_chunk(chunk_id, data)
    if expected_length is not None and len(data) != expected_length:
        raise ChunkMismatchError(f"chunk {chunk_id.hex()} is {len(data)} bytes, its recipe says {expected_length}")
    return data


class ChunkFetcher:
    """Writes files from their recipes: a thread pool fetches, decodes and verifies chunks
    ahead of the writer, a second thread keeps the whole-file digest (blake3 releases the
    GIL, so it runs beside the writes), and recently verified chunks are kept, since the
    versions of a file share most of their chunks.

    Measured on the 1 GB versioned-archive benchmark: the main thread spent 1.0 s writing
    and 0.8 s hashing the whole file; the digest thread takes the second off it."""

    def __init__(self, store: StoreContext):
        self.store = store
        self.pool = ThreadPoolExecutor(store.workers, thread_name_prefix="chunkstore-get")
        self.read_ahead = max(READ_AHEAD_CHUNKS, store.workers)
        self.digester = ThreadPoolExecutor(1, thread_name_prefix="chunkstore-digest")
        self._cache = ChunkCache()
        # Storage format 2 reads packs through one reader, whose pack tables and cache are kept
        # for the fetcher's life: a restore of many files reads each table once.
        self._pack_reader = (
            PackReader(store.blobs, store.packs, cache=self._cache) if store.storage_format == 2 else None
        )
        self._pages = (
            PageReader(self._pack_reader, store.chunk_id_key, reread_page=partial(reread_page, store.catalog))
            if self._pack_reader
            else None
        )

    def __enter__(self) -> ChunkFetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.digester.shutdown(wait=True)
        if self._pack_reader is not None:
            self._pack_reader.close()

    def content_chunks(self, digest: bytes) -> Iterator[bytes]:
        """The content's chunks in order, each checked against its ID, fetched ahead of the
        caller: format 1 objects by the pool, format 2 records by the pack reader's coalesced
        ranged reads; either way, chunks met again in the cache are not read again."""
        if self._pages is not None:
            yield from self._pages.read(stored_pages(self.store.catalog, digest))
            return
        for entry, data in fetch_in_order(iter_recipe(self.store, digest), self._fetch, self.read_ahead):
            self._cache.add(entry.chunk_id, data)
            yield data

    def _fetch(self, entry: recipes.RecipeEntry) -> Future:
        cached = self._cache.get(entry.chunk_id)
        if cached is not None and len(cached) == entry.length:
            done: Future = Future()
            done.set_result(cached)
            return done
        return self.pool.submit(read_chunk, self.store, entry.chunk_id, entry.length)

    def write_verified(
        self, record: VersionRecord, output: BinaryIO, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Write the content of record to output; raise IntegrityError (naming the file) on any mismatch."""
        file_digest = self.store.hasher.file_hasher()
        written = 0
        with naming_errors(record), _BatchWriter(output, file_digest, self.digester) as batches:
            for data in self.content_chunks(record.digest):
                flushed = batches.add(data)
                written += len(data)
                if on_bytes and flushed:
                    on_bytes(flushed)
            flushed = batches.finish()
        if on_bytes and flushed:
            on_bytes(flushed)
        check_whole(record, written, file_digest.digest())

    def read_whole(self, record: VersionRecord) -> Future:
        """The verified content of a small file (SMALL_FILE_BYTES), read by a pool thread.
        Its errors do not name the file (the content may be another name's too): read the
        result within naming_errors."""
        return self.pool.submit(self._verified_content, record)

    def _verified_content(self, record: VersionRecord) -> bytes:
        if self._pages is not None:
            # Read in this pool thread (the content is small), not handed to the reader's threads.
            chunks = self._pages.read(stored_pages(self.store.catalog, record.digest), in_this_thread=True)
        else:
            chunks = (
                read_chunk(self.store, entry.chunk_id, entry.length) for entry in iter_recipe(self.store, record.digest)
            )
        data = b"".join(chunks)
        file_digest = self.store.hasher.file_hasher()
        file_digest.update(data)
        check_whole(record, len(data), file_digest.digest())
        return data


class _BatchWriter:
    """Gathers chunks into batches of WRITE_BATCH_BYTES, each written with one write and handed to
    the whole-file digest thread. Two buffers, each reused once the digest thread is done with
    it. A new 1 MiB bytes object a batch (b"".join), fresh memory to fault in on the thread that
    plans reads, took 1.06 s of a 6.7 s restore of the 10 Django sdists under cProfile (~1.9 ms
    a MiB); copying 8 KiB chunks into a buffer already mapped takes ~60 us a MiB (timed alone).
    A chunk larger than a buffer is written and digested as it is."""

    def __init__(self, output: BinaryIO, file_digest, digester: ThreadPoolExecutor):
        self._output = output
        self._file_digest = file_digest
        self._digester = digester
        self._buffers = [memoryview(bytearray(WRITE_BATCH_BYTES)) for _ in range(2)]
        self._digesting: list[Future | None] = [None, None]
        self._handed_off = False
        self._current = 0
        self._fill = 0

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, *_) -> None:
        # No digest update may run on a buffer once this returns.
        wait([pending for pending in self._digesting if pending is not None])

    def add(self, data: bytes) -> int:
        """Take the next chunk; return how many bytes this wrote to the output (0 while the
        batch fills)."""
        size = len(data)
        flushed = self._flush() if self._fill + size > WRITE_BATCH_BYTES else 0
        if size > WRITE_BATCH_BYTES:
            self._wait_for_digests()  # the digest takes the bytes in order
            self._output.write(data)
            self._file_digest.update(data)
            return flushed + size
        self._buffers[self._current][self._fill : self._fill + size] = data
        self._fill += size
        return flushed

    def finish(self) -> int:
        """Write the last batch and wait until the digest has taken every byte; return how many
        bytes this wrote."""
        flushed = self._flush(last=True)
        self._wait_for_digests()
        return flushed

    def _flush(self, *, last: bool = False) -> int:
        flushed = self._fill
        if not flushed:
            return 0
        batch = self._buffers[self._current][:flushed]
        self._output.write(batch)
        self._fill = 0
        if last and not self._handed_off:
            # All of a small file: hashing it here costs less than a hand-off.
            self._file_digest.update(batch)
            return flushed
        self._handed_off = True
        self._digesting[self._current] = self._digester.submit(self._file_digest.update, batch)
        self._current ^= 1
        # The other buffer is filled next: its digest update must be done (which also keeps at
        # most two batches in memory, however far the digest falls behind).
        pending, self._digesting[self._current] = self._digesting[self._current], None
        if pending is not None:
            pending.result()
        return flushed

    def _wait_for_digests(self) -> None:
        for number, pending in enumerate(self._digesting):
            if pending is not None:
                self._digesting[number] = None
                pending.result()


@contextlib.contextmanager
def naming_errors(record: VersionRecord) -> Iterator[None]:
    """Integrity errors name the file and version they were found in; a recipe or chunk
    the catalog cannot find is an integrity error of that file too."""
    try:
        yield
    except IntegrityError as error:
        # The same error, its message prefixed: its class and attributes (a missing pack's page
        # and pack IDs) stay, whatever its constructor takes.
        error.args = (f"{record.name} (version {record.version}): {error}",)
        raise error from None
    except NotFoundError as error:
        raise IntegrityError(f"{record.name} (version {record.version}): {error}") from None


def check_whole(record: VersionRecord, length: int, digest: bytes) -> None:
    if length != record.size or digest != record.digest:
        raise DigestMismatchError("restored bytes do not match the recorded file digest")


def get_to_stream(
    store: StoreContext,
    name: str,
    output: BinaryIO,
    *,
    version: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> VersionRecord:
    """Write a stored file to an open stream (stdout). Every chunk is verified before it is
    written, so a corrupt store can cut the output short but never put wrong bytes in it."""
    record = store.catalog.get_version(normalize_name(name), version)
    _write_stream(store, record, output, on_progress)
    return record


def _write_stream(
    store: StoreContext, record: VersionRecord, output: BinaryIO, on_progress: Callable[[int], None] | None
) -> None:
    with ChunkFetcher(store) as fetcher:
        fetcher.write_verified(record, output, on_progress)
    output.flush()


def get_to_path(
    store: StoreContext,
    name: str,
    path: Path,
    *,
    version: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> VersionRecord:
    """Write a stored file to path, atomically: the file appears only once fully verified.

    A path that is a device, a FIFO or a socket (/dev/null, /dev/stdout) is written into as a
    stream is (get_to_stream): a rename over it would replace the device node with a file. A
    symlink is followed: the file it leads to is replaced, not the link."""
    record = store.catalog.get_version(normalize_name(name), version)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = stat_module.S_IFREG  # created as a regular file
    except OSError as error:
        raise ChunkstoreError(f"cannot write {path}: {error.strerror}") from None
    if stat_module.S_ISDIR(mode):
        raise ChunkstoreError(f"{path} is a folder; give a file path to -o")
    if not stat_module.S_ISREG(mode):
        with open(path, "wb") as output:
            _write_stream(store, record, output, on_progress)
        return record
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        raise ChunkstoreError(f"cannot write {path}: the folder {path.parent} does not exist") from None
    try:
        with ChunkFetcher(store) as fetcher:
            _write_file(record, folder, path.name, lambda handle: fetcher.write_verified(record, handle, on_progress))
    finally:
        os.close(folder)
    return record


# The mode bits restore sets. Set-user-ID and set-group-ID are left out: ownership is not
# restored, so they would hand the restoring user's (root's) rights to whoever stored the
# file (tar and restic drop them too unless they restore the owner).
RESTORED_MODE_BITS = 0o7777 & ~(stat_module.S_ISUID | stat_module.S_ISGID)


def _temporary_name() -> str:
    # Short and fixed-length whatever the final name: a name of NAME_MAX (255) bytes
    # still gets a temporary name in the same folder.
    return f".{uuid.uuid4().hex[:16]}.chunkstore-tmp"


def _write_file(record: VersionRecord, folder: int, name: str, write: Callable[[BinaryIO], None]) -> None:
    """Create name in the folder open as descriptor folder with what write() puts in it, its
    mode and its mtime, or leave nothing. Nothing is resolved by path: a folder swapped for a
    symlink meanwhile cannot redirect the file elsewhere."""
    temporary = _temporary_name()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.chmod(descriptor, (record.stat.mode & RESTORED_MODE_BITS) or 0o644)
            os.utime(descriptor, ns=(record.stat.mtime_ns, record.stat.mtime_ns))
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink_quietly(temporary, folder)
        raise


def _write_bytes(data: bytes, handle: BinaryIO) -> None:
    handle.write(data)


def _unlink_quietly(name: str, folder: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


@dataclass
class RestoreResult:
    name: str
    path: str
    size: int
    version: int
    error: str | None = None
    exit_code: int = 0


@dataclass
class RestoreSummary:
    results: list[RestoreResult] = field(default_factory=list)

    @property
    def errors(self) -> list[RestoreResult]:
        return [result for result in self.results if result.error]

    @property
    def bytes(self) -> int:
        return sum(result.size for result in self.results if not result.error)


def restore(
    store: StoreContext,
    prefix: str,
    destination: Path,
    *,
    as_of_ns: int | None = None,
    on_result: Callable[[RestoreResult], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RestoreSummary:
    """Restore the latest version of every name under prefix into destination/NAME, or with
    as_of_ns the version each name had then (names deleted by then are left out).

    Integrity errors are reported per file and the rest is still restored; names
    that would land outside destination or pass through a symlink are refused."""
    prefix = normalize_prefix(prefix)
    records = list(store.catalog.list_versions(prefix, as_of_ns=as_of_ns))
    if not records:
        missing = f"no stored file under {prefix!r}" if prefix else "the store holds no files"
        raise NameNotFoundError(missing + (" at that time" if as_of_ns is not None else ""))
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    summary = RestoreSummary()
    with ChunkFetcher(store) as fetcher, _RestoreFolders(root) as folders:
        for record, content in with_small_contents_ahead(fetcher, records):
            result = RestoreResult(record.name, str(root / record.name), record.size, record.version)
            try:
                _check_safe(record.name)
                folder_name, _, base_name = record.name.rpartition("/")
                folder = folders.open(folder_name, record.name)
                if stat_module.S_ISLNK(record.stat.mode):
                    _write_symlink(fetcher, record, folder, base_name)
                elif content is not None:
                    _refuse_symlink_at(folder, base_name, record.name)
                    with naming_errors(record):
                        data = content.result()
                    _write_file(record, folder, base_name, partial(_write_bytes, data))
                    if on_progress:
                        on_progress(len(data))
                else:
                    _refuse_symlink_at(folder, base_name, record.name)
                    write = partial(fetcher.write_verified, record, on_bytes=on_progress)
                    _write_file(record, folder, base_name, write)
            except (IntegrityError, UnsafePathError) as error:
                result.error = str(error)
                result.exit_code = error.exit_code
            except OSError as error:
                result.error = f"{record.name}: {error.strerror or error}"
                result.exit_code = 1
            summary.results.append(result)
            if on_result:
                on_result(result)
    return summary


def with_small_contents_ahead(
    fetcher: ChunkFetcher, records: Iterable[VersionRecord]
) -> Iterator[tuple[VersionRecord, Future | None]]:
    """Each record with, for a small regular file, the future of its verified content,
    requested FILES_AHEAD files (or one per worker) before the record's turn. A content
    met again within CACHE_BYTES of small files (the same file under several names) is
    read once."""
    ahead: deque[tuple[VersionRecord, Future | None]] = deque()
    files_ahead = max(FILES_AHEAD, fetcher.store.workers)
    recent: OrderedDict[bytes, tuple[Future, int]] = OrderedDict()
    recent_bytes = 0
    try:
        for record in records:
            content = None
            if stat_module.S_ISREG(record.stat.mode) and record.size <= SMALL_FILE_BYTES:
                if record.digest in recent:
                    recent.move_to_end(record.digest)
                    content, _ = recent[record.digest]
                else:
                    content = fetcher.read_whole(record)
                    recent[record.digest] = (content, record.size)
                    recent_bytes += record.size
                    while recent_bytes > CACHE_BYTES:
                        recent_bytes -= recent.popitem(last=False)[1][1]
            ahead.append((record, content))
            if len(ahead) > files_ahead:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()
    finally:
        for _, content in ahead:
            if content is not None:
                content.cancel()


def _check_safe(name: str) -> None:
    """Names are normalised when stored; one that is not (a damaged or hostile catalog) is refused."""
    try:
        normal = normalize_name(name)
    except InvalidArgumentError as error:
        raise UnsafePathError(f"{name!r}: {error}; refusing to restore it") from None
    if normal != name:
        raise UnsafePathError(f"{name!r}: stored name is not in normal form; refusing to restore it")


class _RestoreFolders:
    """Descriptors of the folders of one restore, each opened relative to its parent's
    descriptor with O_NOFOLLOW (and created the same way), starting from the destination.

    Every file, link and folder is then made relative to an open descriptor, never by a path
    string resolved again: a folder that someone swaps for a symlink during the restore
    fails with ELOOP when it is next opened, and a folder already open stays the folder
    that was checked, wherever it is moved."""

    # Names come sorted, so the folder being filled and its ancestors are what is reused:
    # a few dozen descriptors hold a deep tree's path, far below the usual limit of 1,024.
    MAX_OPEN = 64

    def __init__(self, root: Path):
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self._open: OrderedDict[str, int] = OrderedDict()

    def __enter__(self) -> _RestoreFolders:
        return self

    def __exit__(self, *exc_info) -> None:
        for descriptor in self._open.values():
            os.close(descriptor)
        self._open.clear()
        os.close(self._root)

    def open(self, folder: str, name: str) -> int:
        """The descriptor of folder (a relative name, "" for the destination), creating the
        folders missing on the way; UnsafePathError (naming name) if any is a symlink or
        not a folder. The descriptor stays owned by this object."""
        if not folder:
            return self._root
        if folder in self._open:
            self._open.move_to_end(folder)
            return self._open[folder]
        # Down from the nearest open ancestor (a loop: names may nest a thousand folders deep).
        parts = folder.split("/")
        depth = len(parts) - 1
        while depth and "/".join(parts[:depth]) not in self._open:
            depth -= 1
        descriptor = self._open["/".join(parts[:depth])] if depth else self._root
        for level in range(depth + 1, len(parts) + 1):
            path = "/".join(parts[:level])
            descriptor = _open_or_make_folder(descriptor, parts[level - 1], path, name)
            self._open[path] = descriptor
            # The evicted one is never descriptor, just added: it is the most recent.
            while len(self._open) > self.MAX_OPEN:
                os.close(self._open.popitem(last=False)[1])
        return descriptor


def _open_or_make_folder(parent: int, part: str, folder: str, name: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(part, flags, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise _unsafe_folder(error, folder, name, parent, part) from None
    # Made meanwhile: opening it below checks what it is.
    with contextlib.suppress(FileExistsError):
        os.mkdir(part, dir_fd=parent)
    try:
        return os.open(part, flags, dir_fd=parent)
    except OSError as error:
        raise _unsafe_folder(error, folder, name, parent, part) from None


def _unsafe_folder(error: OSError, folder: str, name: str, parent: int, part: str) -> OSError | UnsafePathError:
    """UnsafePathError for a folder that O_NOFOLLOW|O_DIRECTORY refused; other errors as they are."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR):
        return error
    try:
        is_link = stat_module.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        is_link = error.errno == errno.ELOOP
    if is_link:
        return UnsafePathError(f"{name}: {folder} is a symlink; refusing to restore through it")
    return UnsafePathError(f"{name}: {folder} exists and is not a folder")


def _lstat_mode(folder: int, base_name: str) -> int | None:
    try:
        return os.stat(base_name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def _refuse_symlink_at(folder: int, base_name: str, name: str) -> None:
    """A regular file is not written where a symlink is: someone may have planted it there."""
    mode = _lstat_mode(folder, base_name)
    if mode is not None and stat_module.S_ISLNK(mode):
        raise UnsafePathError(f"{name}: {name} is a symlink; refusing to overwrite it")


def _write_symlink(fetcher: ChunkFetcher, record: VersionRecord, folder: int, base_name: str) -> None:
    """Recreate a stored symlink (its content is the target), atomically replacing what is at base_name.

    The link is created, never followed: a link pointing outside the restore folder is
    restored as such, and later names are still refused if they would pass through it."""
    target = io.BytesIO()
    fetcher.write_verified(record, target)
    mode = _lstat_mode(folder, base_name)
    if mode is not None and stat_module.S_ISDIR(mode):
        raise UnsafePathError(f"{record.name}: {record.name} is a folder; not replacing it with a symlink")
    temporary = _temporary_name()
    os.symlink(os.fsdecode(target.getvalue()), temporary, dir_fd=folder)
    try:
        os.utime(temporary, ns=(record.stat.mtime_ns, record.stat.mtime_ns), dir_fd=folder, follow_symlinks=False)
        os.rename(temporary, base_name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink_quietly(temporary, folder)
        raise

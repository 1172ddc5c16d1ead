"""Moving file bytes between HTTP and the store with bounded memory.

Uploads: the store's put reads a blocking file-like object in a worker thread;
RequestBody pulls the request body from the event loop piece by piece, so no more
than one read's worth of the body is ever held.

Downloads: a producer thread reads and verifies chunks (with a small read-ahead: chunk
objects in storage format 1, a few ranged GETs of packs in format 2) and hands the bytes
of the requested range to the event loop through a short queue, so at most a few chunks
(or pack reads) are in memory whatever the file size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import threading
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import anyio.from_thread

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.catalog import VersionRecord
from chunkstore.backends.packs import ChunkLocation, PackFormat, PackReader
from chunkstore.core.batching import fetch_in_order
from chunkstore.core.recipes import RecipeEntry
from chunkstore.errors import CorruptObjectError, DigestMismatchError, InvalidArgumentError
from chunkstore.operations.contentpages import reread_page, root_entries, segment_page
from chunkstore.operations.context import StoreContext
from chunkstore.operations.pageread import PageReader, StoredPage
from chunkstore.operations.read import check_whole, iter_recipe, naming_errors, read_chunk

# Chunks fetched ahead of the one being sent: keeps both cores busy on a local store
# and requests overlapping on S3, and bounds a download to this many chunks in memory.
READ_AHEAD_CHUNKS = 8
# A format 2 download reads its packs with at most this many ranged GETs in flight, each of at
# most PACK_READ_BYTES (unless one record is larger): 8 MiB of stored bytes per download, where get
# and restore, one per process, allow 64 MiB. A 300 MB download from a folder store (8 KiB chunks)
# ran at 150-220 MB/s with 4 or 8 GETs of 1 or 2 MiB, and grew the server's peak RSS by 17-39 MiB;
# 8 GETs of 8 MiB by 137-156 MiB and no faster. 8 in flight rather than 4 for S3, where each GET
# waits for its first byte.
PACK_GETS_IN_FLIGHT = 8
PACK_READ_BYTES = 1024 * 1024
# Chunks are handed to the event loop joined into pieces of at least this many bytes: each hand-over
# wakes the loop and a task. A 300 MB download of 8 KiB chunks ran at 26-55 MB/s one chunk a piece,
# 117-125 at 64 KiB, 162-187 at 256 KiB, 207-223 at 1 MiB (+10 MiB peak RSS); 64 KiB chunks of
# format 1 went from 155-168 to 238-245 MB/s at 256 KiB.
PIECE_BYTES = 256 * 1024
# Pieces waiting between the producer thread and the response.
QUEUE_PIECES = 4
# How often a producer blocked on a full queue checks whether the client has gone.
_STOP_POLL_SECONDS = 1.0


class UploadTooLarge(Exception):
    """The request body passed the server's upload size limit."""


class UploadStalled(Exception):
    """The request body brought no byte for longer than the body timeout."""


class RequestBody:
    """A blocking, read-only file over a request body that arrives on the event loop.

    A read that waits longer than idle_timeout for the next piece raises UploadStalled, so a
    client that stops sending cannot hold an upload slot. Only for use from a worker thread
    started by anyio (the store's put runs in one)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int, idle_timeout: float):
        self._chunks = chunks
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._buffer = bytearray()
        self._eof = False
        self.received = 0

    async def _next_piece(self) -> bytes:
        with anyio.move_on_after(self._idle_timeout) as waiting:
            async for piece in self._chunks:
                if piece:
                    return piece
            return b""
        assert waiting.cancelled_caught
        raise UploadStalled(f"no byte of the body arrived for {self._idle_timeout:g} s")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            # Reading the whole body at once is exactly what bounded memory forbids.
            raise InvalidArgumentError("RequestBody.read needs a size")
        while len(self._buffer) < size and not self._eof:
            piece = anyio.from_thread.run(self._next_piece)
            if not piece:
                self._eof = True
                break
            self.received += len(piece)
            if self.received > self._limit:
                raise UploadTooLarge(f"upload is larger than the limit of {self._limit} bytes")
            self._buffer += piece
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of a file."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


class RangeNotSatisfiable(Exception):
    pass


# HTTP numbers are ASCII digits only: str.isdigit and int() also take '²' or '٣'.
_DIGITS = re.compile(r"[0-9]+")
_BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*(?P<first>[0-9]*)-(?P<last>[0-9]*)\s*", re.IGNORECASE)


def parse_ascii_int(text: str) -> int | None:
    """The value of a header that must be a decimal number (Content-Length), or None."""
    return int(text) if _DIGITS.fullmatch(text) else None


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a Range header asks for, or None to send the whole file.

    Multiple ranges and malformed headers are ignored (the whole file is sent), as
    RFC 9110 allows; a well-formed range outside the file raises RangeNotSatisfiable."""
    match = _BYTE_RANGE.fullmatch(header or "")
    if match is None or not (match["first"] or match["last"]):
        return None
    if not match["first"]:
        suffix = int(match["last"])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return ByteRange(max(size - suffix, 0), size)
    start = int(match["first"])
    last = int(match["last"]) if match["last"] else None
    if start >= size or (last is not None and last < start):
        raise RangeNotSatisfiable()
    return ByteRange(start, size if last is None else min(last + 1, size))


def verified_pieces(
    store: StoreContext, record: VersionRecord, wanted: ByteRange, pool: ThreadPoolExecutor
) -> Generator[bytes, None, None]:
    """The bytes of wanted, in pieces of PIECE_BYTES or more (the last may be shorter), each
    chunk re-hashed before its bytes are yielded.

    Chunks before the range are skipped unread; the first and last are trimmed. A
    whole-file read also checks the file digest at the end. Errors name the file."""
    whole = wanted.start == 0 and wanted.end == record.size
    file_digest = store.hasher.file_hasher() if whole else None
    if store.storage_format == 2:
        chunks = _packed_chunks(store, record, wanted)
    else:
        chunks = _object_chunks(store, record.digest, wanted, pool)
    sent = 0
    pending: list[bytes] = []
    pending_bytes = 0
    with naming_errors(record), contextlib.closing(chunks):
        for chunk_start, data in chunks:
            if file_digest is not None:
                file_digest.update(data)
            low, high = max(wanted.start - chunk_start, 0), min(wanted.end - chunk_start, len(data))
            piece = data if (low, high) == (0, len(data)) else data[low:high]
            sent += len(piece)
            pending.append(piece)
            pending_bytes += len(piece)
            if pending_bytes >= PIECE_BYTES:
                yield b"".join(pending)
                pending, pending_bytes = [], 0
        if pending:
            yield b"".join(pending)
        if file_digest is not None:
            check_whole(record, sent, file_digest.digest())
        elif sent != wanted.length:
            raise DigestMismatchError("stored bytes do not match the recorded file digest")


def _object_chunks(
    store: StoreContext, digest: bytes, wanted: ByteRange, pool: ThreadPoolExecutor
) -> Generator[tuple[int, bytes]]:
    """Format 1: the chunks that hold bytes of wanted, each with its offset in the file, fetched
    READ_AHEAD_CHUNKS ahead by the pool; the recipe's lengths skip the chunks before wanted."""

    def chunks_in_range() -> Generator[tuple[RecipeEntry, int]]:
        offset = 0
        for entry in iter_recipe(store, digest):
            chunk_start, offset = offset, offset + entry.length
            if offset <= wanted.start:
                continue
            if chunk_start >= wanted.end:
                break
            yield entry, chunk_start

    def fetch(item: tuple[RecipeEntry, int]) -> Future:
        entry, _ = item
        return pool.submit(read_chunk, store, entry.chunk_id, entry.length)

    for (_, chunk_start), data in fetch_in_order(chunks_in_range(), fetch, READ_AHEAD_CHUNKS):
        yield chunk_start, data


def _packed_chunks(store: StoreContext, record: VersionRecord, wanted: ByteRange) -> Generator[tuple[int, bytes]]:
    """Format 2: the chunks that hold bytes of wanted, each with its offset in the file.

    The root's segment sizes skip the segments before wanted (their pages are not read); the
    pack tables' lengths skip the chunks of the first segment before wanted and stop the reads
    at its end, so a range of a few bytes costs a few chunks' GETs, not a whole segment's."""
    segments_start, pages = _pages_holding(store, record, wanted)
    packs = _WindowReader(
        store.blobs,
        store.packs,
        ByteRange(wanted.start - segments_start, wanted.end - segments_start),
        max_read_size=PACK_READ_BYTES,
        gets_in_flight=PACK_GETS_IN_FLIGHT,
    )
    with packs:
        offset = None
        reader = PageReader(packs, store.chunk_id_key, reread_page=functools.partial(reread_page, store.catalog))
        for data in reader.read(pages):
            if offset is None:
                offset = segments_start + packs.first_chunk_start
            yield offset, data
            offset += len(data)


def _pages_holding(store: StoreContext, record: VersionRecord, wanted: ByteRange) -> tuple[int, Iterator[StoredPage]]:
    """The offset in the file of the first segment that holds bytes of wanted, and the recipe
    pages of the segments that do, each read from the catalog when the reader reaches it."""
    recipe_pages = list(store.catalog.recipe_pages(record.digest))
    entries = root_entries(recipe_pages)
    if entries is None:
        return 0, iter([StoredPage(None, page, record.digest) for page in recipe_pages])
    total = sum(entry.plaintext_bytes for entry in entries)
    if total != record.size:
        raise CorruptObjectError(f"the content's root holds {total} bytes, the file has {record.size}")
    holding = []
    offset = 0
    for number, entry in enumerate(entries):
        segment_start, offset = offset, offset + entry.plaintext_bytes
        if offset > wanted.start and segment_start < wanted.end:
            holding.append((number, segment_start, entry))
    segments_start = holding[0][1] if holding else 0
    return segments_start, (segment_page(store.catalog, record.digest, number, entry) for number, _, entry in holding)


class _WindowReader(PackReader):
    """A PackReader whose read_chunks fetches only the chunks that hold bytes of window, counted
    from the first chunk it is asked for (a PageReader asks for all of its pages' chunks in one
    call); first_chunk_start is the offset of the first it fetches (set once that chunk's read is
    planned, before it is returned). The chunks outside are skipped unread, by their pack tables'
    lengths, as format 1's ranged reads skip chunks by the recipe's."""

    def __init__(self, blobs: BlobStore, packs: PackFormat, window: ByteRange, **options):
        super().__init__(blobs, packs, **options)
        self._window = window
        self.first_chunk_start = 0

    def read_chunks(self, locations: Iterable[ChunkLocation]) -> Iterator[tuple[ChunkLocation, bytes]]:
        return super().read_chunks(self._in_window(locations))

    def _in_window(self, locations: Iterable[ChunkLocation]) -> Iterator[ChunkLocation]:
        offset = 0
        for location in locations:
            chunk_start, offset = offset, offset + location.entry.plaintext_length
            if offset <= self._window.start:
                continue
            if chunk_start >= self._window.end:
                return
            if chunk_start <= self._window.start:
                self.first_chunk_start = chunk_start
            yield location


_END = object()


class PieceFeed:
    """Runs verified_pieces in its own thread and lets the event loop await each piece."""

    def __init__(self, pieces: Generator[bytes, None, None], loop: asyncio.AbstractEventLoop):
        self._pieces = pieces
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_PIECES)
        self._stop = threading.Event()
        threading.Thread(target=self._produce, name="chunkstore-download", daemon=True).start()

    def _produce(self) -> None:
        try:
            for piece in self._pieces:
                if not self._hand_over(piece):
                    return
            self._hand_over(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the event loop, which raises it
            self._hand_over(error)
        finally:
            self._pieces.close()

    def _hand_over(self, item) -> bool:
        """Queue item, waiting for room; False once the consumer has gone."""
        if self._stop.is_set():
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # the event loop has shut down
            return False
        while True:
            try:
                future.result(timeout=_STOP_POLL_SECONDS)
                return not self._stop.is_set()
            except concurrent.futures.TimeoutError:
                if self._stop.is_set():
                    future.cancel()
                    return False

    async def next(self) -> bytes | None:
        """The next piece, None at the end; raises what the producer raised."""
        item = await self._queue.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while not self._queue.empty():
            self._queue.get_nowait()

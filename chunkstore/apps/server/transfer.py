"""Moving file bytes between HTTP and the store with bounded memory.

Uploads: the store's put reads a blocking file-like object in a worker thread;
RequestBody pulls the request body from the event loop piece by piece, so no more
than one read's worth of the body is ever held.

Downloads: a producer thread reads and verifies chunks (with a small read-ahead)
and hands the bytes of the requested range to the event loop through a short queue,
so at most a few chunks are in memory whatever the file size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import AsyncIterator, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import anyio.from_thread

from chunkstore.backends.catalog import VersionRecord
from chunkstore.core.recipes import RecipeEntry
from chunkstore.errors import DigestMismatchError, InvalidArgumentError
from chunkstore.operations.context import StoreContext
from chunkstore.operations.read import check_whole, fetch_in_order, iter_recipe, naming_errors, read_chunk

# Chunks fetched ahead of the one being sent: keeps both cores busy on a local store
# and requests overlapping on S3, and bounds a download to this many chunks in memory.
READ_AHEAD_CHUNKS = 8
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
    """The bytes of wanted, chunk by chunk, each chunk re-hashed before it is yielded.

    Chunks before the range are skipped unread; the first and last are trimmed. A
    whole-file read also checks the file digest at the end. Errors name the file."""
    whole = wanted.start == 0 and wanted.end == record.size
    file_digest = store.hasher.file_hasher() if whole else None

    def chunks_in_range() -> Generator[tuple[RecipeEntry, int]]:
        """The entries whose chunks hold bytes of wanted, each with its chunk's offset in the file."""
        offset = 0
        for entry in iter_recipe(store, record.digest):
            chunk_start, offset = offset, offset + entry.length
            if offset <= wanted.start:
                continue
            if chunk_start >= wanted.end:
                break
            yield entry, chunk_start

    def fetch(item: tuple[RecipeEntry, int]) -> Future:
        entry, _ = item
        return pool.submit(read_chunk, store, entry.chunk_id, entry.length)

    sent = 0
    with naming_errors(record):
        for (entry, chunk_start), data in fetch_in_order(chunks_in_range(), fetch, READ_AHEAD_CHUNKS):
            if file_digest is not None:
                file_digest.update(data)
            low, high = max(wanted.start - chunk_start, 0), min(wanted.end - chunk_start, entry.length)
            piece = data if (low, high) == (0, len(data)) else data[low:high]
            sent += len(piece)
            yield piece
        if file_digest is not None:
            check_whole(record, sent, file_digest.digest())
        elif sent != wanted.length:
            raise DigestMismatchError("stored bytes do not match the recorded file digest")


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

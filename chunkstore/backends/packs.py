"""Packs in a blob store (storage format 2): a writer that fills and uploads them, a reader that
finds a pack's table and fetches runs of its records with ranged GETs, or a whole pack when half
of it or more is wanted.

docs/design/format-v2.md gives the design; chunkstore/core/packformat.py the bytes. A pack is
stored under `packs/<first 2 hex digits>/<32 hex digits of its ID>` with one BlobStore.put, whose
visibility is atomic (a folder writes a temporary file and renames it; S3 shows an object only
once its PUT has completed): a reader finds a whole pack or none, and a writer that dies leaves
no pack, at most a temporary file that LocalBlobStore.remove_stale_temporaries clears.

Given the catalog's pack index and the writer's session, the writer records each pack there as
the design's put protocol asks: PENDING, owned by the session, before its object is uploaded,
and PRESENT once flush() has made it durable. Either way it says where each chunk went
(StoredPack), and the caller records that (in recipe pages) after flush().
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.packindex import PackIndex, PackRecord
from chunkstore.core import packformat, pages
from chunkstore.core.crypto import Sealer
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec
from chunkstore.core.packformat import PACK_ID_SIZE, PackBuilder, PackEntry
from chunkstore.errors import (
    BlobNotFoundError,
    ChunkMismatchError,
    CorruptObjectError,
    IntegrityError,
    InvalidArgumentError,
    MissingChunkError,
    StoreWriteError,
)

PACK_KEY_PREFIX = "packs/"
SHARD_HEX_DIGITS = 2
# 65,536 PUTs per TiB stored, $0.33 at S3 list prices; the design's Parameters table.
PACK_TARGET_SIZE = 16 * 1024 * 1024
# Records of one pack less than this apart are read with one GET: 256 KiB costs ~2 ms at
# 100 MB/s, about one S3 request's latency, and restic-like packs of 16 MiB hold 64 such gaps.
COALESCE_GAP = 256 * 1024
# One GET reads at most this many bytes (unless a single record is larger), and at most
# GETS_IN_FLIGHT run at once: a reader holds at most 8 x 8 MiB of stored bytes (design, Restore).
MAX_READ_SIZE = 8 * 1024 * 1024
GETS_IN_FLIGHT = 8
# A pack whose records the locations ahead select to at least this share of its size is read
# whole, with one GET (design, Restore): the GET moves at most twice the bytes the records take,
# where ranges need a GET per 8 MiB and per gap of 256 KiB or more. benchmarks/packs.py, 9 packs
# of 16 MiB: read to 60%, 17 ranged GETs or 9 whole ones moving 3% more bytes; read to 100%, 25 or 9.
WHOLE_PACK_SHARE = 0.5
# How many locations read_chunks looks ahead: as many as a pack has entries at most, so a pack read
# from end to end is weighed whole when its first chunk is due. ~100 bytes a location (measured):
# with as many planned behind them, < 2 MB.
LOOK_AHEAD_LOCATIONS = packformat.MAX_ENTRIES


def pack_key(pack_id: bytes) -> str:
    hex_id = pack_id.hex()
    return f"{PACK_KEY_PREFIX}{hex_id[:SHARD_HEX_DIGITS]}/{hex_id}"


@dataclass(frozen=True)
class PackFormat:
    """What reading and writing packs takes from an open store: its chunk codec and hasher (a
    record is a format 1 chunk object), its maximum chunk size, and in an encrypted store the
    sealer of pack tables (Keys.pack_tables)."""

    codec: ObjectCodec
    hasher: Hasher
    max_chunk_size: int
    table_sealer: Sealer | None = None


@dataclass(frozen=True)
class ChunkLocation:
    """Where one chunk's record lies: in which pack, at which bytes; and the pack's size as
    stored when known, without which the pack is never read whole."""

    pack_id: bytes
    entry: PackEntry
    pack_size: int | None = None


@dataclass(frozen=True)
class StoredPack:
    """A pack that is in the blob store: its ID, its size as stored and its table."""

    pack_id: bytes
    size: int
    entries: list[PackEntry]

    def locations(self) -> Iterator[ChunkLocation]:
        return (ChunkLocation(self.pack_id, entry, self.size) for entry in self.entries)


def _decode_checked(packs: PackFormat, pack_id: bytes, entry: PackEntry, record: bytes) -> bytes:
    """The chunk's plaintext, decoded and re-hashed against its ID; errors name the pack."""
    try:
        data = packformat.decode_record(packs.codec, entry, record)
    except CorruptObjectError as error:
        raise CorruptObjectError(f"pack {pack_id.hex()}: chunk {entry.chunk_id.hex()} is corrupt: {error}") from None
    try:
        packs.hasher.check_chunk(entry.chunk_id, data)
    except ChunkMismatchError as error:
        raise ChunkMismatchError(f"pack {pack_id.hex()}: {error}") from None
    return data


class PackWriter:
    """Appends encoded chunk records (ObjectCodec.encode's bytes) to an open pack, and uploads
    each pack, once it reaches target_size or its entry limit, with one put from a background
    thread while the next pack fills.

    Memory: the open pack plus the one uploading. A full pack waits for the previous upload to
    finish before it is laid out (finish() joins its records: two copies for a moment), so at
    most 2 x (target_size + one record + table + trailer) = 2 x (16 MiB + 32 KiB + 393 KiB) =
    ~33 MiB at the defaults, whatever is written.

    Before a pack is uploaded it is parsed back and every record is decoded and re-hashed, so
    a fault in compression, encryption or layout never reaches the store. flush() uploads the
    open pack, waits, makes every upload durable (BlobStore.sync) and returns the packs stored
    since the last flush. Leaving a `with` block on an exception drops the open pack unwritten.

    With a pack index and a session, each pack is created PENDING for the session just before
    its upload, and flush() turns the packs PRESENT after the sync: a pack is never PRESENT
    before it is durable. If gc took the session for dead and doomed a pack meanwhile, flush()
    raises IndexItemChangedError, and the chunks of that pack must be stored again; a writer
    that dies leaves PENDING packs, which gc collects once their session has expired.
    """

    def __init__(
        self,
        blobs: BlobStore,
        packs: PackFormat,
        target_size: int = PACK_TARGET_SIZE,
        *,
        index: PackIndex | None = None,
        session: str | None = None,
    ):
        if (index is None) != (session is None):
            raise InvalidArgumentError(
                "a pack writer records its packs with both a pack index and a session, or neither"
            )
        self._blobs = blobs
        self._packs = packs
        self._target_size = target_size
        self._index = index
        self._session = session
        self._open: PackBuilder | None = None
        self._uploader = ThreadPoolExecutor(1, thread_name_prefix="chunkstore-pack-upload")
        self._uploading: Future[tuple[StoredPack, PackRecord | None]] | None = None
        self._stored: list[StoredPack] = []
        self._pending: list[PackRecord] = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()

    def add(self, chunk_id: bytes, record: bytes) -> pages.ChunkLocation:
        """Append a chunk's record to the open pack; return where it will be stored once the
        pack is (after flush() returns it)."""
        if self._open is None:
            self._open = PackBuilder(os.urandom(PACK_ID_SIZE), self._packs.max_chunk_size, self._packs.table_sealer)
        open_pack = self._open
        entry = open_pack.add(chunk_id, record)
        location = pages.ChunkLocation(open_pack.pack_id, len(open_pack.entries) - 1, entry.plaintext_length)
        if open_pack.size >= self._target_size or open_pack.full:
            self._upload_open_pack()
        return location

    def flush(self) -> list[StoredPack]:
        self._upload_open_pack()
        self._wait_for_upload()
        self._blobs.sync()
        pending, self._pending = self._pending, []
        if self._index is not None:
            for record in pending:
                self._index.pack_stored(record)
        stored, self._stored = self._stored, []
        return stored

    def close(self) -> None:
        """Drop the open pack and stop the upload thread (after the upload in progress, if any)."""
        self._open = None
        self._uploader.shutdown(wait=True)

    def _upload_open_pack(self) -> None:
        if self._open is None:
            return
        self._wait_for_upload()
        builder, self._open = self._open, None
        pack = builder.finish()
        del builder
        self._uploading = self._uploader.submit(self._check_and_put, pack)

    def _check_and_put(self, pack: bytes) -> tuple[StoredPack, PackRecord | None]:
        pack_id = pack[8 : 8 + PACK_ID_SIZE]
        entries = packformat.parse_pack(pack, pack_id, self._packs.max_chunk_size, self._packs.table_sealer)
        view = memoryview(pack)
        for entry in entries:
            _decode_checked(self._packs, pack_id, entry, bytes(view[entry.offset : entry.end]))
        pending = None
        if self._index is not None and self._session is not None:
            pending = self._index.create_pack(self._session, pack_id, len(pack), len(entries))
        self._blobs.put(pack_key(pack_id), pack)
        return StoredPack(pack_id, len(pack), entries), pending

    def _wait_for_upload(self) -> None:
        if self._uploading is None:
            return
        uploading, self._uploading = self._uploading, None
        try:
            stored, pending = uploading.result()
        except IntegrityError as error:
            raise type(error)(f"a pack did not survive encoding; it was not stored: {error}") from error
        except Exception as error:
            # Raised as a failure of the store, whatever the blob store raised.
            raise StoreWriteError(f"storing a pack failed: {error}") from error
        self._stored.append(stored)
        if pending is not None:
            self._pending.append(pending)


@dataclass
class _Read:
    """One GET: bytes [start, end) of a pack, or the whole pack (end is then its size), and the
    entries whose records it decodes, in ascending order."""

    pack_id: bytes
    start: int
    end: int
    entries: list[PackEntry]
    whole: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


class _Selection:
    """The records that locations select from one pack: by offset, each entry and how many of the
    locations select it (a chunk may repeat), and their bytes, each record counted once."""

    def __init__(self) -> None:
        self.entries: dict[int, PackEntry] = {}
        self.counts: dict[int, int] = {}
        self.size = 0

    def add(self, entry: PackEntry) -> None:
        count = self.counts.get(entry.offset, 0)
        if not count:
            self.entries[entry.offset] = entry
            self.size += entry.length
        self.counts[entry.offset] = count + 1

    def remove(self, entry: PackEntry) -> None:
        count = self.counts[entry.offset] - 1
        if count:
            self.counts[entry.offset] = count
        else:
            del self.counts[entry.offset], self.entries[entry.offset]
            self.size -= entry.length


class _LookAhead:
    """The next locations of a read_chunks call that no read serves yet, at most limit of them,
    with what they select from each pack: what the whole-pack rule weighs."""

    def __init__(self, locations: Iterable[ChunkLocation], limit: int):
        self._input = iter(locations)
        self._limit = limit
        self._locations: deque[ChunkLocation] = deque()
        self._selections: dict[bytes, _Selection] = {}
        self._fill()

    def __iter__(self) -> Iterator[ChunkLocation]:
        return iter(self._locations)

    def head(self) -> ChunkLocation | None:
        return self._locations[0] if self._locations else None

    def pop(self) -> None:
        location = self._locations.popleft()
        selection = self._selections[location.pack_id]
        selection.remove(location.entry)
        if not selection.counts:
            del self._selections[location.pack_id]
        self._fill()

    def selection(self, pack_id: bytes) -> _Selection | None:
        return self._selections.get(pack_id)

    def _fill(self) -> None:
        while len(self._locations) < self._limit:
            location = next(self._input, None)
            if location is None:
                return
            self._locations.append(location)
            selection = self._selections.get(location.pack_id)
            if selection is None:
                selection = self._selections[location.pack_id] = _Selection()
            selection.add(location.entry)


class _HeldRead:
    """A read submitted and not yet consumed: its chunks to come (by record offset) and how many
    planned locations still wait for one of them."""

    def __init__(self, read: _Read, decoding: Future[dict[int, bytes]]):
        self.read = read
        self.offsets = frozenset(entry.offset for entry in read.entries)
        self.waiting = 0
        self._decoding = decoding
        self._chunks: dict[int, bytes] | None = None

    def serves(self, location: ChunkLocation) -> bool:
        return location.pack_id == self.read.pack_id and location.entry.offset in self.offsets

    def serves_any_of(self, ahead: _LookAhead) -> bool:
        selection = ahead.selection(self.read.pack_id)
        return selection is not None and not self.offsets.isdisjoint(selection.counts)

    def chunk(self, entry: PackEntry) -> bytes:
        """The entry's plaintext, once the read is done (its error if it failed)."""
        if self._chunks is None:
            self._chunks = self._decoding.result()
        return self._chunks[entry.offset]

    def cancel(self) -> None:
        self._decoding.cancel()


class PackReader:
    """Reads pack tables and chunks from a blob store; every chunk comes back decoded and checked
    against its ID, every damage is an IntegrityError naming the pack."""

    def __init__(
        self,
        blobs: BlobStore,
        packs: PackFormat,
        *,
        gap: int = COALESCE_GAP,
        max_read_size: int = MAX_READ_SIZE,
        gets_in_flight: int = GETS_IN_FLIGHT,
    ):
        self._blobs = blobs
        self._packs = packs
        self._gap = gap
        self._max_read_size = max_read_size
        self._pool = ThreadPoolExecutor(gets_in_flight, thread_name_prefix="chunkstore-pack-read")
        self._gets_in_flight = gets_in_flight
        self._held_bytes_limit = gets_in_flight * max_read_size

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _get(self, pack_id: bytes, offset: int, length: int | None = None) -> bytes:
        try:
            return self._blobs.get(pack_key(pack_id), offset, length)
        except BlobNotFoundError:
            raise MissingChunkError(f"pack {pack_id.hex()} is missing from the store") from None

    def pack_size(self, pack_id: bytes) -> int:
        """A pack's size as stored, from a stat (a HEAD on S3)."""
        try:
            return self._blobs.stat(pack_key(pack_id)).size
        except BlobNotFoundError:
            raise MissingChunkError(f"pack {pack_id.hex()} is missing from the store") from None

    def read_table(self, pack_id: bytes, pack_size: int | None = None) -> list[PackEntry]:
        """The entries of a pack, from one ranged GET of its last TABLE_FETCH_BYTES.

        pack_size is the size the catalog recorded; without it the pack is stat'ed first (a
        HEAD on S3): the BlobStore interface reads ranges from an offset, not from the end."""
        if pack_size is None:
            pack_size = self.pack_size(pack_id)
        tail_start = max(0, pack_size - packformat.TABLE_FETCH_BYTES)
        tail = self._get(pack_id, tail_start)
        try:
            if len(tail) != pack_size - tail_start:
                raise CorruptObjectError(f"it is {tail_start + len(tail)} bytes, {pack_size} were recorded")
            return packformat.read_table(tail, pack_size, pack_id, self._packs.max_chunk_size, self._packs.table_sealer)
        except IntegrityError as error:
            raise CorruptObjectError(f"pack {pack_id.hex()} is damaged: {error}") from None

    def read_chunks(self, locations: Iterable[ChunkLocation]) -> Iterator[tuple[ChunkLocation, bytes]]:
        """Each location with its chunk's plaintext, in the order given.

        The reader looks LOOK_AHEAD_LOCATIONS locations ahead. When those select at least
        WHOLE_PACK_SHARE of a pack whose size they carry, the pack is read whole with one GET (once
        a call at most, and not while that would make a read held end early); otherwise
        neighbouring records of one pack (in ascending order, less than the gap apart) are read
        with one GET of at most max_read_size bytes. A location whose record a read still held has
        decoded (a repeated chunk) is served by it. GETs and decoding run in the reader's threads,
        at most gets_in_flight reads held ahead of the consumer and at most gets_in_flight x
        max_read_size bytes among them, a whole pack counting its size: memory stays bounded by
        that plus the decoded chunks of those reads. An error of the locations' iterable is raised
        when the look-ahead reaches it, before the chunks just ahead of it."""
        ahead = _LookAhead(locations, LOOK_AHEAD_LOCATIONS)
        planned: deque[tuple[ChunkLocation, _HeldRead]] = deque()
        held: list[_HeldRead] = []
        # A read ends once its planned locations are consumed, even if the look-ahead holds more
        # of its records (planning waited for room): those come in ranges, so no pack is read
        # whole twice.
        read_whole: set[bytes] = set()
        # The read the next location ahead needs, while the reads held leave no room for it.
        next_read: _Read | None = None
        serving: _HeldRead | None = None
        try:
            while True:
                while len(planned) < LOOK_AHEAD_LOCATIONS and (location := ahead.head()) is not None:
                    # Most locations are served by the read that served the one before.
                    if serving is None or not serving.serves(location):
                        serving = next((read for read in held if read.serves(location)), None)
                    if serving is None:
                        if next_read is None:
                            next_read = self._read_for(ahead, location, held, location.pack_id not in read_whole)
                        if not self._room_for(next_read, held):
                            break
                        serving = _HeldRead(next_read, self._pool.submit(self._fetch, next_read))
                        held.append(serving)
                        if next_read.whole:
                            read_whole.add(next_read.pack_id)
                        next_read = None
                    ahead.pop()
                    planned.append((location, serving))
                    serving.waiting += 1
                if not planned:
                    return
                location, read = planned.popleft()
                chunk = read.chunk(location.entry)
                read.waiting -= 1
                if not read.waiting:
                    held.remove(read)
                    if serving is read:
                        serving = None
                yield location, chunk
        finally:
            for read in held:
                read.cancel()

    def _room_for(self, read: _Read, held: list[_HeldRead]) -> bool:
        """Whether read may start beside the reads held; the first one always may."""
        return not held or (
            len(held) < self._gets_in_flight
            and sum(other.read.size for other in held) + read.size <= self._held_bytes_limit
        )

    def _read_for(self, ahead: _LookAhead, first: ChunkLocation, held: list[_HeldRead], may_read_whole: bool) -> _Read:
        """The read that serves first, the next location ahead, beside the reads held."""
        read = self._next_read(ahead, first, may_read_whole)
        if read.whole and not self._room_for(read, held) and any(other.serves_any_of(ahead) for other in held):
            # Waiting for room would end a read held before the locations ahead that it serves
            # are planned (packs interleaved chunk by chunk): this pack comes in ranges instead.
            # While planning waits nothing ahead moves, so the choice holds until room is made.
            return self._next_read(ahead, first, may_read_whole=False)
        return read

    def _next_read(self, ahead: _LookAhead, first: ChunkLocation, may_read_whole: bool) -> _Read:
        """The read that serves first, the next location ahead: its whole pack, or a run of records
        from first on."""
        pack_id = first.pack_id
        size = first.pack_size
        # A pack larger than the bytes all reads may hold (none at the defaults: 64 MiB against
        # packs of 16 MiB) is never read whole, so the bound holds whatever a pack's size.
        if (
            may_read_whole
            and size is not None
            and size <= self._held_bytes_limit
            and (selection := ahead.selection(pack_id)) is not None
            and selection.size >= WHOLE_PACK_SHARE * size
        ):
            return _Read(
                pack_id, 0, size, [selection.entries[offset] for offset in sorted(selection.entries)], whole=True
            )
        read = _Read(pack_id, first.entry.offset, first.entry.end, [first.entry])
        for location in islice(ahead, 1, None):
            entry = location.entry
            if (
                location.pack_id != pack_id
                or entry.offset < read.end
                or entry.offset - read.end >= self._gap
                or entry.end - read.start > self._max_read_size
            ):
                break
            read.entries.append(entry)
            read.end = entry.end
        return read

    def _fetch(self, read: _Read) -> dict[int, bytes]:
        data = self._get(read.pack_id, read.start, None if read.whole else read.size)
        if len(data) != read.size:
            what = "the pack" if read.whole else f"bytes {read.start}..{read.end}"
            raise CorruptObjectError(
                f"pack {read.pack_id.hex()} is damaged: {len(data)} bytes came back for {what}, "
                f"{read.size} were expected"
            )
        view = memoryview(data)
        return {
            entry.offset: _decode_checked(
                self._packs, read.pack_id, entry, bytes(view[entry.offset - read.start : entry.end - read.start])
            )
            for entry in read.entries
        }

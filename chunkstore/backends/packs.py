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

import itertools
import os
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Container, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.packindex import PackIndex, PackRecord
from chunkstore.core import compression, packformat, pages
from chunkstore.core.chunkcache import ChunkCache
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
# GETS_IN_FLIGHT run at once.
MAX_READ_SIZE = 8 * 1024 * 1024
GETS_IN_FLIGHT = 8
# What a reader holds: the stored bytes of its reads until they are decoded, and the plaintext of
# the chunks decoded and not yet handed out (design, Restore). Counted in stored bytes (8 x 8 MiB)
# instead, the 10 Django 4.2.1-4.2.10 sdists, whose records decode to ~4x their size, peaked at
# 307-408 MiB RSS restoring (~250 MB of it decoded chunks); restic peaks at 72 MiB. A restore adds
# the chunk cache's 64 MiB and ~50 MiB of interpreter and libraries; bound to 16 MiB, it peaked at
# 146-148 MiB, to 24 MiB at 154 MiB (`chunkstore restore`, 2 cores).
HELD_BYTES = 16 * 1024 * 1024
DECODE_THREADS = os.cpu_count() or 1
# A pack whose records the locations ahead select to at least this share of its size is read
# whole, with one GET (design, Restore): the GET moves at most twice the bytes the records take,
# where ranges need a GET per 8 MiB and per gap of 256 KiB or more. benchmarks/packs.py, 9 packs
# of 16 MiB: read to 60%, 17 ranged GETs or 9 whole ones moving 3% more bytes; read to 100%, 25 or 9.
WHOLE_PACK_SHARE = 0.5
# How many locations read_chunks looks ahead: as many as a pack has entries at most, so a pack read
# from end to end is weighed whole when its first chunk is due. ~100 bytes a location (measured):
# with as many planned behind them, < 2 MB.
LOOK_AHEAD_LOCATIONS = packformat.MAX_ENTRIES
# An empty mapping to look things up in where there are none (not a new dict each time).
_NONE_HELD: MappingProxyType = MappingProxyType({})
_entry_offset = attrgetter("offset")


def _follows(previous: ChunkLocation, location: ChunkLocation) -> bool:
    """Whether location's record starts in the same pack where previous's ends."""
    return location.pack_id == previous.pack_id and location.entry.offset == previous.entry.end


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


class ChunkLocation(NamedTuple):
    """Where one chunk's record lies: in which pack, at which bytes; and the pack's size as
    stored when known, without which the pack is never read whole. A tuple: a restore makes one
    for every chunk of every file, and a frozen dataclass's __init__ took ~3% of the GIL's time
    restoring the 10 Django sdists (py-spy)."""

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


def _decode_checked(packs: PackFormat, pack_id: bytes, entry: PackEntry, record: bytes | memoryview) -> bytes:
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


def _decode_all_checked(
    packs: PackFormat, pack_id: bytes, records: Sequence[tuple[PackEntry, bytes | memoryview]]
) -> list[bytes]:
    """_decode_checked of each (entry, record), in order, the records' zstd frames decoded together
    (ObjectCodec.decode_many). Any record that fails sends them all through _decode_checked one by
    one, so the error is the same as reading them one at a time."""
    try:
        plaintexts = packs.codec.decode_many((entry.chunk_id, record) for entry, record in records)
    except CorruptObjectError:
        plaintexts = None
    if plaintexts is not None:
        chunk_id = packs.hasher.chunk_id
        if all(
            len(record) == entry.length and len(data) == entry.plaintext_length and chunk_id(data) == entry.chunk_id
            for (entry, record), data in zip(records, plaintexts, strict=True)
        ):
            return plaintexts
    return [_decode_checked(packs, pack_id, entry, record) for entry, record in records]


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
        # A batch at a time: the plaintext of a whole pack held at once (~90 MB for 16 MiB of
        # source text) took put's peak RSS on the 10 Django sdists from 113 to 208 MiB.
        for part in compression.batch_slices([entry.plaintext_length for entry in entries]):
            records = [(entry, view[entry.offset : entry.end]) for entry in entries[part]]
            _decode_all_checked(self._packs, pack_id, records)
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

    @cached_property  # planning asks again at every chunk handed out while it waits for room
    def cost(self) -> int:
        """What it takes of the reader's bound at its peak: its range, then its chunks decoded."""
        return self.size + sum(entry.plaintext_length for entry in self.entries)


class _Selection:
    """The records that locations select from one pack: by offset, each entry and how many of the
    locations select it (a chunk may repeat)."""

    def __init__(self) -> None:
        self.entries: dict[int, PackEntry] = {}
        self.counts: dict[int, int] = {}

    def add(self, entry: PackEntry) -> None:
        count = self.counts.get(entry.offset, 0)
        if not count:
            self.entries[entry.offset] = entry
        self.counts[entry.offset] = count + 1

    def remove(self, entry: PackEntry) -> None:
        count = self.counts[entry.offset] - 1
        if count:
            self.counts[entry.offset] = count
        else:
            del self.counts[entry.offset], self.entries[entry.offset]


class _LookAhead:
    """The next locations of a read_chunks call that no read is planned for yet, at most limit of
    them, with what they select from each pack: what reads are planned from."""

    def __init__(self, locations: Iterable[ChunkLocation], limit: int):
        self._input = iter(locations)
        self._limit = limit
        self._locations: deque[ChunkLocation] = deque()
        self._selections: dict[bytes, _Selection] = {}
        self._fill()

    def head(self) -> ChunkLocation | None:
        return self._locations[0] if self._locations else None

    def pop(self) -> None:
        location = self._locations.popleft()
        selection = self._selections[location.pack_id]
        selection.remove(location.entry)
        if not selection.counts:
            del self._selections[location.pack_id]
        self._fill()

    def selection(self, pack_id: bytes) -> _Selection:
        """What the locations ahead select from a pack that one of them names."""
        return self._selections[pack_id]

    def selects(self, pack_id: bytes, offset: int) -> bool:
        """Whether a location ahead selects the record at offset in the pack."""
        selection = self._selections.get(pack_id)
        return selection is not None and offset in selection.counts

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
    """A read submitted whose records are not all handed out: for each record it still holds (by
    offset), how many planned locations wait for it. A read past the reader's bound (one record
    cut to less room than it takes) keeps none for the locations ahead, so it is held no longer
    than the locations planned for it."""

    def __init__(self, read: _Read, decoding: Future[Future[dict[int, bytes]]], *, past_budget: bool = False):
        self.read = read
        self._keeps_for_ahead = not past_budget
        self.waiting = dict.fromkeys((entry.offset for entry in read.entries), 0)
        self._plaintext_bytes = sum(entry.plaintext_length for entry in read.entries)
        self._decoding = decoding
        self._chunks: dict[int, bytes] | None = None

    @property
    def started(self) -> bool:
        """Whether the consumer has waited for its decoded chunks (the range's bytes are then freed)."""
        return self._chunks is not None

    @property
    def held_bytes(self) -> int:
        """What it counts against the reader's bound: the plaintext of the chunks it holds (all
        of them reserved as soon as it is planned, as the pool decodes them unasked), and its
        whole range until it is started."""
        return self._plaintext_bytes + (0 if self.started else self.read.size)

    def hand_out(self, entry: PackEntry, selected_ahead: bool) -> bytes:
        """The entry's plaintext for one planned location (the read's error if it failed). The
        record is dropped, its chunk freed, when no other planned location waits for it and no
        location ahead selects it (or the read is past the budget)."""
        if self._chunks is None:
            self._chunks = self._decoding.result().result()
        waiting = self.waiting[entry.offset] - 1
        if waiting or (selected_ahead and self._keeps_for_ahead):
            self.waiting[entry.offset] = waiting
            return self._chunks[entry.offset]
        del self.waiting[entry.offset]
        self._plaintext_bytes -= entry.plaintext_length
        return self._chunks.pop(entry.offset)

    def cancel(self) -> None:
        if not self._decoding.cancel() and self._decoding.done() and self._decoding.exception() is None:
            self._decoding.result().cancel()


class _HeldReads:
    """The reads of a read_chunks call that hold records not yet handed out, found by record: no
    record is held by two reads."""

    def __init__(self) -> None:
        self._by_pack: dict[bytes, dict[int, _HeldRead]] = {}
        self._reads: list[_HeldRead] = []
        # Kept as reads come and go: summed over the reads at every location planned, they took
        # ~1.5 s of a 7 s profiled restore of the Django sdists.
        self._held_bytes = 0
        self._not_started = 0

    def holder(self, location: ChunkLocation) -> _HeldRead | None:
        return self._by_pack.get(location.pack_id, _NONE_HELD).get(location.entry.offset)

    def offsets(self, pack_id: bytes) -> Container[int]:
        """The offsets of the records held in a pack."""
        return self._by_pack.get(pack_id, _NONE_HELD)

    def held_bytes(self) -> int:
        return self._held_bytes

    def not_started(self) -> int:
        return self._not_started

    def kept_bytes(self, ahead: _LookAhead) -> int:
        """The plaintext of the chunks held that locations ahead select: what stays held once
        every chunk planned is handed out."""
        return sum(
            entry.plaintext_length
            for read in self._reads
            for entry in read.read.entries
            if entry.offset in read.waiting and ahead.selects(read.read.pack_id, entry.offset)
        )

    def add(self, read: _HeldRead) -> None:
        self._reads.append(read)
        held = self._by_pack.setdefault(read.read.pack_id, {})
        for entry in read.read.entries:
            held[entry.offset] = read
        self._held_bytes += read.held_bytes
        self._not_started += 1

    def hand_out(self, location: ChunkLocation, read: _HeldRead, selected_ahead: bool) -> bytes:
        held_before, started_before = read.held_bytes, read.started
        chunk = read.hand_out(location.entry, selected_ahead)
        self._held_bytes += read.held_bytes - held_before
        self._not_started -= not started_before
        if location.entry.offset not in read.waiting:
            held = self._by_pack[location.pack_id]
            del held[location.entry.offset]
            if not held:
                del self._by_pack[location.pack_id]
            if not read.waiting:
                self._reads.remove(read)
        return chunk

    def cancel(self) -> None:
        for read in self._reads:
            read.cancel()


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
        held_bytes: int = HELD_BYTES,
        cache: ChunkCache | None = None,
    ):
        """read_chunks holds at most held_bytes, or gets_in_flight x max_read_size if that is less,
        of reads and decoded chunks (see there). cache, if given, keeps the chunks read_chunks
        hands out, and read_chunks reads no record whose chunk it holds (a restore of many
        versions decodes each shared chunk once)."""
        self._blobs = blobs
        self._cache = cache
        self._packs = packs
        self._gap = gap
        self._max_read_size = max_read_size
        self._pool = ThreadPoolExecutor(gets_in_flight, thread_name_prefix="chunkstore-pack-read")
        # Chunks are decoded in threads of their own, one a core: decoded in the GET threads (8),
        # the chunks handed out and kept by the chunk cache lay in 8 malloc arenas that freed
        # chunks fragment. Restoring the 10 Django sdists with a bound of 32 MiB peaked at 203 MiB
        # RSS so, at 168-176 MiB with 2 decoding threads (2 cores).
        self._decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="chunkstore-pack-decode")
        self._gets_in_flight = gets_in_flight
        self._held_bytes_limit = min(held_bytes, gets_in_flight * max_read_size)
        # A read takes at most its share of the bound, so that gets_in_flight of them run and
        # decode at once: a whole 16 MiB pack of the Django sdists decoded by one thread while the
        # consumer waited for it took ~40% of a restore (cProfile).
        self._read_cost_limit = max(1, self._held_bytes_limit // gets_in_flight)

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        # The GET threads first: a GET that finishes hands its bytes to the decoding threads.
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._decoders.shutdown(wait=True, cancel_futures=True)

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

        Reads are planned per pack over the next LOOK_AHEAD_LOCATIONS locations, however their
        runs interleave packs: when a location's record is held by no read, the records those
        locations select from its pack and no read holds are taken by offset. If they add up to
        at least WHOLE_PACK_SHARE of a pack whose size the locations carry, and the pack fits in
        the room the reads held will leave once the chunks planned are handed out, it is read
        whole with one GET; otherwise they are cut into runs wherever two lie the gap or more
        apart or a run would pass max_read_size bytes, and the run that holds the location's
        record is read with one GET. A read holds its records until the last location planned or
        ahead that selects each is handed out, so a pack's records in the look-ahead cost one GET
        per run, not one per switch of pack (a repeated chunk costs none).

        Memory: GETs and decoding run in the reader's threads. At most gets_in_flight reads are
        planned ahead of the consumer (submitted, their chunks not yet waited for), and the reads
        held count against the reader's bound (held_bytes, 16 MiB at the defaults): a read its
        whole range (gaps and a whole pack's table included) until the consumer has waited for
        it, and the plaintext of the chunks it still holds, from the table's plaintext lengths,
        from the moment it is planned. A read is cut wherever it would take more than its share
        of the bound (the bound / gets_in_flight), so that that many decode at once; a whole pack
        must fit in what the reads held leave. A read with no place waits while the chunks
        planned before it are handed out; once none is left (every read held is then started)
        and it still does not fit, it is cut to the room left, one record at least (a record past
        the room is not kept for locations further ahead). So at most the bound plus one record
        and its chunk are held, whatever the records' compression ratio, and ~100 bytes for each
        of the up to 2 x LOOK_AHEAD_LOCATIONS locations planned and ahead.

        An error of the locations' iterable is raised when the look-ahead reaches it, before the
        chunks just ahead of it."""
        ahead = _LookAhead(locations, LOOK_AHEAD_LOCATIONS)
        # A location is planned with the read that holds its record, or with its chunk if the
        # cache held that when it was planned (an eviction after that costs nothing).
        planned: deque[tuple[ChunkLocation, _HeldRead | bytes]] = deque()
        held = _HeldReads()
        # The read the next location ahead needs, kept while the reads held leave no room for it:
        # while planning waits, no record is taken from ahead or held anew, so it stays right.
        next_read: _Read | None = None
        try:
            while True:
                while len(planned) < LOOK_AHEAD_LOCATIONS and (location := ahead.head()) is not None:
                    holder: _HeldRead | bytes | None = held.holder(location)
                    if holder is None and self._cache is not None:
                        holder = self._cache.get(location.entry.chunk_id)
                    if holder is None:
                        if next_read is None:
                            next_read = self._next_read(ahead, location, held)
                        room = self._held_bytes_limit - held.held_bytes()
                        if held.not_started() >= self._gets_in_flight or next_read.cost > room:
                            if planned:
                                break  # handing out the chunks planned starts reads and makes room
                            cost_limit = min(room, self._read_cost_limit)
                            next_read = self._run_read(
                                location, self._wanted(ahead, location, held, cost_limit), cost_limit
                            )
                        decoding = self._pool.submit(self._fetch, next_read)
                        holder = _HeldRead(next_read, decoding, past_budget=next_read.cost > room)
                        held.add(holder)
                        next_read = None
                    ahead.pop()
                    planned.append((location, holder))
                    if isinstance(holder, _HeldRead):
                        holder.waiting[location.entry.offset] += 1
                if not planned:
                    return
                location, holder = planned.popleft()
                if isinstance(holder, bytes):
                    yield location, holder
                    continue
                chunk = held.hand_out(location, holder, ahead.selects(location.pack_id, location.entry.offset))
                if self._cache is not None:
                    self._cache.add(location.entry.chunk_id, chunk)
                yield location, chunk
        finally:
            held.cancel()

    def read_chunks_here(self, locations: Iterable[ChunkLocation]) -> Iterator[tuple[ChunkLocation, bytes]]:
        """read_chunks for a small content, in the calling thread: each run of locations whose
        records lie back to back in one pack is read with one GET and decoded here, a chunk the
        cache holds is not read.

        For the restore's pool threads, which read small files whole: read_chunks handed each
        such file's one read to a GET thread and then to a decoding thread, and restoring 8,625
        small files made 80,611 futex calls against 17,731 for format 1's chunk objects.
        Memory: the content's records once, and its chunks; the caller bounds the content."""
        run: list[ChunkLocation] = []
        for location in locations:
            if run and not _follows(run[-1], location):
                yield from self._read_run_here(run)  # its chunks are cached: location may be one
                run = []
            cached = self._cache.get(location.entry.chunk_id) if self._cache is not None else None
            if cached is None:
                run.append(location)
                continue
            if run:
                yield from self._read_run_here(run)
                run = []
            yield location, cached
        if run:
            yield from self._read_run_here(run)

    def _read_run_here(self, run: list[ChunkLocation]) -> Iterator[tuple[ChunkLocation, bytes]]:
        entries = [location.entry for location in run]
        read = _Read(run[0].pack_id, entries[0].offset, entries[-1].end, entries)
        for location, chunk in zip(run, self._decode_records(read, self._read_bytes(read)), strict=True):
            if self._cache is not None:
                self._cache.add(location.entry.chunk_id, chunk)
            yield location, chunk

    def _next_read(self, ahead: _LookAhead, first: ChunkLocation, held: _HeldReads) -> _Read:
        """The read that serves first, the next location ahead: its whole pack, or a run of the
        records ahead of that pack."""
        size = first.pack_size
        # A pack is read whole only if it and its chunks decoded fit once the chunks planned are
        # handed out: else planning would wait for room that the chunks held for locations ahead
        # keep taken (packs interleaved chunk by chunk), and its records come in ranges instead.
        # A pack that takes more than the bound with its chunks decoded (at the defaults, any
        # above 8 MiB: full 16 MiB packs come in ranges) is never read whole, so the bound holds
        # whatever a pack's size; one no smaller than the bound is not weighed at all.
        if size is not None and size < self._held_bytes_limit:
            wanted = self._wanted(ahead, first, held)
            if sum(entry.length for entry in wanted) >= WHOLE_PACK_SHARE * size:
                whole = _Read(first.pack_id, 0, size, wanted, whole=True)
                if whole.cost <= self._held_bytes_limit - held.kept_bytes(ahead):
                    return whole
            return self._run_read(first, wanted, self._read_cost_limit)
        return self._run_read(first, self._wanted(ahead, first, held, self._read_cost_limit), self._read_cost_limit)

    def _wanted(
        self, ahead: _LookAhead, first: ChunkLocation, held: _HeldReads, cost_limit: int | None = None
    ) -> list[PackEntry]:
        """The records that the locations ahead select from first's pack, no read holds, and whose
        chunks the cache does not hold (first's always: another thread may have cached it since), by
        offset; with cost_limit, only those within reach of first's record (_run_reach) either way."""
        entries = ahead.selection(first.pack_id).entries
        held_offsets = held.offsets(first.pack_id)
        cached = self._cache.chunk_ids() if self._cache is not None else _NONE_HELD
        first_offset = first.entry.offset
        # Sorting the whole selection and cutting it costs less than filtering it first: the
        # selection comes mostly in offset order, and 1,200 offsets in order take 23 us against 38 us.
        offsets = sorted(entries)
        if cost_limit is not None:
            # Planning every read scanned every record the look-ahead selects in the pack (thousands
            # for the ~80 a read takes): 8% of the GIL's time restoring the 10 Django sdists (py-spy).
            reach = self._run_reach(cost_limit)
            offsets = offsets[bisect_left(offsets, first_offset - reach) : bisect_right(offsets, first_offset + reach)]
        return [
            entries[offset]
            for offset in offsets
            if offset == first_offset or (offset not in held_offsets and entries[offset].chunk_id not in cached)
        ]

    def _run_reach(self, cost_limit: int) -> int:
        """How far from first's record the records of a run that holds it can start (a run past
        the bound is first's record alone)."""
        return max(0, min(self._max_read_size, cost_limit))

    def _run_read(self, first: ChunkLocation, wanted: list[PackEntry], cost_limit: int) -> _Read:
        """Of the records wanted that start within reach of first's (_run_reach), cut into runs
        from the first of them wherever two lie the gap or more apart, or a run would pass
        max_read_size bytes or cost more than cost_limit (its bytes and its chunks decoded; a
        record alone may), the run that holds first's record."""
        reach = self._run_reach(cost_limit)
        start = bisect_left(wanted, first.entry.offset - reach, key=_entry_offset)
        run: list[PackEntry] = []
        plaintext = 0
        for entry in itertools.islice(wanted, start, None):
            if run:
                size = entry.end - run[0].offset
                if (
                    entry.offset - run[-1].end >= self._gap
                    or size > self._max_read_size
                    or size + plaintext + entry.plaintext_length > cost_limit
                ):
                    if run[-1].offset >= first.entry.offset:
                        break
                    run, plaintext = [], 0
            run.append(entry)
            plaintext += entry.plaintext_length
        return _Read(first.pack_id, run[0].offset, run[-1].end, run)

    def _fetch(self, read: _Read) -> Future[dict[int, bytes]]:
        """GETs the read's bytes (in a GET thread) and hands them to the decoding threads."""
        return self._decoders.submit(self._decode, read, self._read_bytes(read))

    def _read_bytes(self, read: _Read) -> bytes:
        data = self._get(read.pack_id, read.start, None if read.whole else read.size)
        if len(data) != read.size:
            what = "the pack" if read.whole else f"bytes {read.start}..{read.end}"
            raise CorruptObjectError(
                f"pack {read.pack_id.hex()} is damaged: {len(data)} bytes came back for {what}, "
                f"{read.size} were expected"
            )
        return data

    def _decode(self, read: _Read, data: bytes) -> dict[int, bytes]:
        return dict(zip(map(_entry_offset, read.entries), self._decode_records(read, data), strict=True))

    def _decode_records(self, read: _Read, data: bytes) -> list[bytes]:
        """The plaintext of each of the read's entries, in order, from the read's bytes."""
        # Records are decoded from views of the range: a copy of a 1.9 KB record (an 8 KiB chunk
        # compressed) took 0.20 us against 0.07 us for the view (timeit).
        view = memoryview(data)
        return _decode_all_checked(
            self._packs,
            read.pack_id,
            [(entry, view[entry.offset - read.start : entry.end - read.start]) for entry in read.entries],
        )

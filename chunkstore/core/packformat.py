"""The pack object of storage format 2: many chunk records in one object, with a table of them.

docs/design/format-v2.md gives the design; the layout, all integers big-endian:

    header (32 bytes)
        0   4   magic b"CSPK"
        4   1   pack format version (1)
        5   1   cipher ID (objectformat's: 0 none, 1 AES-256-GCM with derived keys)
        6   2   flags, must be 0
        8   16  pack ID (the object's key names it: a pack copied under another key is refused)
        24  8   reserved, must be 0
    chunk records, contiguous from offset 32: each exactly the bytes of a format 1 chunk
        object (objectformat.ObjectCodec.encode), so a record stays bound to its chunk ID
        and repack can copy it byte for byte
    table (plaintext form; sealed whole by the pack-table subkey in an encrypted store,
        with b"CSPT", the table version and the pack ID as associated data)
        0   4   magic b"CSPT"
        4   1   table format version (1)
        5   3   flags and reserved, must be 0
        8   4   entry count n, 1..8,192
        12  48n entries: chunk ID (32), record offset (4), record length (4),
                plaintext length (4), reserved (4, must be 0)
    trailer (the last 40 bytes)
        0   8   table offset
        8   4   table length, as stored
        12  4   entry count (equals the table's)
        16  16  first 16 bytes of BLAKE3 of the table as stored
        32  1   pack format version (1)
        33  3   reserved, must be 0
        36  4   magic b"CSPE"

So the last TABLE_FETCH_BYTES of any pack hold its whole table: one ranged GET from the end
finds every chunk, and a chunk is then one ranged GET of its record. Everything here is
pure: the caller reads and writes the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import blake3

from chunkstore.core import objectformat
from chunkstore.core.crypto import NONCE_SIZE, TAG_SIZE, Sealer
from chunkstore.core.objectformat import CIPHER_AES_GCM_DERIVED, CIPHER_NONE, ObjectCodec
from chunkstore.errors import CorruptObjectError, InvalidArgumentError

MAGIC = b"CSPK"
VERSION = 1
PACK_ID_SIZE = 16
HEADER = struct.Struct(">4sBBH16s8s")
HEADER_SIZE = HEADER.size

TABLE_MAGIC = b"CSPT"
TABLE_VERSION = 1
TABLE_HEADER = struct.Struct(">4sB3sI")
ENTRY = struct.Struct(">32sIIII")
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE

TRAILER_MAGIC = b"CSPE"
TRAILER = struct.Struct(">QII16sB3s4s")
TRAILER_SIZE = TRAILER.size
CHECKSUM_SIZE = 16

# A table of 8,192 entries is 393,228 bytes: a quarter of a 16 MiB pack's worth of 2:1
# compressed 8 KiB chunks fits twice over, and any table comes with one 400 KiB suffix GET.
MAX_ENTRIES = 8192
MAX_TABLE_SIZE = TABLE_HEADER.size + MAX_ENTRIES * ENTRY.size + SEAL_OVERHEAD
TABLE_FETCH_BYTES = 400 * 1024
# Offsets are 4 bytes; no pack is allowed near that.
MAX_PACK_SIZE = 256 * 1024 * 1024


class PackEntry(NamedTuple):
    """Where one chunk's record lies in its pack. A tuple: a table makes one for each of up to
    MAX_ENTRIES records, and a frozen dataclass's __init__ took 1.7x a tuple's."""

    chunk_id: bytes
    offset: int
    length: int  # of the record as stored
    plaintext_length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class Trailer:
    table_offset: int
    table_length: int
    entry_count: int
    checksum: bytes

    @property
    def table_end(self) -> int:
        return self.table_offset + self.table_length


def _cipher_id(sealer: Sealer | None) -> int:
    return CIPHER_NONE if sealer is None else CIPHER_AES_GCM_DERIVED


def _table_associated_data(pack_id: bytes) -> bytes:
    return TABLE_MAGIC + bytes([TABLE_VERSION]) + pack_id


def _check_pack_id(pack_id: bytes) -> None:
    if len(pack_id) != PACK_ID_SIZE:
        raise InvalidArgumentError(f"a pack ID is {PACK_ID_SIZE} bytes, got {len(pack_id)}")


class PackBuilder:
    """Collects chunk records into one pack, in memory, and lays out its table and trailer.

    The records come from the store's ObjectCodec (its encode), so each chunk is compressed
    and, in an encrypted store, sealed on its own exactly as a format 1 object is. The
    caller closes the pack when `size` reaches its target or `full` says the table is."""

    def __init__(self, pack_id: bytes, max_chunk_size: int, table_sealer: Sealer | None = None):
        _check_pack_id(pack_id)
        self.pack_id = pack_id
        self._max_chunk_size = max_chunk_size
        self._sealer = table_sealer
        self._cipher_id = _cipher_id(table_sealer)
        self._parts = [HEADER.pack(MAGIC, VERSION, self._cipher_id, 0, pack_id, bytes(8))]
        self.size = HEADER_SIZE
        self.entries: list[PackEntry] = []
        self._ids: set[bytes] = set()

    @property
    def full(self) -> bool:
        return len(self.entries) == MAX_ENTRIES

    def add(self, chunk_id: bytes, record: bytes) -> PackEntry:
        """Append a chunk's record (ObjectCodec.encode's bytes, or a record copied from another pack)."""
        if len(chunk_id) != 32:
            raise InvalidArgumentError(f"a chunk ID is 32 bytes, got {len(chunk_id)}")
        if self.full:
            raise InvalidArgumentError(f"a pack holds at most {MAX_ENTRIES} chunks")
        if chunk_id in self._ids:
            raise InvalidArgumentError(f"chunk {chunk_id.hex()} is already in this pack")
        header = objectformat.parse_header(record, self._max_chunk_size)
        if header.cipher_id != self._cipher_id:
            raise InvalidArgumentError(f"record has cipher ID {header.cipher_id}, this pack {self._cipher_id}")
        if self.size + len(record) + MAX_TABLE_SIZE + TRAILER_SIZE > MAX_PACK_SIZE:
            raise InvalidArgumentError(f"a pack is at most {MAX_PACK_SIZE} bytes")
        entry = PackEntry(chunk_id, self.size, len(record), header.plaintext_length)
        self._parts.append(record)
        self.size += len(record)
        self.entries.append(entry)
        self._ids.add(chunk_id)
        return entry

    def finish(self) -> bytes:
        """The whole pack: header, records, table and trailer."""
        if not self.entries:
            raise InvalidArgumentError("a pack holds at least one chunk")
        table = b"".join(
            [
                TABLE_HEADER.pack(TABLE_MAGIC, TABLE_VERSION, bytes(3), len(self.entries)),
                *(ENTRY.pack(e.chunk_id, e.offset, e.length, e.plaintext_length, 0) for e in self.entries),
            ]
        )
        if self._sealer is not None:
            table = self._sealer.seal(table, _table_associated_data(self.pack_id))
        checksum = blake3.blake3(table).digest()[:CHECKSUM_SIZE]
        trailer = TRAILER.pack(self.size, len(table), len(self.entries), checksum, VERSION, bytes(3), TRAILER_MAGIC)
        return b"".join([*self._parts, table, trailer])


def _expected_table_length(entry_count: int, sealed: bool) -> int:
    return TABLE_HEADER.size + entry_count * ENTRY.size + (SEAL_OVERHEAD if sealed else 0)


def parse_trailer(tail: bytes, pack_size: int, sealed: bool) -> Trailer:
    """Read the trailer from the last bytes of a pack of pack_size bytes; sealed: the store is encrypted."""
    if not HEADER_SIZE + TRAILER_SIZE < pack_size <= MAX_PACK_SIZE:
        raise CorruptObjectError(
            f"a pack of {pack_size} bytes cannot be valid "
            f"(more than {HEADER_SIZE + TRAILER_SIZE}, at most {MAX_PACK_SIZE})"
        )
    if len(tail) < TRAILER_SIZE:
        raise CorruptObjectError(f"pack tail is {len(tail)} bytes, shorter than the {TRAILER_SIZE}-byte trailer")
    (table_offset, table_length, count, checksum, version, reserved, magic) = TRAILER.unpack_from(
        tail, len(tail) - TRAILER_SIZE
    )
    if magic != TRAILER_MAGIC:
        raise CorruptObjectError(f"pack does not end with {TRAILER_MAGIC!r} (found {magic!r})")
    if version != VERSION:
        raise CorruptObjectError(f"pack format version {version} is not supported (this chunkstore reads {VERSION})")
    if reserved != bytes(3):
        raise CorruptObjectError("pack trailer has unknown reserved bytes")
    if not 1 <= count <= MAX_ENTRIES:
        raise CorruptObjectError(f"pack trailer announces {count} chunks (a pack holds 1 to {MAX_ENTRIES})")
    if table_length != _expected_table_length(count, sealed):
        raise CorruptObjectError(
            f"pack table is {table_length} bytes, {count} entries make {_expected_table_length(count, sealed)}"
        )
    if table_offset < HEADER_SIZE or table_offset + table_length != pack_size - TRAILER_SIZE:
        raise CorruptObjectError(
            f"pack table at {table_offset} (+{table_length}) does not end at the trailer of a {pack_size}-byte pack"
        )
    return Trailer(table_offset, table_length, count, checksum)


def parse_table(
    stored_table: bytes, trailer: Trailer, pack_id: bytes, max_chunk_size: int, sealer: Sealer | None = None
) -> list[PackEntry]:
    """The entries of a table as stored (located by trailer), each checked against the pack's layout."""
    _check_pack_id(pack_id)
    if len(stored_table) != trailer.table_length:
        raise CorruptObjectError(f"pack table is {len(stored_table)} bytes, its trailer says {trailer.table_length}")
    if blake3.blake3(stored_table).digest()[:CHECKSUM_SIZE] != trailer.checksum:
        raise CorruptObjectError("pack table does not match its checksum: the pack is damaged")
    table = stored_table if sealer is None else sealer.open(stored_table, _table_associated_data(pack_id))
    magic, version, reserved, count = TABLE_HEADER.unpack_from(table)
    if magic != TABLE_MAGIC:
        raise CorruptObjectError(f"pack table does not start with {TABLE_MAGIC!r} (found {magic!r})")
    if version != TABLE_VERSION:
        raise CorruptObjectError(
            f"pack table version {version} is not supported (this chunkstore reads {TABLE_VERSION})"
        )
    if reserved != bytes(3):
        raise CorruptObjectError("pack table has unknown flags")
    if count != trailer.entry_count or len(table) != TABLE_HEADER.size + count * ENTRY.size:
        raise CorruptObjectError(f"pack table holds {count} entries, its trailer says {trailer.entry_count}")
    entries: list[PackEntry] = []
    seen: set[bytes] = set()
    position = HEADER_SIZE
    for chunk_id, offset, length, plaintext_length, entry_reserved in ENTRY.iter_unpack(
        memoryview(table)[TABLE_HEADER.size :]
    ):
        if entry_reserved:
            raise CorruptObjectError(f"{_entry_name(entries, chunk_id)} has unknown reserved bits")
        if offset != position:
            raise CorruptObjectError(
                f"{_entry_name(entries, chunk_id)} starts at {offset}, the previous record ends at {position}: "
                "records must follow each other with no gap or overlap"
            )
        if length < objectformat.HEADER_SIZE:
            raise CorruptObjectError(
                f"{_entry_name(entries, chunk_id)} is {length} bytes, shorter than a record header"
            )
        if plaintext_length > max_chunk_size:
            raise CorruptObjectError(
                f"{_entry_name(entries, chunk_id)} claims {plaintext_length} plaintext bytes, more than the store's "
                f"maximum chunk size {max_chunk_size}"
            )
        if chunk_id in seen:
            raise CorruptObjectError(f"{_entry_name(entries, chunk_id)} appears twice in the pack")
        seen.add(chunk_id)
        position = offset + length
        if position > trailer.table_offset:
            raise CorruptObjectError(
                f"{_entry_name(entries, chunk_id)} ends at {position}, past the table at {trailer.table_offset}"
            )
        entries.append(PackEntry(chunk_id, offset, length, plaintext_length))
    if position != trailer.table_offset:
        raise CorruptObjectError(f"pack records end at {position}, the table starts at {trailer.table_offset}")
    return entries


def _entry_name(entries_before: list[PackEntry], chunk_id: bytes) -> str:
    # Formatted only when something is wrong, not for every entry of every table read.
    return f"pack entry {len(entries_before)} (chunk {chunk_id.hex()})"


def read_table(
    tail: bytes, pack_size: int, pack_id: bytes, max_chunk_size: int, sealer: Sealer | None = None
) -> list[PackEntry]:
    """The entries of a pack from its last bytes alone (at least min(pack_size, TABLE_FETCH_BYTES) of them)."""
    if len(tail) > pack_size:
        raise InvalidArgumentError(f"a tail of {len(tail)} bytes cannot end a pack of {pack_size}")
    trailer = parse_trailer(tail, pack_size, sealed=sealer is not None)
    tail_start = pack_size - len(tail)
    if tail_start > trailer.table_offset:
        raise InvalidArgumentError(
            f"the last {len(tail)} bytes of the pack do not hold its table "
            f"(it starts {pack_size - trailer.table_offset} bytes from the end)"
        )
    start = trailer.table_offset - tail_start
    return parse_table(tail[start : start + trailer.table_length], trailer, pack_id, max_chunk_size, sealer)


def parse_pack(pack: bytes, pack_id: bytes, max_chunk_size: int, sealer: Sealer | None = None) -> list[PackEntry]:
    """Check a whole pack's header and table against the ID it was read under; return its entries."""
    _check_pack_id(pack_id)
    if len(pack) < HEADER_SIZE:
        raise CorruptObjectError(f"pack is {len(pack)} bytes, shorter than its {HEADER_SIZE}-byte header")
    magic, version, cipher_id, flags, header_pack_id, reserved = HEADER.unpack_from(pack)
    if magic != MAGIC:
        raise CorruptObjectError(f"pack does not start with {MAGIC!r} (found {magic!r})")
    if version != VERSION:
        raise CorruptObjectError(f"pack format version {version} is not supported (this chunkstore reads {VERSION})")
    if cipher_id != _cipher_id(sealer):
        raise CorruptObjectError(f"pack has cipher ID {cipher_id}, this store uses {_cipher_id(sealer)}")
    if flags or reserved != bytes(8):
        raise CorruptObjectError("pack header has unknown flags or reserved bytes")
    if header_pack_id != pack_id:
        raise CorruptObjectError(f"pack {pack_id.hex()} holds the header of pack {header_pack_id.hex()}")
    return read_table(pack, len(pack), pack_id, max_chunk_size, sealer)


def decode_record(codec: ObjectCodec, entry: PackEntry, record: bytes | memoryview) -> bytes:
    """The plaintext of the chunk whose record (the pack's bytes at entry's range) was read.

    The caller still re-hashes it against entry.chunk_id, as for a format 1 object."""
    if len(record) != entry.length:
        raise CorruptObjectError(
            f"record of chunk {entry.chunk_id.hex()} is {len(record)} bytes, its pack table says {entry.length}"
        )
    plaintext = codec.decode(entry.chunk_id, record)
    if len(plaintext) != entry.plaintext_length:
        raise CorruptObjectError(
            f"chunk {entry.chunk_id.hex()} is {len(plaintext)} bytes, its pack table says {entry.plaintext_length}"
        )
    return plaintext


def iter_chunks(codec: ObjectCodec, pack: bytes, entries: list[PackEntry]) -> Iterator[tuple[PackEntry, bytes]]:
    """Each entry of a whole pack with its chunk's plaintext, in pack order."""
    view = memoryview(pack)
    for entry in entries:
        yield entry, decode_record(codec, entry, bytes(view[entry.offset : entry.end]))

"""The pack object of storage format 2: layout, round trips, the table from the tail alone, refusals, fuzz."""

from __future__ import annotations

import contextlib
import os
import struct

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkstore.core import objectformat, packformat
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.crypto import Keys, Sealer
from chunkstore.core.objectformat import ObjectCodec
from chunkstore.core.packformat import (
    ENTRY,
    HEADER,
    HEADER_SIZE,
    MAX_ENTRIES,
    TABLE_FETCH_BYTES,
    TABLE_HEADER,
    TRAILER,
    TRAILER_SIZE,
    PackBuilder,
    PackEntry,
    decode_record,
    iter_chunks,
    parse_pack,
    parse_table,
    parse_trailer,
    read_table,
)
from chunkstore.errors import CorruptObjectError, InvalidArgumentError

MAX_CHUNK = 64 * 1024
PACK_ID = bytes(range(16))
KEYS = Keys.from_master(blake3.blake3(b"pack format test master key").digest())


def text_chunk(number: int) -> bytes:
    return f"line {number} of a chunk that compresses well\n".encode() * (50 + number % 200)


def random_chunk(number: int) -> bytes:
    return blake3.blake3(number.to_bytes(4, "big")).digest(length=1000 + 37 * number)


def chunk_id(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


class Store:
    """What a pack reader and writer take from a store: the chunk codec and the table sealer."""

    def __init__(self, compression: str = "zstd", encrypted: bool = False):
        spec = CompressionSpec("zstd", 3) if compression == "zstd" else CompressionSpec("none")
        self.codec = ObjectCodec(Compressor(spec), MAX_CHUNK, KEYS.objects if encrypted else None)
        self.table_sealer = KEYS.pack_tables if encrypted else None

    def build(self, chunks: list[bytes], pack_id: bytes = PACK_ID) -> bytes:
        builder = PackBuilder(pack_id, MAX_CHUNK, self.table_sealer)
        for data in chunks:
            builder.add(chunk_id(data), self.codec.encode(chunk_id(data), data))
        return builder.finish()

    def parse(self, pack: bytes, pack_id: bytes = PACK_ID) -> list[PackEntry]:
        return parse_pack(pack, pack_id, MAX_CHUNK, self.table_sealer)


STORES = {"plain": Store("none"), "compressed": Store("zstd"), "encrypted": Store("zstd", encrypted=True)}
CHUNKS = [text_chunk(n) for n in range(20)] + [random_chunk(n) for n in range(20)] + [b"x"]


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_round_trip(kind):
    store = STORES[kind]
    pack = store.build(CHUNKS)
    entries = store.parse(pack)
    assert [e.chunk_id for e in entries] == [chunk_id(c) for c in CHUNKS]
    assert [e.plaintext_length for e in entries] == [len(c) for c in CHUNKS]
    assert [data for _, data in iter_chunks(store.codec, pack, entries)] == CHUNKS


def test_layout_of_a_plain_pack():
    store = STORES["plain"]
    pack = store.build(CHUNKS[:2])
    assert HEADER.unpack_from(pack) == (b"CSPK", 1, 0, 0, PACK_ID, bytes(8))
    table_offset, table_length, count, checksum, version, reserved, magic = TRAILER.unpack_from(pack, len(pack) - 40)
    assert (count, version, reserved, magic) == (2, 1, bytes(3), b"CSPE")
    assert table_offset + table_length + TRAILER_SIZE == len(pack)
    table = pack[table_offset : table_offset + table_length]
    assert checksum == blake3.blake3(table).digest()[:16]
    assert TABLE_HEADER.unpack_from(table) == (b"CSPT", 1, bytes(3), 2)
    first, second = ENTRY.iter_unpack(table[TABLE_HEADER.size :])
    # Each record is byte for byte the format 1 object of the chunk.
    assert first[1] == HEADER_SIZE and pack[first[1] : first[1] + first[2]] == store.codec.encode(first[0], CHUNKS[0])
    assert second[1] == first[1] + first[2] and first[3:] == (len(CHUNKS[0]), 0)


def test_compression_shrinks_records_and_encryption_hides_the_table():
    plain, compressed, encrypted = (STORES[k].build(CHUNKS) for k in ("plain", "compressed", "encrypted"))
    assert len(compressed) < len(plain)
    assert HEADER.unpack_from(encrypted)[2] == objectformat.CIPHER_AES_GCM_DERIVED
    for data in CHUNKS:
        assert chunk_id(data) in plain and chunk_id(data) not in encrypted
    assert b"CSPT" not in encrypted


@pytest.mark.parametrize("kind", STORES)
def test_the_table_from_the_tail_alone_locates_every_chunk(kind):
    store = STORES[kind]
    pack = store.build(CHUNKS)
    tail = pack[-TABLE_FETCH_BYTES:]
    entries = read_table(tail, len(pack), PACK_ID, MAX_CHUNK, store.table_sealer)
    for entry, data in zip(entries, CHUNKS, strict=True):
        record = pack[entry.offset : entry.end]  # one ranged GET each
        assert decode_record(store.codec, entry, record) == data
        assert chunk_id(decode_record(store.codec, entry, record)) == entry.chunk_id


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_a_full_pack_table_comes_with_one_suffix_read(kind):
    store = STORES[kind]
    chunks = [n.to_bytes(4, "big") for n in range(MAX_ENTRIES)]
    builder = PackBuilder(PACK_ID, MAX_CHUNK, store.table_sealer)
    for data in chunks:
        builder.add(chunk_id(data), store.codec.encode(chunk_id(data), data))
    assert builder.full
    with pytest.raises(InvalidArgumentError, match="at most 8192"):
        builder.add(chunk_id(b"one more"), store.codec.encode(chunk_id(b"one more"), b"one more"))
    pack = builder.finish()
    trailer = parse_trailer(pack, len(pack), sealed=store.table_sealer is not None)
    assert trailer.table_length + TRAILER_SIZE <= TABLE_FETCH_BYTES < len(pack)
    entries = read_table(pack[-TABLE_FETCH_BYTES:], len(pack), PACK_ID, MAX_CHUNK, store.table_sealer)
    assert [e.chunk_id for e in entries] == [chunk_id(c) for c in chunks]


def test_a_tail_that_misses_the_table_is_a_caller_error():
    pack = STORES["plain"].build(CHUNKS)
    with pytest.raises(InvalidArgumentError, match="do not hold its table"):
        read_table(pack[-100:], len(pack), PACK_ID, MAX_CHUNK)
    with pytest.raises(InvalidArgumentError, match="cannot end a pack"):
        read_table(pack, len(pack) - 1, PACK_ID, MAX_CHUNK)


def test_records_can_be_copied_into_another_pack_as_they_are():
    """Repack moves records byte for byte: they are bound to their chunk, not to their pack."""
    store = STORES["encrypted"]
    pack = store.build(CHUNKS)
    entries = store.parse(pack)
    other_id = bytes(16)
    builder = PackBuilder(other_id, MAX_CHUNK, store.table_sealer)
    for entry in entries[::3]:
        builder.add(entry.chunk_id, pack[entry.offset : entry.end])
    moved = builder.finish()
    assert [data for _, data in iter_chunks(store.codec, moved, store.parse(moved, other_id))] == CHUNKS[::3]


# ---- what the builder refuses ------------------------------------------------------------------


def test_builder_refusals():
    store = STORES["compressed"]
    data = CHUNKS[0]
    record = store.codec.encode(chunk_id(data), data)
    with pytest.raises(InvalidArgumentError, match="16 bytes"):
        PackBuilder(b"short", MAX_CHUNK)
    builder = PackBuilder(PACK_ID, MAX_CHUNK)
    with pytest.raises(InvalidArgumentError, match="at least one chunk"):
        builder.finish()
    with pytest.raises(InvalidArgumentError, match="32 bytes"):
        builder.add(b"id", record)
    builder.add(chunk_id(data), record)
    with pytest.raises(InvalidArgumentError, match="already in this pack"):
        builder.add(chunk_id(data), record)
    sealed_record = STORES["encrypted"].codec.encode(chunk_id(b"y"), b"y")
    with pytest.raises(InvalidArgumentError, match="cipher ID 1"):
        builder.add(chunk_id(b"y"), sealed_record)
    with pytest.raises(CorruptObjectError):
        builder.add(chunk_id(b"z"), b"not a record")


# ---- what the parser refuses -------------------------------------------------------------------


def with_trailer(pack: bytes, **changes) -> bytes:
    fields = dict(
        zip(
            ("table_offset", "table_length", "count", "checksum", "version", "reserved", "magic"),
            TRAILER.unpack_from(pack, len(pack) - TRAILER_SIZE),
            strict=True,
        )
    )
    fields.update(changes)
    return pack[:-TRAILER_SIZE] + TRAILER.pack(*fields.values())


def with_table(pack: bytes, table: bytes, sealer: Sealer | None = None, pack_id: bytes = PACK_ID) -> bytes:
    """The pack with its table replaced (sealed if sealer) and the trailer made to match it."""
    table_offset = TRAILER.unpack_from(pack, len(pack) - TRAILER_SIZE)[0]
    if sealer is not None:
        table = sealer.seal(table, b"CSPT\x01" + pack_id)
    count = (len(table) - TABLE_HEADER.size - (40 if sealer else 0)) // ENTRY.size
    trailer = TRAILER.pack(table_offset, len(table), count, blake3.blake3(table).digest()[:16], 1, bytes(3), b"CSPE")
    return pack[:table_offset] + table + trailer


def table_of(entries: list[tuple], count: int | None = None, magic=b"CSPT", version=1, flags=bytes(3)) -> bytes:
    return TABLE_HEADER.pack(magic, version, flags, len(entries) if count is None else count) + b"".join(
        ENTRY.pack(*entry) for entry in entries
    )


def plain_pack_and_entries() -> tuple[bytes, list[tuple]]:
    pack = STORES["plain"].build(CHUNKS[:3])
    return pack, [(e.chunk_id, e.offset, e.length, e.plaintext_length, 0) for e in STORES["plain"].parse(pack)]


def header_of(magic=b"CSPK", version=1, cipher=0, flags=0, pack_id=PACK_ID, reserved=bytes(8)) -> bytes:
    return HEADER.pack(magic, version, cipher, flags, pack_id, reserved)


@pytest.mark.parametrize(
    "header, message",
    [
        (header_of(magic=b"CSOB"), "does not start with"),
        (header_of(version=2), "version 2 is not supported"),
        (header_of(cipher=1), "cipher ID 1"),
        (header_of(flags=1), "unknown flags"),
        (header_of(reserved=b"\x01" + bytes(7)), "reserved"),
        (header_of(pack_id=bytes(16)), "holds the header of pack"),
    ],
)
def test_refuses_a_bad_header(header, message):
    pack = STORES["plain"].build(CHUNKS[:3])
    with pytest.raises(CorruptObjectError, match=message):
        STORES["plain"].parse(header + pack[HEADER_SIZE:])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"magic": b"CSPK"}, "does not end with"),
        ({"version": 9}, "version 9 is not supported"),
        ({"reserved": b"\x00\x00\x01"}, "reserved"),
        ({"count": 0}, "1 to 8192"),
        ({"count": 2**32 - 1}, "1 to 8192"),  # refused before anything is allocated for it
        ({"count": 2}, "entries make"),
        ({"table_length": 2**32 - 1}, "entries make"),
        ({"table_offset": 5}, "does not end at the trailer"),
        ({"table_offset": 2**64 - 1}, "does not end at the trailer"),
        ({"checksum": bytes(16)}, "checksum"),
    ],
)
def test_refuses_a_bad_trailer(changes, message):
    pack = STORES["plain"].build(CHUNKS[:3])
    with pytest.raises(CorruptObjectError, match=message):
        STORES["plain"].parse(with_trailer(pack, **changes))


@pytest.mark.parametrize("cut", ["last byte", "first record byte", "trailer", "all but the header", "empty"])
def test_refuses_a_truncated_pack(cut):
    pack = STORES["compressed"].build(CHUNKS)
    truncated = {
        "last byte": pack[:-1],
        "first record byte": pack[:HEADER_SIZE] + pack[HEADER_SIZE + 1 :],
        "trailer": pack[:-TRAILER_SIZE],
        "all but the header": pack[:HEADER_SIZE],
        "empty": b"",
    }[cut]
    with pytest.raises(CorruptObjectError):
        STORES["compressed"].parse(truncated)


def test_refuses_a_pack_size_no_pack_can_have():
    pack = STORES["plain"].build(CHUNKS[:3])
    with pytest.raises(CorruptObjectError, match="cannot be valid"):
        parse_trailer(pack, packformat.MAX_PACK_SIZE + 1, sealed=False)
    with pytest.raises(CorruptObjectError, match="shorter than the 40-byte trailer"):
        parse_trailer(pack[-39:], len(pack), sealed=False)


def entries_with(index: int, **changes) -> list[tuple]:
    _, entries = plain_pack_and_entries()
    names = ("chunk_id", "offset", "length", "plaintext_length", "reserved")
    changed = dict(zip(names, entries[index], strict=True), **changes)
    entries[index] = tuple(changed.values())
    return entries


@pytest.mark.parametrize(
    "make_table, message",
    [
        (lambda e: table_of(e, magic=b"CSRP"), "does not start with"),
        (lambda e: table_of(e, version=2), "table version 2"),
        (lambda e: table_of(e, flags=b"\x01\x00\x00"), "unknown flags"),
        (lambda e: table_of(e, count=2), "holds 2 entries"),
        (lambda e: table_of(entries_with(1, offset=e[1][1] - 1)), "no gap or overlap"),  # overlaps the first
        (lambda e: table_of(entries_with(1, offset=e[1][1] + 1)), "no gap or overlap"),  # a gap
        (lambda e: table_of(entries_with(0, offset=0)), "no gap or overlap"),  # over the header
        (lambda e: table_of(entries_with(2, length=e[2][2] + 1)), "past the table"),  # runs into the table
        (lambda e: table_of(entries_with(2, length=e[2][2] - 1)), "records end at"),  # leaves a gap before it
        (lambda e: table_of(entries_with(2, length=2**32 - 1)), "past the table"),
        (lambda e: table_of(entries_with(0, plaintext_length=MAX_CHUNK + 1)), "maximum chunk size"),
        (lambda e: table_of(entries_with(0, reserved=1)), "reserved bits"),
        (lambda e: table_of(entries_with(1, chunk_id=e[0][0])), "appears twice"),
    ],
)
def test_refuses_a_bad_table(make_table, message):
    pack, entries = plain_pack_and_entries()
    with pytest.raises(CorruptObjectError, match=message):
        STORES["plain"].parse(with_table(pack, make_table(entries)))


def test_refuses_a_record_shorter_than_its_header():
    data = [b"a", b"b"]
    store = STORES["plain"]
    pack = store.build(data)
    entries = [(e.chunk_id, e.offset, e.length, e.plaintext_length, 0) for e in store.parse(pack)]
    first, second = entries
    crafted = [(first[0], first[1], 8, 1, 0), (second[0], first[1] + 8, first[2] - 8 + second[2], 1, 0)]
    with pytest.raises(CorruptObjectError, match="shorter than a record header"):
        store.parse(with_table(pack, table_of(crafted)))


def test_refuses_a_tampered_encrypted_table():
    store = STORES["encrypted"]
    pack = store.build(CHUNKS[:3])
    trailer = parse_trailer(pack, len(pack), sealed=True)
    table = bytearray(pack[trailer.table_offset : trailer.table_end])
    table[60] ^= 1
    tampered = pack[: trailer.table_offset] + bytes(table) + pack[trailer.table_end :]
    with pytest.raises(CorruptObjectError, match="checksum"):
        store.parse(tampered)
    # With its checksum fixed too, the table still fails authentication.
    forged = with_trailer(tampered, checksum=blake3.blake3(bytes(table)).digest()[:16])
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        store.parse(forged)


def test_refuses_an_encrypted_table_from_another_pack_or_key():
    store = STORES["encrypted"]
    pack = store.build(CHUNKS[:3])
    other = store.build(CHUNKS[:3], pack_id=bytes(16))
    moved = pack[:HEADER_SIZE] + other[HEADER_SIZE:]  # the other pack's records and table under this ID
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        store.parse(moved)
    plain_table = plain_pack_and_entries()[1]
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        store.parse(with_table(pack, table_of(plain_table), sealer=Sealer(os.urandom(32))))
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        parse_pack(pack, PACK_ID, MAX_CHUNK, Keys.from_master(os.urandom(32)).pack_tables)


def test_an_encrypted_store_refuses_a_plain_pack_and_back():
    with pytest.raises(CorruptObjectError, match="cipher ID 0"):
        STORES["encrypted"].parse(STORES["plain"].build(CHUNKS[:3]))
    with pytest.raises(CorruptObjectError, match="cipher ID 1"):
        STORES["plain"].parse(STORES["encrypted"].build(CHUNKS[:3]))


def test_decode_record_checks_the_table_against_the_record():
    store = STORES["compressed"]
    pack = store.build(CHUNKS[:2])
    first = store.parse(pack)[0]
    record = pack[first.offset : first.end]
    with pytest.raises(CorruptObjectError, match="its pack table says"):
        decode_record(store.codec, first, record[:-1])
    lying = PackEntry(first.chunk_id, first.offset, first.length, first.plaintext_length + 1)
    with pytest.raises(CorruptObjectError):
        decode_record(store.codec, lying, record)
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        # an encrypted record under another chunk's ID
        encrypted = STORES["encrypted"]
        sealed = encrypted.codec.encode(chunk_id(CHUNKS[0]), CHUNKS[0])
        entry = PackEntry(chunk_id(CHUNKS[1]), HEADER_SIZE, len(sealed), len(CHUNKS[0]))
        decode_record(encrypted.codec, entry, sealed)


def test_table_parser_refuses_a_table_of_another_length_than_its_trailer_says():
    pack, _ = plain_pack_and_entries()
    trailer = parse_trailer(pack, len(pack), sealed=False)
    with pytest.raises(CorruptObjectError, match="its trailer says"):
        parse_table(pack[trailer.table_offset : trailer.table_end - 1], trailer, PACK_ID, MAX_CHUNK)


# ---- fuzz ------------------------------------------------------------------------------------

FUZZ_PACKS = {kind: STORES[kind].build(CHUNKS[:4]) for kind in STORES}
EXPECTED = (CorruptObjectError,)


def _mutate(pack: bytes, edits: list[tuple[int, int]], cut: int | None, insert: bytes) -> bytes:
    data = bytearray(pack)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    if insert:
        data[len(data) // 2 : len(data) // 2] = insert
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(FUZZ_PACKS)),
    edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 2**20),
    insert=st.binary(max_size=8),
)
def test_fuzz_a_damaged_pack_gives_a_clear_error_or_its_chunks(kind, edits, cut, insert):
    """Whatever the damage, the parser and the decoder raise only CorruptObjectError; a pack
    they accept yields chunks that hash to their IDs or a CorruptObjectError."""
    store = STORES[kind]
    damaged = _mutate(FUZZ_PACKS[kind], edits, cut, insert)
    try:
        entries = store.parse(damaged)
        for entry, data in iter_chunks(store.codec, damaged, entries):
            assert len(data) == entry.plaintext_length
    except EXPECTED:
        pass


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=200), pack_size=st.integers(0, 2**40), sealed=st.booleans())
def test_fuzz_random_tails_give_a_clear_error(tail, pack_size, sealed):
    sealer = KEYS.pack_tables if sealed else None
    with contextlib.suppress(CorruptObjectError, InvalidArgumentError):
        read_table(tail, pack_size, PACK_ID, MAX_CHUNK, sealer)


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 5), data=st.data())
def test_fuzz_crafted_tables_with_a_valid_checksum(count, data):
    """Tables that pass the checksum (as anyone who can write the store can make them): every
    field drawn at random, only the documented error comes out."""
    pack, _ = plain_pack_and_entries()
    entries = [
        (
            data.draw(st.binary(min_size=32, max_size=32)),
            data.draw(st.integers(0, 2**32 - 1)),
            data.draw(st.integers(0, 2**32 - 1)),
            data.draw(st.integers(0, 2**32 - 1)),
            data.draw(st.sampled_from([0, 0, 1])),
        )
        for _ in range(count)
    ]
    with contextlib.suppress(EXPECTED):
        STORES["plain"].parse(with_table(pack, table_of(entries)))


def test_struct_sizes_match_the_documented_layout():
    assert (HEADER.size, TABLE_HEADER.size, ENTRY.size, TRAILER.size) == (32, 12, 48, 40)
    assert struct.calcsize(">QII16sB3s4s") == TRAILER_SIZE
    assert packformat.MAX_TABLE_SIZE + TRAILER_SIZE <= TABLE_FETCH_BYTES

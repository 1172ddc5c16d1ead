"""Stored formats and their parsers: object header, recipe pages, store config, compression, names, keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
import pytest
import zstandard

from chunkstore.core import compression, objectformat, recipes
from chunkstore.core.chunking import ChunkerSpec
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.config import StoreConfig, chunk_id_from_key, chunk_key
from chunkstore.core.crypto import Sealer
from chunkstore.core.names import MAX_NAME_BYTES, name_matches_prefix, normalize_name, normalize_prefix
from chunkstore.core.objectformat import HEADER, HEADER_SIZE, MAGIC, ObjectCodec, ObjectHeader, parse_header
from chunkstore.errors import (
    CorruptObjectError,
    InvalidArgumentError,
    PassphraseRequiredError,
    UnsupportedFormatError,
)

MAX_CHUNK = 256 * 1024
COMPRESSIBLE = b"a line of text that repeats\n" * 2000
INCOMPRESSIBLE = blake3.blake3(b"incompressible").digest(length=50_000)


def chunk_id(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


# ---- object header -------------------------------------------------------------------------


def test_header_layout_and_round_trip():
    header = ObjectHeader(compression.ZSTD_ID, objectformat.CIPHER_NONE, 123_456)
    packed = header.pack()
    assert len(packed) == HEADER_SIZE == 16
    assert packed[:4] == MAGIC == b"CSOB"
    assert packed[4:8] == bytes([1, compression.ZSTD_ID, 0, 0])
    assert int.from_bytes(packed[8:], "big") == 123_456
    assert parse_header(packed + b"payload", MAX_CHUNK) == header


def packed_header(magic=MAGIC, version=1, compression_id=1, cipher_id=0, flags=0, length=100) -> bytes:
    return HEADER.pack(magic, version, compression_id, cipher_id, flags, length)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        packed_header()[:15],
        packed_header(magic=b"CSRP"),
        packed_header(magic=b"csob"),
        packed_header(version=0),
        packed_header(version=2),
        packed_header(compression_id=3),
        packed_header(compression_id=255),
        packed_header(cipher_id=2),
        packed_header(flags=1),
        packed_header(flags=0x80),
        packed_header(length=MAX_CHUNK + 1),
        packed_header(length=2**64 - 1),
    ],
)
def test_header_refusals(blob):
    with pytest.raises(CorruptObjectError) as raised:
        parse_header(blob, MAX_CHUNK)
    assert raised.value.exit_code == 4


def test_header_at_the_maximum_length_is_accepted():
    assert parse_header(packed_header(length=MAX_CHUNK), MAX_CHUNK).plaintext_length == MAX_CHUNK


@pytest.fixture
def codec() -> ObjectCodec:
    return ObjectCodec(Compressor(CompressionSpec("zstd", 3)), max_chunk_size=MAX_CHUNK)


@pytest.mark.parametrize("data", [COMPRESSIBLE, INCOMPRESSIBLE, b"", b"x"])
def test_codec_round_trip(codec, data):
    blob = codec.encode(chunk_id(data), data)
    assert codec.decode(chunk_id(data), blob) == data
    assert parse_header(blob, MAX_CHUNK).plaintext_length == len(data)


def test_compressible_data_is_stored_compressed(codec):
    blob = codec.encode(chunk_id(COMPRESSIBLE), COMPRESSIBLE)
    assert parse_header(blob, MAX_CHUNK).compression_id == compression.ZSTD_ID
    assert len(blob) < len(COMPRESSIBLE) // 10


@pytest.mark.parametrize("data", [INCOMPRESSIBLE, b"x"])
def test_data_that_does_not_shrink_is_stored_raw(codec, data):
    blob = codec.encode(chunk_id(data), data)
    assert parse_header(blob, MAX_CHUNK).compression_id == compression.NONE_ID
    assert blob[HEADER_SIZE:] == data


def test_compression_none_stores_everything_raw():
    codec = ObjectCodec(Compressor(CompressionSpec("none")), max_chunk_size=MAX_CHUNK)
    blob = codec.encode(chunk_id(COMPRESSIBLE), COMPRESSIBLE)
    assert blob == ObjectHeader(compression.NONE_ID, 0, len(COMPRESSIBLE)).pack() + COMPRESSIBLE


MIXED_CHUNKS = [COMPRESSIBLE, INCOMPRESSIBLE, b"x", COMPRESSIBLE[:5000] + INCOMPRESSIBLE[:3000], b"", COMPRESSIBLE[7:]]


@pytest.mark.parametrize("dictionary", [False, True])
@pytest.mark.parametrize("count", [0, 1, 2, len(MIXED_CHUNKS)])
def test_compress_many_gives_what_compress_gives_each(dictionary, count):
    compressor = dictionary_compressor(trained_dictionary()) if dictionary else Compressor(CompressionSpec("zstd", 3))
    chunks = MIXED_CHUNKS[:count]
    payloads = compressor.compress_many(chunks)
    assert payloads == [compressor.compress(chunk) for chunk in chunks]
    # Both kinds of payload occur among the mixed chunks: compressed, and raw where zstd did not shrink them.
    if count == len(MIXED_CHUNKS):
        assert {compression_id for compression_id, _ in payloads} == {
            compression.ZSTD_DICT_ID if dictionary else compression.ZSTD_ID,
            compression.NONE_ID,
        }


def test_compress_many_makes_the_frames_of_a_batch_in_one_zstd_call(monkeypatch):
    calls = []
    original = zstandard.ZstdCompressor.multi_compress_to_buffer

    def counted(self, data, *args, **kwargs):
        calls.append(len(data))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(zstandard.ZstdCompressor, "multi_compress_to_buffer", counted)
    Compressor(CompressionSpec("zstd", 3)).compress_many(MIXED_CHUNKS)
    assert calls == [len(MIXED_CHUNKS)]


def test_compress_many_without_zstandard_s_batch_call_compresses_one_by_one(monkeypatch):
    def missing(self, data, *args, **kwargs):
        raise NotImplementedError("the cffi backend")

    compressor = Compressor(CompressionSpec("zstd", 3))
    expected = [compressor.compress(chunk) for chunk in MIXED_CHUNKS]
    monkeypatch.setattr(zstandard.ZstdCompressor, "multi_compress_to_buffer", missing)
    assert compressor.compress_many(MIXED_CHUNKS) == expected


def test_compress_many_without_compression_keeps_every_chunk_raw():
    assert Compressor(CompressionSpec("none")).compress_many(MIXED_CHUNKS) == [
        (compression.NONE_ID, chunk) for chunk in MIXED_CHUNKS
    ]


@pytest.mark.parametrize("encrypted", [False, True])
def test_encode_many_gives_records_that_decode_as_encode_s_do(encrypted):
    sealer = Sealer(bytes(range(32))) if encrypted else None
    codec = ObjectCodec(Compressor(CompressionSpec("zstd", 3)), MAX_CHUNK, sealer=sealer)
    ids = [chunk_id(chunk) for chunk in MIXED_CHUNKS]
    records = codec.encode_many(ids, MIXED_CHUNKS)
    assert [codec.decode(chunk_id, record) for chunk_id, record in zip(ids, records, strict=True)] == MIXED_CHUNKS
    singles = [codec.encode(chunk_id, chunk) for chunk_id, chunk in zip(ids, MIXED_CHUNKS, strict=True)]
    assert [parse_header(record, MAX_CHUNK) for record in records] == [
        parse_header(record, MAX_CHUNK) for record in singles
    ]
    if not encrypted:
        assert records == singles
    else:
        # Each record is sealed with its own chunk ID as associated data: another ID does not open it.
        with pytest.raises(CorruptObjectError):
            codec.decode(ids[1], records[0])


def zstd_payload(data: bytes) -> bytes:
    return Compressor(CompressionSpec("zstd", 3)).compress(data)[1]


@pytest.mark.parametrize(
    ("compression_id", "payload", "claimed_length"),
    [
        (compression.ZSTD_ID, zstd_payload(COMPRESSIBLE), len(COMPRESSIBLE) + 1),  # decompresses short
        (compression.ZSTD_ID, zstd_payload(COMPRESSIBLE), len(COMPRESSIBLE) - 1),  # decompresses long
        (compression.ZSTD_ID, zstd_payload(COMPRESSIBLE)[:-10], len(COMPRESSIBLE)),  # truncated frame
        (compression.ZSTD_ID, b"not a zstd frame at all", 100),
        (compression.NONE_ID, b"raw", 4),
        (compression.NONE_ID, b"raw", 2),
    ],
)
def test_payload_of_the_wrong_length_is_refused(codec, compression_id, payload, claimed_length):
    blob = ObjectHeader(compression_id, 0, claimed_length).pack() + payload
    with pytest.raises(CorruptObjectError):
        codec.decode(b"\0" * 32, blob)


def trained_dictionary() -> bytes:
    samples = [COMPRESSIBLE[i : i + 4096] + bytes([i % 251]) * 64 for i in range(0, len(COMPRESSIBLE) - 4096, 512)]
    dictionary = compression.train_dictionary(4096, samples * 4, 3)
    assert dictionary is not None
    return dictionary


def dictionary_compressor(dictionary: bytes) -> Compressor:
    compressor = Compressor(CompressionSpec("zstd", 3).with_dictionary(4096, 8192))
    compressor.use_dictionary(b"12345678", dictionary)
    return compressor


def test_dictionary_records_round_trip_and_name_their_dictionary():
    dictionary = trained_dictionary()
    compressor = dictionary_compressor(dictionary)
    loaded = []

    def source(dictionary_id: bytes) -> bytes:
        loaded.append(dictionary_id)
        return dictionary

    codec = ObjectCodec(compressor, MAX_CHUNK, dictionaries=source)
    blob = codec.encode(bytes(32), COMPRESSIBLE)
    assert parse_header(blob, MAX_CHUNK).compression_id == compression.ZSTD_DICT_ID
    assert blob[HEADER_SIZE : HEADER_SIZE + 8] == b"12345678"
    assert codec.decode(bytes(32), blob) == COMPRESSIBLE
    assert loaded in ([b"12345678"], [])  # [] when this thread decoded with that ID before
    # The frame itself does not name the dictionary, and without the dictionary it is refused.
    with pytest.raises(CorruptObjectError):
        compression.decompress(compression.ZSTD_DICT_ID, blob[HEADER_SIZE:], len(COMPRESSIBLE))
    with pytest.raises(CorruptObjectError):
        compression.decompress(compression.ZSTD_DICT_ID, b"1234567", 100, source)


def test_dictionary_frames_keep_the_allocation_bound():
    """A frame that declares a size other than the header's is refused before decoding."""
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 10_000)
    with pytest.raises(CorruptObjectError, match="declares"):
        compression.decompress(compression.ZSTD_DICT_ID, b"87654321" + frame, 100, lambda _: b"d" * 2048)


def test_decompress_refuses_an_unknown_compression_id():
    with pytest.raises(CorruptObjectError):
        compression.decompress(9, b"data", 4)


def mixed_payloads() -> tuple[list[compression.Compressed], compression.DictionarySource]:
    """Payloads of every kind decompress_many sorts: raw, zstd, zstd with a dictionary, and an
    empty zstd frame (decoded on its own), interleaved."""
    dictionary = trained_dictionary()
    with_dictionary = dictionary_compressor(dictionary)
    plain = Compressor(CompressionSpec("zstd", 3))
    payloads = [compression.Compressed(compression.NONE_ID, INCOMPRESSIBLE, len(INCOMPRESSIBLE))]
    for number in range(6):
        data = (COMPRESSIBLE[number * 1000 :] + bytes([number]) * 100) * 2
        payloads.append(compression.Compressed(*(with_dictionary if number % 2 else plain).compress(data), len(data)))
    payloads.append(compression.Compressed(compression.ZSTD_ID, zstandard.ZstdCompressor().compress(b""), 0))
    return payloads, lambda _: dictionary


def test_decompress_many_gives_what_decompress_gives_each():
    payloads, source = mixed_payloads()
    assert {payload.compression_id for payload in payloads} == {
        compression.NONE_ID,
        compression.ZSTD_ID,
        compression.ZSTD_DICT_ID,
    }
    # More plaintext than one call decodes: the frames of each decompressor go in several batches.
    for compression_id in compression.ZSTD_ID, compression.ZSTD_DICT_ID:
        lengths = [payload.plaintext_length for payload in payloads if payload.compression_id == compression_id]
        assert sum(lengths) > compression.DECODE_BATCH_BYTES
    expected = [compression.decompress(*payload, source) for payload in payloads]
    assert compression.decompress_many(payloads, source) == expected
    assert compression.decompress_many([], source) == []


@pytest.mark.parametrize(
    ("lengths", "limit", "expected"),
    [
        ([], 10, []),
        ([3, 3, 3, 3], 6, [[3, 3], [3, 3]]),
        ([3, 3, 3], 7, [[3, 3], [3]]),
        ([20, 1, 1, 20], 10, [[20], [1, 1], [20]]),  # a length over the limit goes alone
        ([0, 0, 5], 5, [[0, 0, 5]]),
    ],
)
def test_batch_slices_cut_in_order_within_the_limit(lengths, limit, expected):
    assert [lengths[part] for part in compression.batch_slices(lengths, limit)] == expected


def test_decompress_many_decodes_zstd_frames_in_groups_not_one_by_one(monkeypatch):
    payloads, source = mixed_payloads()
    framed = [
        payload for payload in payloads if payload.compression_id != compression.NONE_ID and payload.plaintext_length
    ]
    expected = [compression.decompress(*payload, source) for payload in framed]
    monkeypatch.setattr(compression, "decompress", None)  # any call of it fails
    assert compression.decompress_many(framed, source) == expected


@pytest.mark.parametrize(
    "bad",
    [
        compression.Compressed(compression.ZSTD_ID, zstd_payload(COMPRESSIBLE), len(COMPRESSIBLE) + 1),
        compression.Compressed(compression.ZSTD_ID, zstd_payload(COMPRESSIBLE), len(COMPRESSIBLE) - 1),
        compression.Compressed(compression.ZSTD_ID, zstd_payload(COMPRESSIBLE)[:-10], len(COMPRESSIBLE)),
        compression.Compressed(compression.ZSTD_ID, b"not a zstd frame at all", 100),
        # A frame that declares 512 MiB, under a header that says 100 bytes: refused, not allocated.
        compression.Compressed(
            compression.ZSTD_ID, zstandard.ZstdCompressor(write_content_size=True).compress(bytes(512 << 20)), 100
        ),
        compression.Compressed(compression.ZSTD_DICT_ID, b"12345678" + zstd_payload(COMPRESSIBLE), 100),
        compression.Compressed(compression.NONE_ID, b"raw", 4),
    ],
    ids=["short", "long", "truncated", "garbage", "declares-more", "dictionary-garbage", "raw-short"],
)
def test_decompress_many_refuses_a_bad_payload_among_good_ones_as_decompress_does(bad):
    payloads, source = mixed_payloads()
    with pytest.raises(CorruptObjectError) as alone:
        compression.decompress(*bad, source)
    with pytest.raises(CorruptObjectError) as among:
        compression.decompress_many([*payloads[:4], bad, *payloads[4:]], source)
    assert str(among.value) == str(alone.value)


# ---- recipe pages --------------------------------------------------------------------------


def entries(count: int, start: int = 0) -> list[recipes.RecipeEntry]:
    return [recipes.RecipeEntry(chunk_id(b"%d" % number), 1000 + number) for number in range(start, start + count)]


@pytest.mark.parametrize("count", [0, 1, 4096])
def test_page_round_trip(count):
    page = recipes.encode_page(entries(count))
    assert len(page) == 12 + 36 * count
    assert page[:4] == b"CSRP"
    assert recipes.decode_page(page) == entries(count)


@pytest.mark.parametrize(
    ("count", "page_entries", "sizes"), [(10, 3, [3, 3, 3, 1]), (9, 3, [3, 3, 3]), (0, 3, []), (1, 4096, [1])]
)
def test_paginate(count, page_entries, sizes):
    pages = list(recipes.paginate(entries(count), page_entries))
    decoded = [recipes.decode_page(page) for page in pages]
    assert [len(page) for page in decoded] == sizes
    assert [entry for page in decoded for entry in page] == entries(count)


def damaged_page(**changes) -> bytes:
    fields = {"magic": recipes.MAGIC, "version": recipes.VERSION, "flags": 0, "reserved": 0, "count": 2}
    fields.update(changes)
    body = b"".join(recipes.ENTRY.pack(entry.chunk_id, entry.length) for entry in entries(2))
    return recipes.PAGE_HEADER.pack(*fields.values()) + body


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"CSRP\x01\x00\x00",
        damaged_page(magic=b"CSOB"),
        damaged_page(version=2),
        damaged_page(flags=1),
        damaged_page(reserved=1),
        damaged_page(count=3),
        damaged_page(count=1),
        damaged_page(count=2**32 - 1),
        damaged_page()[:-1],
        damaged_page() + b"\0",
    ],
)
def test_page_refusals(blob):
    with pytest.raises(CorruptObjectError):
        recipes.decode_page(blob)


# ---- store config --------------------------------------------------------------------------


def make_config(**changes) -> StoreConfig:
    fields = {
        "chunker": ChunkerSpec.from_average("fastcdc2020", 16 * 1024, seed=99),
        "compression": CompressionSpec.parse("zstd:5"),
        "catalog": {"type": "sqlite", "path": "catalog.sqlite"},
    }
    fields.update(changes)
    return StoreConfig(**fields)


def config_document(**changes) -> dict:
    document = json.loads(make_config().to_bytes())
    document.update(changes)
    return document


def config_bytes(document: dict) -> bytes:
    return json.dumps(document).encode()


def test_unlocking_an_encrypted_config_without_a_passphrase_asks_for_one():
    config, _ = make_config().with_encryption(b"secret")
    with pytest.raises(PassphraseRequiredError, match="give its passphrase"):
        config.unlock(None)


def test_a_config_that_is_not_encrypted_has_no_passphrase_to_change():
    with pytest.raises(InvalidArgumentError, match="not encrypted"):
        make_config().with_new_passphrase(b"old", b"new")


@pytest.mark.parametrize("chunker", ["fastcdc2020", "fastcdc-ronomon", "fixed"])
@pytest.mark.parametrize("compression_text", ["zstd:1", "zstd:22", "none"])
def test_config_round_trip(chunker, compression_text):
    config = make_config(
        chunker=ChunkerSpec.from_average(chunker, 8192), compression=CompressionSpec.parse(compression_text)
    )
    assert StoreConfig.from_bytes(config.to_bytes()) == config


def test_config_records_every_parameter_that_shapes_data():
    document = json.loads(make_config().to_bytes())
    assert document["format"] == "chunkstore" and document["version"] == 1
    assert document["chunker"] == {
        "name": "fastcdc2020",
        "min_size": 4096,
        "avg_size": 16384,
        "max_size": 65536,
        "seed": 99,
    }
    assert document["compression"] == {"name": "zstd", "level": 5}
    assert (document["chunk_id"], document["file_digest"]) == ("blake3-256", "blake3-256")
    assert (document["object_format"], document["recipe_format"]) == (1, 1)
    assert document["layout"] == {"chunk_prefix": "chunks/", "shard_hex_digits": 2}


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_config_of_an_unknown_version_is_unsupported(version):
    with pytest.raises(UnsupportedFormatError):
        StoreConfig.from_bytes(config_bytes(config_document(version=version)))


@pytest.mark.parametrize(
    "raw",
    [b"", b"{not json", b"\xff\xfe\x00", b"[]", b"42", b'"config"', config_bytes(config_document(format="restic"))],
)
def test_config_that_is_not_a_chunkstore_config_is_corrupt(raw):
    with pytest.raises(CorruptObjectError):
        StoreConfig.from_bytes(raw)


REQUIRED_FIELDS = [
    "store_id",
    "created_at",
    "chunker",
    "chunk_id",
    "file_digest",
    "compression",
    "object_format",
    "recipe_format",
    "encryption",
    "layout",
    "catalog",
]


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_config_missing_a_field_is_corrupt(field):
    document = config_document()
    del document[field]
    with pytest.raises(CorruptObjectError):
        StoreConfig.from_bytes(config_bytes(document))


@pytest.mark.parametrize("size_field", ["min_size", "avg_size", "max_size"])
def test_config_missing_a_chunker_size_is_corrupt(size_field):
    document = config_document()
    del document["chunker"][size_field]
    with pytest.raises(CorruptObjectError):
        StoreConfig.from_bytes(config_bytes(document))


@pytest.mark.parametrize(
    "changes",
    [
        {"chunker": "fastcdc2020"},
        {"chunker": {"name": "fastcdc2020", "min_size": "small", "avg_size": 16384, "max_size": 65536}},
        {"chunker": {"name": "fastcdc2020", "min_size": 1, "avg_size": 2, "max_size": 3}},
        {"compression": ["zstd", 3]},
        {"compression": {"name": "zstd", "level": "high"}},
        {"catalog": "catalog.sqlite"},
    ],
)
def test_config_with_a_field_of_the_wrong_shape_is_corrupt(changes):
    with pytest.raises(CorruptObjectError):
        StoreConfig.from_bytes(config_bytes(config_document(**changes)))


@pytest.mark.parametrize(
    "changes",
    [
        {"chunker": {"name": "rabin", "min_size": 4096, "avg_size": 16384, "max_size": 65536}},
        {"compression": {"name": "lz4", "level": 1}},
        {"compression": {"name": "zstd", "level": 99}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": 0, "training_bytes": 16 << 20}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": 2 << 20, "training_bytes": 16 << 20}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": 112 << 10, "training_bytes": 100_000}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": 112 << 10, "training_bytes": 1 << 30}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": "112K", "training_bytes": 16 << 20}},
        {"compression": {"name": "zstd", "level": 3, "dictionary_size": 112 << 10}},
        {"compression": {"name": "none", "level": 0, "dictionary_size": 112 << 10, "training_bytes": 16 << 20}},
        {"chunk_id": "sha256"},
        {"file_digest": "md5"},
        {"object_format": 2},
        {"recipe_format": 2},
        {"encryption": {"scheme": "future"}},
        {"layout": {"chunk_prefix": "data/", "shard_hex_digits": 2}},
    ],
)
def test_config_naming_an_unknown_algorithm_or_format_is_unsupported(changes):
    with pytest.raises(UnsupportedFormatError):
        StoreConfig.from_bytes(config_bytes(config_document(**changes)))


# ---- compression spec ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", CompressionSpec("none", 0)),
        ("zstd", CompressionSpec("zstd", compression.DEFAULT_ZSTD_LEVEL)),
        ("zstd:1", CompressionSpec("zstd", 1)),
        ("zstd:22", CompressionSpec("zstd", 22)),
    ],
)
def test_compression_parse(text, expected):
    spec = CompressionSpec.parse(text)
    assert spec == expected
    assert CompressionSpec.parse(str(spec)) == spec
    assert CompressionSpec.from_config(spec.to_config()) == spec


@pytest.mark.parametrize("text", ["", "zstd:0", "zstd:23", "zstd:-1", "zstd:fast", "none:3", "lz4", "ZSTD", "gzip:6"])
def test_compression_parse_refuses(text):
    with pytest.raises(InvalidArgumentError):
        CompressionSpec.parse(text)


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/data/x", "data/x"),
        ("./a//b/", "a/b"),
        ("data/x", "data/x"),
        ("a/./b", "a/b"),
        ("///a", "a"),
        ("name with spaces/é", "name with spaces/é"),
        (Path("/srv/data"), "srv/data"),
        ("é" * (MAX_NAME_BYTES // 2), "é" * (MAX_NAME_BYTES // 2)),
    ],
)
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected
    assert normalize_name(expected) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        ".",
        "./",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "a\x00b",
        "x" * (MAX_NAME_BYTES + 1),
        "é" * (MAX_NAME_BYTES // 2 + 1),  # few characters, too many bytes
        "bad-\udcff-utf8",  # what os.fsdecode makes of a non-UTF-8 file name
    ],
)
def test_normalize_name_refuses(raw):
    with pytest.raises(InvalidArgumentError):
        normalize_name(raw)


def test_names_from_non_utf8_file_names_are_refused():
    with pytest.raises(InvalidArgumentError):
        normalize_name(os.fsdecode(b"caf\xe9"))


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, ""), ("", ""), ("/", ""), ("./", ""), ("data/", "data"), ("/data/x/", "data/x")]
)
def test_normalize_prefix(raw, expected):
    assert normalize_prefix(raw) == expected


@pytest.mark.parametrize(
    ("name", "prefix", "expected"),
    [
        ("data", "data", True),
        ("data/x", "data", True),
        ("database", "data", False),
        ("dat", "data", False),
        ("anything", "", True),
        ("data/x", "data/x", True),
        ("data/xy", "data/x", False),
    ],
)
def test_name_matches_prefix(name, prefix, expected):
    assert name_matches_prefix(name, prefix) is expected


# ---- chunk keys ----------------------------------------------------------------------------


def test_chunk_key_shards_by_the_first_two_hex_digits():
    identifier = bytes(range(0xAB, 0xAB + 32))
    assert chunk_key(identifier) == f"chunks/ab/{identifier.hex()}"
    assert chunk_id_from_key(chunk_key(identifier)) == identifier


@pytest.mark.parametrize(
    "key",
    [
        "config",
        "chunks/ab",
        "chunks/ab/" + "ab" * 31,  # 31 bytes
        "chunks/ab/" + "ab" * 33,
        "chunks/00/" + "ab" * 32,  # wrong shard
        "chunks/ab/" + "AB" * 32,  # not the canonical spelling
        "chunks/ab/" + "zz" * 32,
        "chunks/ab/" + "ab" * 32 + "/extra",
        "other/ab/" + "ab" * 32,
    ],
)
def test_keys_that_are_not_chunk_objects(key):
    assert chunk_id_from_key(key) is None

"""Hostile bytes into the object, recipe and config parsers: only the project's format or
integrity errors come out, never another exception, a hang or an allocation beyond the bounds
the format sets."""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tiers import scale

from chunkstore import ChunkerSpec, CompressionSpec
from chunkstore.core.compression import NONE_ID, ZSTD_ID, Compressor
from chunkstore.core.config import StoreConfig
from chunkstore.core.objectformat import HEADER, MAGIC, VERSION, ObjectCodec, parse_header
from chunkstore.core.recipes import ENTRY, PAGE_HEADER, RecipeEntry, decode_page, encode_page
from chunkstore.errors import CorruptObjectError, UnsupportedFormatError

FORMAT_ERRORS = (CorruptObjectError, UnsupportedFormatError)
MAX_CHUNK = 64 * 1024
CODEC = ObjectCodec(Compressor(CompressionSpec.parse("zstd:3")), max_chunk_size=MAX_CHUNK)
CHUNK_ID = bytes(32)
FUZZ = settings(
    max_examples=scale(300, 5_000), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def headers():
    """Headers with each field drawn around the values the parser accepts."""
    return st.builds(
        lambda magic, version, compression, cipher, flags, length: HEADER.pack(
            magic, version, compression, cipher, flags, length
        ),
        st.sampled_from([MAGIC, b"CSOC", b"\x00" * 4]),
        st.sampled_from([VERSION, 0, 2, 255]),
        st.sampled_from([NONE_ID, ZSTD_ID, 7, 255]),
        st.sampled_from([0, 1, 2, 255]),
        st.sampled_from([0, 1, 128]),
        st.sampled_from([0, 1, MAX_CHUNK, MAX_CHUNK + 1, 2**63, 2**64 - 1]),
    )


@FUZZ
@given(st.binary(max_size=64))
@example(b"")
@example(MAGIC)
def test_parse_header_of_random_bytes(blob):
    try:
        header = parse_header(blob, MAX_CHUNK)
    except FORMAT_ERRORS:
        return
    assert header.plaintext_length <= MAX_CHUNK


@FUZZ
@given(headers(), st.binary(max_size=2048))
def test_decode_of_a_plausible_header_and_random_payload(header, payload):
    try:
        data = CODEC.decode(CHUNK_ID, header + payload)
    except FORMAT_ERRORS:
        return
    assert len(data) <= MAX_CHUNK


@FUZZ
@given(st.binary(min_size=1, max_size=4096), st.integers(0, 2**64 - 1), st.data())
def test_decode_of_a_mutated_real_object(plaintext, length, data):
    blob = bytearray(CODEC.encode(CHUNK_ID, plaintext))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        struct.pack_into(">Q", blob, 8, length)
    try:
        decoded = CODEC.decode(CHUNK_ID, bytes(blob))
    except FORMAT_ERRORS:
        return
    assert len(decoded) <= MAX_CHUNK


def test_a_decompression_bomb_is_refused_without_allocating_its_size():
    """A tiny zstd frame of 1 GB of zeros, behind a header that claims a small chunk."""
    import zstandard

    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 * 1024 * 1024))
    blob = HEADER.pack(MAGIC, VERSION, ZSTD_ID, 0, 0, 1000) + bomb
    try:
        CODEC.decode(CHUNK_ID, blob)
    except FORMAT_ERRORS as error:
        assert "decompress" in str(error) or "header says" in str(error)
    else:
        raise AssertionError("a bomb decoded")


@FUZZ
@given(st.binary(max_size=512))
def test_decode_page_of_random_bytes(blob):
    try:
        entries = decode_page(blob)
    except FORMAT_ERRORS:
        return
    assert len(blob) == PAGE_HEADER.size + len(entries) * ENTRY.size


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.binary(max_size=8))
def test_decode_page_whose_count_lies(count, real_entries, tail):
    entries = [RecipeEntry(bytes([index]) * 32, index) for index in range(real_entries)]
    blob = bytearray(encode_page(entries))
    struct.pack_into(">I", blob, 8, count)
    try:
        decoded = decode_page(bytes(blob) + tail)
    except FORMAT_ERRORS:
        return
    assert decoded == entries and count == real_entries and not tail


VALID_CONFIG = json.loads(
    StoreConfig(
        chunker=ChunkerSpec.from_average(),
        compression=CompressionSpec.parse("zstd:3"),
        catalog={"type": "sqlite", "path": "catalog.sqlite"},
    ).to_bytes()
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def load_config(raw: bytes) -> None:
    try:
        config = StoreConfig.from_bytes(raw)
    except FORMAT_ERRORS:
        return
    config.chunker.validate()


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b'{"format": "chunkstore", "version": 1' + b', "x": [' * 50_000)
@example(b"\xff\xfe{}")
@example(b"1e999999")
def test_config_of_random_bytes(raw):
    load_config(raw)


@FUZZ
@given(st.sampled_from(sorted(VALID_CONFIG)), json_values, st.data())
def test_config_with_one_field_replaced(key, value, data):
    document = json.loads(json.dumps(VALID_CONFIG))
    target = document
    if isinstance(document[key], dict) and document[key] and data.draw(st.booleans()):
        target = document[key]
        key = data.draw(st.sampled_from(sorted(target)))
    target[key] = value
    load_config(json.dumps(document, allow_nan=True).encode())


@FUZZ
@given(st.sampled_from(sorted(VALID_CONFIG)))
def test_config_with_a_field_missing(key):
    document = dict(VALID_CONFIG)
    del document[key]
    load_config(json.dumps(document).encode())

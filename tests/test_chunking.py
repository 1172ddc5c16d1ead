"""Chunkers: golden boundaries, streaming, size limits, and ChunkerSpec validation.

The golden table pins where every chunker cuts over a grid of sizes and inputs:
changing a boundary would make every existing store stop deduplicating against new
data, so a change here must be a deliberate format change, never an accident.
"""

from __future__ import annotations

import io
import itertools
import os
import struct
import sys
import threading
from functools import cache

import blake3
import pytest
from fastcdc.fastcdc_cy import fastcdc_cy

from chunkstore.core import chunking
from chunkstore.core.chunking import ChunkerSpec, default_avg_size, make_chunker
from chunkstore.errors import InvalidArgumentError, UnsupportedFormatError

KIB = 1024
AVG_SIZES = [1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB]
CHUNKERS = ["fastcdc2020", "fastcdc-ronomon", "fixed"]
GOLDEN_SEED = 0x5EED_C0FFEE


def xof(label: str, size: int) -> bytes:
    """size pseudo-random bytes, the same on every machine and Python version."""
    return blake3.blake3(label.encode()).digest(length=size)


WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "it",
    "which",
    "not",
    "have",
    "one",
    "chunk",
    "store",
    "file",
    "data",
    "version",
    "recipe",
    "digest",
    "backup",
    "restore",
    "object",
    "header",
    "catalog",
    "page",
    "block",
    "deduplicate",
    "compress",
    "stream",
    "boundary",
    "window",
    "rolling",
    "hash",
    "fast",
    "content",
    "defined",
]


@cache
def golden_input(name: str) -> bytes:
    if name == "random":
        return xof("golden random", 2 * 1024 * KIB)
    if name == "text":
        # Words picked by XOF bytes, with line breaks: compressible, low-entropy text.
        picks = xof("golden text", 400 * KIB)
        words = [WORDS[byte % len(WORDS)] + ("\n" if byte % 11 == 0 else " ") for byte in picks]
        return "".join(words).encode()
    if name == "edited":
        # One block three times with small insertions and deletions, as successive versions of a file look.
        block = xof("golden edited block", 512 * KIB)
        return block + block[:100_000] + b"inserted line\n" + block[100_000:] + block[:300_000] + block[300_123:]
    if name == "sparse":
        # Long zero runs force cuts at max_size; a content-defined chunker must resync after them.
        return bytes(1024 * KIB) + xof("golden sparse", 1024 * KIB) + bytes(777 * KIB) + xof("golden tail", 5000)
    raise KeyError(name)


INPUTS = ["random", "text", "edited", "sparse"]


def chunk_lengths(spec: ChunkerSpec, data: bytes, stream=None) -> list[int]:
    return [len(chunk) for chunk in make_chunker(spec)(stream if stream is not None else io.BytesIO(data))]


def boundary_digest(lengths: list[int]) -> str:
    return blake3.blake3(b"".join(struct.pack(">I", length) for length in lengths)).hexdigest()[:32]


def spec_for(name: str, avg_size: int, seed: int = 0) -> ChunkerSpec:
    return ChunkerSpec.from_average(name, avg_size, seed)


# (chunker, average size, seed, input) -> digest of the list of chunk lengths.
GOLDEN = {
    ("fastcdc-ronomon", 1 * KIB, 0, "edited"): "ed4411e875ee0f3c8b9569b1d04bd769",  # 1491 chunks
    ("fastcdc-ronomon", 1 * KIB, 0, "random"): "92b20c1daf293acd06d9f03e59a7eef5",  # 2072 chunks
    ("fastcdc-ronomon", 1 * KIB, 0, "sparse"): "a8a2cd0a22289e4d9715a043ebc61ed7",  # 1482 chunks
    ("fastcdc-ronomon", 1 * KIB, 0, "text"): "ab29d7e4ef8385d95904bbdade7da4d9",  # 2115 chunks
    ("fastcdc-ronomon", 4 * KIB, 0, "edited"): "71cac73229a4155d238b8445d9fabac7",  # 396 chunks
    ("fastcdc-ronomon", 4 * KIB, 0, "random"): "1417b1d55b39d87a52afd80cf8048cc6",  # 505 chunks
    ("fastcdc-ronomon", 4 * KIB, 0, "sparse"): "8dc481f677119792e7decba3c788c765",  # 373 chunks
    ("fastcdc-ronomon", 4 * KIB, 0, "text"): "58af9cb2d529ea6139952d1062654b7b",  # 531 chunks
    ("fastcdc-ronomon", 16 * KIB, 0, "edited"): "2839c2fe8c520e1cbcdc73efaf6ac127",  # 97 chunks
    ("fastcdc-ronomon", 16 * KIB, 0, "random"): "af7500c781f71622ff60035474dd5e28",  # 124 chunks
    ("fastcdc-ronomon", 16 * KIB, 0, "sparse"): "d2c6a6d92b02189a5d2b51f4fbc7ab30",  # 98 chunks
    ("fastcdc-ronomon", 16 * KIB, 0, "text"): "603a1e41229dc414aa69a4a3a031f7cc",  # 136 chunks
    ("fastcdc-ronomon", 64 * KIB, 0, "edited"): "46e1c8077b9056acb0565e14183c6800",  # 24 chunks
    ("fastcdc-ronomon", 64 * KIB, 0, "random"): "962cd9f86404337ade8cb9ef6483d3c3",  # 30 chunks
    ("fastcdc-ronomon", 64 * KIB, 0, "sparse"): "3ea1da48f0e4f18631929b169bad7bea",  # 24 chunks
    ("fastcdc-ronomon", 64 * KIB, 0, "text"): "6ed0bbaad72eeca09dc3945b59b0f0ad",  # 32 chunks
    ("fastcdc2020", 1 * KIB, 0, "edited"): "9024ded0140a79ef6732b5cdafefaf01",  # 1256 chunks
    ("fastcdc2020", 1 * KIB, 0, "random"): "c8b54e3f80b355d6796081b0b2575f94",  # 1693 chunks
    ("fastcdc2020", 1 * KIB, 0, "sparse"): "da57e1e16d5177d8cb5f87ac961f5361",  # 1318 chunks
    ("fastcdc2020", 1 * KIB, 0, "text"): "ba3e77bf76f50576448a9ac3dc22fd57",  # 1740 chunks
    ("fastcdc2020", 1 * KIB, GOLDEN_SEED, "random"): "3e3d1ba830951129652c152bcb709b19",  # 1698 chunks
    ("fastcdc2020", 4 * KIB, 0, "edited"): "fe9bce5abbfdb50e0b31268da30c5b16",  # 331 chunks
    ("fastcdc2020", 4 * KIB, 0, "random"): "3d3c68e40a0578ea350691318366e100",  # 423 chunks
    ("fastcdc2020", 4 * KIB, 0, "sparse"): "c1d11fb6d28baf15ae7b31861f4a602b",  # 318 chunks
    ("fastcdc2020", 4 * KIB, 0, "text"): "56201244c66a7662230eb1262392575c",  # 436 chunks
    ("fastcdc2020", 4 * KIB, GOLDEN_SEED, "random"): "fefbb4397e774f897a8084b5d5d78ce1",  # 418 chunks
    ("fastcdc2020", 16 * KIB, 0, "edited"): "ac87a5ca65bfc749c96104e82f9b2933",  # 76 chunks
    ("fastcdc2020", 16 * KIB, 0, "random"): "ed8cbab54dbcfa49d8bf7a81c8bfd999",  # 106 chunks
    ("fastcdc2020", 16 * KIB, 0, "sparse"): "4261ca13e5fe9712b52a58cdb8d25b4a",  # 79 chunks
    ("fastcdc2020", 16 * KIB, 0, "text"): "4a24aa7710f6611926efa2249d20eaa8",  # 110 chunks
    ("fastcdc2020", 16 * KIB, GOLDEN_SEED, "random"): "2b146d8033ed51ec1891b53c5e7f0cb8",  # 108 chunks
    ("fastcdc2020", 64 * KIB, 0, "edited"): "7e1c46a9b6470414c937bb16a845ef46",  # 19 chunks
    ("fastcdc2020", 64 * KIB, 0, "random"): "ac7c896e2767b310dcc329fe4997be67",  # 26 chunks
    ("fastcdc2020", 64 * KIB, 0, "sparse"): "2fd0e3378fabc70b952151072097a524",  # 16 chunks
    ("fastcdc2020", 64 * KIB, 0, "text"): "c1ec0d51f20f080766f2453ecab71441",  # 24 chunks
    ("fastcdc2020", 64 * KIB, GOLDEN_SEED, "random"): "f8e0572ed398bdc0a9bb94257b589fea",  # 23 chunks
    ("fixed", 1 * KIB, 0, "edited"): "84fce04be5403d14f2ca5378e329f52a",  # 1536 chunks
    ("fixed", 1 * KIB, 0, "random"): "e140e8a1abcd83c8378df57c786efc96",  # 2048 chunks
    ("fixed", 1 * KIB, 0, "sparse"): "841f4090e7a345549a5edd753270daef",  # 2830 chunks
    ("fixed", 1 * KIB, 0, "text"): "026ef3a2b415118882a80532ad808d26",  # 2136 chunks
    ("fixed", 4 * KIB, 0, "edited"): "ce8f0d8a6fa312b1e5f1537fb618c0a4",  # 384 chunks
    ("fixed", 4 * KIB, 0, "random"): "97209ebc3018a5f0d793e9f274dbb34b",  # 512 chunks
    ("fixed", 4 * KIB, 0, "sparse"): "f3e4281c198fb33760e9039e5d0e9fe1",  # 708 chunks
    ("fixed", 4 * KIB, 0, "text"): "1830135524eb07dd9a8a4ef358707708",  # 534 chunks
    ("fixed", 16 * KIB, 0, "edited"): "e2445c05d2f2534271bae0db2905fbf9",  # 96 chunks
    ("fixed", 16 * KIB, 0, "random"): "360efc8c592500273326b72e3d132ea1",  # 128 chunks
    ("fixed", 16 * KIB, 0, "sparse"): "13801871390f3a77ad55def9bd6239a6",  # 177 chunks
    ("fixed", 16 * KIB, 0, "text"): "5c1441f59bd0b20597e85695ac7a05b8",  # 134 chunks
    ("fixed", 64 * KIB, 0, "edited"): "98318b628a9ed53e376ed2153bfc018e",  # 24 chunks
    ("fixed", 64 * KIB, 0, "random"): "55db78c0cac8d953af2ae1e349375d57",  # 32 chunks
    ("fixed", 64 * KIB, 0, "sparse"): "636b1cd0037d449b7791334ad8f9e182",  # 45 chunks
    ("fixed", 64 * KIB, 0, "text"): "fbce0ae0a04d74126bff9c760b12e881",  # 34 chunks
}


@pytest.mark.parametrize(("chunker", "avg_size", "seed", "input_name"), sorted(GOLDEN))
def test_golden_boundaries(chunker, avg_size, seed, input_name):
    lengths = chunk_lengths(spec_for(chunker, avg_size, seed), golden_input(input_name))
    assert boundary_digest(lengths) == GOLDEN[chunker, avg_size, seed, input_name]


def test_golden_table_covers_the_grid():
    grid = {(chunker, avg, 0, name) for chunker in CHUNKERS for avg in AVG_SIZES for name in INPUTS}
    seeded = {("fastcdc2020", avg, GOLDEN_SEED, "random") for avg in AVG_SIZES}
    assert set(GOLDEN) == grid | seeded


@pytest.mark.parametrize("avg_size", AVG_SIZES)
@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("input_name", INPUTS)
def test_chunks_cover_the_input_within_size_limits(chunker, avg_size, input_name):
    spec = spec_for(chunker, avg_size)
    data = golden_input(input_name)
    chunks = list(make_chunker(spec)(io.BytesIO(data)))
    assert b"".join(chunks) == data
    *body, last = chunks
    assert all(spec.min_size <= len(chunk) <= spec.max_size for chunk in body)
    assert 0 < len(last) <= spec.max_size
    if chunker != "fixed":
        # Content-defined: sizes vary around the average rather than sitting on it.
        assert len(set(map(len, chunks))) > 1


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_empty_input_gives_no_chunks(chunker):
    assert list(make_chunker(spec_for(chunker, 4 * KIB))(io.BytesIO(b""))) == []


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_input_smaller_than_min_size_is_one_chunk(chunker):
    data = xof("tiny", 100)
    assert list(make_chunker(spec_for(chunker, 4 * KIB))(io.BytesIO(data))) == [data]


@pytest.mark.parametrize("avg_size", AVG_SIZES)
@pytest.mark.parametrize("input_name", INPUTS)
def test_ronomon_streaming_equals_whole_buffer(monkeypatch, avg_size, input_name):
    # A small, odd read block makes the stream wrapper carry chunks across many reads.
    monkeypatch.setattr(chunking, "_BLOCK", 100_003)
    spec = spec_for("fastcdc-ronomon", avg_size)
    data = golden_input(input_name)
    whole = [chunk.length for chunk in fastcdc_cy(data, spec.min_size, spec.avg_size, spec.max_size)]
    assert chunk_lengths(spec, data) == whole


def test_ronomon_streaming_equals_whole_buffer_at_the_real_block_size():
    spec = spec_for("fastcdc-ronomon", 64 * KIB)
    data = xof("longer than two read blocks", 2 * chunking._BLOCK + 12_345)
    whole = [chunk.length for chunk in fastcdc_cy(data, spec.min_size, spec.avg_size, spec.max_size)]
    assert chunk_lengths(spec, data) == whole


def pipe_reader(data: bytes):
    """A binary stream over a real pipe, fed in pieces of uneven size, so reads come back short."""
    read_end, write_end = os.pipe()

    def feed():
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            offset = 0
            for size in itertools.cycle([1, 4095, 7, 65_536, 333, 20_000]):
                if offset >= len(data):
                    break
                pipe.write(data[offset : offset + size])
                offset += size

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return os.fdopen(read_end, "rb", buffering=0), feeder


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_short_reads_give_the_same_boundaries(chunker, monkeypatch):
    monkeypatch.setattr(chunking, "_BLOCK", 100_003)
    spec = spec_for(chunker, 4 * KIB)
    data = golden_input("edited")
    stream, feeder = pipe_reader(data)
    with stream:
        chunks = list(make_chunker(spec)(stream))
    feeder.join()
    assert b"".join(chunks) == data
    assert list(map(len, chunks)) == chunk_lengths(spec, data)


def test_a_seed_changes_boundaries_and_is_deterministic():
    data = golden_input("random")
    unseeded = chunk_lengths(spec_for("fastcdc2020", 4 * KIB), data)
    seeded = chunk_lengths(spec_for("fastcdc2020", 4 * KIB, seed=GOLDEN_SEED), data)
    assert seeded != unseeded
    assert chunk_lengths(spec_for("fastcdc2020", 4 * KIB, seed=GOLDEN_SEED), data) == seeded
    assert chunk_lengths(spec_for("fastcdc2020", 4 * KIB, seed=GOLDEN_SEED + 1), data) != seeded


# ---- ChunkerSpec ---------------------------------------------------------------------------


def test_default_average_sizes_follow_the_storage_format():
    assert (default_avg_size(2), default_avg_size(1)) == (8 * KIB, 64 * KIB)


def test_from_average_spreads_min_and_max_around_the_average():
    assert ChunkerSpec.from_average() == ChunkerSpec("fastcdc2020", 2 * KIB, 8 * KIB, 32 * KIB, 0)
    assert ChunkerSpec.from_average("fastcdc-ronomon", 64 * KIB) == ChunkerSpec(
        "fastcdc-ronomon", 16 * KIB, 64 * KIB, 256 * KIB
    )
    assert ChunkerSpec.from_average("fixed", 8 * KIB) == ChunkerSpec("fixed", 8 * KIB, 8 * KIB, 8 * KIB)


@pytest.mark.parametrize(
    "spec",
    [
        ChunkerSpec("fastcdc2020", 32, 128, 512),  # below the library's minimums
        ChunkerSpec("fastcdc2020", 1 << 21, 1 << 22, 1 << 24),  # min above 1 MiB
        ChunkerSpec("fastcdc2020", 4096, 2048, 8192),  # min > avg
        ChunkerSpec("fastcdc2020", 1024, 8192, 4096),  # avg > max
        ChunkerSpec("fastcdc-ronomon", 1024, 4096, 1 << 25),  # max above 16 MiB
        ChunkerSpec("fastcdc-ronomon", 1024, 4096, 16384, seed=7),  # no seed support
        ChunkerSpec("fixed", 4096, 4096, 4096, seed=7),
        ChunkerSpec("fixed", 32, 32, 32),
    ],
)
def test_validate_refuses(spec):
    with pytest.raises(InvalidArgumentError):
        spec.validate()


@pytest.mark.parametrize(("name", "avg_size"), [("nope", 4096), ("fastcdc2020", 128), ("fastcdc2020", 1 << 23)])
def test_from_average_refuses(name, avg_size):
    with pytest.raises(InvalidArgumentError):
        ChunkerSpec.from_average(name, avg_size)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_config_round_trip(chunker):
    spec = spec_for(chunker, 16 * KIB, seed=GOLDEN_SEED if chunker == "fastcdc2020" else 0)
    assert ChunkerSpec.from_config(spec.to_config()) == spec


@pytest.mark.parametrize(
    "config",
    [
        {"name": "rabin", "min_size": 1024, "avg_size": 4096, "max_size": 16384},
        {"min_size": 1024, "avg_size": 4096, "max_size": 16384},
    ],
)
def test_from_config_of_an_unknown_chunker(config):
    with pytest.raises(UnsupportedFormatError):
        ChunkerSpec.from_config(config)


def test_from_config_validates_sizes():
    with pytest.raises(InvalidArgumentError):
        ChunkerSpec.from_config({"name": "fastcdc2020", "min_size": 8, "avg_size": 16, "max_size": 32})


def test_ronomon_without_fastcdc_says_how_to_install_it(monkeypatch):
    # A None entry in sys.modules makes `import fastcdc...` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "fastcdc", None)
    monkeypatch.setitem(sys.modules, "fastcdc.fastcdc_cy", None)
    spec = ChunkerSpec.from_average("fastcdc-ronomon", 4 * KIB)
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'chunkstore\[compare\]'"):
        make_chunker(spec)
    # The default chunker does not need it.
    assert b"".join(make_chunker(spec_for("fastcdc2020", 4 * KIB))(io.BytesIO(b"x" * 20_000))) == b"x" * 20_000

"""benchmarks.pack_compression on a tiny input: its figure for format 2 today (zstd 3 per chunk)
is what a real format 2 store writes for the same files, and the other schemes' figures agree
with how they are built."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from benchmarks import datasets, pack_compression
from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.packs import PACK_KEY_PREFIX
from chunkstore.core.chunking import DEFAULT_AVG_SIZE, make_chunker
from chunkstore.core.compression import Compressor
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec
from chunkstore.core.packformat import ENTRY

FORMAT_2_CHUNKER = ChunkerSpec.from_average(avg_size=DEFAULT_AVG_SIZE)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> list[Path]:
    """A few versions of an evolving tar, about 1.5 MB in all."""
    spec = datasets.DatasetSpec.preset("smoke", total_bytes=1_500_000)
    dataset = datasets.generate(spec, tmp_path_factory.mktemp("pack-compression") / "archives")
    return [path for _, path in datasets.files_in(dataset.root)]


@pytest.fixture(scope="module")
def figures(versions, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("figures") / "figures.json"
    arguments = ["--files", *map(str, versions), "--levels", "1,19", "--dict-sizes", "4K"]
    arguments += ["--train-bytes", "256K", "--frames", "1K,64K", "--ldm-frames", "64K", "--json", str(out)]
    assert pack_compression.main(arguments) == 0
    (document,) = json.loads(out.read_text())
    return document


def by_name(figures: dict) -> dict[str, dict]:
    return {scheme["scheme"]: scheme for scheme in figures["schemes"]}


def test_zstd_3_per_chunk_is_what_chunkstore_codec_stores_for_the_new_chunks(versions, figures):
    chunker = make_chunker(FORMAT_2_CHUNKER)
    hasher = Hasher()
    codec = ObjectCodec(Compressor(CompressionSpec.parse("zstd:3")), FORMAT_2_CHUNKER.max_size)
    records: dict[bytes, int] = {}
    logical = 0
    for path in versions:
        data = path.read_bytes()
        logical += len(data)
        for chunk in chunker(io.BytesIO(data)):
            chunk_id = hasher.chunk_id(chunk)
            if chunk_id not in records:
                records[chunk_id] = len(codec.encode(chunk_id, chunk))

    zstd_3 = figures["schemes"][0]
    assert zstd_3["scheme"] == "zstd 3"
    assert figures["input_bytes"] == logical
    assert figures["new_chunks"] == len(records) == zstd_3["records"]
    assert zstd_3["packs"] == 1
    expected = sum(records.values()) + len(records) * ENTRY.size + pack_compression.PACK_FIXED_BYTES
    assert zstd_3["stored_bytes"] == expected
    assert zstd_3["store_ratio"] == pytest.approx(logical / expected)


def test_zstd_3_per_chunk_is_what_a_format_2_store_writes_in_packs(versions, figures, tmp_path):
    with Store.init(
        str(tmp_path / "store"), FORMAT_2_CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2
    ) as store:
        store.put(versions)
        packs = list(store.blobs.list(PACK_KEY_PREFIX))

    zstd_3 = figures["schemes"][0]
    assert len(packs) == zstd_3["packs"]
    assert sum(info.size for info in packs) == zstd_3["stored_bytes"]


def test_the_other_schemes_agree_with_how_they_are_built(figures):
    schemes = by_name(figures)
    zstd_3 = schemes["zstd 3"]
    # No chunk is under 1 KiB but the last of a file, so a frame of at most 1 KiB holds one chunk.
    assert {key: schemes["frame 1K"][key] for key in ("stored_bytes", "records", "read_amplification")} == {
        "stored_bytes": zstd_3["stored_bytes"],
        "records": zstd_3["records"],
        "read_amplification": 1.0,
    }
    frame = schemes["frame 64K"]
    assert frame["records"] < zstd_3["records"]
    assert frame["read_amplification"] > 1
    assert schemes["frame 64K ldm"]["read_amplification"] == frame["read_amplification"]
    for name in ("zstd 1", "zstd 19", "dict 4K (first 256K)", "pack dict 4K"):
        assert schemes[name]["records"] == zstd_3["records"]
        assert schemes[name]["read_amplification"] == 1.0
    store_dictionary = schemes["dict 4K (first 256K)"]
    assert 0 < store_dictionary["dictionary_bytes"] <= 4096
    assert store_dictionary["stored_bytes"] == (
        store_dictionary["payload_bytes"]
        + store_dictionary["dictionary_bytes"]
        + zstd_3["records"] * (pack_compression.RECORD_HEADER_SIZE + ENTRY.size)
        + pack_compression.PACK_FIXED_BYTES
    )
    assert schemes["zstd 19"]["payload_bytes"] < zstd_3["payload_bytes"] < schemes["zstd 1"]["payload_bytes"]


def test_a_smaller_average_chunk_size_cuts_more_chunks(versions, figures, tmp_path):
    out = tmp_path / "small.json"
    arguments = ["--files", *map(str, versions), "--levels", "", "--dict-sizes", "", "--frames", ""]
    arguments += ["--ldm-frames", "", "--avg-size", "2K", "--json", str(out)]
    assert pack_compression.main(arguments) == 0
    (small,) = json.loads(out.read_text())
    assert small["avg_size"] == 2048
    assert figures["avg_size"] == DEFAULT_AVG_SIZE
    assert small["input_bytes"] == figures["input_bytes"]
    assert small["chunks"] > figures["chunks"]

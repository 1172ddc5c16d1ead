"""The GETs a format 2 restore makes (docs/design/format-v2.md, Restore): versions of one file with
scattered edits name their own new pack and every older one, run by run, and each version still
costs about two GETs a pack it names (its table, then its records), however its runs interleave."""

from __future__ import annotations

import io
import random

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.packs import PACK_KEY_PREFIX
from chunkstore.core.pages import parse_page
from chunkstore.operations.contentpages import stored_pages
from support.countingblobs import CountingBlobStore

VERSIONS = 10
FILE_SIZE = 3_000_000
EDITS_PER_VERSION = 30
# GETs a restore may make beyond two a pack, for a pack whose records needed lie in runs more
# than the coalescing gap (256 KiB) apart. Measured: exactly 2 a pack, 2 to 20 GETs for versions
# naming 1 to 10 packs; reading run by run took 33 GETs for the fifth version's 5 packs.
SPARE_GETS = 3


def scattered_versions(seed: int) -> list[bytes]:
    """A file of half random and half repetitive bytes, then each version the one before with
    EDITS_PER_VERSION places of 200-3,000 bytes overwritten at random."""
    generator = random.Random(seed)
    lines = b"".join(b"row %08d of a table that compresses\n" % number for number in range(FILE_SIZE // 80))
    data = bytearray(generator.randbytes(FILE_SIZE - len(lines)) + lines)
    versions = [bytes(data)]
    for _ in range(VERSIONS - 1):
        for _ in range(EDITS_PER_VERSION):
            length = generator.randrange(200, 3_000)
            start = generator.randrange(len(data) - length)
            data[start : start + length] = generator.randbytes(length)
        versions.append(bytes(data))
    return versions


def packs_named(store: Store, name: str, version: int) -> set[bytes]:
    digest = store.catalog.get_version(name, version).digest
    return {run.pack_id for page in stored_pages(store.catalog, digest) for run in parse_page(page.page).runs}


def test_each_version_of_a_scattered_edit_series_costs_two_gets_a_pack(tmp_path):
    url = str(tmp_path / "store")
    versions = scattered_versions(3)
    chunker = ChunkerSpec.from_average(avg_size=8 * 1024)
    with Store.init(url, chunker, CompressionSpec.parse("zstd:3"), storage_format=2) as store:
        for data in versions:
            store.put_stream(io.BytesIO(data), "table.db")

    with Store.open(url, read_only=True) as store:
        counting = CountingBlobStore(store.blobs)
        store.blobs = counting
        figures = []
        for number, data in enumerate(versions, 1):
            named = packs_named(store, "table.db", number)
            counting.gets.clear()
            out = io.BytesIO()
            store.get("table.db", out, version=number)
            assert out.getvalue() == data
            pack_gets = [key for key, _, _ in counting.gets if key.startswith(PACK_KEY_PREFIX)]
            figures.append((number, len(named), len(counting.gets)))
            assert {key.rsplit("/", 1)[1] for key in pack_gets} == {pack_id.hex() for pack_id in named}
            assert len(counting.gets) <= 2 * len(named) + SPARE_GETS, figures

    # Each put stores its new chunks in a pack of its own, which the later versions name too: the
    # last version interleaves runs of all ten packs.
    assert [packs for _, packs, _ in figures] == list(range(1, VERSIONS + 1)), figures

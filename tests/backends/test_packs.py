"""Packs in a blob store: the writer and the reader of chunkstore/backends/packs.py on a real folder,
the memory blob store and S3 over moto's server."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import tracemalloc
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest

from chunkstore.backends import packs as packs_module
from chunkstore.backends.aws import AwsClients
from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.memory import MemoryBlobStore
from chunkstore.backends.packs import (
    ChunkLocation,
    PackFormat,
    PackReader,
    PackWriter,
    StoredPack,
    pack_key,
)
from chunkstore.backends.s3 import S3BlobStore
from chunkstore.core.chunkcache import ChunkCache
from chunkstore.core.crypto import Keys
from chunkstore.core.packformat import HEADER_SIZE, TRAILER_SIZE, PackBuilder
from chunkstore.errors import (
    ChunkMismatchError,
    CorruptObjectError,
    IntegrityError,
    MissingChunkError,
    StoreWriteError,
)
from support.countingblobs import CountingBlobStore
from support.packchunks import MAX_CHUNK, TARGET, chunk, pack_format

KEYS = Keys.from_master(blake3.blake3(b"packs test master key").digest())
OTHER_KEYS = Keys.from_master(blake3.blake3(b"another store's master key").digest())


def write_chunks(
    blobs: BlobStore, packs: PackFormat, count: int, target: int = TARGET
) -> tuple[dict[bytes, bytes], list[StoredPack]]:
    chunks = {}
    with PackWriter(blobs, packs, target_size=target) as writer:
        for number in range(count):
            data = chunk(number)
            chunk_id = packs.hasher.chunk_id(data)
            chunks[chunk_id] = data
            writer.add(chunk_id, packs.codec.encode(chunk_id, data))
        stored = writer.flush()
    return chunks, stored


@pytest.fixture(params=["local", "memory", "s3"])
def blobs(request, tmp_path) -> BlobStore:
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    elif request.param == "memory":
        store = MemoryBlobStore()
    else:
        store = S3BlobStore(request.getfixturevalue("bucket"), "store", AwsClients())
    store.create()
    return store


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
def test_many_chunks_across_several_packs_come_back(blobs, keys):
    packs = pack_format(keys)
    chunks, stored = write_chunks(blobs, packs, 300)

    assert len(stored) >= 4
    assert sorted(info.key for info in blobs.list("packs/")) == sorted(pack_key(pack.pack_id) for pack in stored)
    for pack in stored:
        assert blobs.stat(pack_key(pack.pack_id)).size == pack.size
        # Every pack but the last closed at its target, one record past it at most.
        assert pack is stored[-1] or TARGET <= pack.size < TARGET + MAX_CHUNK + 16 * 1024
    assert [entry.chunk_id for pack in stored for entry in pack.entries] == list(chunks)

    with PackReader(blobs, packs) as reader:
        for pack in stored:
            assert reader.read_table(pack.pack_id, pack.size) == pack.entries
            assert reader.read_table(pack.pack_id) == pack.entries  # size from a stat
        locations = [location for pack in stored for location in pack.locations()]
        read = list(reader.read_chunks(locations))
    assert [location for location, _ in read] == locations
    assert {location.entry.chunk_id: data for location, data in read} == chunks


def test_a_pack_closes_at_its_entry_limit(blobs, monkeypatch):
    monkeypatch.setattr("chunkstore.core.packformat.MAX_ENTRIES", 7)
    _, stored = write_chunks(blobs, pack_format(), 20, target=1 << 30)
    assert [len(pack.entries) for pack in stored] == [7, 7, 6]


def test_chunks_come_back_in_the_order_asked_whatever_the_layout(blobs):
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 120)
    locations = [location for pack in stored for location in pack.locations()]
    shuffled = locations[::-3] + locations[1::5] + locations[:4]
    with PackReader(blobs, packs, gets_in_flight=2) as reader:
        read = list(reader.read_chunks(shuffled))
    assert [location for location, _ in read] == shuffled
    assert all(data == chunks[location.entry.chunk_id] for location, data in read)


def test_chunks_come_back_in_order_whatever_the_plan_and_the_budget(monkeypatch):
    """Random recipes (runs of 1-6 records from random packs, so chunks repeat near and far; the
    packs' sizes known or not) read with budgets from less than a record to all of it, with gaps
    and look-aheads of every scale: every chunk comes back, in order, and planning never waits for
    room that handing out cannot make."""
    blobs = MemoryBlobStore()
    blobs.create()
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 400, target=40 * 1024)
    generator = random.Random(5)
    for _ in range(40):
        chosen = generator.sample(stored, generator.randint(1, len(stored)))
        locations = []
        for _ in range(generator.randint(1, 400)):
            pack = generator.choice(chosen)
            start = generator.randrange(len(pack.entries))
            size = pack.size if generator.random() < 0.7 else None
            locations += [ChunkLocation(pack.pack_id, entry, size) for entry in pack.entries[start : start + 6]]
        monkeypatch.setattr(packs_module, "LOOK_AHEAD_LOCATIONS", generator.choice([1, 5, 64, 8192]))
        with PackReader(
            blobs,
            packs,
            gap=generator.choice([1, 4096, 256 * 1024]),
            max_read_size=generator.choice([512, 8 * 1024, 64 * 1024, 1 << 20]),
            gets_in_flight=generator.choice([1, 2, 8]),
        ) as reader:
            read = list(reader.read_chunks(locations))
        assert [location for location, _ in read] == locations
        assert all(data == chunks[location.entry.chunk_id] for location, data in read)


def test_the_upload_of_one_pack_overlaps_the_filling_of_the_next(tmp_path, monkeypatch):
    """The second pack fills while the first is uploading; the third waits for that upload."""
    monkeypatch.setattr("chunkstore.core.packformat.MAX_ENTRIES", 10)
    release = threading.Event()
    puts: list[str] = []

    class SlowBlobStore(LocalBlobStore):
        def put(self, key, data):
            if not puts:
                assert release.wait(30)
            puts.append(key)
            super().put(key, data)

    packs = pack_format()
    writer = PackWriter(SlowBlobStore(tmp_path / "blobs"), packs, target_size=1 << 30)

    def add(number: int) -> None:
        data = chunk(number)
        writer.add(packs.hasher.chunk_id(data), packs.codec.encode(packs.hasher.chunk_id(data), data))

    for number in range(19):  # the first pack (10 chunks) uploads, the second takes 9
        add(number)
    with ThreadPoolExecutor(1) as pool:
        closing_the_second = pool.submit(add, 19)
        with pytest.raises(TimeoutError):
            closing_the_second.result(timeout=0.5)
        assert puts == []
        release.set()
        closing_the_second.result(timeout=30)
    stored = writer.flush()
    writer.close()
    assert [len(pack.entries) for pack in stored] == [10, 10] and len(puts) == 2


# ---- ranged reads and coalescing -----------------------------------------------------------


def test_neighbouring_records_are_read_with_one_get(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 60, target=1 << 30)
    (pack,) = stored
    entries = pack.entries
    # Record 5 is skipped but lies within the gap: one GET reads 0-9. Records 10-29 are far more
    # than the gap: 30-34 take a GET of their own.
    near = entries[:5] + entries[6:10]
    far = entries[30:35]
    gap = entries[5].length + 1
    assert entries[30].offset - entries[9].end > gap
    blobs.gets.clear()
    with PackReader(blobs, packs, gap=gap) as reader:
        got = list(reader.read_chunks(ChunkLocation(pack.pack_id, entry) for entry in near + far))
    assert [data for _, data in got] == [chunks[entry.chunk_id] for entry in near + far]
    key = pack_key(pack.pack_id)
    assert sorted(blobs.gets) == sorted(
        [(key, near[0].offset, near[-1].end - near[0].offset), (key, far[0].offset, far[-1].end - far[0].offset)]
    )
    blobs.gets.clear()
    with PackReader(blobs, packs, gap=entries[5].length) as reader:
        list(reader.read_chunks(ChunkLocation(pack.pack_id, entry) for entry in near))
    assert len(blobs.gets) == 2  # a gap of exactly the threshold splits the run


def test_a_read_never_exceeds_its_size_limit(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    _, stored = write_chunks(blobs, packs, 60, target=1 << 30)
    (pack,) = stored
    blobs.gets.clear()
    with PackReader(blobs, packs, max_read_size=16 * 1024) as reader:
        # Locations without the pack's size: the pack is never read whole.
        list(reader.read_chunks(ChunkLocation(pack.pack_id, entry) for entry in pack.entries))
    assert max(length for _, _, length in blobs.gets) <= 16 * 1024
    assert sum(length for _, _, length in blobs.gets) == pack.entries[-1].end - HEADER_SIZE
    assert 1 < len(blobs.gets) < len(pack.entries)


def test_chunks_in_the_cache_are_not_read_again(tmp_path):
    """A second read of the same records through a reader with a cache makes no GET; a read that
    wants cached and uncached records reads only the uncached ones' runs; evicted chunks are read."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 60, target=1 << 30)
    (pack,) = stored
    locations = [ChunkLocation(pack.pack_id, entry) for entry in pack.entries]
    cache = ChunkCache()
    with PackReader(blobs, packs, gap=1, cache=cache) as reader:
        first = [data for _, data in reader.read_chunks(locations[:30])]
        blobs.gets.clear()
        again = [data for _, data in reader.read_chunks(locations[:30])]
        assert blobs.gets == []
        more = [data for _, data in reader.read_chunks(locations[20:40])]
    assert first == again == [chunks[entry.chunk_id] for entry in pack.entries[:30]]
    assert more == [chunks[entry.chunk_id] for entry in pack.entries[20:40]]
    run = pack.entries[30:40]
    assert blobs.gets == [(pack_key(pack.pack_id), run[0].offset, run[-1].end - run[0].offset)]

    small = ChunkCache(limit=len(chunks[pack.entries[0].chunk_id]) * 5)
    blobs.gets.clear()
    with PackReader(blobs, packs, gap=1, cache=small) as reader:
        for _ in range(2):
            assert [data for _, data in reader.read_chunks(locations)] == [chunks[e.chunk_id] for e in pack.entries]
    assert len(blobs.gets) == 2  # only the last few chunks stay cached: the whole run is read twice


def test_a_small_content_read_in_the_callers_thread_costs_a_get_per_run_of_back_to_back_records(tmp_path):
    """read_chunks_here: the chunks in order, a repeat and a chunk of another pack included; a GET
    per run of records that lie back to back in one pack, none for a chunk the cache holds; and
    no thread of the reader's runs."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 40, target=TARGET // 4)
    first, second = stored[0], stored[1]
    a = [ChunkLocation(first.pack_id, entry) for entry in first.entries[:6]]
    skipped = [ChunkLocation(first.pack_id, entry) for entry in first.entries[7:9]]
    b = [ChunkLocation(second.pack_id, entry) for entry in second.entries[:2]]
    locations = [*a[:4], a[1], *a[4:], *skipped, *b, a[0]]
    cache = ChunkCache()
    blobs.gets.clear()
    with PackReader(blobs, packs, cache=cache) as reader:
        read = list(reader.read_chunks_here(locations))
        assert not any(thread.name.startswith("chunkstore-pack") for thread in threading.enumerate())
        assert [data for _, data in reader.read_chunks_here(a)] == [chunks[loc.entry.chunk_id] for loc in a]
    assert [location for location, _ in read] == locations
    assert [data for _, data in read] == [chunks[location.entry.chunk_id] for location in locations]

    def run(run_locations):
        return (
            pack_key(run_locations[0].pack_id),
            run_locations[0].entry.offset,
            run_locations[-1].entry.end - run_locations[0].entry.offset,
        )

    # a[1] again and a[0] at the end come from the cache; so does all of a the second time.
    assert blobs.gets == [run(a[:4]), run(a[4:]), run(skipped), run(b)]


def runs_of_consecutive(entries):
    """The selected entries cut where one is not the record right after the previous one."""
    runs = []
    for entry in entries:
        if runs and runs[-1][-1].end == entry.offset:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    return runs


@pytest.mark.parametrize("tenths", [3, 6, 10], ids=["30%", "60%", "100%"])
def test_a_pack_selected_to_half_or_more_is_read_whole_with_one_get(tmp_path, tenths):
    """tenths of every ten records selected; any skipped record splits a ranged read (gap 1)."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 100, target=1 << 30)
    (pack,) = stored
    selected = [entry for number, entry in enumerate(pack.entries) if number % 10 < tenths]
    share = sum(entry.length for entry in selected) / pack.size
    assert abs(share - tenths / 10) < 0.05
    blobs.gets.clear()
    with PackReader(blobs, packs, gap=1) as reader:
        read = list(reader.read_chunks(ChunkLocation(pack.pack_id, entry, pack.size) for entry in selected))

    assert [data for _, data in read] == [chunks[entry.chunk_id] for entry in selected]
    key = pack_key(pack.pack_id)
    if tenths < 5:
        expected = [(key, run[0].offset, run[-1].end - run[0].offset) for run in runs_of_consecutive(selected)]
        assert len(expected) == 10
    else:
        expected = [(key, 0, None)]
    assert sorted(blobs.gets) == sorted(expected)


def test_a_pack_read_whole_serves_its_chunks_among_another_packs(tmp_path):
    """Chunks of a pack selected to 60% alternate with chunks of a pack selected to 30%: the first
    is read whole once, the second in ranges, and every chunk comes back in the order asked."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, (first, second) = write_chunks(blobs, packs, 120, target=70 * 1024)
    most = [
        ChunkLocation(first.pack_id, entry, first.size) for number, entry in enumerate(first.entries) if number % 10 < 6
    ]
    some = [ChunkLocation(second.pack_id, entry, second.size) for entry in second.entries[: len(second.entries) // 3]]
    assert sum(location.entry.length for location in most) > first.size / 2
    assert sum(location.entry.length for location in some) < second.size / 2
    interleaved = [location for pair in zip(most, some, strict=False) for location in pair] + most[len(some) :]
    blobs.gets.clear()
    with PackReader(blobs, packs) as reader:
        read = list(reader.read_chunks(interleaved))

    assert [location for location, _ in read] == interleaved
    assert all(data == chunks[location.entry.chunk_id] for location, data in read)
    whole = (pack_key(first.pack_id), 0, None)
    assert blobs.gets.count(whole) == 1
    ranged = [get for get in blobs.gets if get != whole]
    assert ranged and all(key == pack_key(second.pack_id) and length is not None for key, _, length in ranged)


def read_interleaved(tmp_path, max_read_size: int, gets_in_flight: int):
    """Four packs of ~70 KiB read to ~100%, their chunks interleaved one by one: the packs, the
    locations read and the GETs made."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 240)
    stored = stored[:4]
    assert all(64 * 1024 < pack.size < 100 * 1024 for pack in stored)
    rounds = zip(*(pack.locations() for pack in stored), strict=False)  # as many rounds as the shortest has chunks
    interleaved = [location for group in rounds for location in group]
    blobs.gets.clear()
    with PackReader(blobs, packs, max_read_size=max_read_size, gets_in_flight=gets_in_flight) as reader:
        read = list(reader.read_chunks(interleaved))
    assert [location for location, _ in read] == interleaved
    assert all(data == chunks[location.entry.chunk_id] for location, data in read)
    return stored, interleaved, blobs.gets


def test_packs_interleaved_beyond_the_byte_limit_keep_the_packs_read_whole(tmp_path):
    """Four packs of ~69 KiB (140-206 KiB once decoded) read chunk by chunk in turn, with room for
    8 x 52 KiB of reads and chunks: the first is read whole, the second too once the first is
    started (then only the first's chunks still needed stay held), and both stay held while the
    other two come in ranges that take at most 52 KiB with their chunks: every record is read
    once, in at most 6 GETs a pack, where a GET per chunk took 52."""
    stored, interleaved, gets = read_interleaved(tmp_path, max_read_size=52 * 1024, gets_in_flight=8)
    whole = sorted(key for key, offset, length in gets if (offset, length) == (0, None))
    assert whole == sorted(pack_key(pack.pack_id) for pack in stored[:2])
    for pack in stored[2:]:
        needed = [location.entry for location in interleaved if location.pack_id == pack.pack_id]
        ranges = sorted((offset, offset + length) for key, offset, length in gets if key == pack_key(pack.pack_id))
        # The ranges tile the records needed.
        assert [start for start, _ in ranges] == [needed[0].offset] + [end for _, end in ranges[:-1]]
        assert ranges[-1][1] == needed[-1].end
        for start, end in ranges:
            plaintext = sum(entry.plaintext_length for entry in needed if start <= entry.offset < end)
            assert end - start + plaintext <= 52 * 1024
        assert len(ranges) <= 6


@pytest.mark.parametrize("max_read_size, gets_in_flight", [(16 * 1024, 8), (64 * 1024, 2), (64 * 1024, 1)])
def test_no_pack_is_read_whole_twice(tmp_path, max_read_size, gets_in_flight):
    """With 2 or 1 reads planned ahead, or room for one pack, reads wait for room at almost every
    chunk: a pack read whole still holds its records until their chunks are due."""
    stored, interleaved, gets = read_interleaved(tmp_path, max_read_size, gets_in_flight)
    whole = [key for key, offset, length in gets if (offset, length) == (0, None)]
    assert len(whole) == len(set(whole))
    assert len(gets) <= len(interleaved) + len(stored)


def interleave_runs(stored: list[StoredPack], run_length: int, with_sizes: bool) -> list[ChunkLocation]:
    """A later version's recipe over three packs A, B, C: each pack's entries but one in every
    run_length + 1, in runs of run_length, taken run by run in the order A B A C (A0 B0 A1 C0 A2
    B1 ...) until every pack's runs are used. Locations carry the packs' sizes only if with_sizes."""
    runs = {}
    for pack in stored:
        kept = [entry for number, entry in enumerate(pack.entries) if number % (run_length + 1) < run_length]
        runs[pack.pack_id] = deque(kept[start : start + run_length] for start in range(0, len(kept), run_length))
    first, second, third = (pack.pack_id for pack in stored)
    sizes = {pack.pack_id: pack.size if with_sizes else None for pack in stored}
    locations: list[ChunkLocation] = []
    while any(runs.values()):
        for pack_id in (first, second, first, third):
            if runs[pack_id]:
                locations += [ChunkLocation(pack_id, entry, sizes[pack_id]) for entry in runs[pack_id].popleft()]
    return locations


@pytest.mark.parametrize("with_sizes", [False, True], ids=["ranges", "whole"])
def test_runs_that_interleave_packs_cost_one_get_per_pack(tmp_path, with_sizes):
    """Three packs' runs interleaved (A0 B0 A1 C0 A2 B1 ...), 3 records of every 4 in each: one
    GET per pack, from its first record needed to its last (the records skipped lie well within
    the gap), or, the packs' sizes known, the pack whole (75% of it is needed). Read run by run,
    the switches of pack cost a GET each: 29 for these three packs."""
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 150, target=40 * 1024)
    stored = stored[:3]
    assert all(len(pack.entries) >= 20 for pack in stored)
    interleaved = interleave_runs(stored, 3, with_sizes)
    blobs.gets.clear()
    with PackReader(blobs, packs) as reader:
        read = list(reader.read_chunks(interleaved))

    assert [location for location, _ in read] == interleaved
    assert all(data == chunks[location.entry.chunk_id] for location, data in read)
    expected = []
    for pack in stored:
        needed = [location.entry for location in interleaved if location.pack_id == pack.pack_id]
        start, end = min(entry.offset for entry in needed), max(entry.end for entry in needed)
        expected.append(
            (pack_key(pack.pack_id), 0, None) if with_sizes else (pack_key(pack.pack_id), start, end - start)
        )
    assert sorted(blobs.gets) == sorted(expected)


def test_a_window_larger_than_the_byte_limit_holds_no_more_than_the_limit():
    """Twelve packs of ~512 KiB of incompressible chunks, read to 75% in runs that interleave them
    three by three: ~4.6 MB of records, all within one look-ahead, against a limit of 4 x 128 KiB
    (512 KiB) of reads and chunks decoded. The reader holds no more than the limit: measured
    0.45-0.49 MB at the peak (0.7-0.8 MB when the limit counted stored bytes alone), 2.1-2.4 MB
    with the limit lifted (reads planned ahead still at most 4). No record is read twice."""
    blobs = CountingBlobStore(MemoryBlobStore())
    packs = pack_format()
    generator = random.Random(7)
    chunks = {}
    with PackWriter(blobs, packs, target_size=512 * 1024) as writer:
        for _ in range(780):
            data = generator.randbytes(8 * 1024)
            chunk_id = packs.hasher.chunk_id(data)
            chunks[chunk_id] = data
            writer.add(chunk_id, packs.codec.encode(chunk_id, data))
        stored = writer.flush()
    assert len(stored) >= 12
    locations = [
        location for group in range(4) for location in interleave_runs(stored[group * 3 : group * 3 + 3], 3, True)
    ]
    assert len(locations) < packs_module.LOOK_AHEAD_LOCATIONS
    needed = sum(location.entry.length for location in locations)
    assert needed > 4_500_000
    blobs.gets.clear()
    tracemalloc.start()
    with PackReader(blobs, packs, max_read_size=128 * 1024, gets_in_flight=4) as reader:
        read = 0
        for location, data in reader.read_chunks(locations):
            assert data == chunks[location.entry.chunk_id]
            read += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read == len(locations)
    assert peak < 1280 * 1024
    assert all(length is not None and length <= 128 * 1024 for _, _, length in blobs.gets)
    # 8 GETs a pack measured: its ~500 KiB of records needed in runs that take 128 KiB at most
    # with their chunks (incompressible: 64 KiB of records).
    assert len(blobs.gets) <= 9 * len(stored)
    for pack in stored:
        ranges = sorted(
            (offset, offset + length) for key, offset, length in blobs.gets if key == pack_key(pack.pack_id)
        )
        assert all(end <= next_start for (_, end), (next_start, _) in zip(ranges, ranges[1:], strict=False))


def test_chunks_that_decode_to_many_times_their_records_are_held_within_the_bound():
    """600 chunks of 32 KiB of a repeated 4-byte pattern: ~19 MiB that zstd stores in ~40 bytes a
    record, one pack of ~50 KB. Counted by their stored bytes, one read would hold them all
    decoded (a restore of the Django sdists, 4:1, held ~250 MB so); counted by their plaintext, a
    reader bound to 256 KiB holds 256 KiB of chunks at most, plus the one being handed out and
    the locations planned and ahead (~100 bytes each). Measured: a peak of 0.43 MB; 11.6-17.4 MB
    with the bound lifted (one read of the whole pack)."""
    blobs = MemoryBlobStore()
    packs = pack_format()
    chunks = {}
    with PackWriter(blobs, packs) as writer:
        for number in range(600):
            data = number.to_bytes(4, "big") * (MAX_CHUNK // 4)
            chunk_id = packs.hasher.chunk_id(data)
            chunks[chunk_id] = data
            writer.add(chunk_id, packs.codec.encode(chunk_id, data))
        [pack] = writer.flush()
    assert pack.size < sum(map(len, chunks.values())) // 100
    tracemalloc.start()
    with PackReader(blobs, packs, held_bytes=256 * 1024) as reader:
        read = sum(data == chunks[location.entry.chunk_id] for location, data in reader.read_chunks(pack.locations()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read == len(chunks)
    assert peak < 512 * 1024


@pytest.mark.parametrize("with_sizes", [False, True], ids=["ranges", "whole"])
def test_a_damaged_record_among_interleaved_packs_is_refused_naming_its_pack(tmp_path, with_sizes):
    """An encrypted store's records, so a flipped byte fails authentication (a plain record might
    decode to other bytes: a ChunkMismatchError)."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format(KEYS)
    chunks, stored = write_chunks(blobs, packs, 150, target=40 * 1024)
    stored = stored[:3]
    interleaved = interleave_runs(stored, 3, with_sizes)
    victim_at = len(interleaved) // 2
    victim = interleaved[victim_at]
    damage(blobs, next(pack for pack in stored if pack.pack_id == victim.pack_id), flip(victim.entry.offset + 20))
    read = []
    with (
        PackReader(blobs, packs) as reader,
        pytest.raises(CorruptObjectError, match=f"pack {victim.pack_id.hex()}.*chunk {victim.entry.chunk_id.hex()}"),
    ):
        for location, data in reader.read_chunks(interleaved):
            read.append(location)
            assert data == chunks[location.entry.chunk_id]
    # The chunks handed out before are the right ones, in order; the read that holds the damaged
    # record fails whole, at the first of its chunks due.
    assert interleaved[: len(read)] == read and len(read) <= victim_at


def test_a_pack_larger_than_the_reads_may_hold_is_never_read_whole(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    _, (pack,) = write_chunks(blobs, packs, 60, target=1 << 30)
    blobs.gets.clear()
    # 2 reads of at most 16 KiB: 32 KiB held at most, the pack is larger.
    with PackReader(blobs, packs, max_read_size=16 * 1024, gets_in_flight=2) as reader:
        assert pack.size > 32 * 1024
        list(reader.read_chunks(pack.locations()))
    assert all(length is not None and length <= 16 * 1024 for _, _, length in blobs.gets)
    assert sum(length for _, _, length in blobs.gets) == pack.entries[-1].end - HEADER_SIZE


def test_a_chunk_repeated_while_its_read_is_held_costs_no_other_get(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    chunks, (pack,) = write_chunks(blobs, packs, 10)
    repeated = [ChunkLocation(pack.pack_id, pack.entries[3])] * 50 + [ChunkLocation(pack.pack_id, pack.entries[4])]
    blobs.gets.clear()
    with PackReader(blobs, packs) as reader:
        read = list(reader.read_chunks(repeated))
    assert [data for _, data in read] == [chunks[location.entry.chunk_id] for location in repeated]
    # Both records are planned with one GET, and the read holds the first until its 50th use.
    assert blobs.gets == [
        (pack_key(pack.pack_id), pack.entries[3].offset, pack.entries[4].end - pack.entries[3].offset)
    ]


def test_on_s3_a_table_and_a_run_cost_one_get_each(bucket):
    clients = AwsClients()
    blobs = S3BlobStore(bucket, "store", clients)
    packs = pack_format()
    chunks, stored = write_chunks(blobs, packs, 200)
    pack = stored[1]
    before = clients.requests.snapshot()["s3"].get("GetObject", 0)
    with PackReader(blobs, packs) as reader:
        entries = reader.read_table(pack.pack_id, pack.size)
        read = list(reader.read_chunks(ChunkLocation(pack.pack_id, entry) for entry in entries[2:-2]))
    assert clients.requests.snapshot()["s3"]["GetObject"] - before == 2
    assert "HeadObject" not in clients.requests.snapshot()["s3"]
    assert [data for _, data in read] == [chunks[entry.chunk_id] for entry in entries[2:-2]]


def test_on_s3_a_pack_read_whole_costs_one_get_for_all_its_chunks(bucket):
    clients = AwsClients()
    blobs = S3BlobStore(bucket, "store", clients)
    packs = pack_format(KEYS)
    chunks, stored = write_chunks(blobs, packs, 200)
    pack = stored[1]
    # Two records of every three: without the whole-pack rule, one ranged GET per pair (gap 1).
    selected = [location for number, location in enumerate(pack.locations()) if number % 3]
    before = clients.requests.snapshot()["s3"].get("GetObject", 0)
    with PackReader(blobs, packs, gap=1) as reader:
        read = list(reader.read_chunks(selected))
    assert clients.requests.snapshot()["s3"]["GetObject"] - before == 1
    assert [data for _, data in read] == [chunks[location.entry.chunk_id] for location in selected]


# ---- damage -------------------------------------------------------------------------------


def damage(blobs: BlobStore, pack: StoredPack, change) -> None:
    key = pack_key(pack.pack_id)
    blobs.put(key, change(bytearray(blobs.get(key))))


def flip(position: int):
    def flipped(data: bytearray) -> bytes:
        data[position] ^= 0x10
        return bytes(data)

    return flipped


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda data: bytes(data[:-1]), id="truncated-by-one"),
        pytest.param(lambda data: bytes(data[: len(data) // 2]), id="truncated-to-half"),
        pytest.param(flip(-TRAILER_SIZE - 100), id="bit-flip-in-table"),
        pytest.param(flip(-5), id="bit-flip-in-trailer"),
    ],
)
def test_a_damaged_table_is_refused_naming_the_pack(blobs, change):
    packs = pack_format()
    _, stored = write_chunks(blobs, packs, 40)
    pack = stored[0]
    damage(blobs, pack, change)
    with PackReader(blobs, packs) as reader:
        for size in (pack.size, None):
            with pytest.raises(CorruptObjectError, match=f"pack {pack.pack_id.hex()}"):
                reader.read_table(pack.pack_id, size)


# read_chunks, through the reader's threads, and read_chunks_here, in the caller's, refuse alike.
READS = pytest.mark.parametrize("read", ["read_chunks", "read_chunks_here"])


@READS
@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
def test_a_bit_flip_in_a_record_is_refused_naming_pack_and_chunk(blobs, keys, read):
    packs = pack_format(keys)
    _, stored = write_chunks(blobs, packs, 40)
    pack = stored[0]
    victim = pack.entries[3]
    damage(blobs, pack, flip(victim.offset + victim.length - 3))
    with PackReader(blobs, packs) as reader:
        read_chunks = getattr(reader, read)
        assert reader.read_table(pack.pack_id, pack.size) == pack.entries  # the table is intact
        assert len(list(read_chunks(ChunkLocation(pack.pack_id, entry) for entry in pack.entries[:3]))) == 3
        with pytest.raises(IntegrityError, match=f"pack {pack.pack_id.hex()}.*chunk {victim.chunk_id.hex()}"):
            list(read_chunks(pack.locations()))


def test_a_pack_read_whole_still_checks_every_chunk(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    packs = pack_format()
    _, (pack,) = write_chunks(blobs, packs, 40)
    victim = pack.entries[25]
    damage(blobs, pack, flip(victim.offset + victim.length // 2))
    blobs.gets.clear()
    with (
        PackReader(blobs, packs) as reader,
        pytest.raises(IntegrityError, match=f"pack {pack.pack_id.hex()}.*chunk {victim.chunk_id.hex()}"),
    ):
        list(reader.read_chunks(pack.locations()))
    assert blobs.gets == [(pack_key(pack.pack_id), 0, None)]


def test_a_record_that_decodes_to_other_bytes_is_a_chunk_mismatch(tmp_path):
    """A pack laid out by hand (no writer would store it) whose record is valid but holds other bytes."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format()
    claimed_id = packs.hasher.chunk_id(chunk(1))
    builder = PackBuilder(bytes(range(16)), MAX_CHUNK)
    builder.add(claimed_id, packs.codec.encode(claimed_id, chunk(2)))
    blobs.put(pack_key(builder.pack_id), builder.finish())
    with PackReader(blobs, packs) as reader:
        entries = reader.read_table(builder.pack_id)
        with pytest.raises(ChunkMismatchError, match=f"pack {builder.pack_id.hex()}: chunk {claimed_id.hex()}"):
            list(reader.read_chunks(ChunkLocation(builder.pack_id, entry) for entry in entries))


def test_a_pack_shorter_than_its_records_is_refused(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format()
    _, stored = write_chunks(blobs, packs, 10)
    (pack,) = stored
    damage(blobs, pack, lambda data: bytes(data[: pack.entries[5].offset + 10]))
    with PackReader(blobs, packs) as reader, pytest.raises(CorruptObjectError, match=f"pack {pack.pack_id.hex()}"):
        list(reader.read_chunks(pack.locations()))


def test_a_missing_pack_is_a_missing_chunk_error(blobs):
    packs = pack_format()
    _, stored = write_chunks(blobs, packs, 10)
    (pack,) = stored
    blobs.delete(pack_key(pack.pack_id))
    with PackReader(blobs, packs) as reader:
        for call in (
            lambda: reader.read_table(pack.pack_id),
            lambda: reader.read_table(pack.pack_id, pack.size),
            lambda: list(reader.read_chunks(pack.locations())),
            lambda: list(reader.read_chunks_here(pack.locations())),
        ):
            with pytest.raises(MissingChunkError, match=f"pack {pack.pack_id.hex()} is missing"):
                call()


def test_a_pack_copied_under_another_id_is_refused(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format(KEYS)
    _, stored = write_chunks(blobs, packs, 10)
    (pack,) = stored
    other_id = bytes(16)
    blobs.put(pack_key(other_id), blobs.get(pack_key(pack.pack_id)))
    with PackReader(blobs, packs) as reader, pytest.raises(CorruptObjectError, match=other_id.hex()):
        reader.read_table(other_id)


# ---- encryption -------------------------------------------------------------------------------


def test_an_encrypted_stores_packs_open_only_with_its_keys(blobs):
    packs = pack_format(KEYS)
    chunks, stored = write_chunks(blobs, packs, 40)
    pack = stored[0]
    raw = blobs.get(pack_key(pack.pack_id))
    assert not any(entry.chunk_id in raw for entry in pack.entries)  # the sealed table hides the IDs
    assert b"compresses" not in raw
    with (
        PackReader(blobs, pack_format(OTHER_KEYS)) as reader,
        pytest.raises(CorruptObjectError, match=f"pack {pack.pack_id.hex()}.*authentication failed"),
    ):
        reader.read_table(pack.pack_id, pack.size)
    with (
        PackReader(blobs, pack_format(OTHER_KEYS)) as reader,
        pytest.raises(CorruptObjectError, match=f"pack {pack.pack_id.hex()}.*authentication failed"),
    ):
        list(reader.read_chunks(pack.locations()))
    with PackReader(blobs, pack_format()) as reader, pytest.raises(CorruptObjectError):
        reader.read_table(pack.pack_id, pack.size)
    with PackReader(blobs, packs) as reader:
        assert [data for _, data in reader.read_chunks(pack.locations())] == [
            chunks[entry.chunk_id] for entry in pack.entries
        ]


# ---- failures while writing --------------------------------------------------------------------


def test_a_failed_upload_is_a_store_write_error_and_stores_nothing(tmp_path):
    class FullDisk(LocalBlobStore):
        def put(self, key, data):
            raise OSError(28, "No space left on device")

    blobs = FullDisk(tmp_path / "blobs")
    with pytest.raises(StoreWriteError, match="No space left"):
        write_chunks(blobs, pack_format(), 100)
    assert list(blobs.list()) == []


def test_a_record_that_does_not_decode_is_caught_before_upload(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format()
    data = chunk(1)
    chunk_id = packs.hasher.chunk_id(data)
    with pytest.raises(ChunkMismatchError, match="not stored"), PackWriter(blobs, packs) as writer:
        writer.add(chunk_id, packs.codec.encode(chunk_id, data + b"!"))
    assert list(blobs.list()) == []


def test_leaving_the_writer_on_an_error_drops_the_open_pack(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    packs = pack_format()
    with pytest.raises(RuntimeError), PackWriter(blobs, packs) as writer:
        data = chunk(1)
        writer.add(packs.hasher.chunk_id(data), packs.codec.encode(packs.hasher.chunk_id(data), data))
        raise RuntimeError("the put failed elsewhere")
    assert list(blobs.list()) == []


# A writer in a child process: it fills packs and dies (os._exit) at the point given.
_DYING_WRITER = """
import os, sys
import blake3
sys.path.insert(0, sys.argv[3])
from support.packchunks import chunk, pack_format
from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.packs import PackWriter

blobs = LocalBlobStore(sys.argv[1])
if sys.argv[2] == "during-rename":
    os.replace = lambda *arguments: os._exit(9)
packs = pack_format()
writer = PackWriter(blobs, packs, target_size=1 << 20)
for number in range(100):
    data = chunk(number)
    writer.add(packs.hasher.chunk_id(data), packs.codec.encode(packs.hasher.chunk_id(data), data))
if sys.argv[2] == "during-rename":
    writer.flush()
os._exit(9)
"""


@pytest.mark.parametrize("when", ["before-flush", "during-rename"])
def test_a_writer_that_dies_leaves_no_visible_pack(tmp_path, when):
    folder = tmp_path / "blobs"
    completed = subprocess.run(
        [sys.executable, "-c", _DYING_WRITER, str(folder), when, str(Path(__file__).parent.parent)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 9, completed.stderr
    blobs = LocalBlobStore(folder)
    assert list(blobs.list()) == []
    temporaries = [name for _, _, names in os.walk(folder) for name in names]
    assert len(temporaries) == (1 if when == "during-rename" else 0)
    assert blobs.remove_stale_temporaries(-1) == len(temporaries)


def test_the_pack_key_is_sharded_by_the_first_hex_digits():
    assert pack_key(bytes.fromhex("ab" + "01" * 15)) == "packs/ab/ab" + "01" * 15
    assert packs_module.PACK_TARGET_SIZE == 16 * 1024 * 1024

"""put, get, restore and rm on storage format 2 stores (docs/design/format-v2.md, Protocols), on
a folder, in memory and on S3 with DynamoDB (moto): chunks in packs, recipes as pages, a new
version storing what changed."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.packs import PACK_KEY_PREFIX, PackReader
from chunkstore.core import pages
from chunkstore.core.config import CONFIG_KEY, StoreConfig
from chunkstore.core.objectformat import ObjectCodec
from chunkstore.errors import ConcurrentModificationError, IntegrityError, InvalidArgumentError, NameNotFoundError
from chunkstore.operations.contentpages import root_entries
from support.gcrounds import gc_round_before_commits

CHUNKER = ChunkerSpec.from_average(avg_size=4096)
# Segments of 16-64 chunks of ~4 KiB (about 64-256 KiB), so a few MB make content roots of
# several pages; the default would cut 16 MiB pages.
SMALL_SEGMENTS = pages.SegmentSpec(boundary_bits=5, min_chunks=16, max_chunks=64)


def init_format_2(url: str, *, passphrase: bytes | None = None, **arguments) -> Store:
    store = Store.init(
        url, CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2, passphrase=passphrase, **arguments
    )
    if passphrase is None:
        # The segments spec is part of the config: a new, still empty store may get another one.
        small = dataclasses.replace(store.config, segments=SMALL_SEGMENTS)
        store.blobs.put(CONFIG_KEY, small.to_bytes())
        store.close()
        store = Store.open(url)
    return store


def pack_keys(store: Store) -> set[str]:
    return {info.key for info in store.blobs.list(PACK_KEY_PREFIX)}


def read(store: Store, name: str, version: int | None = None) -> bytes:
    out = io.BytesIO()
    store.get(name, out, version=version)
    return out.getvalue()


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.also_in_memory
def test_files_round_trip_through_packs_and_pages(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    files = {
        "empty": b"",
        "tiny.txt": b"hello\n",
        "sub/one-segment.bin": random_bytes(40_000, 1),
        "sub/many-segments.bin": random_bytes(3_000_000, 2),
        "repeats.bin": random_bytes(200_000, 3) * 5,
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    os.symlink("tiny.txt", source / "link")
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        summary = store.put([(source, "source")])
        assert {result.outcome for result in summary.results} == {"stored"}
        keys = pack_keys(store)
        # 3.6 MB of new data, 16 MiB packs: one pack, however many chunks.
        assert len(keys) == 1
        assert not list(store.blobs.list("chunks/"))
        for name, data in files.items():
            assert read(store, f"source/{name}") == data
        restored = tmp_path / "restored"
        store.restore("source", restored)
        for name, data in files.items():
            assert (restored / "source" / name).read_bytes() == data
        assert os.readlink(restored / "source" / "link") == "tiny.txt"
        repeated = store.catalog.get_content(store.catalog.get_version("source/repeats.bin").digest)
        assert repeated is not None and repeated.chunk_count > 5
        # A content of several segments keeps root pages; their pages are page items.
        digest = store.catalog.get_version("source/sub/many-segments.bin").digest
        entries = root_entries(list(store.catalog.recipe_pages(digest)))
        assert entries is not None and len(entries) > 4
        assert all(store.catalog.pack_index.get_page(entry.page_id) is not None for entry in entries)
        # A small file keeps its one page inline: no root, no page item.
        tiny = store.catalog.get_version("source/tiny.txt").digest
        assert root_entries(list(store.catalog.recipe_pages(tiny))) is None


@pytest.mark.also_in_memory
def test_a_new_version_stores_what_changed_and_reuses_the_pages_it_did_not_touch(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    original = random_bytes(4_000_000, 7)
    edited = bytearray(original)
    edited[2_000_000:2_040_000] = random_bytes(40_000, 8)  # 1% of the file
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        first = store.put_stream(io.BytesIO(original), "db.dump").results[0]
        pages_before = {record.page_id for record in store.catalog.pack_index.iter_pages()}
        second = store.put_stream(io.BytesIO(bytes(edited)), "db.dump").results[0]
        pages_after = {record.page_id for record in store.catalog.pack_index.iter_pages()}
        assert first.new_bytes == len(original)
        # The changed 40 KB and the chunks cut around them, not the file.
        assert 40_000 <= second.new_bytes <= 120_000
        fresh = pages_after - pages_before
        assert 1 <= len(fresh) <= 3 and len(pages_before) > 20
        assert read(store, "db.dump") == edited
        assert read(store, "db.dump", version=1) == original


@pytest.mark.also_in_memory
def test_a_version_under_another_name_stores_what_changed_through_hooks(new_backend, tmp_path):
    """No parent by name: the hooks among the new file's chunks lead to the pages of the first,
    whose chunks (and those of the segments after them) are then found in the cache."""
    objects = new_backend(tmp_path)
    original = random_bytes(4_000_000, 21)
    edited = bytearray(original)
    edited[1_000_000:1_040_000] = random_bytes(40_000, 22)
    edited[3_000_000:3_000_100] = b""
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        store.put_stream(io.BytesIO(original), "release-1.tar")
        index = store.catalog.pack_index
        page_ids = {record.page_id for record in index.iter_pages()}
        chunk_ids = [
            entry.chunk_id
            for page_id in page_ids
            for entry in store_page_entries(store, page_id)
            if int.from_bytes(entry.chunk_id[:4], "big") < 1 << (32 - 2)
        ]
        hooks = index.get_hooks(chunk_ids)
        # About one chunk in 4 of these small segments is a hook, each leading to its own page.
        assert len(hooks) == len(chunk_ids) > len(page_ids) and set(hooks.values()) == page_ids
        result = store.put_stream(io.BytesIO(bytes(edited)), "release-2.tar").results[0]
        assert result.outcome == "stored"
        assert 40_000 <= result.new_bytes <= 200_000, result.new_bytes
        assert read(store, "release-2.tar") == edited


def store_page_entries(store: Store, page_id: bytes):
    """The (chunk ID, length) entries of a stored page, resolved against its packs' tables."""
    page = pages.parse_page(store.catalog.pack_index.get_page(page_id).body)
    reader = PackReader(store.blobs, store.packs)
    try:
        tables = {run.pack_id: reader.read_table(run.pack_id) for run in page.runs}
    finally:
        reader.close()
    return pages.resolve_page(page_id, page, tables, store.chunk_id_key)


@pytest.mark.also_in_memory
def test_a_hook_that_leads_to_a_collected_page_is_only_a_miss(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    data = random_bytes(2_000_000, 23)
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        store.put_stream(io.BytesIO(data), "first")
        store.remove(["first"])
        assert store.gc().pages_deleted > 0
        result = store.put_stream(io.BytesIO(data + b"!"), "second").results[0]
        assert result.new_bytes == len(data) + 1
        assert read(store, "second") == data + b"!"
        assert store.verify(read_data=True).ok


@pytest.mark.also_in_memory
def test_a_put_whose_pages_a_whole_gc_round_collected_before_its_commit_commits_nothing(new_backend, tmp_path):
    """The put's pages are written, then a whole gc round runs before its commit: no content names
    them yet, so the round collects them. The commit finds the round moved on, reads what it
    names again, and refuses: a commit naming the collected pages would lose the file."""
    objects = new_backend(tmp_path)
    data = random_bytes(2_000_000, 31)
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        collected = gc_round_before_commits(store)
        with pytest.raises(ConcurrentModificationError, match="put again"):
            store.put_stream(io.BytesIO(data), "file")
        assert collected[0] > 0
        with pytest.raises(NameNotFoundError):
            store.catalog.get_version("file")
        store.put_stream(io.BytesIO(data), "file")
        assert read(store, "file") == data
        assert store.verify(read_data=True).ok


@pytest.mark.also_in_memory
def test_a_put_of_files_whose_batch_a_gc_round_collected_puts_that_batch_again(new_backend, tmp_path):
    """As above, but files put from paths can be read again: the put stores the batch once more
    with a new writer and succeeds. A file of the batch that is gone by then gets an error result;
    the others are stored."""
    objects = new_backend(tmp_path)
    contents = {f"file-{number}": random_bytes(1_000_000, 40 + number) for number in range(3)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        collected = gc_round_before_commits(store, before_round=(tmp_path / "file-2").unlink)
        summary = store.put([(tmp_path / name, name) for name in contents])
        assert collected[0] > 0
        outcomes = {result.name: result.outcome for result in summary.results}
        assert outcomes == {"file-0": "stored", "file-1": "stored", "file-2": "error"}
        assert read(store, "file-0") == contents["file-0"]
        assert read(store, "file-1") == contents["file-1"]
        with pytest.raises(NameNotFoundError):
            store.catalog.get_version("file-2")
        assert store.gc().pages_deleted == 0  # the first try's pages went in the round above
        assert store.verify(read_data=True).ok


def test_a_batch_collected_twice_fails_the_put_with_nothing_committed(tmp_path):
    data = random_bytes(1_000_000, 50)
    (tmp_path / "file").write_bytes(data)
    with init_format_2(str(tmp_path / "store")) as store:
        rounds = gc_round_before_commits(store, rounds=2)
        with pytest.raises(ConcurrentModificationError, match="put again"):
            store.put([(tmp_path / "file", "file")])
        assert len(rounds) == 2 and all(rounds)
        with pytest.raises(NameNotFoundError):
            store.catalog.get_version("file")
        store.put([(tmp_path / "file", "file")])
        assert read(store, "file") == data


@pytest.mark.also_in_memory
def test_an_identical_file_under_another_name_is_a_duplicate(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    data = random_bytes(500_000, 11)
    with init_format_2(objects.url, **objects.init_arguments()) as store:
        store.put_stream(io.BytesIO(data), "a.bin")
        result = store.put_stream(io.BytesIO(data), "b.bin").results[0]
        assert result.outcome == "duplicate" and result.duplicate_of == "a.bin"
        assert read(store, "b.bin") == data


def test_new_chunks_are_encoded_in_batches_and_stored_in_the_order_they_came(tmp_path, monkeypatch):
    batches: list[int] = []
    original = ObjectCodec.encode_many

    def counted(self, chunk_ids, chunks):
        batches.append(len(chunks))
        return original(self, chunk_ids, chunks)

    monkeypatch.setattr(ObjectCodec, "encode_many", counted)
    data = random_bytes(3_000_000, 13)
    with Store.init(str(tmp_path / "store"), CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2) as store:
        store.put_stream(io.BytesIO(data), "big.bin")
        (key,) = pack_keys(store)
        table = PackReader(store.blobs, store.packs).read_table(bytes.fromhex(key.rsplit("/", 1)[1]))
        assert read(store, "big.bin") == data
    chunk_ids = [store.hasher.chunk_id(chunk) for chunk in store.chunker(io.BytesIO(data))]
    assert [entry.chunk_id for entry in table] == chunk_ids
    # Each chunk encoded once, ~256 KiB (~60 chunks of 4 KiB) a task rather than one by one.
    assert sum(batches) == len(chunk_ids)
    assert len(batches) <= len(chunk_ids) // 20


def test_an_encrypted_store_round_trips_and_seals_its_pack_tables(tmp_path):
    url = str(tmp_path / "store")
    data = random_bytes(300_000, 12) + b"a recognisable plaintext marker" * 100
    with init_format_2(url, passphrase=b"correct horse") as store:
        store.put_stream(io.BytesIO(data), "secret.bin")
        (key,) = pack_keys(store)
        pack = store.blobs.get(key)
    assert b"recognisable plaintext" not in pack
    with Store.open(url, passphrase=b"correct horse") as reopened:
        assert read(reopened, "secret.bin") == data


def test_removing_the_last_version_drops_the_content_and_its_root(tmp_path):
    url = str(tmp_path / "store")
    with init_format_2(url) as store:
        store.put_stream(io.BytesIO(random_bytes(2_000_000, 13)), "gone.bin")
        digest = store.catalog.get_version("gone.bin").digest
        store.remove(["gone.bin"])
        assert store.catalog.get_content(digest) is None
        assert list(store.catalog.list_versions()) == []


def test_a_commit_that_fails_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    """Packs and pages written before a failed commit are garbage, never a version."""
    url = str(tmp_path / "store")
    kept = random_bytes(1_000_000, 14)
    with init_format_2(url) as store:
        store.put_stream(io.BytesIO(kept), "kept.bin")

        def refuse(*_args, **_kwargs):
            raise ConcurrentModificationError("refused for the test")

        monkeypatch.setattr(store.catalog, "commit", refuse)
        with pytest.raises(ConcurrentModificationError):
            store.put_stream(io.BytesIO(random_bytes(1_000_000, 15)), "lost.bin")
    with Store.open(url) as reopened:
        assert [record.name for record in reopened.list()] == ["kept.bin"]
        assert read(reopened, "kept.bin") == kept


def test_a_damaged_pack_is_an_integrity_error_naming_the_file_never_wrong_bytes(tmp_path):
    url = str(tmp_path / "store")
    with init_format_2(url) as store:
        store.put_stream(io.BytesIO(random_bytes(500_000, 16)), "victim.bin")
        (key,) = pack_keys(store)
    pack_path = Path(url) / key
    damaged = bytearray(pack_path.read_bytes())
    damaged[1000] ^= 0xFF
    pack_path.write_bytes(bytes(damaged))
    with Store.open(url) as reopened, pytest.raises(IntegrityError, match="victim.bin"):
        read(reopened, "victim.bin")


def test_an_unknown_storage_format_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="storage format 3"):
        Store.init(str(tmp_path / "store"), CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=3)
    assert not (tmp_path / "store").exists()


def test_the_config_records_format_2_and_its_segments(tmp_path):
    url = str(tmp_path / "store")
    Store.init(url, CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2).close()
    config = StoreConfig.from_bytes((Path(url) / CONFIG_KEY).read_bytes())
    assert config.storage_format == 2 and config.recipe_format == 2
    assert config.segments == pages.SegmentSpec.for_chunks(CHUNKER.avg_size, CHUNKER.max_size)


KILLED_PUT = """
import io, random, sys, time
from chunkstore import Store
with Store.open(sys.argv[1]) as store:
    class Slow(io.RawIOBase):
        # 64 MB of random bytes, slowly enough that packs are uploading when the kill comes.
        def __init__(self):
            self.left, self.random = 64 * 1024 * 1024, random.Random(5)
        def readable(self):
            return True
        def readinto(self, buffer):
            size = min(len(buffer), self.left, 1 << 20)
            buffer[:size] = self.random.randbytes(size)
            self.left -= size
            time.sleep(0.01)
            return size
    print("started", flush=True)
    store.put_stream(Slow(), "killed.bin")
"""


def test_a_put_killed_while_writing_packs_leaves_a_store_that_reads_and_writes(tmp_path):
    url = str(tmp_path / "store")
    kept = random_bytes(2_000_000, 17)
    with init_format_2(url) as store:
        store.put_stream(io.BytesIO(kept), "kept.bin")
        packs_before = pack_keys(store)
    process = subprocess.Popen([sys.executable, "-c", KILLED_PUT, url], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "started\n"
    deadline = time.monotonic() + 60
    with Store.open(url) as store:
        while pack_keys(store) == packs_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pack_keys(store) != packs_before, "no pack was written before the deadline"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    with Store.open(url) as store:
        assert [record.name for record in store.list()] == ["kept.bin"]
        assert read(store, "kept.bin") == kept
        again = random_bytes(1_000_000, 18)
        store.put_stream(io.BytesIO(again), "after.bin")
        assert read(store, "after.bin") == again

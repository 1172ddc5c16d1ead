"""migrate: a storage format 1 store made by today's put, rm and put --sync, copied into a new
format 2 store with every version's number, stat, stored-at time, deletion markers and snapshots;
read back byte for byte; run again, interrupted and resumed."""

from __future__ import annotations

import io
import itertools
import os
import random
from pathlib import Path

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.config import chunk_key
from chunkstore.errors import InvalidArgumentError, MissingChunkError
from chunkstore.operations.migrate import FILLER_CONTENTS
from chunkstore.operations.read import FILES_AHEAD, ChunkFetcher, iter_recipe
from support.storechecks import assert_verify_clean, get_bytes

CHUNKER = ChunkerSpec.from_average(avg_size=4096)
ZSTD = CompressionSpec.parse("zstd:3")
# Stored-at times of the puts, one day apart, in the past (UTC ns).
DAY_NS = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_store(
    url: str, work: Path, *, passphrase: bytes | None = None, storage_format: int = 1
) -> dict[tuple[str, int], bytes]:
    """A store (format 1 unless told) with a history of every kind, made by put, put --sync,
    put_stream and rm; returns the bytes of every version with content, by (name, version)."""
    tree = work / "tree"
    big = random_bytes(600_000, 1)
    with Store.init(url, CHUNKER, ZSTD, passphrase=passphrase, storage_format=storage_format) as store:
        # Day 0: a folder tree with an empty file, a symlink and a nested file.
        write(tree / "a.txt", b"first text\n" * 100)
        write(tree / "empty", b"")
        write(tree / "gone.bin", random_bytes(30_000, 2))
        write(tree / "deep/nested/big.bin", big)
        os.symlink("a.txt", tree / "link")
        store.put([(tree, "project")], at_ns=T0)
        # Day 1: a.txt and gone.bin change; big.bin gets an edit in the middle.
        write(tree / "a.txt", b"second text\n" * 100)
        write(tree / "gone.bin", random_bytes(30_000, 3))
        write(tree / "deep/nested/big.bin", big[:300_000] + random_bytes(5_000, 4) + big[305_000:])
        store.put([(tree, "project")], at_ns=T0 + DAY_NS)
        # Day 2: a.txt back to its first content; empty and gone.bin deleted (markers by --sync).
        write(tree / "a.txt", b"first text\n" * 100)
        (tree / "empty").unlink()
        (tree / "gone.bin").unlink()
        store.put([(tree, "project")], sync=True, at_ns=T0 + 2 * DAY_NS)
        # Day 3: empty comes back; a stream under a name of its own, twice.
        write(tree / "empty", b"")
        store.put([(tree, "project")], at_ns=T0 + 3 * DAY_NS)
        store.put_stream(io.BytesIO(b"stream one"), "streams/s.bin", at_ns=T0 + 3 * DAY_NS + 1)
        store.put_stream(io.BytesIO(b"stream two"), "streams/s.bin", at_ns=T0 + 4 * DAY_NS)
        # Gaps: a.txt's version 2 (its versions 1 and 3 then hold the same content), gone.bin's
        # version 2 (before its marker), and the stream's first version.
        store.remove(["project/a.txt"], version=2)
        store.remove(["project/gone.bin"], version=2)
        store.remove(["streams/s.bin"], version=1)
        contents = {}
        for record in store.list(all_versions=True):
            contents[(record.name, record.version)] = get_bytes(store, record.name, record.version)
    return contents


def history(store: Store, *, digests: bool = True) -> list[tuple]:
    """Every version and marker: name, number, digest, stat, stored-at time, marker or not."""
    return [
        (
            record.name,
            record.version,
            record.digest if digests else None,
            record.stat,
            record.stored_at_ns,
            record.deleted,
        )
        for record in store.catalog.list_versions("", all_versions=True, deleted=True)
    ]


def init_format_2(url: str, *, passphrase: bytes | None = None) -> Store:
    return Store.init(url, ChunkerSpec.from_average(avg_size=8192), ZSTD, storage_format=2, passphrase=passphrase)


@pytest.fixture
def format_1_store(tmp_path) -> tuple[str, dict[tuple[str, int], bytes]]:
    url = str(tmp_path / "v1")
    return url, make_store(url, tmp_path)


def assert_same_store(source: Store, dest: Store, contents: dict[tuple[str, int], bytes], *, digests: bool = True):
    assert history(dest, digests=digests) == history(source, digests=digests)
    assert dest.catalog.list_snapshots() == source.catalog.list_snapshots()
    for (name, version), data in contents.items():
        assert get_bytes(dest, name, version) == data, (name, version)
    assert_verify_clean(dest)


def test_every_version_is_copied_with_its_number_stat_time_and_markers(format_1_store, tmp_path):
    url, contents = format_1_store
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        listing = source.catalog.list_versions("", all_versions=True, deleted=True)
        numbers = {
            name: [record.version for record in records]
            for name, records in itertools.groupby(listing, key=lambda record: record.name)
        }
        # The history this test is about: gaps, a marker after a gap, a name deleted and back.
        assert numbers["project/a.txt"] == [1, 3]
        assert numbers["project/gone.bin"] == [1, 3]
        assert numbers["project/empty"] == [1, 2, 3]
        assert numbers["streams/s.bin"] == [2]
        progress = []
        report = source.migrate_to(dest, on_progress=progress.append)

        assert_same_store(source, dest, contents)
        versions = len(history(source))
        markers = sum(1 for entry in history(source) if entry[-1])
        assert (report.versions, report.markers, report.skipped) == (versions - markers, markers, 0)
        assert report.snapshots == len(source.catalog.list_snapshots()) == 6
        assert report.logical_bytes == sum(len(data) for data in contents.values())
        assert 0 < report.stored_new_bytes < report.logical_bytes
        last = progress[-1]
        assert (last.versions_done, last.versions_total) == (versions, versions)
        assert (last.bytes_done, last.bytes_total) == (report.logical_bytes, report.logical_bytes)
        # DEST as of the first snapshot holds what the first put stored.
        first = dest.catalog.list_snapshots()[0]
        as_of = {record.name for record in dest.catalog.list_versions("", as_of_ns=first.at_ns)}
        assert as_of == {
            "project/a.txt",
            "project/empty",
            "project/gone.bin",
            "project/deep/nested/big.bin",
            "project/link",
        }
        # The fillers of the gaps are gone (a mode of 0 is theirs).
        assert not [record for record in dest.catalog.list_versions("", all_versions=True) if record.stat.mode == 0]
        assert dest.stats()["storage_format"] == 2


def test_a_second_run_copies_nothing(format_1_store, tmp_path):
    url, contents = format_1_store
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        source.migrate_to(dest)
        packs_before = sorted(info.key for info in dest.blobs.list("packs/"))
        again = source.migrate_to(dest)
        assert (again.versions, again.markers, again.snapshots) == (0, 0, 0)
        assert again.skipped == len(history(source)) and again.snapshots_skipped == 6
        assert sorted(info.key for info in dest.blobs.list("packs/")) == packs_before
        assert_same_store(source, dest, contents)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_after", [1, 4, 7])
def test_an_interrupted_migrate_completes_when_run_again(format_1_store, tmp_path, stop_after):
    url, contents = format_1_store

    def stop(progress) -> None:
        if progress.versions_done >= stop_after:
            raise Interrupted

    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        with pytest.raises(Interrupted):
            source.migrate_to(dest, on_progress=stop)
        assert len(history(dest)) < len(history(source))
        rest = source.migrate_to(dest)
        assert rest.versions + rest.markers + rest.skipped == len(history(source))
        assert_same_store(source, dest, contents)


def test_fillers_left_by_a_run_that_died_are_removed(format_1_store, tmp_path, monkeypatch):
    """A run that dies after committing a filler and the version after it, before removing the
    filler: the next run removes it and copies the rest."""
    url, contents = format_1_store
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        catalog_class = type(dest.catalog)

        def die(self, selections):
            raise Interrupted

        monkeypatch.setattr(catalog_class, "remove_versions", die)
        with pytest.raises(Interrupted):
            source.migrate_to(dest)
        monkeypatch.undo()
        left = [entry for entry in history(dest) if entry[3].mode == 0 and not entry[-1]]
        assert left and all(entry[3].size < len(FILLER_CONTENTS) for entry in left)
        source.migrate_to(dest)
        assert_same_store(source, dest, contents)


@pytest.mark.parametrize("dest_passphrase", [b"dest secret", None])
def test_encrypted_stores_are_migrated_with_their_own_keys(tmp_path, dest_passphrase):
    url = str(tmp_path / "v1")
    contents = make_store(url, tmp_path, passphrase=b"source secret")
    with (
        Store.open(url, passphrase=b"source secret") as source,
        init_format_2(str(tmp_path / "v2"), passphrase=dest_passphrase) as dest,
    ):
        source.migrate_to(dest)
        # Keyed digests differ between the stores; all else is the same.
        assert_same_store(source, dest, contents, digests=False)
        again = source.migrate_to(dest)
        assert again.versions == 0 and again.skipped == len(history(source))


def test_a_destination_that_is_not_a_new_format_2_store_is_refused(format_1_store, tmp_path):
    url, _ = format_1_store
    with Store.open(url) as source:
        with (
            Store.init(str(tmp_path / "other-v1"), CHUNKER, ZSTD, storage_format=1) as format_1,
            pytest.raises(InvalidArgumentError, match="format 1 store"),
        ):
            source.migrate_to(format_1)
        with pytest.raises(InvalidArgumentError, match="source store itself"):
            source.migrate_to(source)
        with init_format_2(str(tmp_path / "used")) as used:
            used.put_stream(io.BytesIO(b"something else"), "project/a.txt")
            with pytest.raises(InvalidArgumentError, match="differs from the source store's"):
                source.migrate_to(used)
            # Nothing of that name was written.
            assert [record.version for record in used.list("project/a.txt", all_versions=True)] == [1]
        with init_format_2(str(tmp_path / "copied")) as copied:
            source.migrate_to(copied)
            # A version removed from DEST after it was copied cannot get its number again.
            copied.remove(["project/deep/nested/big.bin"], version=1)
            with pytest.raises(InvalidArgumentError, match="cannot be copied with its number"):
                source.migrate_to(copied)


def test_a_damaged_version_stops_the_migrate_until_it_is_removed_from_the_source(format_1_store, tmp_path):
    url, contents = format_1_store
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        damaged = source.catalog.get_version("streams/s.bin")
        for entry in iter_recipe(source, damaged.digest):
            source.blobs.delete(chunk_key(entry.chunk_id))
        with pytest.raises(MissingChunkError, match=r"streams/s.bin \(version 2\)"):
            source.migrate_to(dest)
        source.remove(["streams/s.bin"])
        source.migrate_to(dest)
        del contents[("streams/s.bin", 2)]
        assert_same_store(source, dest, contents)


def test_a_format_2_store_is_copied_into_another_with_other_chunks(tmp_path):
    url = str(tmp_path / "source-v2")
    contents = make_store(url, tmp_path, storage_format=2)
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        source.migrate_to(dest)
        assert_same_store(source, dest, contents)
        assert dest.config.chunker.avg_size != source.config.chunker.avg_size


def test_a_name_of_many_small_versions_is_read_ahead_a_bounded_number_of_versions(tmp_path, monkeypatch):
    url = str(tmp_path / "v1")
    with Store.init(url, CHUNKER, ZSTD, storage_format=1) as store:
        for number in range(100):
            store.put_stream(io.BytesIO(b"version %d" % number), "one/name", at_ns=T0 + number)
    requested = []
    read_whole = ChunkFetcher.read_whole

    def counted(fetcher, record):
        requested.append(record.version)
        return read_whole(fetcher, record)

    monkeypatch.setattr(ChunkFetcher, "read_whole", counted)
    ahead = []
    with Store.open(url) as source, init_format_2(str(tmp_path / "v2")) as dest:
        source.migrate_to(dest, on_progress=lambda progress: ahead.append(len(requested) - progress.versions_done))
        assert [record.version for record in dest.list("one/name", all_versions=True)] == list(range(1, 101))
        assert sorted(requested) == list(range(1, 101))
        assert max(ahead) <= max(FILES_AHEAD, source.workers) + 1

"""verify, stats and gc on storage format 2 stores (chunkstore/operations/packedcheck.py), in a
folder (SQLite) and in memory, with damage made by editing the real objects and catalog rows;
then the command line on a folder store, and one s3:// store with its DynamoDB table on moto."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.packindex import GcRound, IndexState, Phase
from chunkstore.backends.packs import PackReader, pack_key
from chunkstore.core import pages
from chunkstore.core.pages import SegmentSpec
from chunkstore.errors import ConcurrentModificationError, IntegrityError
from chunkstore.operations import repack
from chunkstore.operations.maintenance import REPAIR_ATTEMPTS
from chunkstore.operations.packedcheck import distinct_entries, pack_objects, read_recipe
from support.s3helpers import unique_name
from support.storechecks import CHUNKSTORE, get_bytes

# Segments of 8 to 64 chunks of ~1 KiB: a file of a few hundred KB spans several recipe pages.
SEGMENTS = SegmentSpec(boundary_bits=4, min_chunks=8, max_chunks=64)
CHUNKER = ChunkerSpec.from_average(avg_size=1024)
BIG = random.Random(7).randbytes(300_000)
EDITED = BIG[:150_000] + b"an edit in the middle" + BIG[150_000:]
SMALL = b"a small file kept in one inline page\n" * 20


def make_store(url: str) -> Store:
    store = Store.init(url, CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2)
    store.config = dataclasses.replace(store.config, segments=SEGMENTS)
    return store


def fill(store: Store, folder: Path) -> None:
    """big.bin twice (an edit between), a copy of its first version, a small file and a copy of
    it, an empty file, in five puts: root pages and an inline page, pages and packs shared
    between versions, contents of two versions, and a pack nothing names (a small content keeps
    its page inline, so no hook leads to it: small-copy.txt's put stores its chunks again before
    its commit finds the content stored; copy.bin's finds big.bin's through hooks)."""
    folder.mkdir(exist_ok=True)
    files = {"big.bin": BIG, "small.txt": SMALL, "empty": b"", "copy.bin": BIG}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    store.put([(folder / "big.bin", "docs/big.bin"), (folder / "empty", "docs/empty")])
    store.put([(folder / "small.txt", "docs/small.txt")])
    (folder / "big.bin").write_bytes(EDITED)
    store.put([(folder / "big.bin", "docs/big.bin")])
    store.put([(folder / "copy.bin", "copy.bin")])
    store.put([(folder / "small.txt", "small-copy.txt")])


@pytest.fixture(params=["folder", "memory"])
def store(request, tmp_path):
    url = str(tmp_path / "store") if request.param == "folder" else f"memory://{uuid.uuid4().hex}"
    with make_store(url) as opened:
        fill(opened, tmp_path / "files")
        yield opened


# ---- what a test reads and edits ---------------------------------------------------------


def version_names(store: Store) -> dict[bytes, list[str]]:
    names: dict[bytes, list[str]] = {}
    for record in store.catalog.list_versions(all_versions=True):
        names.setdefault(record.digest, []).append(f"{record.name}@{record.version}")
    return names


def recipe_page_bodies(store: Store, digest: bytes) -> list[tuple[bytes | None, bytes]]:
    recipe = read_recipe(store.catalog, digest)
    if recipe.inline_page is not None:
        return [(None, recipe.inline_page)]
    return [(entry.page_id, store.catalog.pack_index.get_page(entry.page_id).body) for entry in recipe.segments]


def packs_of(store: Store, digest: bytes) -> set[bytes]:
    return {run.pack_id for _, body in recipe_page_bodies(store, digest) for run in pages.parse_page(body).runs}


def named_packs(store: Store) -> set[bytes]:
    return {pack_id for content in store.catalog.iter_contents() for pack_id in packs_of(store, content.digest)}


def names_using(store: Store, uses) -> list[str]:
    """The names@version of every version whose content `uses` says yes to."""
    return sorted(name for digest, names in version_names(store).items() if uses(digest) for name in names)


def digest_of(store: Store, name: str, version: int | None = None) -> bytes:
    return store.catalog.get_version(name, version).digest


def big_pack(store: Store) -> bytes:
    """The pack of the first version of big.bin (the second and copy.bin read it too)."""
    (pack_id,) = packs_of(store, digest_of(store, "docs/big.bin", 1))
    return pack_id


def edit_catalog(store: Store, sql: str, parameters: tuple, memory_edit) -> None:
    """Change a row of a folder store's SQLite file, or the same item of a memory store's state."""
    if store.url.startswith("memory://"):
        memory_edit(store.catalog.state)
        return
    with sqlite3.connect(Path(store.url) / "catalog.sqlite") as db:
        assert db.execute(sql, parameters).rowcount == 1


def problems(report) -> list[tuple[str, list[str]]]:
    return sorted((problem.kind, problem.names) for problem in report.problems)


# ---- verify ------------------------------------------------------------------------------


def test_verify_of_an_intact_store_reads_every_content_back(store):
    report = store.verify(read_data=True)
    assert report.ok, report.problems
    contents = list(store.catalog.iter_contents())
    assert (report.versions, report.contents) == (6, len(contents)) == (6, 4)
    assert report.packs == len(named_packs(store)) == 3  # big.bin's first put, small.txt's, the edit's
    assert report.pages > 4  # big.bin's segments, some shared by its two versions
    assert report.bytes_read == sum(content.size for content in contents) == len(BIG) + len(EDITED) + len(SMALL)
    assert report.chunks_read == sum(content.chunk_count for content in contents)
    assert "packs" in report.to_json() and "pages" in report.to_json()


def test_a_deleted_pack_object_names_every_file_that_reads_it(store):
    pack_id = big_pack(store)
    store.blobs.delete(pack_key(pack_id))
    expected = names_using(store, lambda digest: pack_id in packs_of(store, digest))
    assert "docs/big.bin@1" in expected and "copy.bin@1" in expected and "docs/small.txt@1" not in expected
    for read_data in (False, True):
        report = store.verify(read_data=read_data)
        assert problems(report) == [("missing-object", expected)]
        assert pack_id.hex() in report.problems[0].message
    assert get_bytes(store, "docs/small.txt") == SMALL


def test_a_truncated_pack_is_found_by_its_size_without_reading_it(store):
    pack_id = big_pack(store)
    key = pack_key(pack_id)
    store.blobs.put(key, store.blobs.get(key)[:-10])
    report = store.verify()
    assert problems(report) == [("corrupt-object", names_using(store, lambda d: pack_id in packs_of(store, d)))]
    assert "bytes, the pack index says" in report.problems[0].message
    assert report.chunks_read == 0


def test_a_flipped_byte_in_a_pack_is_found_by_reading_the_data(store):
    pack_id = big_pack(store)
    key = pack_key(pack_id)
    data = bytearray(store.blobs.get(key))
    data[100] ^= 0x40  # inside the first record, after the pack's 32-byte header
    store.blobs.put(key, bytes(data))
    assert store.verify().ok  # sizes and names agree: only the bytes can tell
    report = store.verify(read_data=True)
    expected = names_using(store, lambda d: pack_id in packs_of(store, d))
    assert [problem.kind for problem in report.problems] == ["corrupt-object"] * len(report.problems)
    assert sorted(name for problem in report.problems for name in problem.names) == expected
    assert all(pack_id.hex() in problem.message for problem in report.problems)
    # The small file reads no damaged pack: it is read, and counted.
    assert report.bytes_read >= len(SMALL)


def test_a_deleted_page_item_is_a_missing_page_of_the_files_that_name_it(store):
    digest = digest_of(store, "docs/big.bin", 1)
    page_id = read_recipe(store.catalog, digest).segments[0].page_id

    def drop(state):
        del state.pages[page_id]

    edit_catalog(store, "DELETE FROM pages WHERE id = ?", (page_id,), drop)
    expected = names_using(
        store, lambda d: page_id in {entry.page_id for entry in read_recipe(store.catalog, d).segments}
    )
    assert {"docs/big.bin@1", "copy.bin@1"} <= set(expected)
    for read_data in (False, True):
        report = store.verify(read_data=read_data)
        assert problems(report) == [("missing-page", expected)]
        assert page_id.hex() in report.problems[0].message


def test_a_damaged_page_body_is_a_corrupt_recipe(store):
    first, second = (
        {entry.page_id for entry in read_recipe(store.catalog, digest_of(store, "docs/big.bin", version)).segments}
        for version in (1, 2)
    )
    (page_id, *_) = second - first  # a page of the edited segment: the second version alone names it

    def damage(state):
        state.pages[page_id] = dataclasses.replace(state.pages[page_id], body=b"CSRP" + bytes(30))

    edit_catalog(store, "UPDATE pages SET body = ? WHERE id = ?", (b"CSRP" + bytes(30), page_id), damage)
    report = store.verify()
    assert problems(report) == [("corrupt-recipe", ["docs/big.bin@2"])]
    with pytest.raises(IntegrityError, match="gc cannot tell"):
        store.gc(dry_run=True)


def test_a_damaged_content_root_is_a_corrupt_recipe_and_stops_gc(store):
    digest = digest_of(store, "docs/big.bin", 2)
    damaged_root = pages.ROOT_MAGIC + bytes(20)

    def damage(state):
        state.contents[digest].pages = [damaged_root]

    edit_catalog(store, "UPDATE recipe_pages SET data = ? WHERE digest = ?", (damaged_root, digest), damage)
    report = store.verify(read_data=True)
    assert problems(report) == [("corrupt-recipe", ["docs/big.bin@2"])]
    assert report.bytes_read == len(BIG) + len(SMALL)  # the others are read
    with pytest.raises(IntegrityError, match="docs/big.bin") as refused:
        store.gc(dry_run=True)
    assert refused.value.exit_code == 4 and "nothing was deleted" in str(refused.value)


def test_a_deleted_pack_item_is_reported(store):
    pack_id = big_pack(store)

    def drop(state):
        del state.packs[pack_id]

    edit_catalog(store, "DELETE FROM packs WHERE id = ?", (pack_id,), drop)
    report = store.verify()
    assert problems(report) == [("missing-pack-item", names_using(store, lambda d: pack_id in packs_of(store, d)))]
    # gc does not take a pack that pages name for an orphan, however its item was lost...
    assert store.gc().orphans_deleted == 0
    assert pack_id in pack_objects(store.blobs)
    # ... and verify --repair gives it its item back, from the pack.
    repaired = store.verify(repair=True, read_data=True)
    assert repaired.ok and repaired.pack_items_rebuilt == 1
    item = store.catalog.pack_index.get_packs([pack_id])[pack_id]
    assert (item.state, item.stored_bytes) == (IndexState.PRESENT, pack_objects(store.blobs)[pack_id])
    assert get_bytes(store, "docs/big.bin", 1) == BIG


def test_a_content_count_that_differs_from_its_versions_is_rewritten_by_repair(store):
    digest = digest_of(store, "copy.bin")  # the content of copy.bin@1 and docs/big.bin@1

    def recount(state):
        state.contents[digest].refcount = 5

    edit_catalog(store, "UPDATE contents SET refcount = 5 WHERE digest = ?", (digest,), recount)
    report = store.verify()
    assert problems(report) == [("refcount", ["copy.bin@1", "docs/big.bin@1"])]
    assert "counts 5 versions, 2 reference it" in report.problems[0].message
    repaired = store.verify(repair=True)
    assert repaired.ok, repaired.problems
    assert (repaired.content_counts_repaired, repaired.pack_items_rebuilt) == (1, 0)
    assert store.catalog.get_content(digest).refcount == 2
    assert store.verify(repair=True).content_counts_repaired == 0


def test_repair_releases_a_content_no_version_names_and_gc_frees_what_only_it_held(store):
    digest = digest_of(store, "docs/big.bin", 2)  # the edit: its own pages and pack
    assert store.gc().packs_deleted == 1  # the pack nothing names (see fill)

    def forget(state):
        del state.versions["docs/big.bin"][2]
        del state.holders[digest]

    edit_catalog(store, "DELETE FROM versions WHERE name = ? AND version = 2", ("docs/big.bin",), forget)
    assert problems(store.verify()) == [("refcount", [])]
    assert store.gc().packs_deleted == 0  # the content still holds its pages and pack
    repaired = store.verify(repair=True)
    assert repaired.ok and repaired.content_counts_repaired == 1
    assert store.catalog.get_content(digest) is None
    collected = store.gc()
    assert collected.pages_deleted > 0 and collected.packs_deleted == 1
    assert store.verify(read_data=True).ok
    assert get_bytes(store, "docs/big.bin", 1) == BIG


def test_repair_racing_puts_never_leaves_a_content_count_below_its_versions(store, tmp_path, monkeypatch):
    """A put of the same content between repair's recount and its rewrite raises the count; the
    stale recount must not be written over it. Here one lands before every rewrite: repair
    gives up after its rounds, and every count still covers its versions."""
    digest = digest_of(store, "copy.bin")
    store.catalog.set_content_refcounts({digest: (2, 5)})
    (tmp_path / "again.bin").write_bytes(BIG)
    rewrite = store.catalog.set_content_refcounts
    puts = 0

    def put_then_rewrite(counts):
        nonlocal puts
        puts += 1
        store.put([(tmp_path / "again.bin", f"again-{puts}.bin")])
        return rewrite(counts)

    monkeypatch.setattr(store.catalog, "set_content_refcounts", put_then_rewrite)
    with pytest.raises(ConcurrentModificationError):
        store.verify(repair=True)
    monkeypatch.undo()
    assert puts == REPAIR_ATTEMPTS
    assert store.catalog.get_content(digest).refcount == 5 + puts  # never lowered below its 2 + puts versions
    assert store.verify(repair=True).ok
    assert store.catalog.get_content(digest).refcount == 2 + puts


def test_a_subset_reads_whole_contents(store):
    sizes = {content.size for content in store.catalog.iter_contents()}
    report = store.verify(read_data=True, subset_percent=1)
    assert report.ok
    assert report.bytes_read in sizes  # one content of the four (at least one is read)


# ---- stats -------------------------------------------------------------------------------


def distinct_entries_read_from_tables(store: Store) -> tuple[int, int]:
    """(entries, plaintext bytes) of the pack entries the contents select, from the pack tables."""
    selected: set[tuple[bytes, int]] = set()
    for content in store.catalog.iter_contents():
        for _, body in recipe_page_bodies(store, content.digest) if content.chunk_count else []:
            for run in pages.parse_page(body).runs:
                selected.update((run.pack_id, entry) for entry in range(run.first_entry, run.end_entry))
    with PackReader(store.blobs, store.packs) as reader:
        tables = {pack_id: reader.read_table(pack_id) for pack_id in {pack_id for pack_id, _ in selected}}
    return len(selected), sum(tables[pack_id][entry].plaintext_length for pack_id, entry in selected)


def test_stats_come_from_the_pack_index_and_the_recipes(store):
    figures = store.stats()
    objects = pack_objects(store.blobs)
    items = list(store.catalog.pack_index.iter_packs())
    assert figures["storage_format"] == 2
    assert figures["packs"] == len(objects) == len(items)
    assert figures["stored_bytes"] == sum(objects.values())
    assert figures["chunks"] == sum(item.entries for item in items)
    assert (figures["referenced_chunks"], figures["unique_bytes"]) == distinct_entries_read_from_tables(store)
    assert figures["logical_bytes"] == 2 * len(BIG) + len(EDITED) + 2 * len(SMALL)
    assert figures["dedup_ratio"] > 2.5  # big.bin three times, stored about once
    assert figures["packs_by_size"]["under_4mib"] == {"packs": len(objects), "bytes": sum(objects.values())}
    assert (
        figures["packs_by_size"]["4mib_to_16mib"]["packs"] == figures["packs_by_size"]["16mib_and_over"]["packs"] == 0
    )
    assert figures["inline_pages"] == 1  # small.txt; the empty file has no page
    assert figures["pages"] == len({page.page_id for page in store.catalog.pack_index.iter_pages()})
    format_1_keys = {
        "store",
        "files",
        "versions",
        "contents",
        "chunks",
        "logical_bytes",
        "unique_bytes",
        "stored_bytes",
    }
    assert format_1_keys <= figures.keys()


# ---- gc ----------------------------------------------------------------------------------


def test_gc_deletes_what_nothing_names_and_its_dry_run_says_so_first(store):
    objects = pack_objects(store.blobs)
    page_items = {page.page_id for page in store.catalog.pack_index.iter_pages()}
    (unnamed,) = objects.keys() - named_packs(store)  # what small-copy.txt's put stored again
    dry = store.gc(dry_run=True)
    assert (dry.packs_deleted, dry.pages_deleted, dry.orphans_deleted) == (1, 0, 0)
    assert dry.bytes_freed == objects[unnamed]
    report = store.gc()
    assert (report.packs_deleted, report.pages_deleted, report.orphans_deleted, report.bytes_freed) == (
        1,
        0,
        0,
        objects[unnamed],
    )
    assert pack_objects(store.blobs).keys() == objects.keys() - {unnamed}
    assert store.verify(read_data=True).ok

    index = store.catalog.pack_index
    hooks = dict(index.iter_hooks())
    assert hooks and set(hooks.values()) <= page_items

    store.remove(["docs/big.bin", "copy.bin"])  # every version of them: only small.txt and empty stay
    live_packs = packs_of(store, digest_of(store, "docs/small.txt"))
    orphan = os.urandom(16)
    store.blobs.put(pack_key(orphan), b"not a pack")
    objects = pack_objects(store.blobs)
    dry = store.gc(dry_run=True)
    assert dry.dry_run and dry.pages_deleted == len(page_items)
    assert dry.page_bytes_freed == sum(len(page.body) for page in store.catalog.pack_index.iter_pages())
    assert dry.packs_deleted == len(objects.keys() - live_packs - {orphan})
    assert dry.orphans_deleted == 1
    assert dry.bytes_freed == sum(size for pack_id, size in objects.items() if pack_id not in live_packs)
    assert dry.chunks_deleted > 0
    report = store.gc()
    assert not report.dry_run
    assert dataclasses.replace(report, dry_run=True, temporaries_removed=0, hooks_deleted=None) == dry
    assert pack_objects(store.blobs).keys() == live_packs
    assert list(index.iter_pages()) == []
    assert report.hooks_deleted == len(hooks) and list(index.iter_hooks()) == []  # they led to the pages
    assert {(pack.pack_id, pack.state) for pack in index.iter_packs()} == {
        (pack_id, IndexState.PRESENT) for pack_id in live_packs
    }
    assert index.read_round() == GcRound(2, Phase.IDLE)
    assert get_bytes(store, "docs/small.txt") == SMALL and get_bytes(store, "docs/empty") == b""
    assert store.verify(read_data=True).ok
    again = store.gc()
    assert (again.packs_deleted, again.pages_deleted, again.orphans_deleted, again.bytes_freed) == (0, 0, 0, 0)


def test_gc_drops_the_hooks_of_the_pages_it_deletes_and_keeps_the_others(store, tmp_path):
    index = store.catalog.pack_index
    other = random.Random(8).randbytes(300_000)
    put_bytes(store, tmp_path / "other", {"other.bin": other})
    before = dict(index.iter_hooks())
    # A hook whose page went earlier (a round that died after deleting it): dropped too.
    index.put_hooks({os.urandom(32): os.urandom(32)})
    store.remove(["docs/big.bin", "copy.bin"])
    report = store.gc()
    pages_left = {page.page_id for page in index.iter_pages()}
    assert pages_left and report.pages_deleted > 0
    kept = {chunk_id: page_id for chunk_id, page_id in before.items() if page_id in pages_left}
    assert kept and dict(index.iter_hooks()) == kept
    assert report.hooks_deleted == len(before) + 1 - len(kept)
    assert get_bytes(store, "other.bin") == other
    assert store.verify(read_data=True).ok


def put_bytes(store: Store, folder: Path, files: dict[str, bytes]) -> None:
    """One put of files (name -> bytes), so their new chunks share packs."""
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name.replace("/", "_")).write_bytes(data)
    store.put([(folder / name.replace("/", "_"), name) for name in files])


def test_gc_repacks_a_pack_whose_chunks_are_mostly_dead(store, tmp_path):
    gone, kept = random.Random(41).randbytes(400_000), random.Random(42).randbytes(200_000)
    put_bytes(store, tmp_path / "both", {"repack/gone.bin": gone, "repack/kept.bin": kept})
    (shared,) = packs_of(store, digest_of(store, "repack/kept.bin"))
    assert packs_of(store, digest_of(store, "repack/gone.bin")) == {shared}
    store.remove(["repack/gone.bin"])
    assert store.gc(max_repack=0).packs_repacked == 0  # a bound of 0 rewrites nothing
    assert shared in pack_objects(store.blobs)
    dry = store.gc(dry_run=True)
    assert dry.packs_repacked == 1 and dry.repack_bytes_read == pack_objects(store.blobs)[shared]
    report = store.gc()
    assert (report.packs_repacked, report.repack_bytes_read) == (1, dry.repack_bytes_read)
    assert 0 < report.repack_bytes_written < report.repack_bytes_read / 2
    (moved,) = packs_of(store, digest_of(store, "repack/kept.bin"))
    assert moved != shared and shared not in pack_objects(store.blobs)
    assert pack_objects(store.blobs)[moved] < report.repack_bytes_read / 2
    assert get_bytes(store, "repack/kept.bin") == kept
    assert store.verify(read_data=True).ok
    assert store.gc(dry_run=True).packs_repacked == 0


def test_gc_merges_small_packs_and_switches_inline_pages(store, tmp_path, monkeypatch):
    monkeypatch.setattr(repack, "SMALL_PACK_BYTES", 64 * 1024)
    small = {f"small/{number}.bin": random.Random(1000 + number).randbytes(6_000) for number in range(6)}
    # Two small files sharing their first 4 KB: kept inline, no hook leads to them, so the second
    # put stores the shared chunks again, and the merge meets them in two packs.
    shared = random.Random(3000).randbytes(4_000)
    small |= {"small/6.bin": shared + b"six" * 500, "small/7.bin": shared + b"seven" * 300}
    large = {f"small/large-{number}.bin": random.Random(2000 + number).randbytes(20_000) for number in range(4)}
    for name, data in {**small, **large}.items():
        put_bytes(store, tmp_path / "one", {name: data})
    assert all(read_recipe(store.catalog, digest_of(store, name)).inline_page for name in small)
    before = {name: packs_of(store, digest_of(store, name)) for name in {**small, **large}}
    assert len(set().union(*before.values())) == 12  # a pack a put
    report = store.gc()
    assert report.packs_repacked >= 12
    after = {name: packs_of(store, digest_of(store, name)) for name in {**small, **large}}
    assert (
        len(set().union(*after.values())) == 1 and not set().union(*before.values()) & pack_objects(store.blobs).keys()
    )
    for name, data in {**small, **large}.items():
        assert get_bytes(store, name) == data
    assert store.verify(read_data=True).ok


def doom_as_a_gc_that_dies(store: Store, pages_too: bool) -> tuple[list, list]:
    """G2 and G3 of a round by a gc whose process then ends without finishing: every page and
    pack is doomed (as if nothing named them), the round is left dooming."""
    index = store.catalog.pack_index
    session = store.catalog.open_session("gc")
    store.catalog.acquire_gc_lock(session)
    dooming = index.advance_round(session, index.read_round())
    page_items = list(index.iter_pages()) if pages_too else []
    pack_items = list(index.iter_packs())
    assert index.doom(dooming, page_items) == [] and index.doom(dooming, pack_items) == []
    store.catalog.close_session(session)  # the lock's holder is gone: the next gc takes it over
    return page_items, pack_items


def test_a_round_a_dead_gc_left_is_finished_and_gives_back_what_is_named(store):
    objects = pack_objects(store.blobs)
    (unnamed,) = objects.keys() - named_packs(store)
    doom_as_a_gc_that_dies(store, pages_too=True)
    assert store.verify().ok  # doomed, but the round is not over: its sweep gives them back
    report = store.gc()
    assert (report.packs_deleted, report.pages_deleted) == (1, 0)
    assert pack_objects(store.blobs).keys() == objects.keys() - {unnamed}
    states = {item.state for item in [*store.catalog.pack_index.iter_packs(), *store.catalog.pack_index.iter_pages()]}
    assert states == {IndexState.PRESENT}
    assert store.catalog.pack_index.read_round() == GcRound(2, Phase.IDLE)  # the dead round, then its own
    assert store.verify(read_data=True).ok


def test_a_put_that_names_a_page_doomed_while_gc_sweeps_commits_nothing(store, tmp_path):
    """A put reading while gc sweeps must not name an item the sweep may delete: it reads each one
    again and refuses to commit; once gc finishes, the same put succeeds."""
    doom_as_a_gc_that_dies(store, pages_too=True)
    index = store.catalog.pack_index
    session = store.catalog.open_session("gc")
    store.catalog.acquire_gc_lock(session)
    index.advance_round(session, index.read_round())  # now sweeping, and this gc dies too
    store.catalog.close_session(session)
    edited_again = EDITED[:1000] + b"a second edit" + EDITED[1000:]
    (tmp_path / "big.bin").write_bytes(edited_again)
    with pytest.raises(ConcurrentModificationError, match="its round unfinished: run `chunkstore gc` first"):
        store.put([(tmp_path / "big.bin", "docs/big.bin")])
    assert [record.version for record in store.catalog.list_versions("docs/big.bin", all_versions=True)] == [1, 2]
    store.gc()
    assert store.catalog.pack_index.read_round().phase == Phase.IDLE
    store.put([(tmp_path / "big.bin", "docs/big.bin")])
    assert get_bytes(store, "docs/big.bin") == edited_again
    assert store.verify(read_data=True).ok


# ---- the command line --------------------------------------------------------------------


def run(store_url: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CHUNKSTORE, "--store", store_url, *arguments], capture_output=True, text=True, check=False)


def test_the_command_line_on_a_format_2_store(tmp_path):
    url = str(tmp_path / "store")
    with make_store(url) as store:
        fill(store, tmp_path / "files")
        pack_id = big_pack(store)

    completed = run(url, "verify", "--read-data")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("ok: 6 versions, 4 contents, ")

    figures = json.loads(run(url, "stats", "--json").stdout)
    assert figures["storage_format"] == 2 and figures["packs"] >= 3
    assert "packs:" in run(url, "stats").stdout

    completed = run(url, "gc", "--dry-run")
    assert completed.returncode == 0
    assert completed.stdout.startswith("would delete 1 packs, 0 recipe pages and 0 orphaned packs, freeing ")
    assert json.loads(run(url, "gc", "--dry-run", "--json").stdout)["packs_deleted"] == 1
    completed = run(url, "gc")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("deleted 1 packs, 0 recipe pages and 0 orphaned packs, freeing ")
    assert json.loads(run(url, "gc", "--dry-run", "--json").stdout)["packs_deleted"] == 0
    completed = run(url, "verify", "--repair")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(
        "rebuilt 0 pack index items from their packs\nrepaired 0 contents' counts of versions\nok: "
    )

    (Path(url) / pack_key(pack_id)).unlink()
    completed = run(url, "verify")
    assert completed.returncode == IntegrityError.exit_code == 4
    assert completed.stderr.startswith(f"chunkstore: missing-object: pack {pack_id.hex()} has no object")
    assert "docs/big.bin@1" in completed.stderr


# ---- s3:// and DynamoDB ------------------------------------------------------------------


def test_verify_and_stats_of_an_s3_store(bucket, tmp_path):
    url = f"s3://{bucket}/store"
    store = Store.init(
        url, CHUNKER, CompressionSpec.parse("zstd:3"), table=unique_name("table"), create=True, storage_format=2
    )
    with store:
        store.config = dataclasses.replace(store.config, segments=SEGMENTS)
        fill(store, tmp_path / "files")
        report = store.verify(read_data=True)
        assert report.ok, report.problems
        assert report.bytes_read == len(BIG) + len(EDITED) + len(SMALL)
        figures = store.stats()
        assert figures["packs"] == len(pack_objects(store.blobs))
        assert (figures["referenced_chunks"], figures["unique_bytes"]) == distinct_entries_read_from_tables(store)
        pack_id = big_pack(store)
        store.blobs.delete(pack_key(pack_id))
        report = store.verify()
        assert problems(report) == [("missing-object", names_using(store, lambda d: pack_id in packs_of(store, d)))]


def test_distinct_entries_are_exact_where_runs_tile_and_estimated_where_they_only_overlap():
    pack = os.urandom(16)

    def run(first: int, count: int, plaintext: int) -> pages.Run:
        return pages.Run(pack, first, count, plaintext)

    # The run that stored entries 0..299, and a later version's runs around one changed entry.
    assert distinct_entries([run(0, 300, 3000), run(0, 100, 1000), run(101, 199, 1990)]) == (300, 3000)
    assert distinct_entries([run(0, 5, 50), run(7, 2, 30), run(7, 2, 30)]) == (7, 80)
    # Entries 10..19 are reached only by a run that overlaps another: 10 bytes each, the mean.
    assert distinct_entries([run(0, 10, 100), run(5, 15, 150)]) == (20, 200)


def test_a_pack_doomed_in_a_running_gc_round_is_not_damage_until_the_round_ends(store):
    """Out of the idle phase a named pack may be DOOMED: the round's sweep gives it back. Once the
    round is idle again, a named pack still DOOMED would be deleted: verify reports it."""
    index = store.catalog.pack_index
    pack = index.get_packs([big_pack(store)])[big_pack(store)]
    session = store.catalog.open_session("gc")
    store.catalog.acquire_gc_lock(session)
    try:
        dooming = index.advance_round(session, index.read_round())
        assert index.doom(dooming, [pack]) == []
        assert store.verify().ok
        sweeping = index.advance_round(session, dooming)
        assert store.verify().ok
        index.advance_round(session, sweeping)
    finally:
        store.catalog.release_gc_lock(session)
        store.catalog.close_session(session)
    report = store.verify()
    assert [problem.kind for problem in report.problems] == ["missing-pack-item"]
    assert "is DOOMED in the pack index" in report.problems[0].message

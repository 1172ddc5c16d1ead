"""The Catalog contract (chunkstore/backends/catalog.py), checked for any implementation.

A test module subclasses CatalogConformance and provides one fixture:

    @pytest.fixture
    def make_catalog(self, ...):
        def make(lease_seconds=DEFAULT_LEASE_SECONDS) -> Catalog: ...
        yield make
        # close what make opened

make_catalog returns a callable that opens a catalog on one fresh, empty location
(created on the first call); each further call opens another handle on the same
location, as another process would. lease_seconds is how long that handle lets a
session go without a heartbeat before treating it as dead: the tests give a gc a
tiny lease to play a gc that outlives a stalled or killed writer.

Chunks, contents and names here are synthetic: what is checked is the catalog's
bookkeeping, not chunking or hashing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import blake3
import pytest

from chunkstore.backends.catalog import (
    Catalog,
    CatalogStats,
    ChunkState,
    CommitOutcome,
    FileStat,
    NewVersion,
    SnapshotRecord,
)
from chunkstore.core import recipes
from chunkstore.errors import (
    ConcurrentModificationError,
    InvalidArgumentError,
    NameNotFoundError,
    NotFoundError,
    VersionNotFoundError,
)

# A handle with this lease treats any session that has not heartbeaten since the
# test's last step as dead; tests wait DEAD_AFTER after the step to be sure.
TINY_LEASE = 0.05
DEAD_AFTER = 0.2


def chunk_id(number: int) -> bytes:
    return blake3.blake3(f"chunk {number}".encode()).digest()


def chunk_size(number: int) -> int:
    return 1000 + number


def stored_size(size: int) -> int:
    """What the synthetic chunks are said to occupy once stored (compressed)."""
    return size // 2 + 7


def new_version(name: str, chunks: Sequence[int], *, mtime_ns: int = 1_000, page_entries: int = 4096) -> NewVersion:
    """A file made of the given chunks; its digest follows from the chunk list."""
    entries = [recipes.RecipeEntry(chunk_id(number), chunk_size(number)) for number in chunks]
    digest = blake3.blake3(repr(list(chunks)).encode()).digest()
    stat = FileStat(sum(entry.length for entry in entries), mtime_ns, 0o640, 42, mtime_ns + 1)
    return NewVersion(name, stat, digest, len(entries), list(recipes.paginate(entries, page_entries)))


def claim_and_store(catalog: Catalog, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
    """What a writer does before commit: claim (ID, size) pairs, then report the ones it had to upload stored."""
    to_upload = catalog.claim_chunks(session, list(chunks))
    catalog.chunks_stored(
        session, [(each, stored_size(size)) for each, size in dict(chunks).items() if each in to_upload]
    )
    return to_upload


def upload(catalog: Catalog, session: str, chunks: Sequence[int]) -> set[bytes]:
    return claim_and_store(catalog, session, [(chunk_id(number), chunk_size(number)) for number in chunks])


def put(catalog: Catalog, *versions: NewVersion, at_ns: int | None = None) -> list[CommitOutcome]:
    """A whole put: one session that uploads every chunk of versions and commits them (at at_ns)."""
    session = catalog.open_session("put")
    try:
        for new in versions:
            entries = [entry for page in new.pages for entry in recipes.decode_page(page)]
            claim_and_store(catalog, session, [(entry.chunk_id, entry.length) for entry in entries])
        return catalog.commit(session, list(versions), at_ns=at_ns)
    finally:
        catalog.close_session(session)


def refcounts(catalog: Catalog, chunks: Sequence[int]) -> list[int | None]:
    rows = catalog.get_chunks([chunk_id(number) for number in chunks])
    return [rows[chunk_id(number)].refcount if chunk_id(number) in rows else None for number in chunks]


def states(catalog: Catalog, chunks: Sequence[int]) -> list[ChunkState | None]:
    rows = catalog.get_chunks([chunk_id(number) for number in chunks])
    return [rows[chunk_id(number)].state if chunk_id(number) in rows else None for number in chunks]


def names(records) -> list[tuple[str, int]]:
    return [(record.name, record.version) for record in records]


# Times of the history tests: a day apart, in UTC nanoseconds.
DAY_NS = 86_400 * 10**9
T1, T2, T3, T4 = (1_790_000_000 * 10**9 + day * DAY_NS for day in range(4))


def collect_all(catalog: Catalog, session: str) -> set[bytes]:
    """Run a whole gc pass as session (which holds the lock): collect, 'delete', forget."""
    collected: set[bytes] = set()
    while candidates := catalog.collect_candidates(session, 1000):
        ids = [chunk.chunk_id for chunk in candidates]
        collected.update(ids)
        catalog.forget_chunks(session, ids)
    return collected


class CatalogConformance:
    @pytest.fixture
    def make_catalog(self):
        raise NotImplementedError("a conformance subclass provides make_catalog")

    @pytest.fixture
    def catalog(self, make_catalog) -> Catalog:
        return make_catalog()

    @pytest.fixture
    def gc_session(self, catalog):
        """A gc session holding the gc lock."""
        session = catalog.open_session("gc")
        catalog.acquire_gc_lock(session)
        yield session
        catalog.release_gc_lock(session)
        catalog.close_session(session)

    # ---- sessions and claims -----------------------------------------------------------

    def test_sessions_are_distinct_and_close_is_idempotent(self, catalog):
        first, second = catalog.open_session("put"), catalog.open_session("put")
        assert first != second
        catalog.heartbeat(first)
        catalog.close_session(first)
        catalog.close_session(first)
        catalog.close_session(second)

    def test_claim_of_absent_chunks_returns_them_with_pending_rows(self, catalog):
        session = catalog.open_session("put")
        assert catalog.claim_chunks(session, []) == set()
        assert catalog.claim_chunks(
            session, [(chunk_id(1), chunk_size(1)), (chunk_id(2), chunk_size(2)), (chunk_id(1), chunk_size(1))]
        ) == {chunk_id(1), chunk_id(2)}
        rows = catalog.get_chunks([chunk_id(1), chunk_id(2), chunk_id(3)])
        assert set(rows) == {chunk_id(1), chunk_id(2)}
        assert [(row.size, row.refcount, row.state) for row in (rows[chunk_id(1)], rows[chunk_id(2)])] == [
            (chunk_size(1), 0, ChunkState.PENDING),
            (chunk_size(2), 0, ChunkState.PENDING),
        ]

    def test_claim_of_a_pending_chunk_returns_it_again(self, catalog):
        # A writer that announced a chunk may die before uploading it: the next one uploads it too.
        first, second = catalog.open_session("put"), catalog.open_session("put")
        catalog.claim_chunks(first, [(chunk_id(1), chunk_size(1))])
        assert catalog.claim_chunks(second, [(chunk_id(1), chunk_size(1))]) == {chunk_id(1)}

    def test_claim_of_a_present_chunk_pins_it_and_asks_for_no_upload(self, catalog, gc_session):
        uploader = catalog.open_session("put")
        assert upload(catalog, uploader, [1, 2]) == {chunk_id(1), chunk_id(2)}
        catalog.close_session(uploader)
        reader = catalog.open_session("put")
        assert catalog.claim_chunks(reader, [(chunk_id(1), chunk_size(1))]) == set()
        # Count 0 and present: only the pin of the live session keeps gc away from chunk 1.
        assert collect_all(catalog, gc_session) == {chunk_id(2)}
        catalog.close_session(reader)
        assert collect_all(catalog, gc_session) == {chunk_id(1)}

    def test_chunks_stored_makes_pending_rows_present(self, catalog):
        session = catalog.open_session("put")
        upload(catalog, session, [5])
        row = catalog.get_chunks([chunk_id(5)])[chunk_id(5)]
        assert (row.chunk_id, row.size, row.stored_size, row.refcount, row.state, row.location) == (
            chunk_id(5),
            chunk_size(5),
            stored_size(chunk_size(5)),
            0,
            ChunkState.PRESENT,
            None,
        )
        assert [chunk.chunk_id for chunk in catalog.iter_chunks()] == [chunk_id(5)]

    # ---- commit ------------------------------------------------------------------------

    def test_commit_of_new_content_counts_each_chunk_occurrence(self, catalog):
        new = new_version("dir/file", [1, 2, 1, 3, 1])
        (outcome,) = put(catalog, new)
        assert outcome == CommitOutcome("dir/file", 1, "stored", None)
        assert refcounts(catalog, [1, 2, 3]) == [3, 1, 1]
        content = catalog.get_content(new.digest)
        assert (content.digest, content.size, content.chunk_count, content.page_count, content.refcount) == (
            new.digest,
            new.stat.size,
            5,
            1,
            1,
        )
        assert list(catalog.recipe_pages(new.digest)) == new.pages
        record = catalog.get_version("dir/file")
        assert (record.name, record.version, record.digest, record.stat, record.size) == (
            "dir/file",
            1,
            new.digest,
            new.stat,
            new.stat.size,
        )
        assert record.stored_at_ns > 0

    def test_a_recipe_of_many_pages_round_trips(self, catalog):
        chunks = [number % 7 for number in range(40)]
        new = new_version("paged", chunks, page_entries=3)
        assert len(new.pages) == 14
        put(catalog, new)
        assert catalog.get_content(new.digest).page_count == 14
        pages = list(catalog.recipe_pages(new.digest))
        assert pages == new.pages
        assert [entry.chunk_id for page in pages for entry in recipes.decode_page(page)] == [
            chunk_id(number) for number in chunks
        ]
        assert refcounts(catalog, range(7)) == [Counter(chunks)[number] for number in range(7)]

    def test_empty_content_has_no_pages(self, catalog):
        empty = new_version("empty", [])
        assert put(catalog, empty)[0].outcome == "stored"
        assert catalog.get_content(empty.digest).chunk_count == 0
        assert list(catalog.recipe_pages(empty.digest)) == []
        assert put(catalog, new_version("also-empty", []))[0] == CommitOutcome("also-empty", 1, "duplicate", "empty")

    def test_duplicate_content_names_the_oldest_name_and_counts_no_chunk(self, catalog):
        put(catalog, new_version("b-first", [1, 2]))
        put(catalog, new_version("a-second", [1, 2]))
        # The pages of a duplicate are not needed; an empty list must do.
        third = new_version("c-third", [1, 2])
        duplicate = NewVersion(third.name, third.stat, third.digest, third.chunk_count, [])
        session = catalog.open_session("put")
        assert catalog.commit(session, [duplicate]) == [CommitOutcome("c-third", 1, "duplicate", "b-first")]
        catalog.close_session(session)
        assert catalog.get_content(third.digest).refcount == 3
        assert refcounts(catalog, [1, 2]) == [1, 1]
        assert catalog.find_name_with_digest(third.digest) == "b-first"
        assert catalog.find_name_with_digest(b"\0" * 32) is None

    def test_duplicates_within_one_commit(self, catalog):
        outcomes = put(catalog, new_version("one", [1]), new_version("two", [1]))
        assert outcomes == [CommitOutcome("one", 1, "stored"), CommitOutcome("two", 1, "duplicate", "one")]
        assert refcounts(catalog, [1]) == [1]

    def test_each_version_of_one_commit_sees_the_ones_before_it(self, catalog):
        put(catalog, new_version("file", [1], mtime_ns=100))
        outcomes = put(
            catalog,
            new_version("file", [2], mtime_ns=200),  # a new content
            new_version("file", [2], mtime_ns=300),  # the version just committed: refreshed
            new_version("copy", [2]),  # its only holder is the version just committed
            new_version("file", [1], mtime_ns=400),  # back to the older content
            new_version("copy", [2], mtime_ns=500),
        )
        assert outcomes == [
            CommitOutcome("file", 2, "stored"),
            CommitOutcome("file", 2, "unchanged"),
            CommitOutcome("copy", 1, "duplicate", "file"),
            CommitOutcome("file", 3, "duplicate", "file"),
            CommitOutcome("copy", 1, "unchanged"),
        ]
        assert [catalog.get_version("file", number).stat.mtime_ns for number in (1, 2, 3)] == [100, 300, 400]
        assert catalog.get_version("copy").stat.mtime_ns == 500
        assert names(catalog.list_versions(all_versions=True)) == [("copy", 1), ("file", 1), ("file", 2), ("file", 3)]
        assert catalog.get_content(new_version("f", [1]).digest).refcount == 2
        assert catalog.get_content(new_version("f", [2]).digest).refcount == 2
        assert refcounts(catalog, [1, 2]) == [1, 1]
        assert put(catalog, new_version("file", [3])) == [CommitOutcome("file", 4, "stored")]

    def test_same_digest_as_the_latest_version_is_unchanged_and_refreshes_stat(self, catalog):
        put(catalog, new_version("file", [1], mtime_ns=100))
        touched = new_version("file", [1], mtime_ns=200)
        assert put(catalog, touched) == [CommitOutcome("file", 1, "unchanged")]
        assert catalog.get_version("file").stat == touched.stat
        assert names(catalog.list_versions(all_versions=True)) == [("file", 1)]
        assert catalog.get_content(touched.digest).refcount == 1
        assert refcounts(catalog, [1]) == [1]

    def test_versions_are_numbered_per_name(self, catalog):
        assert put(catalog, new_version("file", [1]))[0].version == 1
        assert put(catalog, new_version("file", [2]))[0].version == 2
        assert put(catalog, new_version("other", [3]))[0].version == 1
        # Back to the first content: a new version, a duplicate of the name itself.
        assert put(catalog, new_version("file", [1])) == [CommitOutcome("file", 3, "duplicate", "file")]
        assert names(catalog.list_versions(all_versions=True)) == [("file", 1), ("file", 2), ("file", 3), ("other", 1)]
        assert [catalog.get_version("file", number).digest for number in (1, 2, 3)] == [
            new_version("f", [1]).digest,
            new_version("f", [2]).digest,
            new_version("f", [1]).digest,
        ]

    def test_commit_refuses_a_chunk_that_is_not_present_and_commits_nothing(self, catalog):
        session = catalog.open_session("put")
        upload(catalog, session, [1])
        catalog.claim_chunks(session, [(chunk_id(2), chunk_size(2))])  # announced, never stored
        good, bad = new_version("good", [1]), new_version("bad", [1, 2])
        with pytest.raises(ConcurrentModificationError):
            catalog.commit(session, [good, bad])
        for name in ("good", "bad"):
            with pytest.raises(NameNotFoundError):
                catalog.get_version(name)
        assert catalog.get_content(good.digest) is None
        assert catalog.get_content(bad.digest) is None
        assert refcounts(catalog, [1, 2]) == [0, 0]
        # A chunk with no row at all is refused the same way.
        with pytest.raises(ConcurrentModificationError):
            catalog.commit(session, [new_version("unknown", [9])])
        assert list(catalog.list_versions()) == []
        assert catalog.commit(session, [good]) == [CommitOutcome("good", 1, "stored")]

    def test_commit_refuses_chunks_a_gc_collected_from_a_stalled_writer(self, catalog, make_catalog):
        writer = catalog.open_session("put")
        upload(catalog, writer, [1, 2])
        impatient = make_catalog(lease_seconds=TINY_LEASE)
        gc = impatient.open_session("gc")
        impatient.acquire_gc_lock(gc)
        time.sleep(DEAD_AFTER)
        assert {chunk.chunk_id for chunk in impatient.collect_candidates(gc, 100)} == {chunk_id(1), chunk_id(2)}
        with pytest.raises(ConcurrentModificationError):
            catalog.commit(writer, [new_version("late", [1, 2])])
        with pytest.raises(NameNotFoundError):
            catalog.get_version("late")
        assert states(catalog, [1, 2]) == [ChunkState.DELETING, ChunkState.DELETING]

    # ---- reading -----------------------------------------------------------------------

    def test_get_version_of_a_missing_name_or_version(self, catalog):
        put(catalog, new_version("file", [1]))
        with pytest.raises(NameNotFoundError) as missing_name:
            catalog.get_version("missing")
        with pytest.raises(VersionNotFoundError) as missing_version:
            catalog.get_version("file", 2)
        assert missing_name.value.exit_code == missing_version.value.exit_code == 3
        with pytest.raises(NameNotFoundError):
            catalog.get_version("fil")

    def test_list_versions_prefix_is_a_path_prefix(self, catalog):
        all_names = ["dat", "data", "data-1", "data/x", "data/y/z", "database", "other"]
        for number, name in enumerate(all_names):
            put(catalog, new_version(name, [number]))
        put(catalog, new_version("data/x", [100]))
        listed = {prefix: names(catalog.list_versions(prefix)) for prefix in ("", "data", "data/y", "dat", "nothing")}
        assert listed == {
            "": [(name, 2 if name == "data/x" else 1) for name in all_names],
            "data": [("data", 1), ("data/x", 2), ("data/y/z", 1)],
            "data/y": [("data/y/z", 1)],
            "dat": [("dat", 1)],
            "nothing": [],
        }
        assert names(catalog.list_versions("data", all_versions=True)) == [
            ("data", 1),
            ("data/x", 1),
            ("data/x", 2),
            ("data/y/z", 1),
        ]

    def test_list_versions_takes_sql_wildcards_literally(self, catalog):
        tricky = ["a%c/x", "a\\c/x", "a_c/x", "abc/x", "axc/x", "a%/x", "ab/x"]
        for number, name in enumerate(tricky):
            put(catalog, new_version(name, [number]))
        for prefix, expected in (("a_c", ["a_c/x"]), ("a%c", ["a%c/x"]), ("a\\c", ["a\\c/x"]), ("a%", ["a%/x"])):
            assert [record.name for record in catalog.list_versions(prefix)] == expected
            assert [record.name for record in catalog.list_versions(prefix, all_versions=True)] == expected

    def test_list_versions_orders_names_by_code_point(self, catalog):
        unordered = ["b", "a0", "a/b", "a-c", "é", "Z", "a"]
        for number, name in enumerate(unordered):
            put(catalog, new_version(name, [number]))
        assert [record.name for record in catalog.list_versions()] == sorted(unordered)

    def test_a_second_handle_sees_commits(self, catalog, make_catalog):
        other = make_catalog()
        put(catalog, new_version("from-first", [1]))
        assert other.get_version("from-first").version == 1
        put(other, new_version("from-second", [2]))
        assert names(catalog.list_versions()) == [("from-first", 1), ("from-second", 1)]

    # ---- removal -----------------------------------------------------------------------

    def test_remove_one_version(self, catalog):
        put(catalog, new_version("file", [1]))
        put(catalog, new_version("file", [2]))
        removed = catalog.remove_versions([("file", 1)])
        assert names(removed) == [("file", 1)]
        with pytest.raises(VersionNotFoundError):
            catalog.get_version("file", 1)
        assert catalog.get_version("file").version == 2
        assert refcounts(catalog, [1, 2]) == [0, 1]

    def test_remove_every_version_of_a_name(self, catalog):
        put(catalog, new_version("file", [1]))
        put(catalog, new_version("file", [2]))
        put(catalog, new_version("kept", [3]))
        assert sorted(names(catalog.remove_versions([("file", None)]))) == [("file", 1), ("file", 2)]
        with pytest.raises(NameNotFoundError):
            catalog.get_version("file")
        assert names(catalog.list_versions(all_versions=True)) == [("kept", 1)]

    @pytest.mark.parametrize("missing", [("missing", None), ("missing", 1), ("file", 7)])
    def test_remove_of_something_missing_removes_nothing(self, catalog, missing):
        put(catalog, new_version("file", [1]))
        put(catalog, new_version("file", [3]))
        put(catalog, new_version("other", [2]))
        expected_error = VersionNotFoundError if missing == ("file", 7) else NameNotFoundError
        with pytest.raises(expected_error):
            catalog.remove_versions([("other", None), ("file", 1), missing])
        assert names(catalog.list_versions(all_versions=True)) == [("file", 1), ("file", 2), ("other", 1)]
        assert refcounts(catalog, [1, 2, 3]) == [1, 1, 1]

    def test_counts_drop_only_when_the_last_version_of_a_content_goes(self, catalog):
        shared = new_version("first", [1, 2, 1])
        put(catalog, shared, new_version("second", [1, 2, 1]), new_version("neighbour", [2, 3]))
        assert refcounts(catalog, [1, 2, 3]) == [2, 2, 1]
        catalog.remove_versions([("first", None)])
        assert catalog.get_content(shared.digest).refcount == 1
        assert refcounts(catalog, [1, 2, 3]) == [2, 2, 1]
        catalog.remove_versions([("second", None)])
        assert catalog.get_content(shared.digest) is None
        with pytest.raises(NotFoundError):
            list(catalog.recipe_pages(shared.digest))
        assert refcounts(catalog, [1, 2, 3]) == [0, 1, 1]
        assert [content.digest for content in catalog.iter_contents()] == [new_version("n", [2, 3]).digest]

    def test_a_content_removed_and_stored_again_is_counted_again(self, catalog):
        put(catalog, new_version("file", [1, 1]))
        catalog.remove_versions([("file", None)])
        assert refcounts(catalog, [1]) == [0]
        assert put(catalog, new_version("file", [1, 1]))[0].outcome == "stored"
        assert refcounts(catalog, [1]) == [2]

    # ---- gc ----------------------------------------------------------------------------

    def test_gc_lock_is_exclusive(self, catalog):
        first, second = catalog.open_session("gc"), catalog.open_session("gc")
        catalog.acquire_gc_lock(first)
        catalog.acquire_gc_lock(first)
        with pytest.raises(ConcurrentModificationError):
            catalog.acquire_gc_lock(second)
        with pytest.raises(ConcurrentModificationError):
            catalog.collect_candidates(second, 10)
        catalog.release_gc_lock(second)  # not the holder: changes nothing
        with pytest.raises(ConcurrentModificationError):
            catalog.acquire_gc_lock(second)
        catalog.release_gc_lock(first)
        catalog.release_gc_lock(first)
        catalog.acquire_gc_lock(second)
        with pytest.raises(ConcurrentModificationError):
            catalog.collect_candidates(first, 10)

    def test_the_lock_of_a_dead_gc_is_taken_over(self, catalog, make_catalog):
        stalled = catalog.open_session("gc")
        catalog.acquire_gc_lock(stalled)
        impatient = make_catalog(lease_seconds=TINY_LEASE)
        successor = impatient.open_session("gc")
        time.sleep(DEAD_AFTER)
        impatient.acquire_gc_lock(successor)
        with pytest.raises(ConcurrentModificationError):
            catalog.collect_candidates(stalled, 10)
        assert impatient.collect_candidates(successor, 10) == []

    def test_gc_operations_need_the_lock(self, catalog):
        session = catalog.open_session("gc")
        for call in (
            lambda: catalog.collect_candidates(session, 10),
            lambda: catalog.claim_orphans(session, [chunk_id(1)]),
            lambda: catalog.forget_chunks(session, [chunk_id(1)]),
        ):
            with pytest.raises(ConcurrentModificationError):
                call()
        assert catalog.get_chunks([chunk_id(1)]) == {}

    def test_collect_takes_only_unreferenced_unpinned_chunks(self, catalog, gc_session):
        put(catalog, new_version("kept", [1, 2]))
        put(catalog, new_version("removed", [2, 3]))
        catalog.remove_versions([("removed", None)])
        writer = catalog.open_session("put")
        upload(catalog, writer, [4, 5])  # in flight: pinned, count 0
        abandoned = catalog.open_session("put")
        upload(catalog, abandoned, [6])
        catalog.claim_chunks(abandoned, [(chunk_id(7), chunk_size(7))])  # never stored
        catalog.close_session(abandoned)
        candidates = catalog.collect_candidates(gc_session, 100)
        assert {chunk.chunk_id for chunk in candidates} == {chunk_id(3), chunk_id(6), chunk_id(7)}
        assert (
            states(catalog, range(1, 8))
            == [ChunkState.PRESENT] * 2 + [ChunkState.DELETING] + [ChunkState.PRESENT] * 2 + [ChunkState.DELETING] * 2
        )
        catalog.forget_chunks(gc_session, [chunk.chunk_id for chunk in candidates])
        assert states(catalog, range(1, 8)) == [ChunkState.PRESENT] * 2 + [None] + [ChunkState.PRESENT] * 2 + [None] * 2
        assert catalog.collect_candidates(gc_session, 100) == []

    def test_collect_respects_its_limit(self, catalog, gc_session):
        session = catalog.open_session("put")
        upload(catalog, session, range(5))
        catalog.close_session(session)
        batches = []
        while candidates := catalog.collect_candidates(gc_session, 2):
            batches.append(len(candidates))
            catalog.forget_chunks(gc_session, [chunk.chunk_id for chunk in candidates])
        assert batches == [2, 2, 1]
        assert list(catalog.iter_chunks()) == []

    def test_collect_returns_chunks_an_interrupted_gc_left_deleting(self, catalog, make_catalog):
        session = catalog.open_session("put")
        upload(catalog, session, [1, 2])
        catalog.close_session(session)
        interrupted = catalog.open_session("gc")
        catalog.acquire_gc_lock(interrupted)
        assert len(catalog.collect_candidates(interrupted, 100)) == 2
        impatient = make_catalog(lease_seconds=TINY_LEASE)
        successor = impatient.open_session("gc")
        time.sleep(DEAD_AFTER)
        impatient.acquire_gc_lock(successor)
        leftovers = impatient.collect_candidates(successor, 100)
        assert {chunk.chunk_id for chunk in leftovers} == {chunk_id(1), chunk_id(2)}
        impatient.forget_chunks(successor, [chunk.chunk_id for chunk in leftovers])
        assert catalog.get_chunks([chunk_id(1), chunk_id(2)]) == {}

    def test_pins_of_a_dead_session_expire(self, catalog, make_catalog):
        writer = catalog.open_session("put")
        upload(catalog, writer, [1])
        patient_gc = catalog.open_session("gc")
        catalog.acquire_gc_lock(patient_gc)
        time.sleep(DEAD_AFTER)
        assert catalog.collect_candidates(patient_gc, 100) == []
        catalog.release_gc_lock(patient_gc)
        impatient = make_catalog(lease_seconds=TINY_LEASE)
        gc = impatient.open_session("gc")
        impatient.acquire_gc_lock(gc)
        assert [chunk.chunk_id for chunk in impatient.collect_candidates(gc, 100)] == [chunk_id(1)]

    def test_heartbeat_keeps_pins_alive(self, catalog, make_catalog):
        writer = catalog.open_session("put")
        upload(catalog, writer, [1])
        lease = 1.0
        gc_catalog = make_catalog(lease_seconds=lease)
        gc = gc_catalog.open_session("gc")
        gc_catalog.acquire_gc_lock(gc)
        time.sleep(lease * 1.5)
        catalog.heartbeat(writer)
        assert gc_catalog.collect_candidates(gc, 100) == []

    def test_claim_orphans_and_forget(self, catalog, gc_session):
        put(catalog, new_version("file", [1]))
        writer = catalog.open_session("put")
        catalog.claim_chunks(writer, [(chunk_id(2), chunk_size(2))])
        claimed = catalog.claim_orphans(gc_session, [chunk_id(1), chunk_id(2), chunk_id(8), chunk_id(9)])
        assert sorted(claimed) == sorted([chunk_id(8), chunk_id(9)])
        assert states(catalog, [1, 2, 8, 9]) == [
            ChunkState.PRESENT,
            ChunkState.PENDING,
            ChunkState.DELETING,
            ChunkState.DELETING,
        ]
        # forget drops DELETING rows only, whatever the caller passes.
        catalog.forget_chunks(gc_session, [chunk_id(1), chunk_id(2), chunk_id(8), chunk_id(9)])
        assert states(catalog, [1, 2, 8, 9]) == [ChunkState.PRESENT, ChunkState.PENDING, None, None]
        assert refcounts(catalog, [1]) == [1]

    def test_a_claim_waits_for_gc_to_forget_a_deleting_chunk(self, catalog, gc_session):
        session = catalog.open_session("put")
        upload(catalog, session, [1])
        catalog.close_session(session)
        assert [chunk.chunk_id for chunk in catalog.collect_candidates(gc_session, 100)] == [chunk_id(1)]
        writer = catalog.open_session("put")
        with ThreadPoolExecutor(1) as pool:
            claim = pool.submit(catalog.claim_chunks, writer, [(chunk_id(1), chunk_size(1))])
            # A claim that wrongly went ahead would be done long before this.
            assert wait([claim], timeout=0.5).not_done == {claim}
            catalog.forget_chunks(gc_session, [chunk_id(1)])
            assert claim.result(timeout=30) == {chunk_id(1)}
        assert states(catalog, [1]) == [ChunkState.PENDING]
        # The chunk is pinned for the writer again.
        assert catalog.collect_candidates(gc_session, 100) == []

    def test_a_claim_of_a_chunk_a_dead_gc_was_deleting_fails(self, catalog, make_catalog):
        session = catalog.open_session("put")
        upload(catalog, session, [1])
        catalog.close_session(session)
        gc = catalog.open_session("gc")
        catalog.acquire_gc_lock(gc)
        catalog.collect_candidates(gc, 100)
        impatient = make_catalog(lease_seconds=TINY_LEASE)
        writer = impatient.open_session("put")
        time.sleep(DEAD_AFTER)
        with pytest.raises(ConcurrentModificationError):
            impatient.claim_chunks(writer, [(chunk_id(2), chunk_size(2)), (chunk_id(1), chunk_size(1))])
        assert states(catalog, [1]) == [ChunkState.DELETING]

    # ---- history -----------------------------------------------------------------------

    def test_an_inline_page_is_replaced_only_while_it_is_the_one_page_it_was(self, catalog, make_catalog):
        one = new_version("one", [1, 2])
        three = new_version("three", [3, 4, 5], page_entries=1)
        put(catalog, one, three)
        [old] = list(catalog.recipe_pages(one.digest))
        assert catalog.replace_inline_page(one.digest, old, b"moved")
        assert list(make_catalog().recipe_pages(one.digest)) == [b"moved"]
        assert not catalog.replace_inline_page(one.digest, old, b"stale")
        first = next(iter(catalog.recipe_pages(three.digest)))
        assert not catalog.replace_inline_page(three.digest, first, b"not the only page")
        assert next(iter(catalog.recipe_pages(three.digest))) == first
        assert not catalog.replace_inline_page(bytes(32), old, b"no such content")

    def test_commit_records_the_time_it_is_given(self, catalog):
        put(catalog, new_version("file", [1]), new_version("other", [2]), at_ns=T2)
        assert [record.stored_at_ns for record in catalog.list_versions()] == [T2, T2]
        before = time.time_ns()
        put(catalog, new_version("file", [3]))
        assert before <= catalog.get_version("file").stored_at_ns <= time.time_ns()

    def test_a_deletion_marker_hides_its_name_but_not_its_versions(self, catalog):
        first = new_version("dir/file", [1, 2])
        put(catalog, first, new_version("dir/kept", [3]), at_ns=T1)
        (marker,) = catalog.mark_deleted([("dir/file", 1)], T2)
        assert (marker.name, marker.version, marker.deleted, marker.stored_at_ns, marker.digest, marker.size) == (
            "dir/file",
            2,
            True,
            T2,
            b"",
            0,
        )
        with pytest.raises(NameNotFoundError, match="deleted"):
            catalog.get_version("dir/file")
        assert catalog.get_version("dir/file", 1).digest == first.digest
        with pytest.raises(VersionNotFoundError, match="deletion marker"):
            catalog.get_version("dir/file", 2)
        assert names(catalog.list_versions("dir")) == [("dir/kept", 1)]
        assert names(catalog.list_versions("dir", deleted=True)) == [("dir/file", 2), ("dir/kept", 1)]
        assert names(catalog.list_versions("dir", all_versions=True)) == [("dir/file", 1), ("dir/kept", 1)]
        assert [
            (record.name, record.version, record.deleted)
            for record in catalog.list_versions("dir", all_versions=True, deleted=True)
        ] == [("dir/file", 1, False), ("dir/file", 2, True), ("dir/kept", 1, False)]
        # A marker holds no content: counts and totals are those of the content versions.
        assert catalog.get_content(first.digest).refcount == 1
        assert refcounts(catalog, [1, 2, 3]) == [1, 1, 1]
        assert (catalog.stats().names, catalog.stats().versions) == (2, 2)

    def test_mark_deleted_skips_names_that_changed_since_they_were_read(self, catalog):
        put(catalog, new_version("changed", [1]), new_version("gone", [2]), new_version("same", [3]), at_ns=T1)
        put(catalog, new_version("changed", [4]), at_ns=T2)
        catalog.mark_deleted([("gone", 1)], T2)
        markers = catalog.mark_deleted([("changed", 1), ("gone", 1), ("missing", 1), ("same", 1)], T3)
        assert [(marker.name, marker.version) for marker in markers] == [("same", 2)]
        assert names(catalog.list_versions(deleted=True)) == [("changed", 2), ("gone", 2), ("same", 2)]
        assert catalog.mark_deleted([], T3) == []

    def test_a_name_put_again_after_its_deletion_is_a_new_version(self, catalog):
        put(catalog, new_version("file", [1]), at_ns=T1)
        catalog.mark_deleted([("file", 1)], T2)
        # Not "unchanged": the latest version is the marker, whatever came before it.
        assert put(catalog, new_version("file", [1]), at_ns=T3) == [CommitOutcome("file", 3, "duplicate", "file")]
        assert catalog.get_version("file").version == 3
        assert catalog.get_content(new_version("f", [1]).digest).refcount == 2

    def test_list_versions_as_of_a_time(self, catalog):
        put(catalog, new_version("a", [1]), new_version("b", [2]), at_ns=T1)
        put(catalog, new_version("a", [3]), at_ns=T2)
        catalog.mark_deleted([("b", 1)], T3)
        put(catalog, new_version("b", [4]), new_version("c", [5]), at_ns=T4)
        as_of = {when: names(catalog.list_versions(as_of_ns=when)) for when in (T1 - 1, T1, T2 + 5, T3, T4)}
        assert as_of == {
            T1 - 1: [],
            T1: [("a", 1), ("b", 1)],
            T2 + 5: [("a", 2), ("b", 1)],
            T3: [("a", 2)],
            T4: [("a", 2), ("b", 3), ("c", 1)],
        }
        assert names(catalog.list_versions(as_of_ns=T3, deleted=True)) == [("a", 2), ("b", 2)]
        assert names(catalog.list_versions("b", all_versions=True, as_of_ns=T3)) == [("b", 1)]
        assert names(catalog.list_versions("b", all_versions=True, as_of_ns=T3, deleted=True)) == [("b", 1), ("b", 2)]
        assert names(catalog.list_versions("a", as_of_ns=T1)) == [("a", 1)]

    def test_removing_deletion_markers(self, catalog):
        put(catalog, new_version("file", [1]), new_version("other", [2]), at_ns=T1)
        catalog.mark_deleted([("file", 1), ("other", 1)], T2)
        removed = catalog.remove_versions([("file", 2)])
        assert [(record.name, record.version, record.deleted) for record in removed] == [("file", 2, True)]
        assert catalog.get_version("file").version == 1
        assert refcounts(catalog, [1, 2]) == [1, 1]
        assert sorted(names(catalog.remove_versions([("other", None)]))) == [("other", 1), ("other", 2)]
        assert refcounts(catalog, [1, 2]) == [1, 0]
        assert names(catalog.list_versions(all_versions=True, deleted=True)) == [("file", 1)]
        # Numbers are never given twice, markers' included.
        assert put(catalog, new_version("other", [2]))[0].version == 3

    def test_snapshot_records(self, catalog, make_catalog):
        assert catalog.list_snapshots() == []
        later = SnapshotRecord(
            "b" * 32,
            T2,
            "host-b",
            ("srv/data", "etc"),
            stored=3,
            duplicate=1,
            unchanged=7,
            deleted=2,
            errors=1,
            added_bytes=10**12,
            added_stored_bytes=4096,
            program="chunkstore put",
        )
        earlier = SnapshotRecord("c" * 32, T1, "host-c", ("é/ü",))
        same_time = SnapshotRecord("a" * 32, T2, "host-a", ())
        for snapshot in (later, earlier, same_time):
            catalog.record_snapshot(snapshot)
        assert make_catalog().list_snapshots() == [earlier, same_time, later]
        with pytest.raises(InvalidArgumentError):
            catalog.record_snapshot(SnapshotRecord("b" * 32, T3, "elsewhere", ()))
        catalog.remove_snapshots(["a" * 32, "f" * 32])
        catalog.remove_snapshots(["a" * 32])
        assert catalog.list_snapshots() == [earlier, later]

    # ---- totals and repair -------------------------------------------------------------

    def test_stats_totals(self, catalog):
        assert catalog.stats() == CatalogStats(0, 0, 0, 0, 0, 0, 0, 0)
        files = [
            new_version("a", [1, 2, 1]),
            new_version("b", [2, 3]),
            new_version("a", [4]),
            new_version("c", [1, 2, 1]),
        ]
        put(catalog, *files)
        in_flight = catalog.open_session("put")
        catalog.claim_chunks(in_flight, [(chunk_id(9), chunk_size(9))])  # pending: not stored yet
        unique = [chunk_size(number) for number in (1, 2, 3, 4)]
        stats = catalog.stats()
        assert (stats.names, stats.versions, stats.logical_bytes) == (3, 4, sum(new.stat.size for new in files))
        assert (stats.contents, stats.content_bytes) == (3, sum(new.stat.size for new in files[:3]))
        assert (stats.chunks, stats.unique_bytes, stats.stored_bytes) == (4, sum(unique), sum(map(stored_size, unique)))

    def test_set_refcounts_overwrites_counts_that_still_hold_their_expected_value(self, catalog):
        put(catalog, new_version("file", [1, 2]))
        assert catalog.set_refcounts({chunk_id(1): (1, 5), chunk_id(2): (1, 0)}) == set()
        assert refcounts(catalog, [1, 2]) == [5, 0]
        assert catalog.set_refcounts({chunk_id(1): (5, 1), chunk_id(2): (0, 1)}) == set()
        assert refcounts(catalog, [1, 2]) == [1, 1]

    def test_set_refcounts_leaves_a_count_that_moved_since_it_was_read(self, catalog):
        put(catalog, new_version("file", [1, 2]))
        put(catalog, new_version("other", [2]))  # chunk 2's count went from 1 to 2 after a "read" of 1
        moved = catalog.set_refcounts({chunk_id(1): (1, 3), chunk_id(2): (1, 0), chunk_id(9): (0, 1)})
        assert moved == {chunk_id(2), chunk_id(9)}  # 9 does not exist at all
        assert refcounts(catalog, [1, 2, 9]) == [3, 2, None]

    def test_set_content_refcounts_overwrites_counts_that_still_hold_their_expected_value(self, catalog):
        shared = new_version("first", [1, 2])
        put(catalog, shared, new_version("second", [1, 2]))
        assert catalog.get_content(shared.digest).refcount == 2
        assert catalog.set_content_refcounts({shared.digest: (2, 5)}) == set()
        assert catalog.get_content(shared.digest).refcount == 5
        assert catalog.set_content_refcounts({shared.digest: (5, 1)}) == set()
        assert catalog.get_content(shared.digest).refcount == 1
        assert refcounts(catalog, [1, 2]) == [1, 1]  # a content holds its chunks once, whatever its count

    def test_set_content_refcounts_leaves_a_count_that_moved_since_it_was_read(self, catalog):
        kept, moved_on = new_version("kept", [1]), new_version("moved", [2])
        put(catalog, kept, moved_on)
        put(catalog, new_version("again", [2]))  # its count went from 1 to 2 after a "read" of 1
        gone = new_version("gone", [3]).digest
        moved = catalog.set_content_refcounts({kept.digest: (1, 3), moved_on.digest: (1, 0), gone: (1, 0)})
        assert moved == {moved_on.digest, gone}
        assert [catalog.get_content(each.digest).refcount for each in (kept, moved_on)] == [3, 2]
        assert catalog.get_content(gone) is None
        assert refcounts(catalog, [1, 2]) == [1, 1]

    def test_a_content_count_set_to_zero_releases_the_content_and_its_chunks(self, catalog, gc_session):
        orphan, neighbour = new_version("orphan", [1, 2, 1]), new_version("neighbour", [2, 3])
        put(catalog, orphan, neighbour)
        assert catalog.set_content_refcounts({orphan.digest: (1, 0)}) == set()
        assert catalog.get_content(orphan.digest) is None
        with pytest.raises(NotFoundError):
            list(catalog.recipe_pages(orphan.digest))
        assert [content.digest for content in catalog.iter_contents()] == [neighbour.digest]
        assert refcounts(catalog, [1, 2, 3]) == [0, 1, 1]
        assert collect_all(catalog, gc_session) == {chunk_id(1)}

"""The fault-injecting wrappers: transparent with an empty plan (both conformance suites pass
through them), and with faults injected the backend they wrap still keeps its contract's
promises. A caller that gets an error does not know whether the call took effect: a put whose
reply was lost leaves the whole object, a commit whose reply was lost is wholly visible, one
that failed or crashed is not visible at all, and retrying any of them changes nothing twice.

The promises are checked on the memory backend and on a folder with its SQLite catalog."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.catalog import Catalog, ChunkState, CommitOutcome, SnapshotRecord
from chunkstore.backends.faulty import Fault, FaultPlan, FaultyBlobStore, FaultyCatalog, InjectedCrash, InjectedFault
from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.memory import BlobSpace, CatalogState, MemoryBlobStore, MemoryCatalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.backends.sqlite import SQLiteCatalog
from chunkstore.errors import BlobNotFoundError, ConcurrentModificationError, InvalidArgumentError, NameNotFoundError
from support.blobstore_conformance import BlobStoreConformance, payload
from support.catalog_conformance import (
    DEAD_AFTER,
    TINY_LEASE,
    CatalogConformance,
    chunk_id,
    chunk_size,
    collect_all,
    new_version,
    refcounts,
    states,
    stored_size,
    upload,
)
from support.packindex_conformance import PackIndexConformance, new_page

# ---- transparent with an empty plan ------------------------------------------------------


class TestFaultyBlobStoreWithoutFaults(BlobStoreConformance):
    @pytest.fixture
    def make_blobstore(self):
        space, plan = BlobSpace(), FaultPlan([])
        yield lambda: FaultyBlobStore(MemoryBlobStore(space), plan)
        assert plan.injected == 0


class TestFaultyCatalogWithoutFaults(CatalogConformance):
    @pytest.fixture
    def make_catalog(self):
        state, plan = CatalogState(), FaultPlan([])
        yield lambda lease_seconds=DEFAULT_LEASE_SECONDS: FaultyCatalog(
            MemoryCatalog(state, lease_seconds=lease_seconds), plan
        )
        assert plan.injected == 0


class TestFaultyPackIndexWithoutFaults(PackIndexConformance):
    @pytest.fixture
    def make_catalog(self):
        state, plan = CatalogState(), FaultPlan([])
        yield lambda lease_seconds=DEFAULT_LEASE_SECONDS: FaultyCatalog(
            MemoryCatalog(state, lease_seconds=lease_seconds), plan
        )
        assert plan.injected == 0


def test_the_wrappers_forward_the_capabilities_of_what_they_wrap(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.concurrency = 7
    faulty_blobs = FaultyBlobStore(blobs, FaultPlan([]))
    assert (faulty_blobs.url, faulty_blobs.concurrency) == (blobs.url, 7)
    blobs.create()
    (tmp_path / "blobs" / ".old-put.tmp").write_bytes(b"left by a crashed put")
    stamp = time.time() - 3600
    os.utime(tmp_path / "blobs" / ".old-put.tmp", (stamp, stamp))
    assert faulty_blobs.remove_stale_temporaries(600) == 1

    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite", create=True, lease_seconds=12.5)
    faulty_catalog = FaultyCatalog(catalog, FaultPlan([]))
    assert faulty_catalog.lease_seconds == 12.5
    assert faulty_catalog.integrity_problems() == []
    assert faulty_catalog.storage_bytes() == catalog.storage_bytes() > 0
    faulty_catalog.close()


# ---- the blob store under faults ---------------------------------------------------------


@pytest.fixture(params=["memory", "local"])
def inner_blobs(request, tmp_path) -> BlobStore:
    blobs = MemoryBlobStore() if request.param == "memory" else LocalBlobStore(tmp_path / "blobs")
    blobs.create()
    return blobs


def faulty_blobs(inner: BlobStore, *faults: Fault) -> FaultyBlobStore:
    return FaultyBlobStore(inner, FaultPlan(list(faults)))


DATA = payload("object", 100_000)


@pytest.mark.parametrize("kind", ["error", "lost_reply", "crash"])
def test_a_failed_put_leaves_nothing_or_the_whole_object_and_a_retry_stores_it(inner_blobs, kind):
    blobs = faulty_blobs(inner_blobs, Fault("put", kind))
    with pytest.raises(InjectedFault):
        blobs.put("chunks/00/one", DATA)
    if kind == "lost_reply":
        assert inner_blobs.get("chunks/00/one") == DATA
    else:
        with pytest.raises(BlobNotFoundError):
            inner_blobs.stat("chunks/00/one")
    assert [info.key for info in inner_blobs.list()] == (["chunks/00/one"] if kind == "lost_reply" else [])
    retry = blobs if kind != "crash" else faulty_blobs(inner_blobs)  # after a crash, a new process retries
    retry.put("chunks/00/one", DATA)
    assert inner_blobs.get("chunks/00/one") == DATA
    assert [info.key for info in inner_blobs.list()] == ["chunks/00/one"]


@pytest.mark.parametrize("kind", ["error", "lost_reply"])
def test_a_failed_delete_is_retried_to_the_same_end(inner_blobs, kind):
    inner_blobs.put("doomed", DATA)
    blobs = faulty_blobs(inner_blobs, Fault("delete", kind))
    with pytest.raises(InjectedFault):
        blobs.delete("doomed")
    assert inner_blobs.exists()
    blobs.delete("doomed")
    blobs.delete("doomed")
    assert list(inner_blobs.list()) == []


def test_after_a_crash_nothing_reaches_the_store(inner_blobs):
    inner_blobs.put("kept", DATA)
    blobs = faulty_blobs(inner_blobs, Fault("put", "crash", after=1))
    blobs.put("first", DATA)
    for call in (
        lambda: blobs.put("second", DATA),
        lambda: blobs.delete("kept"),
        lambda: blobs.get("kept"),
        lambda: list(blobs.list()),
        blobs.sync,
    ):
        with pytest.raises(InjectedCrash):
            call()
    assert [info.key for info in inner_blobs.list()] == ["first", "kept"]


def test_a_failed_read_returns_no_bytes(inner_blobs):
    inner_blobs.put("object", DATA)
    blobs = faulty_blobs(inner_blobs, Fault("get", "error"), Fault("stat", "lost_reply"))
    with pytest.raises(InjectedFault):
        blobs.get("object", 10, 100)
    with pytest.raises(InjectedFault):
        blobs.stat("object")
    assert blobs.get("object", 10, 100) == DATA[10:110]


# ---- the catalog under faults ------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def open_inner(request, tmp_path) -> Callable[..., Catalog]:
    """Opens handles on one fresh catalog, as make_catalog of the conformance suite does."""
    state, opened = CatalogState(), []

    def open_handle(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Catalog:
        if request.param == "memory":
            return MemoryCatalog(state, lease_seconds=lease_seconds)
        path = tmp_path / "catalog.sqlite"
        opened.append(SQLiteCatalog(path, create=not path.exists(), lease_seconds=lease_seconds))
        return opened[-1]

    yield open_handle
    for catalog in opened:
        catalog.close()


@pytest.fixture
def inner(open_inner) -> Catalog:
    return open_inner()


def faulty_catalog(inner: Catalog, *faults: Fault) -> FaultyCatalog:
    return FaultyCatalog(inner, FaultPlan(list(faults)))


def writer_with_chunks(catalog: Catalog, chunks) -> str:
    session = catalog.open_session("put")
    upload(catalog, session, chunks)
    return session


@pytest.mark.parametrize("kind", ["error", "lost_reply"])
def test_a_commit_that_fails_is_wholly_visible_or_not_at_all_and_a_retry_counts_once(inner, kind):
    catalog = faulty_catalog(inner, Fault("commit", kind))
    session = writer_with_chunks(catalog, [1, 2, 3])
    files = [new_version("one", [1, 2]), new_version("two", [2, 3]), new_version("copy", [1, 2])]
    with pytest.raises(InjectedFault):
        catalog.commit(session, files)
    listed = [(record.name, record.version) for record in inner.list_versions()]
    if kind == "lost_reply":
        assert listed == [("copy", 1), ("one", 1), ("two", 1)]
        assert refcounts(inner, [1, 2, 3]) == [1, 2, 1]
    else:
        assert listed == []
        assert refcounts(inner, [1, 2, 3]) == [0, 0, 0]
    # The writer cannot tell which happened and commits again: the same versions, counted once.
    retried = catalog.commit(session, files)
    if kind == "lost_reply":
        assert [outcome.outcome for outcome in retried] == ["unchanged"] * 3
    else:
        assert retried == [
            CommitOutcome("one", 1, "stored"),
            CommitOutcome("two", 1, "stored"),
            CommitOutcome("copy", 1, "duplicate", "one"),
        ]
    assert [(record.name, record.version) for record in inner.list_versions(all_versions=True)] == [
        ("copy", 1),
        ("one", 1),
        ("two", 1),
    ]
    assert refcounts(inner, [1, 2, 3]) == [1, 2, 1]
    assert inner.get_content(files[0].digest).refcount == 2


def test_a_writer_that_crashes_before_its_commit_leaves_only_garbage_gc_collects(inner, open_inner):
    catalog = faulty_catalog(inner, Fault("commit", "crash"))
    session = writer_with_chunks(catalog, [1, 2])
    with pytest.raises(InjectedCrash):
        catalog.commit(session, [new_version("lost", [1, 2])])
    with pytest.raises(InjectedCrash):
        catalog.close_session(session)  # the dead process cannot clean up
    with pytest.raises(NameNotFoundError):
        inner.get_version("lost")
    # Its session still pins the chunks until its lease runs out; then a gc takes them.
    impatient = open_inner(lease_seconds=TINY_LEASE)
    gc = impatient.open_session("gc")
    impatient.acquire_gc_lock(gc)
    time.sleep(DEAD_AFTER)
    assert collect_all(impatient, gc) == {chunk_id(1), chunk_id(2)}
    assert list(impatient.iter_chunks()) == []


@pytest.mark.parametrize("kind", ["error", "lost_reply"])
def test_a_page_write_that_fails_is_wholly_written_or_not_at_all(inner, kind):
    index = faulty_catalog(inner, Fault("write_pages", kind)).pack_index
    pages = [new_page(1), new_page(2)]
    seen = index.read_round()
    with pytest.raises(InjectedFault):
        index.write_pages(seen, pages)
    written = kind == "lost_reply"
    assert [inner.pack_index.get_page(page.page_id) is not None for page in pages] == [written, written]
    # Written again, the pages a lost reply left are reported as already there, and kept.
    assert index.write_pages(seen, pages) == ([page.page_id for page in pages] if written else [])
    assert [inner.pack_index.get_page(page.page_id).body for page in pages] == [page.body for page in pages]


@pytest.mark.parametrize("kind", ["error", "lost_reply"])
def test_a_retried_claim_is_idempotent(inner, kind):
    catalog = faulty_catalog(inner, Fault("claim_chunks", kind))
    inner.close_session(writer_with_chunks(inner, [1]))
    session = catalog.open_session("put")
    claim = [(chunk_id(1), chunk_size(1)), (chunk_id(2), chunk_size(2))]
    with pytest.raises(InjectedFault):
        catalog.claim_chunks(session, claim)
    assert catalog.claim_chunks(session, claim) == {chunk_id(2)}
    assert catalog.claim_chunks(session, claim) == {chunk_id(2)}
    rows = inner.get_chunks([chunk_id(1), chunk_id(2)])
    assert [(row.state, row.refcount) for row in (rows[chunk_id(1)], rows[chunk_id(2)])] == [
        (ChunkState.PRESENT, 0),
        (ChunkState.PENDING, 0),
    ]
    # Pinned once and released once: closing the session frees both to gc.
    gc = inner.open_session("gc")
    inner.acquire_gc_lock(gc)
    assert collect_all(inner, gc) == set()
    catalog.close_session(session)
    assert collect_all(inner, gc) == {chunk_id(1), chunk_id(2)}


@pytest.mark.parametrize("kind", ["error", "lost_reply"])
def test_retried_chunks_stored_marks_present_once(inner, kind):
    catalog = faulty_catalog(inner, Fault("chunks_stored", kind))
    session = catalog.open_session("put")
    catalog.claim_chunks(session, [(chunk_id(1), chunk_size(1))])
    stored = [(chunk_id(1), stored_size(chunk_size(1)))]
    with pytest.raises(InjectedFault):
        catalog.chunks_stored(session, stored)
    catalog.chunks_stored(session, stored)
    row = inner.get_chunks([chunk_id(1)])[chunk_id(1)]
    assert (row.state, row.stored_size, row.refcount) == (ChunkState.PRESENT, stored_size(chunk_size(1)), 0)


def committed(catalog: Catalog, *versions) -> None:
    session = writer_with_chunks(catalog, sorted({number for each in versions for number in each[1]}))
    catalog.commit(session, [new_version(name, chunks) for name, chunks in versions])
    catalog.close_session(session)


def test_a_removal_whose_reply_was_lost_is_done_once(inner):
    committed(inner, ("file", [1, 2]), ("other", [2]))
    catalog = faulty_catalog(inner, Fault("remove_versions", "lost_reply"))
    with pytest.raises(InjectedFault):
        catalog.remove_versions([("file", None)])
    # The retry learns that it is gone; counts dropped once.
    with pytest.raises(NameNotFoundError):
        catalog.remove_versions([("file", None)])
    assert refcounts(inner, [1, 2]) == [0, 1]


def test_a_removal_that_failed_removed_nothing(inner):
    committed(inner, ("file", [1, 2]))
    catalog = faulty_catalog(inner, Fault("remove_versions", "error"))
    with pytest.raises(InjectedFault):
        catalog.remove_versions([("file", None)])
    assert inner.get_version("file").version == 1
    assert refcounts(inner, [1, 2]) == [1, 1]


def test_a_deletion_marker_whose_reply_was_lost_is_not_written_twice(inner):
    committed(inner, ("file", [1]))
    catalog = faulty_catalog(inner, Fault("mark_deleted", "lost_reply"))
    with pytest.raises(InjectedFault):
        catalog.mark_deleted([("file", 1)], 10**18)
    assert catalog.mark_deleted([("file", 1)], 10**18) == []
    assert [(record.version, record.deleted) for record in inner.list_versions(all_versions=True, deleted=True)] == [
        (1, False),
        (2, True),
    ]


def test_a_snapshot_whose_reply_was_lost_is_recorded_once(inner):
    catalog = faulty_catalog(inner, Fault("record_snapshot", "lost_reply"))
    snapshot = SnapshotRecord("a" * 32, 10**18, "host", ("data",), stored=2, program="chunkstore put")
    with pytest.raises(InjectedFault):
        catalog.record_snapshot(snapshot)
    with pytest.raises(InvalidArgumentError):
        catalog.record_snapshot(snapshot)
    assert [each.snapshot_id for each in inner.list_snapshots()] == ["a" * 32]


def with_garbage(inner: Catalog) -> None:
    """A kept file of chunk 1, and chunks 2 and 3 that a closed writer stored and nothing uses."""
    committed(inner, ("kept", [1]))
    inner.close_session(writer_with_chunks(inner, [2, 3]))


def test_a_gc_lock_whose_reply_was_lost_is_held_and_taken_again(inner):
    catalog = faulty_catalog(inner, Fault("acquire_gc_lock", "lost_reply"))
    gc, rival = catalog.open_session("gc"), catalog.open_session("gc")
    with pytest.raises(InjectedFault):
        catalog.acquire_gc_lock(gc)
    with pytest.raises(ConcurrentModificationError):
        catalog.acquire_gc_lock(rival)
    catalog.acquire_gc_lock(gc)
    assert catalog.collect_candidates(gc, 100) == []


def test_candidates_whose_reply_was_lost_come_back_as_leftovers(inner):
    with_garbage(inner)
    catalog = faulty_catalog(inner, Fault("collect_candidates", "lost_reply"))
    gc = catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)
    with pytest.raises(InjectedFault):
        catalog.collect_candidates(gc, 100)
    assert states(inner, [1, 2, 3]) == [ChunkState.PRESENT, ChunkState.DELETING, ChunkState.DELETING]
    assert collect_all(catalog, gc) == {chunk_id(2), chunk_id(3)}
    assert states(inner, [1, 2, 3]) == [ChunkState.PRESENT, None, None]


def test_a_forget_whose_reply_was_lost_is_retried_to_the_same_end(inner):
    with_garbage(inner)
    catalog = faulty_catalog(inner, Fault("forget_chunks", "lost_reply"))
    gc = catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)
    ids = [chunk.chunk_id for chunk in catalog.collect_candidates(gc, 100)]
    with pytest.raises(InjectedFault):
        catalog.forget_chunks(gc, ids)
    catalog.forget_chunks(gc, ids)
    assert states(inner, [1, 2, 3]) == [ChunkState.PRESENT, None, None]
    assert catalog.collect_candidates(gc, 100) == []

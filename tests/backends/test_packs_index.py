"""The pack writer records its packs in the catalog's pack index: PENDING for its session before
each upload, PRESENT once flush() has made them durable (memory and a folder with SQLite)."""

from __future__ import annotations

import pytest

from chunkstore.backends.catalog import Catalog
from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.memory import MemoryBlobStore, MemoryCatalog
from chunkstore.backends.packindex import IndexState, PackRecord, Phase
from chunkstore.backends.packs import PackFormat, PackWriter, pack_key
from chunkstore.backends.sqlite import SQLiteCatalog
from chunkstore.errors import IndexItemChangedError, InvalidArgumentError, StoreWriteError
from support.packchunks import TARGET, chunk, pack_format
from support.packindex_conformance import index_of


class WatchedBlobStore(MemoryBlobStore):
    """A memory blob store that runs on_put(key) before each put lands."""

    def __init__(self, on_put):
        super().__init__()
        self.on_put = on_put

    def put(self, key: str, data: bytes) -> None:
        self.on_put(key)
        super().put(key, data)


def add_chunks(writer: PackWriter, packs: PackFormat, count: int) -> None:
    for number in range(count):
        data = chunk(number)
        chunk_id = packs.hasher.chunk_id(data)
        writer.add(chunk_id, packs.codec.encode(chunk_id, data))


@pytest.fixture(params=["memory", "sqlite"])
def catalog(request, tmp_path):
    if request.param == "memory":
        yield MemoryCatalog()
        return
    opened = SQLiteCatalog(tmp_path / "catalog.sqlite", create=True)
    yield opened
    opened.close()


def test_each_pack_is_pending_before_its_upload_and_present_after_flush(catalog: Catalog, tmp_path):
    index, session, packs = index_of(catalog), catalog.open_session("put"), pack_format()
    seen_at_upload: list[PackRecord] = []

    def on_put(key: str) -> None:
        [record] = [each for each in index.iter_packs() if pack_key(each.pack_id) == key]
        seen_at_upload.append(record)

    with PackWriter(WatchedBlobStore(on_put), packs, target_size=TARGET, index=index, session=session) as writer:
        add_chunks(writer, packs, 150)
        stored = writer.flush()
    assert len(stored) > 2
    assert [(record.state, record.owner) for record in seen_at_upload] == [(IndexState.PENDING, session)] * len(stored)
    recorded = index.get_packs([pack.pack_id for pack in stored])
    assert {pack_id: (record.state, record.stored_bytes, record.entries) for pack_id, record in recorded.items()} == {
        pack.pack_id: (IndexState.PRESENT, pack.size, len(pack.entries)) for pack in stored
    }


def test_a_folder_store_marks_packs_present_only_after_its_sync(tmp_path):
    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite", create=True)
    index, session, packs = index_of(catalog), catalog.open_session("put"), pack_format()
    blobs = LocalBlobStore(tmp_path / "store")
    blobs.create()
    states_at_sync: list[set[IndexState]] = []
    real_sync = blobs.sync

    def sync() -> None:
        states_at_sync.append({record.state for record in index.iter_packs()})
        real_sync()

    blobs.sync = sync  # type: ignore[method-assign]
    try:
        with PackWriter(blobs, packs, target_size=TARGET, index=index, session=session) as writer:
            add_chunks(writer, packs, 30)
        assert states_at_sync == [{IndexState.PENDING}]
        assert {record.state for record in index.iter_packs()} == {IndexState.PRESENT}
    finally:
        catalog.close()


def test_a_pack_that_gc_doomed_before_the_flush_fails_it(catalog: Catalog):
    """gc took the writer for dead (its session expired) and doomed its PENDING pack while it was
    uploading: the writer cannot turn it PRESENT, so it never names it."""
    index, writer_session, packs = index_of(catalog), catalog.open_session("put"), pack_format()
    gc = catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)

    def gc_dooms_it(key: str) -> None:
        catalog.close_session(writer_session)
        gc_round = index.advance_round(gc, index.read_round())
        assert gc_round.phase == Phase.DOOMING
        [pending] = [record for record in index.iter_packs() if pack_key(record.pack_id) == key]
        assert index.doom(gc_round, [pending]) == []

    with (
        pytest.raises(IndexItemChangedError),
        PackWriter(WatchedBlobStore(gc_dooms_it), packs, index=index, session=writer_session) as writer,
    ):
        add_chunks(writer, packs, 3)
        writer.flush()
    [doomed] = index.iter_packs()
    assert doomed.state == IndexState.DOOMED


def test_a_failed_upload_leaves_its_pending_pack_for_gc(catalog: Catalog):
    index, session, packs = index_of(catalog), catalog.open_session("put"), pack_format()

    def refuse(key: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreWriteError), PackWriter(WatchedBlobStore(refuse), packs, index=index, session=session) as w:
        add_chunks(w, packs, 3)
        w.flush()
    [left] = index.iter_packs()
    assert (left.state, left.owner) == (IndexState.PENDING, session)


def test_a_pack_index_needs_a_session():
    with pytest.raises(InvalidArgumentError):
        PackWriter(MemoryBlobStore(), pack_format(), index=index_of(MemoryCatalog()))

"""The PackIndex contract (chunkstore/backends/packindex.py), checked for any implementation.

A test module subclasses PackIndexConformance and provides the fixture the catalog suite
takes (tests/support/catalog_conformance.py): make_catalog, a callable that opens a catalog
on one fresh location, each call another handle on it, as another process would. The index is
each handle's `pack_index`; sessions and the gc lock are the catalog's own.

Packs, pages and hooks here are synthetic: their bytes are not parsed by the index.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

import blake3
import pytest

from chunkstore.backends.catalog import Catalog, CommitOutcome, NewVersion
from chunkstore.backends.packindex import (
    FIRST_ROUND,
    MAX_PAGE_BYTES,
    PAGE_WRITE_BYTES,
    PAGES_PER_WRITE,
    GcRound,
    IndexState,
    NewPage,
    PackIndex,
    PackRecord,
    Phase,
)
from chunkstore.core import recipes
from chunkstore.core.packformat import MAX_ENTRIES, MAX_PACK_SIZE
from chunkstore.errors import (
    ConcurrentModificationError,
    IndexItemChangedError,
    InvalidArgumentError,
    NameNotFoundError,
    RoundMovedError,
)
from support.catalog_conformance import claim_and_store, new_version
from support.threads import run_in_threads

PACK_BYTES, PACK_ENTRIES = 16_000_000, 2_000
ORIGIN = blake3.blake3(b"a content").digest()


def index_of(catalog: Catalog) -> PackIndex:
    return catalog.pack_index


def new_pack_id() -> bytes:
    return os.urandom(16)


def new_page(number: int, body: bytes | None = None) -> NewPage:
    page_id = blake3.blake3(f"page {number}".encode()).digest()
    return NewPage(page_id, body if body is not None else b"CSRP" + number.to_bytes(4, "big"), ORIGIN, number)


def chunk(number: int) -> bytes:
    return blake3.blake3(f"chunk {number}".encode()).digest()


class _Guard:
    """A writer's RoundGuard: its references are checked at current(); moved() records the round
    it was told moved and reads the new one, or, refusing, reports a reference collected."""

    def __init__(self, index: PackIndex, refuse: bool = False):
        self._index = index
        self._round = index.read_round()
        self._refuse = refuse
        self.moves: list[GcRound] = []

    def current(self) -> GcRound:
        return self._round

    def moved(self, seen: GcRound) -> GcRound:
        self.moves.append(seen)
        if self._refuse:
            raise ConcurrentModificationError("a page this put names was collected")
        self._round = self._index.read_round()
        return self._round


def commit_guarded(catalog: Catalog, guard: _Guard, *versions: NewVersion) -> list[CommitOutcome]:
    """A whole put whose commit checks the round through guard."""
    session = catalog.open_session("put")
    try:
        for new in versions:
            entries = [entry for page in new.pages for entry in recipes.decode_page(page)]
            claim_and_store(catalog, session, [(entry.chunk_id, entry.length) for entry in entries])
        return catalog.commit(session, list(versions), round_guard=guard)
    finally:
        catalog.close_session(session)


class PackIndexConformance:
    @pytest.fixture
    def make_catalog(self) -> Callable[..., Catalog]:
        raise NotImplementedError("a test module provides make_catalog")

    @pytest.fixture
    def catalog(self, make_catalog) -> Catalog:
        return make_catalog()

    @pytest.fixture
    def index(self, catalog) -> PackIndex:
        return index_of(catalog)

    @pytest.fixture
    def gc(self, catalog) -> str:
        """A gc session holding the gc lock."""
        session = catalog.open_session("gc")
        catalog.acquire_gc_lock(session)
        return session

    @pytest.fixture
    def writer(self, catalog) -> str:
        return catalog.open_session("put")

    def advance_to(self, index: PackIndex, gc: str, phase: Phase) -> GcRound:
        gc_round = index.advance_round(gc, index.read_round())
        while gc_round.phase != phase:
            gc_round = index.advance_round(gc, gc_round)
        return gc_round

    def stored_pack(self, index: PackIndex, writer: str) -> PackRecord:
        return index.pack_stored(index.create_pack(writer, new_pack_id(), PACK_BYTES, PACK_ENTRIES))

    # ---- the round -----------------------------------------------------------------------

    def test_the_round_starts_idle_at_zero(self, index):
        assert index.read_round() == FIRST_ROUND == GcRound(0, Phase.IDLE)

    def test_a_round_moves_idle_dooming_sweeping_idle_and_the_number_grows_once(self, make_catalog, index, gc):
        seen = [index.read_round()]
        for _ in range(4):
            seen.append(index.advance_round(gc, seen[-1]))
        assert [(each.number, each.phase) for each in seen] == [
            (0, Phase.IDLE),
            (1, Phase.DOOMING),
            (1, Phase.SWEEPING),
            (1, Phase.IDLE),
            (2, Phase.DOOMING),
        ]
        other = index_of(make_catalog()).read_round()
        assert other == GcRound(2, Phase.DOOMING)
        assert other.gc_session == gc

    def test_a_round_moves_only_from_the_value_read(self, index, gc):
        start = index.read_round()
        index.advance_round(gc, start)
        with pytest.raises(RoundMovedError):
            index.advance_round(gc, start)
        assert index.read_round() == GcRound(1, Phase.DOOMING)

    def test_only_the_holder_of_the_gc_lock_moves_the_round(self, catalog, index, gc):
        stranger = catalog.open_session("gc")
        with pytest.raises(ConcurrentModificationError) as refused:
            index.advance_round(stranger, index.read_round())
        assert not isinstance(refused.value, RoundMovedError)
        catalog.release_gc_lock(gc)
        with pytest.raises(ConcurrentModificationError):
            index.advance_round(gc, index.read_round())
        assert index.read_round() == FIRST_ROUND

    def test_expiring_sessions_ends_the_dead_and_returns_the_living(self, catalog, make_catalog, writer, gc):
        stalled = catalog.open_session("put")
        # The living writer's heartbeat must still be inside the lease when the expiry reads
        # it: a second leaves room for a slow server, where a lease of 50 ms did not.
        lease = 1.0
        impatient = make_catalog(lease_seconds=lease)
        time.sleep(lease * 1.5)
        catalog.heartbeat(writer)
        assert index_of(impatient).expire_sessions(gc) == {writer, gc}
        pending = index_of(impatient).create_pack(stalled, new_pack_id(), 1, 1)
        gc_round = self.advance_to(index_of(impatient), gc, Phase.DOOMING)
        assert index_of(impatient).doom(gc_round, [pending]) == []  # its owner is gone

    # ---- the round check of a writer's commit ----------------------------------------------

    def test_a_commit_is_written_at_the_round_its_guard_holds(self, catalog, index, gc):
        guard = _Guard(index)
        self.advance_to(index, gc, Phase.DOOMING)
        assert commit_guarded(catalog, guard, new_version("a", [1, 2])) == [CommitOutcome("a", 1, "stored")]
        assert guard.moves == [FIRST_ROUND] and guard.current() == GcRound(1, Phase.DOOMING)
        # One too large for a transaction (one page per chunk) commits in steps: checked too.
        self.advance_to(index, gc, Phase.SWEEPING)
        large = new_version("large", range(10, 160), page_entries=1)
        assert commit_guarded(catalog, guard, large) == [CommitOutcome("large", 1, "stored")]
        assert guard.moves == [FIRST_ROUND, GcRound(1, Phase.DOOMING)]
        assert catalog.get_version("large").digest == large.digest

    def test_a_guard_that_finds_a_reference_collected_stops_the_commit(self, catalog, index, gc):
        guard = _Guard(index, refuse=True)
        self.advance_to(index, gc, Phase.SWEEPING)
        with pytest.raises(ConcurrentModificationError, match="collected"):
            commit_guarded(catalog, guard, new_version("b", [3]), new_version("c", range(20, 160), page_entries=1))
        for name in ("b", "c"):
            with pytest.raises(NameNotFoundError):
                catalog.get_version(name)

    def test_a_commit_at_an_unmoved_round_asks_nothing_of_its_guard(self, catalog, index):
        guard = _Guard(index, refuse=True)
        versions = [new_version("d", [4]), new_version("e", range(30, 170), page_entries=1), new_version("f", [4])]
        assert [outcome.outcome for outcome in commit_guarded(catalog, guard, *versions)] == [
            "stored",
            "stored",
            "duplicate",
        ]
        assert guard.moves == []

    # ---- packs ---------------------------------------------------------------------------

    def test_a_pack_is_pending_for_its_writer_then_present(self, make_catalog, index, writer):
        pack_id = new_pack_id()
        pending = index.create_pack(writer, pack_id, PACK_BYTES, PACK_ENTRIES)
        assert (pending.pack_id, pending.state, pending.owner) == (pack_id, IndexState.PENDING, writer)
        assert (pending.stored_bytes, pending.entries, pending.live_bytes) == (PACK_BYTES, PACK_ENTRIES, None)
        other = index_of(make_catalog())
        assert other.get_packs([pack_id, new_pack_id()]) == {pack_id: pending}
        present = index.pack_stored(pending)
        assert present.state == IndexState.PRESENT
        assert present.generation != pending.generation
        assert other.get_packs([pack_id]) == {pack_id: present}

    def test_a_pack_id_is_created_once(self, index, writer):
        pending = index.create_pack(writer, new_pack_id(), PACK_BYTES, PACK_ENTRIES)
        with pytest.raises(IndexItemChangedError):
            index.create_pack(writer, pending.pack_id, 1, 1)
        assert index.get_packs([pending.pack_id]) == {pending.pack_id: pending}

    def test_a_pack_turns_present_only_for_its_owner_at_its_generation(self, catalog, index, writer):
        pending = index.create_pack(writer, new_pack_id(), PACK_BYTES, PACK_ENTRIES)
        other_writer = catalog.open_session("put")
        for stale in (
            PackRecord(pending.pack_id, IndexState.PENDING, pending.generation, other_writer, PACK_BYTES, PACK_ENTRIES),
            PackRecord(pending.pack_id, IndexState.PENDING, pending.generation + 1, writer, PACK_BYTES, PACK_ENTRIES),
        ):
            with pytest.raises(IndexItemChangedError):
                index.pack_stored(stale)
        present = index.pack_stored(pending)
        with pytest.raises(IndexItemChangedError):
            index.pack_stored(pending)
        assert index.get_packs([pending.pack_id]) == {pending.pack_id: present}

    def test_a_pack_of_no_item_does_not_turn_present(self, index, writer):
        with pytest.raises(IndexItemChangedError):
            index.pack_stored(PackRecord(new_pack_id(), IndexState.PENDING, 1, writer, 1, 1))

    @pytest.mark.parametrize(
        ("pack_id", "stored_bytes", "entries"),
        [
            (b"", 1, 1),
            (b"\x01" * 15, 1, 1),
            (b"\x01" * 32, 1, 1),
            (b"\x01" * 16, 0, 1),
            (b"\x01" * 16, MAX_PACK_SIZE + 1, 1),
            (b"\x01" * 16, 1, 0),
            (b"\x01" * 16, 1, MAX_ENTRIES + 1),
        ],
    )
    def test_what_no_pack_can_be_is_refused(self, index, writer, pack_id, stored_bytes, entries):
        with pytest.raises(InvalidArgumentError):
            index.create_pack(writer, pack_id, stored_bytes, entries)
        assert list(index.iter_packs()) == []

    def test_live_bytes_are_recorded_without_changing_the_pack(self, index, writer):
        present = self.stored_pack(index, writer)
        missing = new_pack_id()
        assert index.record_live_bytes({present.pack_id: 1234, missing: 5}) == [missing]
        [recorded] = index.get_packs([present.pack_id]).values()
        assert recorded.live_bytes == 1234
        assert (recorded.state, recorded.generation) == (present.state, present.generation)
        assert index.get_packs([missing]) == {}

    def test_iter_packs_lists_every_state(self, index, writer, gc):
        pending = index.create_pack(writer, new_pack_id(), 1, 1)
        present = self.stored_pack(index, writer)
        doomed = self.stored_pack(index, writer)
        index.doom(self.advance_to(index, gc, Phase.DOOMING), [doomed])
        states = {record.pack_id: record.state for record in index.iter_packs()}
        assert states == {
            pending.pack_id: IndexState.PENDING,
            present.pack_id: IndexState.PRESENT,
            doomed.pack_id: IndexState.DOOMED,
        }

    # ---- pages ---------------------------------------------------------------------------

    def test_pages_are_written_present_and_read_back(self, make_catalog, index):
        pages = [new_page(number) for number in range(3)]
        assert index.write_pages(index.read_round(), pages) == []
        other = index_of(make_catalog())
        for page in pages:
            for consistent in (True, False):
                record = other.get_page(page.page_id, consistent=consistent)
                assert record is not None
                assert (record.page_id, record.body, record.state) == (page.page_id, page.body, IndexState.PRESENT)
                assert (record.origin, record.origin_segment, record.doomed_in) == (ORIGIN, page.origin_segment, None)
        assert other.get_page(new_page(99).page_id) is None
        assert {record.page_id for record in other.iter_pages()} == {page.page_id for page in pages}

    def test_a_page_that_exists_is_left_as_it_is_and_named(self, index):
        first = new_page(1, b"first body")
        index.write_pages(index.read_round(), [first])
        again = new_page(1, b"another body")
        fresh = new_page(2)
        assert index.write_pages(index.read_round(), [again, fresh]) == [first.page_id]
        assert index.get_page(first.page_id).body == b"first body"
        assert index.get_page(fresh.page_id) is not None

    def test_a_page_write_checks_the_round_and_writes_nothing_if_it_moved(self, index, gc):
        seen = index.read_round()
        index.write_pages(seen, [new_page(1)])
        index.advance_round(gc, seen)
        with pytest.raises(RoundMovedError):
            index.write_pages(seen, [new_page(2), new_page(3)])
        assert index.get_page(new_page(2).page_id) is None
        assert index.get_page(new_page(3).page_id) is None
        assert index.write_pages(index.read_round(), [new_page(2)]) == []

    def test_a_page_write_in_any_phase_checks_that_phase(self, index, gc):
        for number in range(4):
            seen = index.read_round()
            index.write_pages(seen, [new_page(number)])
            index.advance_round(gc, seen)
            with pytest.raises(RoundMovedError):
                index.write_pages(seen, [new_page(100 + number)])
        assert {record.page_id for record in index.iter_pages()} == {new_page(number).page_id for number in range(4)}

    def test_a_present_page_is_switched_to_new_bytes_at_its_generation(self, make_catalog, index, gc):
        index.write_pages(index.read_round(), [new_page(1)])
        page = index.get_page(new_page(1).page_id)
        switched = index.switch_page(page, b"CSRP moved")
        assert switched is not None and switched.body == b"CSRP moved"
        assert (switched.page_id, switched.origin, switched.state) == (page.page_id, page.origin, IndexState.PRESENT)
        assert switched.generation != page.generation
        assert index_of(make_catalog()).get_page(page.page_id) == switched
        assert index.switch_page(page, b"CSRP stale") is None  # the generation it was read at is gone
        with pytest.raises(InvalidArgumentError):
            index.switch_page(switched, b"")
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        assert index.doom(gc_round, [switched]) == []
        assert index.switch_page(index.get_page(page.page_id), b"CSRP doomed") is None
        assert index.get_page(page.page_id).body == b"CSRP moved"

    @pytest.mark.parametrize(
        "pages",
        [
            pytest.param([new_page(number) for number in range(PAGES_PER_WRITE + 1)], id="too-many"),
            pytest.param([new_page(1), new_page(1)], id="twice"),
            pytest.param([new_page(1, b"")], id="empty"),
            pytest.param([new_page(1, bytes(MAX_PAGE_BYTES + 1))], id="too-large"),
            pytest.param(
                [new_page(number, bytes(MAX_PAGE_BYTES)) for number in range(PAGE_WRITE_BYTES // MAX_PAGE_BYTES + 1)],
                id="too-many-bytes",
            ),
            pytest.param([NewPage(b"\x01" * 31, b"body", ORIGIN, 0)], id="short-id"),
            pytest.param([NewPage(new_page(1).page_id, b"body", b"", 0)], id="no-origin"),
            pytest.param([NewPage(new_page(1).page_id, b"body", ORIGIN, -1)], id="negative-segment"),
        ],
    )
    def test_a_malformed_page_write_is_refused_whole(self, index, pages):
        with pytest.raises(InvalidArgumentError):
            index.write_pages(index.read_round(), pages)
        assert list(index.iter_pages()) == []

    def test_a_full_page_write_is_one_write(self, index):
        pages = [new_page(number) for number in range(PAGES_PER_WRITE)]
        assert index.write_pages(index.read_round(), pages) == []
        assert len(list(index.iter_pages())) == PAGES_PER_WRITE

    def test_the_largest_page_is_stored(self, index):
        page = new_page(1, os.urandom(MAX_PAGE_BYTES))
        index.write_pages(index.read_round(), [page])
        assert index.get_page(page.page_id).body == page.body

    # ---- hooks ---------------------------------------------------------------------------

    def test_hooks_are_hints_written_read_replaced_and_dropped(self, make_catalog, index):
        page_a, page_b = new_page(1).page_id, new_page(2).page_id
        index.put_hooks({chunk(1): page_a, chunk(2): page_a})
        index.put_hooks({chunk(2): page_b})
        other = index_of(make_catalog())
        assert other.get_hooks([chunk(1), chunk(2), chunk(3)]) == {chunk(1): page_a, chunk(2): page_b}
        other.forget_hooks([chunk(1), chunk(3)])
        assert index.get_hooks([chunk(1), chunk(2)]) == {chunk(2): page_b}
        assert list(other.iter_hooks()) == [(chunk(2), page_b)]

    def test_many_hooks_at_once(self, index):
        hooks = {chunk(number): new_page(number % 7).page_id for number in range(260)}
        index.put_hooks(hooks)
        assert index.get_hooks(list(hooks)) == hooks
        assert dict(index.iter_hooks()) == hooks
        index.forget_hooks(list(hooks)[:200])
        assert dict(index.iter_hooks()) == dict(list(hooks.items())[200:])

    # ---- gc transitions ------------------------------------------------------------------

    def test_doom_then_delete_then_forget_a_pack_and_a_page(self, index, writer, gc):
        pack = self.stored_pack(index, writer)
        index.write_pages(index.read_round(), [new_page(1)])
        page = index.get_page(new_page(1).page_id)
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        assert index.doom(gc_round, [pack]) == []
        assert index.doom(gc_round, [page]) == []
        [doomed_pack] = index.get_packs([pack.pack_id]).values()
        doomed_page = index.get_page(page.page_id)
        assert (doomed_pack.state, doomed_pack.doomed_in, doomed_pack.doomed_from) == (
            IndexState.DOOMED,
            gc_round.number,
            IndexState.PRESENT,
        )
        assert (doomed_page.state, doomed_page.doomed_in) == (IndexState.DOOMED, gc_round.number)
        index.advance_round(gc, gc_round)
        assert index.start_deleting([doomed_pack]) == []
        assert index.start_deleting([doomed_page]) == []
        [deleting_pack] = index.get_packs([pack.pack_id]).values()
        deleting_page = index.get_page(page.page_id)
        assert deleting_pack.state == deleting_page.state == IndexState.DELETING
        # DELETING is final: nothing takes it back.
        assert index.spare([deleting_pack]) == [deleting_pack]
        assert index.spare([deleting_page]) == [deleting_page]
        index.forget([deleting_pack])
        index.forget([deleting_page])
        assert index.get_packs([pack.pack_id]) == {}
        assert index.get_page(page.page_id) is None

    def test_a_spared_item_goes_back_to_its_state(self, index, writer, gc):
        pack = self.stored_pack(index, writer)
        index.write_pages(index.read_round(), [new_page(1)])
        page = index.get_page(new_page(1).page_id)
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        index.doom(gc_round, [pack])
        index.doom(gc_round, [page])
        [doomed_pack] = index.get_packs([pack.pack_id]).values()
        doomed_page = index.get_page(page.page_id)
        assert index.spare([doomed_pack]) == []
        assert index.spare([doomed_page]) == []
        [spared_pack] = index.get_packs([pack.pack_id]).values()
        spared_page = index.get_page(page.page_id)
        assert (spared_pack.state, spared_pack.doomed_in, spared_pack.doomed_from) == (IndexState.PRESENT, None, None)
        assert (spared_page.state, spared_page.doomed_in) == (IndexState.PRESENT, None)
        assert spared_pack.generation not in (pack.generation, doomed_pack.generation)
        # The spared items moved on: the records gc read before are stale.
        assert index.start_deleting([doomed_pack]) == [doomed_pack]
        assert index.start_deleting([doomed_page]) == [doomed_page]

    def test_doom_needs_the_state_and_generation_gc_read(self, index, writer, gc):
        pending = index.create_pack(writer, new_pack_id(), 1, 1)
        present = index.pack_stored(pending)
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        # A record from before the pack turned PRESENT: the writer's change was not seen.
        assert index.doom(gc_round, [pending]) == [pending]
        assert index.doom(gc_round, [present]) == []
        # Doomed already.
        assert index.doom(gc_round, [present]) == [present]
        missing = PackRecord(new_pack_id(), IndexState.PRESENT, 1, writer, 1, 1)
        assert index.doom(gc_round, [missing]) == [missing]
        assert index.get_packs([missing.pack_id]) == {}

    def test_an_item_given_twice_is_doomed_once(self, index, writer, gc):
        pack = self.stored_pack(index, writer)
        index.write_pages(index.read_round(), [new_page(1)])
        page = index.get_page(new_page(1).page_id)
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        assert index.doom(gc_round, [pack, pack]) == [pack]
        assert index.doom(gc_round, [page, page]) == [page]
        [doomed] = index.get_packs([pack.pack_id]).values()
        assert index.start_deleting([doomed, doomed]) == [doomed]

    def test_a_pending_pack_is_doomed_only_once_its_writer_is_gone(self, catalog, index, writer, gc):
        pending = index.create_pack(writer, new_pack_id(), 1, 1)
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        assert index.doom(gc_round, [pending]) == [pending]
        catalog.close_session(writer)
        assert index.doom(gc_round, [pending]) == []
        [doomed] = index.get_packs([pending.pack_id]).values()
        assert (doomed.state, doomed.doomed_from) == (IndexState.DOOMED, IndexState.PENDING)
        # The writer, back, cannot turn it PRESENT: it must not name the pack.
        with pytest.raises(IndexItemChangedError):
            index.pack_stored(pending)
        assert index.spare([doomed]) == []
        assert index.get_packs([pending.pack_id])[pending.pack_id].state == IndexState.PENDING

    def test_doom_happens_only_in_the_dooming_phase_of_the_round_read(self, index, writer, gc):
        pack = self.stored_pack(index, writer)
        with pytest.raises(InvalidArgumentError):
            index.doom(index.read_round(), [pack])
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        index.advance_round(gc, gc_round)
        with pytest.raises(RoundMovedError):
            index.doom(gc_round, [pack])
        assert index.get_packs([pack.pack_id]) == {pack.pack_id: pack}

    def test_only_doomed_items_are_deleted_or_spared(self, index, writer):
        pack = self.stored_pack(index, writer)
        index.write_pages(index.read_round(), [new_page(1)])
        page = index.get_page(new_page(1).page_id)
        assert index.start_deleting([pack]) == [pack]
        assert index.spare([pack]) == [pack]
        assert index.start_deleting([page]) == [page]
        index.forget([pack])
        index.forget([page])
        assert index.get_packs([pack.pack_id]) == {pack.pack_id: pack}
        assert index.get_page(page.page_id) == page

    def test_a_doom_batch_larger_than_one_transaction(self, index, writer, gc):
        packs = [self.stored_pack(index, writer) for _ in range(120)]
        # Live bytes are no change of state: a record read before they were written still dooms.
        index.record_live_bytes({packs[7].pack_id: 1})
        gc_round = self.advance_to(index, gc, Phase.DOOMING)
        read = [*packs[:50], dataclasses.replace(packs[50], generation=packs[50].generation ^ 1), *packs[51:]]
        assert index.doom(gc_round, read) == [read[50]]
        states = {record.pack_id: record.state for record in index.iter_packs()}
        assert [states[pack.pack_id] for pack in packs].count(IndexState.DOOMED) == 119

    # ---- concurrency ---------------------------------------------------------------------

    def test_concurrent_writers_each_create_and_store_their_packs(self, make_catalog, catalog):
        def writer_run() -> list[bytes]:
            handle = make_catalog()
            index, session = index_of(handle), handle.open_session("put")
            return [index.pack_stored(index.create_pack(session, new_pack_id(), 1, 1)).pack_id for _ in range(10)]

        written = [pack_id for run in run_in_threads(*[writer_run] * 4) for pack_id in run]
        states = {record.pack_id: record.state for record in index_of(catalog).iter_packs()}
        assert states == dict.fromkeys(written, IndexState.PRESENT)

    def test_one_of_two_writers_creating_one_pack_id_wins(self, make_catalog, catalog):
        pack_id = new_pack_id()

        def create() -> str:
            handle = make_catalog()
            session = handle.open_session("put")
            try:
                index_of(handle).create_pack(session, pack_id, 1, 1)
                return session
            except IndexItemChangedError:
                return ""

        winners = [session for session in run_in_threads(*[create] * 4) if session]
        assert len(winners) == 1
        assert index_of(catalog).get_packs([pack_id])[pack_id].owner == winners[0]

    def test_writers_of_the_same_pages_each_write_a_page_once(self, make_catalog, catalog):
        pages = [new_page(number) for number in range(40)]

        def write(offset: int) -> list[bytes]:
            index = index_of(make_catalog())
            mine = pages[offset:] + pages[:offset]
            written = []
            for start in range(0, len(mine), 10):
                batch = mine[start : start + 10]
                existing = set(index.write_pages(index.read_round(), batch))
                written += [page.page_id for page in batch if page.page_id not in existing]
            return written

        runs = run_in_threads(*[lambda offset=offset: write(offset) for offset in (0, 5, 20, 35)])
        written = [page_id for run in runs for page_id in run]
        assert sorted(written) == sorted(page.page_id for page in pages)
        assert {record.page_id for record in index_of(catalog).iter_pages()} == set(written)

    def test_a_round_moved_by_another_process_between_read_and_write_refuses_the_write(self, make_catalog, gc):
        """A writer and a gc on handles of their own: each time the gc moves the round after the
        writer read it and before it writes, the write is refused whole, in every phase."""
        read, moved = threading.Barrier(2), threading.Barrier(2)
        rounds = 6

        def write() -> list[bool]:
            index = index_of(make_catalog())
            refused = []
            for number in range(rounds):
                seen = index.read_round()
                read.wait()
                moved.wait()
                try:
                    index.write_pages(seen, [new_page(2 * number), new_page(2 * number + 1)])
                    refused.append(False)
                except RoundMovedError:
                    refused.append(True)
            return refused

        def move() -> None:
            index = index_of(make_catalog())
            for _ in range(rounds):
                read.wait()
                index.advance_round(gc, index.read_round())
                moved.wait()

        refused, _ = run_in_threads(write, move)
        assert refused == [True] * rounds
        assert list(index_of(make_catalog()).iter_pages()) == []

    def test_page_writes_racing_round_moves_write_only_under_the_round_they_read(self, make_catalog, catalog, gc):
        """A writer reads the round and writes pages with a check of it; a gc moves the round
        meanwhile. A write either lands whole while its round held, or writes nothing."""
        moves = 12

        def write(first: int) -> tuple[set[bytes], set[bytes]]:
            index = index_of(make_catalog())
            written, refused = set(), set()
            for number in range(first, first + 30):
                pages = [new_page(number * 10 + part) for part in range(3)]
                try:
                    index.write_pages(index.read_round(), pages)
                    written.update(page.page_id for page in pages)
                except RoundMovedError:
                    refused.update(page.page_id for page in pages)
            return written, refused

        def move() -> GcRound:
            index = index_of(catalog)
            gc_round = index.read_round()
            for _ in range(moves):
                gc_round = index.advance_round(gc, gc_round)
            return gc_round

        *runs, last = run_in_threads(lambda: write(0), lambda: write(1000), move)
        assert (last.number, last.phase) == (moves // 3, Phase.IDLE)
        written = set().union(*(run[0] for run in runs))
        refused = set().union(*(run[1] for run in runs))
        stored = {record.page_id for record in index_of(catalog).iter_pages()}
        assert stored == written
        assert not stored & refused

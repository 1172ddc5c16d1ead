"""The catalog's pack index (storage format 2): the gc round, packs, recipe pages and hooks.

docs/design/format-v2.md gives the design (sections Catalog, Protocols, gc rounds and the round
item, Safety argument); this module is the contract every catalog keeps for it, and
tests/support/packindex_conformance.py checks it for each implementation (memory, SQLite,
DynamoDB). A catalog exposes its index as `catalog.pack_index`. Nothing of a format 1 store
uses it, and a catalog pays nothing for it until it is used: on DynamoDB the table's meta item
moves to schema 3 just before the first index item is written.

Items and their states:
    round   the gc round (number r, phase idle / dooming / sweeping, the gc that moved it last).
            Absent until the first gc round: it then reads (0, idle). It only moves forward,
            (r, idle) -> (r+1, dooming) -> (r+1, sweeping) -> (r+1, idle), so two reads that
            return the same value bracket an interval with no transition.
    pack    PENDING (owned by the writer's session, before its object is uploaded) -> PRESENT
            (after) -> DOOMED (gc, in the dooming phase of a round) -> DELETING (gc, after its
            sweep) -> forgotten (gc, once the object is deleted); a DOOMED pack the sweep finds
            named goes back to the state it was doomed from.
    page    a recipe page (CSRP v2 bytes, unparsed here): PRESENT -> DOOMED -> DELETING ->
            forgotten, or back to PRESENT, as a pack.
    hook    chunk ID -> a page that stored it: a hint, written and read without conditions.

Every pack and page carries a generation, a random number that each change of its state draws
anew (random, not counted: an item forgotten and written again never repeats an old one); gc
changes an item only at the state and generation it read, so a change it did not see makes its
write fail instead of undoing that change.

Which calls are consistent: read_round, get_packs, iter_packs, iter_pages and get_page (unless
asked not to be) see every write that completed before they started. get_hooks may miss recent
hooks (they are hints). Conditional calls raise, or report, as their docstrings say; the errors
are chunkstore.errors.RoundMovedError (the round item is not the value the caller read: the
write wrote nothing) and IndexItemChangedError (a pack or page is not in the state the change
requires: nothing was changed).

A writer's commit checks the round through a RoundGuard (Catalog.commit); gc's rounds over this
index are chunkstore/operations/packedgc.py. Left to later landing steps: repack's page switches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Protocol, TypeVar

from chunkstore.core.packformat import MAX_ENTRIES, MAX_PACK_SIZE, PACK_ID_SIZE
from chunkstore.errors import IndexItemChangedError, InvalidArgumentError, RoundMovedError

# One transaction writes at most 100 items on DynamoDB: 99 pages and the round check.
PAGES_PER_WRITE = 99
# Pages of one write_pages call, in bytes: DynamoDB's 4 MB a transaction less room for the keys
# and attributes of 99 pages (under 200 bytes each).
PAGE_WRITE_BYTES = 3_000_000
# The largest page: 8,192 runs of 24 bytes after a 24-byte header (design, Recipe page).
MAX_PAGE_BYTES = 24 + 24 * 8192
PAGE_ID_SIZE = 32
CHUNK_ID_SIZE = 32


class Phase(IntEnum):
    """The phase of a gc round."""

    IDLE = 0
    DOOMING = 1
    SWEEPING = 2


class IndexState(IntEnum):
    """The state of a pack or a page (a page is never PENDING)."""

    PENDING = 0
    PRESENT = 1
    DOOMED = 2
    DELETING = 3


@dataclass(frozen=True, slots=True)
class GcRound:
    """The round item. Two values are equal when their number and phase are: the gc session is
    who moved it last, not part of what a writer checks."""

    number: int
    phase: Phase
    gc_session: str | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GcRound) and (self.number, self.phase) == (other.number, other.phase)

    def __hash__(self) -> int:
        return hash((self.number, self.phase))

    def following(self) -> tuple[int, Phase]:
        """The (number, phase) the next transition gives."""
        if self.phase == Phase.IDLE:
            return self.number + 1, Phase.DOOMING
        if self.phase == Phase.DOOMING:
            return self.number, Phase.SWEEPING
        return self.number, Phase.IDLE


FIRST_ROUND = GcRound(0, Phase.IDLE)


@dataclass(frozen=True, slots=True)
class PackRecord:
    pack_id: bytes
    state: IndexState
    generation: int
    owner: str  # the session that created it
    stored_bytes: int
    entries: int
    live_bytes: int | None = None  # what the last gc found named; None before any gc measured it
    doomed_in: int | None = None  # the round that doomed it, while DOOMED or DELETING
    doomed_from: IndexState | None = None  # the state it goes back to if the sweep finds it named

    @property
    def item_id(self) -> bytes:
        return self.pack_id


@dataclass(frozen=True, slots=True)
class NewPage:
    """A recipe page a writer stores: its ID (the hash of its chunk IDs), its bytes, and the
    content (digest) and segment number it was written for."""

    page_id: bytes
    body: bytes
    origin: bytes
    origin_segment: int


@dataclass(frozen=True, slots=True)
class PageRecord:
    page_id: bytes
    body: bytes
    state: IndexState
    generation: int
    origin: bytes
    origin_segment: int
    doomed_in: int | None = None

    @property
    def item_id(self) -> bytes:
        return self.page_id


IndexItem = TypeVar("IndexItem", PackRecord, PageRecord)


class PackIndex(Protocol):
    """What a catalog keeps of storage format 2's packs, pages and hooks. See the module docstring."""

    # ---- the round ---------------------------------------------------------------------

    def read_round(self) -> GcRound:
        """The round item, read consistently; FIRST_ROUND (0, idle) before the first round."""
        ...

    def advance_round(self, gc_session: str, seen: GcRound) -> GcRound:
        """Move the round one step on from seen (GcRound.following) and return the new value.

        Conditional on the round item still being seen (else RoundMovedError, nothing written)
        and on gc_session holding the catalog's gc lock (else ConcurrentModificationError)."""
        ...

    def expire_sessions(self, gc_session: str) -> set[str]:
        """End the writer sessions that are dead (their lease passed, or their process is gone on
        this host), as gc does before it collects; return the sessions still alive, gc_session
        included. A PENDING pack whose owner is not among them may be doomed."""
        ...

    # ---- packs -------------------------------------------------------------------------

    def create_pack(self, session: str, pack_id: bytes, stored_bytes: int, entries: int) -> PackRecord:
        """Record a pack PENDING, owned by session, before its object is uploaded. Conditional on
        no item for pack_id (pack IDs are random: IndexItemChangedError if one exists)."""
        ...

    def pack_stored(self, pack: PackRecord) -> PackRecord:
        """PENDING -> PRESENT after the upload, conditional on the item still being PENDING, of
        pack.owner and at pack.generation (the record create_pack returned): if gc doomed the
        pack of a writer it took for dead, IndexItemChangedError, and the writer must not name
        the pack."""
        ...

    def get_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, PackRecord]:
        """The pack items that exist among pack_ids, read consistently."""
        ...

    def iter_packs(self) -> Iterator[PackRecord]:
        """Every pack item, in any state (a consistent scan)."""
        ...

    def record_live_bytes(self, live_bytes: Mapping[bytes, int]) -> list[bytes]:
        """Set each pack's live bytes (what gc found named) without changing its state or
        generation; returns the pack IDs that have no item. gc writes only values that changed."""
        ...

    # ---- pages -------------------------------------------------------------------------

    def write_pages(self, seen: GcRound, pages: Sequence[NewPage]) -> list[bytes]:
        """Write new PRESENT pages in one transaction with a check that the round item is still
        seen; return the IDs of pages that already had an item (in any state: they are left as
        they are, and the caller reads them).

        All the other pages are written, or none: RoundMovedError if the round moved. At most
        PAGES_PER_WRITE pages of at most PAGE_WRITE_BYTES in all, each at most MAX_PAGE_BYTES
        (else InvalidArgumentError)."""
        ...

    def get_page(self, page_id: bytes, consistent: bool = True) -> PageRecord | None:
        """The page item, or None. A reader of a committed content may read it eventually
        consistently (its page cannot be collected); a writer validating a page reads it
        consistently."""
        ...

    def iter_pages(self) -> Iterator[PageRecord]:
        """Every page item, in any state (a consistent scan)."""
        ...

    def switch_page(self, page: PageRecord, body: bytes) -> PageRecord | None:
        """Give a PRESENT page new bytes (repack moved the chunks its runs select to other packs;
        its ID, the hash of its chunk IDs, stays), conditional on the page being PRESENT at the
        record's generation; return the new record (a new generation), or None if it changed."""
        ...

    # ---- hooks -------------------------------------------------------------------------

    def put_hooks(self, hooks: Mapping[bytes, bytes]) -> None:
        """Record chunk ID -> page ID hints, unconditionally (a later write replaces one)."""
        ...

    def get_hooks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The hooks found among chunk_ids (chunk ID -> page ID); may miss ones just written."""
        ...

    def forget_hooks(self, chunk_ids: Iterable[bytes]) -> None:
        """Drop hooks, unconditionally; IDs without a hook are ignored."""
        ...

    def iter_hooks(self) -> Iterator[tuple[bytes, bytes]]:
        """Every hook, as (chunk ID, page ID) (a consistent scan)."""
        ...

    # ---- gc transitions, for packs and pages alike ---------------------------------------

    def doom(self, gc_round: GcRound, items: Sequence[IndexItem]) -> list[IndexItem]:
        """Move each item to DOOMED in gc_round (whose phase must be dooming), conditional on
        the state and generation it has in the record: PRESENT, or a PENDING pack whose
        owner's session no longer exists (gc expired it). Items that changed since, or are in
        neither state, are left as they are and returned.

        Written in transactions of up to 99 items with a check that the round item is still
        gc_round: a moved round raises RoundMovedError (items of earlier transactions stay
        DOOMED, in a round whose sweep is still to come)."""
        ...

    def spare(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        """DOOMED -> the state it was doomed from (the sweep found it named), conditional on the
        item being DOOMED at the record's generation; returns the items that were not."""
        ...

    def start_deleting(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        """DOOMED -> DELETING (the sweep found it named by nothing), conditional on the item
        being DOOMED at the record's generation; returns the items that were not. Once
        DELETING, an item never changes state again: gc deletes the pack's object, then
        forgets it."""
        ...

    def forget(self, items: Sequence[IndexItem]) -> None:
        """Delete the items of packs or pages that are DELETING (others are left as they are)."""
        ...


class RoundGuard(Protocol):
    """How a format 2 writer's commit checks the gc round (docs/design/format-v2.md, Put step 6).

    The writer read the round before it looked at any page or pack its versions name; a commit that
    makes a new content live does so in a transaction that also checks the round item still holds
    current(). When it does not, the catalog calls moved(seen) and commits again at the value it
    returns: the writer reads the round anew and checks again every page and pack it names, raising
    ConcurrentModificationError (nothing more is committed) if gc collected one meanwhile."""

    def current(self) -> GcRound:
        """The round value the writer's references were checked at."""
        ...

    def moved(self, seen: GcRound) -> GcRound:
        """The round is no longer seen: check the references again and return the round now read."""
        ...


# Every call of the interface: wrappers (error translation) apply to each.
PACK_INDEX_CALLS = tuple(name for name in vars(PackIndex) if not name.startswith("_"))


def new_generation() -> int:
    """A fresh generation: 63 random bits, a signed 64-bit integer in SQLite as in DynamoDB."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def check_doom_round(gc_round: GcRound) -> None:
    if gc_round.phase != Phase.DOOMING:
        raise InvalidArgumentError(f"items are doomed in the dooming phase of a round, not in {gc_round.phase.name}")


# ---- the transitions, for implementations that read an item and write it back in one transaction ----


def doom_step(
    gc_round: GcRound, owner_gone: Callable[[str], bool]
) -> Callable[[IndexItem, IndexItem | None], IndexItem | None]:
    """The doom of an item gc read as `read` and that is now `current`: the DOOMED record, or None
    if it may not be doomed (see PackIndex.doom)."""

    def step(read: IndexItem, current: IndexItem | None) -> IndexItem | None:
        if current is None or (current.state, current.generation) != (read.state, read.generation):
            return None
        if isinstance(current, PackRecord):
            if current.state == IndexState.PENDING and not owner_gone(current.owner):
                return None
            if current.state not in (IndexState.PRESENT, IndexState.PENDING):
                return None
            return replace(
                current,
                state=IndexState.DOOMED,
                generation=new_generation(),
                doomed_in=gc_round.number,
                doomed_from=current.state,
            )
        if current.state != IndexState.PRESENT:
            return None
        return replace(current, state=IndexState.DOOMED, generation=new_generation(), doomed_in=gc_round.number)

    return step


def spare_step(read: IndexItem, current: IndexItem | None) -> IndexItem | None:
    """A DOOMED item back in the state it was doomed from, or None if it is not DOOMED at read's generation."""
    if current is None or (current.state, current.generation) != (IndexState.DOOMED, read.generation):
        return None
    if isinstance(current, PackRecord):
        assert current.doomed_from is not None
        return replace(
            current, state=current.doomed_from, generation=new_generation(), doomed_in=None, doomed_from=None
        )
    return replace(current, state=IndexState.PRESENT, generation=new_generation(), doomed_in=None)


def delete_step(read: IndexItem, current: IndexItem | None) -> IndexItem | None:
    """A DOOMED item DELETING, or None if it is not DOOMED at read's generation."""
    if current is None or (current.state, current.generation) != (IndexState.DOOMED, read.generation):
        return None
    return replace(current, state=IndexState.DELETING, generation=new_generation())


def check_index_item(record: IndexItem, damaged: Callable[[str], Exception]) -> IndexItem:
    """record, once its fields agree with one another; else damaged(what is wrong) is raised.
    Catalogs read their items defensively: an edited or damaged one is an integrity error naming it."""
    doomed = record.state in (IndexState.DOOMED, IndexState.DELETING)
    if isinstance(record, PageRecord) and record.state == IndexState.PENDING:
        raise damaged("a page is never PENDING")
    if doomed != (record.doomed_in is not None):
        raise damaged(f"it is {record.state.name} {'without' if doomed else 'with'} a round that doomed it")
    if isinstance(record, PackRecord) and (
        doomed != (record.doomed_from is not None)
        or record.doomed_from not in (None, IndexState.PENDING, IndexState.PRESENT)
    ):
        raise damaged(f"it is {record.state.name}, doomed from {record.doomed_from!r}")
    return record


def round_moved(seen: GcRound) -> RoundMovedError:
    return RoundMovedError(
        f"the gc round is no longer {seen.number} ({seen.phase.name.lower()}): it moved since it was read; "
        "nothing was written"
    )


def pack_exists(pack_id: bytes) -> IndexItemChangedError:
    return IndexItemChangedError(f"pack {pack_id.hex()} already has an item (pack IDs are drawn at random)")


def not_pending(pack: PackRecord) -> IndexItemChangedError:
    return IndexItemChangedError(
        f"pack {pack.pack_id.hex()} is no longer PENDING at the generation its writer created: gc took the writer "
        "for dead and doomed it; the writer must store its chunks again"
    )


def check_new_pack(pack_id: bytes, stored_bytes: int, entries: int) -> None:
    """What create_pack refuses, raised as InvalidArgumentError: what no pack can be."""
    _check_id(pack_id, PACK_ID_SIZE, "a pack ID")
    if not 0 < stored_bytes <= MAX_PACK_SIZE or not 0 < entries <= MAX_ENTRIES:
        raise InvalidArgumentError(
            f"pack {pack_id.hex()} of {stored_bytes} bytes and {entries} entries: a pack has 1 to {MAX_PACK_SIZE} "
            f"bytes and 1 to {MAX_ENTRIES} entries"
        )


def check_new_pages(pages: Sequence[NewPage]) -> None:
    """What write_pages refuses, raised as InvalidArgumentError before anything is written."""
    if len(pages) > PAGES_PER_WRITE:
        raise InvalidArgumentError(f"{len(pages)} pages to write at once; at most {PAGES_PER_WRITE}")
    if len({page.page_id for page in pages}) != len(pages):
        raise InvalidArgumentError("the same page twice in one write")
    total = 0
    for page in pages:
        _check_id(page.page_id, PAGE_ID_SIZE, "a page ID")
        _check_id(page.origin, PAGE_ID_SIZE, "a page's origin (a content digest)")
        check_page_body(page.page_id, page.body)
        if page.origin_segment < 0:
            raise InvalidArgumentError(f"page {page.page_id.hex()} has segment number {page.origin_segment}")
        total += len(page.body)
    if total > PAGE_WRITE_BYTES:
        raise InvalidArgumentError(f"{total} bytes of pages to write at once; at most {PAGE_WRITE_BYTES}")


def check_page_body(page_id: bytes, body: bytes) -> None:
    """What switch_page refuses, raised as InvalidArgumentError: a body no page can have."""
    if not 0 < len(body) <= MAX_PAGE_BYTES:
        raise InvalidArgumentError(f"page {page_id.hex()} is {len(body)} bytes; 1 to {MAX_PAGE_BYTES}")


def _check_id(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidArgumentError(f"{what} is {size} bytes, got {value!r:.80}")
    return value

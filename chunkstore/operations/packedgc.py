"""gc of a storage format 2 store: rounds of mark, doom, sweep and delete over the pack index.

docs/design/format-v2.md, "gc rounds and the round item" and "Safety argument". Contents count
their versions; pages and packs are not counted but marked: a page is live while a content names
it, a pack while a live page (or a content's inline page) names it. One gc at a time holds the
catalog's gc lock; writers take no lock, they check the round item in the transactions that
write their pages and commits (packedput.PackedWriter). A round:

    G1 mark     scan the contents, the pages and the packs: pages no content names, and packs no
                other page names, are candidates (a pack only once its writer's session is gone)
    G2          round (r, idle) -> (r+1, dooming)
    G3 doom     candidates -> DOOMED, each at the state and generation G1 read
    G4          round -> (r+1, sweeping)
    G5 sweep    scan again: a DOOMED page a content names, or a DOOMED pack a page that stays
                names, goes back; the others -> DELETING
    G6 delete   DELETING packs: object deleted, then item; DELETING pages: item; pack objects
                without an item (listed before the scan): deleted; once pages were deleted,
                the hooks naming a page that is gone
    G7          round -> (r+1, idle)

A gc that dies leaves the round in dooming or sweeping and its items DOOMED or DELETING; the next
gc takes the lock over and goes on from G4 (dooming) or G5 (sweeping), then runs a round of its
own: the dead round collects only what it had doomed, so garbage it had not reached (or that a
failed doom left PRESENT) would otherwise wait for one more gc.

Packs whose dead share reached a threshold, and small packs once there are enough of them, are
rewritten in G3 (operations/repack.py): their live records are copied to new packs, the pages
naming them switched, and the old packs doomed with the other candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chunkstore.backends.catalog import Catalog
from chunkstore.backends.packindex import GcRound, IndexState, PackIndex, PackRecord, PageRecord, Phase
from chunkstore.backends.packs import PackReader, pack_key
from chunkstore.core import pages
from chunkstore.core.batching import batched
from chunkstore.errors import CorruptObjectError, IntegrityError, NotFoundError
from chunkstore.operations import repack
from chunkstore.operations.context import StoreContext
from chunkstore.operations.packedcheck import ContentRecipe, pack_ids_of, pack_objects, read_recipe

# Items doomed, spared or moved to DELETING per call, and objects deleted between two reports of
# progress: the index writes these in transactions of up to 99 items.
BATCH = 990


@dataclass
class Garbage:
    """What a collection frees (or, for a dry run, would free): recipe pages no stored content
    names, packs no such page names, pack objects with no item (orphans)."""

    pages: int = 0
    page_bytes: int = 0  # catalog bytes: the pages' bodies
    packs: int = 0
    pack_bytes: int = 0
    pack_entries: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    hooks: int = 0
    # Repack: packs rewritten, their stored bytes, and their live records' bytes as stored again
    # (a dry run estimates these from the share of live entries).
    repacked: int = 0
    repack_read: int = 0
    repack_written: int = 0


@dataclass
class _Marks:
    """One scan of the catalog: the page and pack items, and which of them are named."""

    pages: list[PageRecord]
    packs: list[PackRecord]
    named_pages: set[bytes] = field(default_factory=set)  # by a content
    inline_packs: set[bytes] = field(default_factory=set)  # by a content's inline page
    inline_pages: dict[bytes, bytes] = field(default_factory=dict)  # content digest -> its inline page

    def named_packs(self, catalog: Catalog) -> set[bytes]:
        """The packs named by the pages the contents name, and by their inline pages."""
        return self.packs_named_by((page for page in self.pages if page.page_id in self.named_pages), catalog)

    def packs_named_by(self, kept_pages: Iterable[PageRecord], catalog: Catalog) -> set[bytes]:
        named = set(self.inline_packs)
        for page in kept_pages:
            try:
                named |= pack_ids_of(pages.parse_page(page.body))
            except CorruptObjectError as error:
                raise _unknown_references(catalog, page.origin, f"page {page.page_id.hex()}: {error}") from None
        return named


def _mark(catalog: Catalog) -> _Marks:
    """Scan the contents, then the pages and packs (each scan consistent). Contents first: a page
    or pack a content committed during the scan names was written before that commit, so the
    later scans see it. Raises IntegrityError if a recipe cannot be read: what it names is
    unknown, so nothing could be called garbage."""
    named_pages: set[bytes] = set()
    inline_packs: set[bytes] = set()
    inline_pages: dict[bytes, bytes] = {}
    for content in catalog.iter_contents():
        recipe = _recipe_of(catalog, content.digest)
        if recipe is None:
            continue  # removed since it was listed
        if recipe.inline_page is not None:
            try:
                inline_packs |= pack_ids_of(pages.parse_page(recipe.inline_page))
                inline_pages[content.digest] = recipe.inline_page
            except CorruptObjectError as error:
                raise _unknown_references(catalog, content.digest, error) from None
        named_pages.update(segment.page_id for segment in recipe.segments)
    index = catalog.pack_index
    return _Marks(list(index.iter_pages()), list(index.iter_packs()), named_pages, inline_packs, inline_pages)


def _recipe_of(catalog: Catalog, digest: bytes, *, again: bool = True) -> ContentRecipe | None:
    """The content's recipe, or None if it no longer exists. A content and its root pages are
    read one after the other: an rm between the two leaves a content whose pages are gone, so
    a recipe that does not read is read again once before it counts as damage."""
    try:
        return read_recipe(catalog, digest)
    except NotFoundError:
        return None
    except IntegrityError as error:
        if again:
            return _recipe_of(catalog, digest, again=False)
        raise _unknown_references(catalog, digest, error) from None


def _kept_pages(marks: _Marks) -> list[PageRecord]:
    return [page for page in marks.pages if page.page_id in marks.named_pages and page.state == IndexState.PRESENT]


def _repack_plan(marks: _Marks, max_repack: int | None) -> tuple[dict[bytes, set[int]], list[PackRecord]]:
    live = repack.live_entries([page.body for page in _kept_pages(marks)] + list(marks.inline_pages.values()))
    return live, repack.plan(marks.packs, live, max_repack)


def find_garbage(store: StoreContext, max_repack: int | None = None) -> Garbage:
    """The mark pass (G1) alone, deleting nothing: what gc would collect now.

    Pack objects are listed first: a pack's item is created before its object is uploaded, so an
    object the listing finds has an item the later scan sees, unless it is an orphan. A put
    running meanwhile has pages and packs its commit will name: until then they count here."""
    objects = pack_objects(store.blobs)
    marks = _mark(store.catalog)
    garbage = Garbage()
    for page in marks.pages:
        if page.page_id not in marks.named_pages and page.state == IndexState.PRESENT:
            garbage.pages += 1
            garbage.page_bytes += len(page.body)
    live_packs = marks.named_packs(store.catalog)
    for pack in marks.packs:
        if pack.pack_id not in live_packs and pack.state == IndexState.PRESENT:
            garbage.packs += 1
            garbage.pack_bytes += pack.stored_bytes
            garbage.pack_entries += pack.entries
    orphans = objects.keys() - {pack.pack_id for pack in marks.packs} - live_packs
    garbage.orphans = len(orphans)
    garbage.orphan_bytes = sum(objects[pack_id] for pack_id in orphans)
    live, planned = _repack_plan(marks, max_repack)
    for pack in planned:
        garbage.repacked += 1
        garbage.repack_read += pack.stored_bytes
        garbage.repack_written += repack.estimated_live_bytes(pack, live)
    return garbage


def collect(
    store: StoreContext,
    session: str,
    pool: ThreadPoolExecutor,
    on_progress: Callable[[Garbage], None] | None = None,
    max_repack: int | None = None,
) -> Garbage:
    """Finish the round a dead gc left, if any, then run one round, under the gc lock that session
    holds, repacking at most max_repack bytes of live records (None: no bound); return what they
    deleted and rewrote."""
    index = store.catalog.pack_index
    garbage = Garbage()
    gc_round = index.read_round()
    if gc_round.phase != Phase.IDLE:
        _finish_round(store, session, pool, gc_round, garbage, on_progress)
        gc_round = index.read_round()
    dooming, repacked = _doom(store, session, gc_round, max_repack)
    _finish_round(store, session, pool, dooming, garbage, on_progress)
    garbage.repacked, garbage.repack_read, garbage.repack_written = (
        repacked.packs,
        repacked.bytes_read,
        repacked.bytes_written,
    )
    return garbage


def _finish_round(
    store: StoreContext,
    session: str,
    pool: ThreadPoolExecutor,
    gc_round: GcRound,
    garbage: Garbage,
    on_progress: Callable[[Garbage], None] | None,
) -> None:
    """G4-G7 of a round in its dooming or sweeping phase; adds what it deleted to garbage."""
    index = store.catalog.pack_index
    if gc_round.phase == Phase.DOOMING:
        gc_round = index.advance_round(session, gc_round)
    _sweep_and_delete(store, pool, garbage, on_progress)
    index.advance_round(session, gc_round)


def _doom(
    store: StoreContext, session: str, idle: GcRound, max_repack: int | None
) -> tuple[GcRound, repack.RepackReport]:
    """G1-G3 with repack; returns the round, now dooming."""
    catalog = store.catalog
    index = catalog.pack_index
    alive = index.expire_sessions(session)
    marks = _mark(catalog)
    page_candidates = [
        page for page in marks.pages if page.state == IndexState.PRESENT and page.page_id not in marks.named_pages
    ]
    live_packs = marks.packs_named_by(
        (page for page in marks.pages if page.page_id in marks.named_pages or page.state != IndexState.PRESENT),
        catalog,
    )
    # A writer's pack is PRESENT before the pages naming it are written: while the writer lives,
    # it is not garbage (and once it has committed, its pages name it).
    pack_candidates = [
        pack
        for pack in marks.packs
        if pack.state in (IndexState.PRESENT, IndexState.PENDING)
        and pack.pack_id not in live_packs
        and pack.owner not in alive
    ]
    dooming = index.advance_round(session, idle)
    live, planned = _repack_plan(marks, max_repack)
    repacked = repack.repack(store, session, planned, live, _kept_pages(marks), marks.inline_pages)
    pack_candidates += [pack for pack in planned if pack.pack_id in repacked.retired]
    for page_batch in batched(page_candidates, BATCH):
        index.doom(dooming, page_batch)
    for pack_batch in batched(pack_candidates, BATCH):
        index.doom(dooming, pack_batch)
    return dooming, repacked


def _sweep_and_delete(
    store: StoreContext, pool: ThreadPoolExecutor, garbage: Garbage, on_progress: Callable[[Garbage], None] | None
) -> None:
    """G5 and G6, in the sweeping phase; adds what they deleted to garbage."""
    catalog = store.catalog
    index = catalog.pack_index
    objects = pack_objects(store.blobs)  # before the scan: see find_garbage
    marks = _mark(catalog)
    doomed_pages = [page for page in marks.pages if page.state == IndexState.DOOMED]
    spared_pages = [page for page in doomed_pages if page.page_id in marks.named_pages]
    dropped_pages = [page for page in doomed_pages if page.page_id not in marks.named_pages]
    dropped_ids = {page.page_id for page in dropped_pages}
    live_packs = marks.packs_named_by(
        (page for page in marks.pages if page.page_id not in dropped_ids and page.state != IndexState.DELETING),
        catalog,
    )
    doomed_packs = [pack for pack in marks.packs if pack.state == IndexState.DOOMED]
    for page_batch in batched(spared_pages, BATCH):
        index.spare(page_batch)
    for pack_batch in batched([pack for pack in doomed_packs if pack.pack_id in live_packs], BATCH):
        index.spare(pack_batch)
    # An item that changed since the scan (only gc changes DOOMED items) is left for the next round.
    deleting_pages = _start_deleting(index, dropped_pages)
    deleting_pages += [page for page in marks.pages if page.state == IndexState.DELETING]
    deleting_packs = _start_deleting(index, [pack for pack in doomed_packs if pack.pack_id not in live_packs])
    deleting_packs += [pack for pack in marks.packs if pack.state == IndexState.DELETING]

    for pack_batch in batched(deleting_packs, BATCH):
        list(pool.map(store.blobs.delete, (pack_key(pack.pack_id) for pack in pack_batch)))
        index.forget(pack_batch)
        garbage.packs += len(pack_batch)
        garbage.pack_bytes += sum(pack.stored_bytes for pack in pack_batch)
        garbage.pack_entries += sum(pack.entries for pack in pack_batch)
        if on_progress:
            on_progress(garbage)
    for page_batch in batched(deleting_pages, BATCH):
        index.forget(page_batch)
        garbage.pages += len(page_batch)
        garbage.page_bytes += sum(len(page.body) for page in page_batch)
    if deleting_pages:
        deleted = {page.page_id for page in deleting_pages}
        known = {page.page_id for page in marks.pages} - deleted
        garbage.hooks += _forget_stale_hooks(index, known, deleted)
    # Pack IDs are random and an item is created before its object is uploaded: an object listed
    # before the scan whose item the scan did not find belongs to a pack gc forgot (its writer,
    # taken for dead, lost the pack and names it nowhere), or to no pack at all. One that a page
    # names lost its item to damage: it is kept (verify reports it, verify --repair rebuilds it).
    orphans = sorted(objects.keys() - {pack.pack_id for pack in marks.packs} - live_packs)
    for pack_ids in batched(orphans, BATCH):
        list(pool.map(store.blobs.delete, map(pack_key, pack_ids)))
        garbage.orphans += len(pack_ids)
        garbage.orphan_bytes += sum(objects[pack_id] for pack_id in pack_ids)
        if on_progress:
            on_progress(garbage)


def _forget_stale_hooks(index: PackIndex, known: set[bytes], deleted: set[bytes]) -> int:
    """Drop the hooks that lead to a page that is gone; return how many. Hooks are written only
    after their page, so one that names a page neither deleted here nor known to the scan
    (written since, or gone before) is looked up before it is judged. A put that points a
    dropped hook at a page of its own meanwhile loses that hint: a hint only (the chunk is still
    found through its file's previous version, or stored again). One scan of the hooks, run
    only by a round that deleted pages: every hook that leads nowhere goes then, whichever
    round deleted its page."""
    stale = [
        chunk_id
        for chunk_id, page_id in index.iter_hooks()
        if page_id in deleted or (page_id not in known and index.get_page(page_id) is None)
    ]
    for chunk_batch in batched(stale, BATCH):
        index.forget_hooks(chunk_batch)
    return len(stale)


def rebuild_pack_items(store: StoreContext, session: str) -> list[bytes]:
    """Give back an item to each pack object that a stored content's pages name but the pack
    index lost (damage, or an edit of the catalog): its size and entries from the pack itself,
    whose table is read and checked; PRESENT, recorded by session. Returns the packs rebuilt.
    The caller holds the gc lock, so no round decides about these packs meanwhile."""
    index = store.catalog.pack_index
    objects = pack_objects(store.blobs)
    marks = _mark(store.catalog)
    lost = sorted((marks.named_packs(store.catalog) & objects.keys()) - {pack.pack_id for pack in marks.packs})
    with PackReader(store.blobs, store.packs) as reader:
        for pack_id in lost:
            entries = len(reader.read_table(pack_id, objects[pack_id]))
            index.pack_stored(index.create_pack(session, pack_id, objects[pack_id], entries))
    return lost


def _start_deleting(index: PackIndex, items: list) -> list:
    moved = []
    for batch in batched(items, BATCH):
        refused = {item.item_id for item in index.start_deleting(batch)}
        moved += [item for item in batch if item.item_id not in refused]
    return moved


def _unknown_references(catalog: Catalog, digest: bytes, error: object) -> IntegrityError:
    name = catalog.find_name_with_digest(digest)
    return IntegrityError(
        f"gc cannot tell what is unreferenced: the recipe of {name or 'content ' + digest.hex()} cannot be read "
        f"({error}); nothing was deleted; run `chunkstore verify` to list the damage"
    )

"""put in storage format 2: new chunks appended to packs, recipes cut into pages.

docs/design/format-v2.md, Protocols / Put. Each file's chunk sequence is cut into segments as it
comes (pages.Segmenter); each chunk is looked up in a bounded cache of chunk locations, and
one not found is compressed (and sealed) by the pool and appended to the open pack. When a
segment closes, its chunks' locations become the runs of its recipe page. A content of one
short segment keeps that page inline; any other keeps root pages naming its page items.

The cache holds what this put stored, the chunks of the name's previous version near the
position being read (its pages and their packs' tables are read as the put advances), and the
chunks of the pages that hooks lead to (the design's sparse index, "Memory bound of put"): a
sample of the chunk IDs (2**pages.HOOKS_PER_SEGMENT_BITS a segment) are hooks, and a new chunk that is a hook
is looked up in the catalog's hooks; the page it leads to, and the pages that follow it in the
content it was written for, are loaded into the cache. Chunks not found are held back, up to
HELD_BYTES, before they are encoded, so that a hook found a little later in the stream still
deduplicates the chunks before it. A new version of a file therefore stores what changed, under
its own name or another, without the put holding the store's chunk IDs in memory.

Write order, as in format 1, so that a crash leaves garbage at worst: packs are uploaded, made
durable and turned PRESENT (PackWriter.flush), then the new pages are written, then the versions
are committed; a committed content names only pages and packs that exist.

Against gc (the design's round protocol and safety argument): the writer reads the round item
at its start and again after each commit, before it looks at any page or pack the next batch
names; its pages and its commit are written with a check that the round still holds the value
they are written at. What was looked at after reading (r, idle) may be named at (r, idle) and at
(r+1, dooming); what was looked at during dooming, at that value. Anything else (gc sweeping, or a
round that moved further while the batch committed) has every page and pack the batch names read
again, consistently: each must be PRESENT (a page the batch has not written yet may be absent),
else the put fails with ConcurrentModificationError and commits nothing. When a check finds the
round moved, the writer reads it, checks its references as above, and writes again. When the
round moved between two batches, the cache is dropped: it was looked at under the old value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from concurrent.futures import Future

from chunkstore.backends.catalog import VersionRecord
from chunkstore.backends.packindex import (
    PAGE_WRITE_BYTES,
    PAGES_PER_WRITE,
    GcRound,
    IndexState,
    NewPage,
    PageRecord,
    Phase,
    RoundGuard,
)
from chunkstore.backends.packs import PackReader, PackWriter
from chunkstore.core import compression, pages
from chunkstore.core.packformat import PackEntry
from chunkstore.errors import (
    ConcurrentModificationError,
    IntegrityError,
    NotFoundError,
    RoundMovedError,
    StoreWriteError,
)
from chunkstore.operations.contentpages import root_entries
from chunkstore.operations.context import StoreContext
from chunkstore.operations.results import FileResult
from chunkstore.operations.writer import MAX_UPLOAD_BYTES_IN_FLIGHT, Writer

# Chunk locations the writer keeps (this put's chunks, the previous version's nearby ones):
# 300,000 take ~42 MB (docs/design/format-v2.md, Memory bound of put). A segment's chunks are
# at most 8,192 and each was touched since the segment opened, so none is evicted before its
# page is built.
CACHED_LOCATIONS = 300_000
# How far ahead of the bytes read the previous version's segments are loaded: an insertion or
# deletion of up to this much before a region still finds the region's old chunks.
PARENT_LOOKAHEAD_BYTES = 64 * 1024 * 1024
# Pack tables kept while loading a previous version's pages (one is ~1.4 MB of entries at 8,192
# chunks); consecutive segments mostly name the same few packs.
CACHED_TABLES = 8
# New chunks held back before they are encoded: a hook found within this many bytes after them
# still deduplicates them (hooks are ~2 MiB apart).
HELD_BYTES = 4 * 1024 * 1024
# A closed segment's held chunks up to this many bytes are encoded on the thread that waits for
# them, not by the pool (zstd -3 took ~140 us for 8 KiB, ~0.9 ms for 64 KiB here): a put of 8,625
# small files took 3.71-5.14 s this way against 4.51-5.97 s through the pool (3 runs each,
# alternating, load average ~4.3).
ENCODE_HERE_BYTES = 64 * 1024
# New chunks are encoded by the pool in batches of this many bytes (the last of a segment may be
# smaller): one task, one hand-off between threads and one zstd call (Compressor.compress_many)
# for ~30 chunks of 8 KiB rather than one each. A put of the 10 Django releases (406.9 MiB of new
# chunks) took 4.41-4.58 s chunk by chunk (6 CLI runs), 3.62-3.70 s in batches compressed chunk by
# chunk, 3.37-3.73 s with one zstd call a batch (7 CLI runs; docs/performance.md).
ENCODE_BATCH_BYTES = 256 * 1024
# Segments loaded after the page a hook leads to, in the content it was written for: the
# stream is likely to go on as that content did.
FOLLOWING_SEGMENTS = 4
# Pages whose chunks a hook has loaded, remembered so that the hooks of one region load them once.
FOLLOWED_PAGES = 4096
# Roots of the contents pages were followed in (a root of 4,096 segments is 164 KB).
CACHED_ROOTS = 4
# How often the gc round may move under one batch before the put gives up: gc moves it three
# times per round, so this is only reached while gc runs round after round.
ROUND_MOVES_PER_BATCH = 6


def hook_threshold(segments: pages.SegmentSpec) -> int:
    """A chunk is a hook when its ID's first 4 bytes, read as a big-endian number, are below this."""
    return 1 << (32 - max(0, segments.boundary_bits - pages.HOOKS_PER_SEGMENT_BITS))


class PackedWriter(Writer):
    """A format 2 put session: a pack writer, the chunk-location cache, and the pages of queued
    versions, written before their commit."""

    def __init__(self, store: StoreContext, *, workers: int | None = None, at_ns: int | None = None):
        super().__init__(store, workers=workers, at_ns=at_ns)
        if store.config.segments is None:
            raise StoreWriteError("the store's config has no segments section: it is not a format 2 store")
        self.segments = store.config.segments
        self.index = self.catalog.pack_index
        self.packs = PackWriter(store.blobs, store.packs, index=self.index, session=self.session)
        self._tables_reader = PackReader(store.blobs, store.packs)
        self._tables: OrderedDict[bytes, list[PackEntry]] = OrderedDict()
        self._locations: OrderedDict[bytes, pages.ChunkLocation] = OrderedDict()
        self._encoding: deque[tuple[_EncodeBatch, Future[list[bytes]]]] = deque()
        self._encoding_ids: set[bytes] = set()  # of the batches encoding and of the one filling
        self._encoding_bytes = 0
        self._filling = _EncodeBatch()
        self._held: deque[tuple[bytes, bytes, FileResult]] = deque()
        self._held_ids: set[bytes] = set()
        self._held_bytes = 0
        self._hook_below = hook_threshold(self.segments)
        self._new_hooks: set[bytes] = set()  # hooks this put stores, until their page is known
        self._hooks_to_write: dict[bytes, bytes] = {}  # chunk ID -> page ID
        self._followed: OrderedDict[bytes, None] = OrderedDict()
        self._roots: OrderedDict[bytes, list[pages.RootEntry] | None] = OrderedDict()
        # Pages of the files queued for commit: per file, its digest and (page ID, body, segment number).
        self._fresh_pages: list[tuple[FileResult, bytes, list[tuple[bytes, bytes, int]]]] = []
        # The gc round the batch's references are checked at, and what the batch names.
        self._round_lock = threading.Lock()
        self._round = self.index.read_round()  # the value page writes and commits check
        self._round_moves = 0
        # The value at which what the batch names is known safe to name: the round read before
        # the batch looked at anything, or one at which it was all read again (_check_references).
        self._batch_round = self._round
        self._checked_at = self._round
        self._checked_by_reading = False
        self._written_page_ids: set[bytes] = set()
        self._named_pages: set[bytes] = set()
        self._named_packs: set[bytes] = set()
        self._new_page_ids: set[bytes] = set()
        # New chunks' plaintext, collected until there is enough to train the store's dictionary
        # on, where its config asks for one and none is stored yet (None: not training).
        self._training: list[bytes] | None = [] if store.use_stored_dictionary() else None
        self._training_bytes = 0

    def _new_recipe(self, result: FileResult, parent: VersionRecord | None) -> _PackedRecipe:
        return _PackedRecipe(self, result, self._parent_segments(parent))

    def _abandon(self) -> None:
        self._held.clear()
        self._filling = _EncodeBatch()
        for _, records in self._encoding:
            records.cancel()
        self._encoding.clear()
        try:
            self.packs.close()
        finally:
            self._tables_reader.close()

    def discard(self, result: FileResult) -> None:
        self._fresh_pages = [item for item in self._fresh_pages if item[0] is not result]
        # Chunks of the file still held back are not stored at all.
        self._held = deque(item for item in self._held if item[2] is not result)
        self._held_ids = {chunk_id for chunk_id, _, _ in self._held}
        self._held_bytes = sum(len(chunk) for _, chunk, _ in self._held)

    # ---- chunks ----------------------------------------------------------------------

    def store_chunk(self, chunk_id: bytes, chunk: bytes, result: FileResult) -> None:
        """See that the chunk is stored: found in the cache, or held back a while, then encoded by
        the pool and appended to the open pack in the order the chunks came (so a new segment's
        chunks form runs)."""
        if chunk_id in self._locations:
            self._locations.move_to_end(chunk_id)
            return
        if chunk_id in self._held_ids or chunk_id in self._encoding_ids:
            return
        if int.from_bytes(chunk_id[:4], "big") < self._hook_below:
            self._follow_hook(chunk_id)
            if chunk_id in self._locations:
                return
            self._new_hooks.add(chunk_id)
        self._held.append((chunk_id, chunk, result))
        self._held_ids.add(chunk_id)
        self._held_bytes += len(chunk)
        self._release_held(HELD_BYTES)

    def _release_held(self, keep_bytes: int) -> None:
        """Encode held chunks, oldest first, until at most keep_bytes are held; a chunk a hook has
        found since is stored already."""
        while self._held and self._held_bytes > keep_bytes:
            chunk_id, chunk, result = self._held.popleft()
            self._held_ids.discard(chunk_id)
            self._held_bytes -= len(chunk)
            if chunk_id in self._locations:
                self._locations.move_to_end(chunk_id)
                continue
            if self._training is not None:
                self._train_on(self._training, chunk)
            self._filling.add(chunk_id, chunk, result)
            self._encoding_ids.add(chunk_id)
            result.new_bytes += len(chunk)
            if self._filling.size >= ENCODE_BATCH_BYTES:
                self._encode_filling()

    def _encode_filling(self, *, here: bool = False) -> None:
        """Hand the filling batch to the pool (here: encode it on this thread), in order after
        the batches before it, once the bound on what is in flight allows."""
        batch, self._filling = self._filling, _EncodeBatch()
        if not batch.chunk_ids:
            return
        self._wait_encoding(MAX_UPLOAD_BYTES_IN_FLIGHT - batch.size, self._max_uploads_in_flight - 1)
        if here:
            records: Future[list[bytes]] = Future()
            records.set_result(self.store.codec.encode_many(batch.chunk_ids, batch.chunks))
        else:
            records = self.pool.submit(self.store.codec.encode_many, batch.chunk_ids, batch.chunks)
        batch.chunks = []  # the pool's call holds them until it has encoded them
        self._encoding.append((batch, records))
        self._encoding_bytes += batch.size

    def _train_on(self, training: list[bytes], chunk: bytes) -> None:
        """Collect a new chunk; once there are the config's training bytes, train the dictionary,
        store it and compress with it from then on. It is stored before any record that names it
        is encoded, so before any pack that holds one is uploaded (format-v2.md, Dictionary object)."""
        training.append(chunk)
        self._training_bytes += len(chunk)
        spec = self.store.config.compression
        if self._training_bytes < spec.training_bytes:
            return
        self._training = None
        data = compression.train_dictionary(spec.dictionary_size, training, spec.level)
        if data is None:
            return  # nothing to train on (chunks that do not repeat): plain zstd, as without one
        self.store.codec.compressor.use_dictionary(self.store.dictionaries.store(data), data)

    def _wait_encoding(self, max_bytes: int, max_count: int = 0) -> None:
        while self._encoding and (self._encoding_bytes > max_bytes or len(self._encoding) > max_count):
            batch, records = self._encoding.popleft()
            self._encoding_bytes -= batch.size
            self._encoding_ids.difference_update(batch.chunk_ids)
            for chunk_id, record, result in zip(batch.chunk_ids, records.result(), batch.results, strict=True):
                try:
                    location = self.packs.add(chunk_id, record)
                except StoreWriteError as error:
                    raise StoreWriteError(f"storing a chunk of {result.name} failed: {error}") from error
                result.stored_new_bytes += len(record)
                self._remember(chunk_id, location)

    def _encode_all(self) -> None:
        """Encode everything released, and append it to the open pack. A small filling batch
        with nothing else in flight is encoded on this thread, which waits for it anyway."""
        self._encode_filling(here=not self._encoding and self._filling.size <= ENCODE_HERE_BYTES)
        self._wait_encoding(0)

    def _remember(self, chunk_id: bytes, location: pages.ChunkLocation) -> None:
        self._locations[chunk_id] = location
        self._locations.move_to_end(chunk_id)
        while len(self._locations) > CACHED_LOCATIONS:
            self._locations.popitem(last=False)

    def page_of(self, segment: pages.Segment) -> bytes:
        """The recipe page of a closed segment: the runs its chunks' locations form."""
        # The page waits for its chunks' locations, so a few small chunks are encoded here:
        # handing them to the pool only to wait for them cost two thread switches a file.
        self._release_held(0)
        self._encode_all()
        locations = []
        for chunk_id in segment.chunk_ids:
            if chunk_id in self._new_hooks:
                self._new_hooks.discard(chunk_id)
                self._hooks_to_write[chunk_id] = segment.page_id
            location = self._locations.get(chunk_id)
            if location is None:
                # Cannot happen while CACHED_LOCATIONS exceeds a segment's chunks (see there).
                raise StoreWriteError(f"chunk {chunk_id.hex()} of an open segment left the location cache")
            locations.append(location)
        return pages.build_page(pages.runs_of(locations))

    # ---- the previous version ----------------------------------------------------------

    def _parent_segments(self, parent: VersionRecord | None) -> _ParentSegments | None:
        """The previous version's segments, to be loaded into the cache as the put advances.
        It is only a hint: a previous version that cannot be read stores the chunks again
        (verify reports its damage)."""
        if parent is None or parent.deleted:
            return None
        try:
            recipe_pages = list(self.catalog.recipe_pages(parent.digest))
            entries = root_entries(recipe_pages)
            if entries is None:
                if recipe_pages:
                    self._load_page(None, recipe_pages[0])
                return None
        except (IntegrityError, NotFoundError):
            return None
        return _ParentSegments(self, entries)

    def load_segment(self, page_id: bytes) -> None:
        # Consistent: repack switches a page to new packs and then deletes the old ones, and a
        # stale page would lead to them.
        record = self.index.get_page(page_id)
        if record is not None:
            self._load_page(page_id, record.body)

    # ---- hooks --------------------------------------------------------------------------

    def _follow_hook(self, chunk_id: bytes) -> None:
        """Load the page a hook leads to and the segments after it in the content it was written for."""
        page_id = self.index.get_hooks([chunk_id]).get(chunk_id)
        if page_id is None:
            return
        record = self._followed_page(page_id)
        if record is None:
            return
        entries = self._root_of(record.origin)
        number = record.origin_segment
        # Only where the root agrees that the page is that segment of it: the origin is a hint too.
        if number >= len(entries) or entries[number].page_id != page_id:
            return
        for entry in entries[number + 1 : number + 1 + FOLLOWING_SEGMENTS]:
            self._followed_page(entry.page_id)

    def _followed_page(self, page_id: bytes) -> PageRecord | None:
        """Load a page into the cache once, if it is PRESENT. Read consistently: a hook is a hint,
        and may lead to a page gc deleted before this put read the round (the design's Put, step 2)."""
        if page_id in self._followed:
            self._followed.move_to_end(page_id)
            return None
        self._followed[page_id] = None
        while len(self._followed) > FOLLOWED_PAGES:
            self._followed.popitem(last=False)
        record = self.index.get_page(page_id)
        if record is None or record.state != IndexState.PRESENT:
            return None
        self._load_page(page_id, record.body)
        return record

    def _root_of(self, digest: bytes) -> list[pages.RootEntry]:
        if digest not in self._roots:
            try:
                self._roots[digest] = root_entries(list(self.catalog.recipe_pages(digest)))
            except (IntegrityError, NotFoundError):
                self._roots[digest] = None
            while len(self._roots) > CACHED_ROOTS:
                self._roots.popitem(last=False)
        self._roots.move_to_end(digest)
        return self._roots[digest] or []

    def _load_page(self, page_id: bytes | None, body: bytes) -> None:
        try:
            page = pages.parse_page(body)
            # Each pack once: a page may name more packs than CACHED_TABLES, in turns.
            tables = {pack_id: self._table(pack_id) for pack_id in dict.fromkeys(run.pack_id for run in page.runs)}
            entries = iter(pages.resolve_page(page_id, page, tables, self.store.chunk_id_key))
        except IntegrityError:
            return
        for run in page.runs:
            for number in range(run.first_entry, run.end_entry):
                entry = next(entries)
                if entry.chunk_id not in self._locations:
                    self._remember(entry.chunk_id, pages.ChunkLocation(run.pack_id, number, entry.plaintext_length))

    def _table(self, pack_id: bytes) -> list[PackEntry]:
        table = self._tables.get(pack_id)
        if table is None:
            stored = self.index.get_packs([pack_id]).get(pack_id)
            table = self._tables_reader.read_table(pack_id, stored.stored_bytes if stored else None)
            self._tables[pack_id] = table
            while len(self._tables) > CACHED_TABLES:
                self._tables.popitem(last=False)
        self._tables.move_to_end(pack_id)
        return table

    # ---- commit ------------------------------------------------------------------------

    def queue_pages(self, result: FileResult, digest: bytes, fresh: list[tuple[bytes, bytes, int]]) -> None:
        """Pages to write before the file's version is committed; digest is their origin."""
        self._fresh_pages.append((result, digest, fresh))

    def _make_durable(self) -> None:
        self._encode_all()
        self.packs.flush()
        queued, self._fresh_pages = self._fresh_pages, []
        new_pages: dict[bytes, NewPage] = {}
        for _, digest, fresh in queued:
            for page_id, body, segment_number in fresh:
                new_pages.setdefault(page_id, NewPage(page_id, body, digest, segment_number))
        self._name_references(new_pages.values())
        self._check_references(self._round)
        self._write_pages(list(new_pages.values()))
        # Hints, written after their pages so that one never leads to a page not yet written; a
        # content kept inline has no page item to lead to.
        hooks = {chunk_id: page_id for chunk_id, page_id in self._hooks_to_write.items() if page_id in new_pages}
        self._hooks_to_write = {}
        if hooks:
            self.index.put_hooks(hooks)

    def _name_references(self, new_pages: Iterable[NewPage]) -> None:
        """What the queued versions name: the pages of their roots, the packs of their inline
        pages and of the new pages."""
        self._named_pages.clear()
        self._named_packs.clear()
        self._new_page_ids.clear()
        self._written_page_ids.clear()
        # Each page parsed once: the versions of one content (duplicates of a small file, the
        # same file under the names of many trees) share its inline page.
        bodies: set[bytes] = set()
        for pending in self._pending:
            recipe_pages = pending.version.pages
            entries = root_entries(recipe_pages)
            if entries is not None:
                self._named_pages.update(entry.page_id for entry in entries)
            elif recipe_pages:
                bodies.add(recipe_pages[0])
        for page in new_pages:
            self._new_page_ids.add(page.page_id)
            bodies.add(page.body)
        for body in bodies:
            self._named_packs.update(run.pack_id for run in pages.parse_page(body).runs)

    def _check_references(self, gc_round: GcRound) -> None:
        """Make sure what the batch names may be named in writes that check gc_round.

        What was looked at after the round read (r, idle) stays safe at that value (nothing is
        doomed before the round moves) and at (r+1, dooming) (a commit checked at that value lands
        before the sweep, which then sees it); what was looked at at (r, dooming) stays safe at
        that value. Anything else (the sweeping phase, a round that moved further) needs every
        page and pack the batch names read again (docs/design/format-v2.md, Safety argument)."""
        checked = self._checked_at
        if gc_round == checked and (self._checked_by_reading or checked.phase != Phase.SWEEPING):
            return
        if checked.phase == Phase.IDLE and (gc_round.number, gc_round.phase) == checked.following():
            return
        self._read_references_again()
        self._checked_at, self._checked_by_reading = gc_round, True

    def _read_references_again(self) -> None:
        """Read every page and pack the batch names, consistently: each must be PRESENT, else
        ConcurrentModificationError (nothing of the batch is committed)."""
        gone = [
            page_id
            for page_id, record in zip(
                self._named_pages, self.pool.map(self.index.get_page, self._named_pages), strict=True
            )
            # A page the batch is to write may not exist yet; one it wrote must, and one that
            # exists in another state stays so (a write leaves an existing page as it is).
            if (
                record.state != IndexState.PRESENT
                if record
                else page_id not in self._new_page_ids or page_id in self._written_page_ids
            )
        ]
        packs = self.index.get_packs(self._named_packs)
        gone += [
            pack_id
            for pack_id in self._named_packs
            if pack_id not in packs or packs[pack_id].state != IndexState.PRESENT
        ]
        if gone:
            raise ConcurrentModificationError(
                f"a concurrent gc collected {len(gone)} recipe page(s) or pack(s) this put deduplicated against "
                f"(first {gone[0].hex()}); nothing was committed, put again (if no gc is running, one that stopped "
                "left its round unfinished: run `chunkstore gc` first)"
            )

    # RoundGuard, for the catalog's commit and for the writes of pages.

    def current(self) -> GcRound:
        with self._round_lock:
            return self._round

    def moved(self, seen: GcRound) -> GcRound:
        with self._round_lock:
            if self._round == seen:
                self._round_moves += 1
                if self._round_moves > ROUND_MOVES_PER_BATCH:
                    raise ConcurrentModificationError(
                        f"the gc round moved {self._round_moves} times while this put committed one batch; "
                        "nothing more was committed, put again"
                    )
                gc_round = self.index.read_round()
                self._check_references(gc_round)
                self._round = gc_round
            return self._round

    def _round_guard(self) -> RoundGuard:
        return self

    def _next_batch(self) -> None:
        gc_round = self.index.read_round()
        with self._round_lock:
            if gc_round != self._batch_round:
                # The cache's locations, tables and pages were looked at under an older round:
                # what they name may have been collected since.
                self._locations.clear()
                self._tables.clear()
                self._followed.clear()
                self._roots.clear()
            self._round = self._batch_round = self._checked_at = gc_round
            self._checked_by_reading = False
            self._round_moves = 0

    def _write_pages(self, new_pages: list[NewPage]) -> None:
        """Write pages in transactions of at most PAGES_PER_WRITE pages and PAGE_WRITE_BYTES."""
        batch: list[NewPage] = []
        batch_bytes = 0
        for page in new_pages:
            if batch and (len(batch) == PAGES_PER_WRITE or batch_bytes + len(page.body) > PAGE_WRITE_BYTES):
                self._write_page_batch(batch)
                batch, batch_bytes = [], 0
            batch.append(page)
            batch_bytes += len(page.body)
        if batch:
            self._write_page_batch(batch)

    def _write_page_batch(self, batch: list[NewPage]) -> None:
        while True:
            seen = self.current()
            try:
                self.index.write_pages(seen, batch)
                break
            except RoundMovedError:
                self.moved(seen)
        self._written_page_ids.update(page.page_id for page in batch)


class _ParentSegments:
    """The previous version's segments, loaded into the writer's cache as the put advances."""

    def __init__(self, writer: PackedWriter, entries: list[pages.RootEntry]):
        self._writer = writer
        self._entries = entries
        self.page_ids = {entry.page_id for entry in entries}
        self._next = 0
        self._next_start = 0

    def advance(self, position: int) -> None:
        """Load the segments that start within PARENT_LOOKAHEAD_BYTES of position."""
        while self._next < len(self._entries) and self._next_start <= position + PARENT_LOOKAHEAD_BYTES:
            entry = self._entries[self._next]
            self._writer.load_segment(entry.page_id)
            self._next_start += entry.plaintext_bytes
            self._next += 1


class _PackedRecipe:
    """A format 2 recipe as the file's chunks come: segments, their pages, the root."""

    def __init__(self, writer: PackedWriter, result: FileResult, parent: _ParentSegments | None):
        self._writer = writer
        self._result = result
        self._parent = parent
        self._segmenter = pages.Segmenter(writer.segments, writer.store.chunk_id_key)
        self._root = pages.RootBuilder()
        self._root_pages: list[bytes] = []
        # (page ID, body, segment number) of the pages the catalog may not hold yet; the first
        # segment's page is kept too, as it is the page of a content that keeps it inline.
        self._fresh: list[tuple[bytes, bytes, int]] = []
        self._first_page = b""
        self._segment_count = 0
        self._chunk_count = 0
        self._position = 0
        if parent is not None:
            parent.advance(0)

    def add(self, chunk_id: bytes, chunk: bytes) -> None:
        self._chunk_count += 1
        self._position += len(chunk)
        if self._parent is not None:
            self._parent.advance(self._position)
        self._writer.store_chunk(chunk_id, chunk, self._result)
        segment = self._segmenter.add(chunk_id, len(chunk))
        if segment is not None:
            self._close(segment)

    def _close(self, segment: pages.Segment) -> None:
        page = self._writer.page_of(segment)
        if self._segment_count == 0:
            self._first_page = page
        if self._parent is None or segment.page_id not in self._parent.page_ids:
            self._fresh.append((segment.page_id, page, self._segment_count))
        self._segment_count += 1
        root_page = self._root.add(segment.root_entry())
        if root_page is not None:
            self._root_pages.append(root_page)

    def finish(self, digest: bytes) -> tuple[int, list[bytes]]:
        last = self._segmenter.finish()
        if last is not None:
            self._close(last)
        if self._segment_count == 0:
            return 0, []
        if pages.keeps_page_inline(self._segment_count, self._first_page):
            return self._chunk_count, [self._first_page]
        tail = self._root.finish()
        if tail is not None:
            self._root_pages.append(tail)
        self._writer.queue_pages(self._result, digest, self._fresh)
        return self._chunk_count, self._root_pages


class _EncodeBatch:
    """New chunks encoded together by one task of the pool, appended to the pack in their order."""

    def __init__(self) -> None:
        self.chunk_ids: list[bytes] = []
        self.chunks: list[bytes] = []
        self.results: list[FileResult] = []
        self.size = 0

    def add(self, chunk_id: bytes, chunk: bytes, result: FileResult) -> None:
        self.chunk_ids.append(chunk_id)
        self.chunks.append(chunk)
        self.results.append(result)
        self.size += len(chunk)

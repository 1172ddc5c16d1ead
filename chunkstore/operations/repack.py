"""Repack, in the dooming phase of a gc round (docs/design/format-v2.md, Repack).

A pack goes whole or not at all: one whose chunks are partly dead keeps its dead bytes until
repack copies its live records into new packs and switches the pages naming it to them. Then no
page read in the round's mark names the old pack any more, and it is doomed with the round's
other candidates; a page written since the mark that names it (a put that deduplicated against
one of its chunks) makes the sweep give it back, and it stays, with its dead share, for a later
round. Page IDs hash chunk IDs, not locations, so a switch changes no content.

Which packs: those whose dead share (by entries) is at least REPACK_DEAD_SHARE, and, once
the packs under SMALL_PACK_BYTES add up to that much, all of those (small writers leave a pack a
put: one web upload, one Lambda invocation), most bytes reclaimed per byte rewritten first, until
max_bytes of live records are rewritten. Live records are read with every check a restore makes
(decoded, re-hashed), encoded again and appended to new packs by gc's own pack writer, which
records them PENDING then PRESENT like a put's; pages are switched only after those packs are
PRESENT. Packs are repacked a group at a time, so what is held is bounded by the group, not by
the repack.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from chunkstore.backends.packindex import IndexState, PackRecord, PageRecord
from chunkstore.backends.packs import ChunkLocation, PackReader, PackWriter
from chunkstore.core import pages
from chunkstore.operations.context import StoreContext
from chunkstore.operations.packedcheck import SMALL_PACK_BYTES, pack_ids_of

# The dead share from which a pack is rewritten (the design's threshold): rewriting a pack
# that is 30% dead reads 1.43 bytes per byte kept.
REPACK_DEAD_SHARE = 0.3
# Packs copied before their pages are switched: holds at most this many packs' live entries
# (8,192 each) in memory.
PACKS_PER_GROUP = 16


@dataclass
class RepackReport:
    packs: int = 0  # packs rewritten
    bytes_read: int = 0  # their stored bytes
    bytes_written: int = 0  # the live records' bytes as stored again
    retired: set[bytes] = field(default_factory=set)  # old packs no page switched away from them names


def live_entries(bodies: Iterable[bytes]) -> dict[bytes, set[int]]:
    """Per pack, the entries the pages (their bytes) select."""
    live: dict[bytes, set[int]] = defaultdict(set)
    for body in bodies:
        for run in pages.parse_page(body).runs:
            live[run.pack_id].update(range(run.first_entry, run.end_entry))
    return live


def estimated_live_bytes(pack: PackRecord, live: dict[bytes, set[int]]) -> int:
    """The stored bytes of a pack's live records, estimated from its share of live entries."""
    return round(pack.stored_bytes * len(live[pack.pack_id]) / pack.entries)


def plan(packs: Iterable[PackRecord], live: dict[bytes, set[int]], max_bytes: int | None) -> list[PackRecord]:
    """The PRESENT packs to rewrite, in order, within max_bytes of estimated live bytes (None: no bound)."""
    named = [pack for pack in packs if pack.state == IndexState.PRESENT and live.get(pack.pack_id)]

    def live_share(pack: PackRecord) -> float:
        return len(live[pack.pack_id]) / pack.entries

    chosen = [pack for pack in named if 1 - live_share(pack) >= REPACK_DEAD_SHARE]
    small = [
        pack for pack in named if pack.stored_bytes < SMALL_PACK_BYTES and 1 - live_share(pack) < REPACK_DEAD_SHARE
    ]
    if sum(pack.stored_bytes for pack in small) >= SMALL_PACK_BYTES:
        chosen += small
    chosen.sort(key=lambda pack: (1 - live_share(pack)) / live_share(pack), reverse=True)
    if max_bytes is None:
        return chosen
    planned, budget = [], max_bytes
    for pack in chosen:
        estimate = estimated_live_bytes(pack, live)
        if estimate > budget:
            continue
        planned.append(pack)
        budget -= estimate
    return planned


def repack(
    store: StoreContext,
    session: str,
    planned: list[PackRecord],
    live: dict[bytes, set[int]],
    kept_pages: list[PageRecord],
    inline_pages: dict[bytes, bytes],
) -> RepackReport:
    """Rewrite the planned packs and switch kept_pages and inline_pages (content digest -> page
    bytes) away from them; the report's retired packs are named by none of those any more."""
    report = RepackReport()
    if planned:
        # Records are compressed again, with the store's dictionary if it has one (repack never
        # trains): one LIST of dicts/ a gc that repacks, not one a group.
        store.use_stored_dictionary()
    index = store.catalog.pack_index
    current = {page.page_id: page for page in kept_pages}
    inline = dict(inline_pages)
    with PackReader(store.blobs, store.packs) as reader:
        for start in range(0, len(planned), PACKS_PER_GROUP):
            group = planned[start : start + PACKS_PER_GROUP]
            moved = _copy(store, session, reader, group, live, report)
            group_ids = {pack.pack_id for pack in group}
            still_named: set[bytes] = set()
            for page_id, page in list(current.items()):
                body = _switched(page.body, moved, group_ids)
                if body is None:
                    continue
                switched = index.switch_page(page, body)
                if switched is None:  # it changed since the mark: leave its packs
                    still_named |= pack_ids_of(pages.parse_page(page.body)) & group_ids
                    del current[page_id]
                else:
                    current[page_id] = switched
            for digest, old in list(inline.items()):
                body = _switched(old, moved, group_ids)
                if body is None:
                    continue
                if store.catalog.replace_inline_page(digest, old, body):
                    inline[digest] = body
                else:
                    still_named |= pack_ids_of(pages.parse_page(old)) & group_ids
                    del inline[digest]
            for pack in group:
                if pack.pack_id not in still_named:
                    report.retired.add(pack.pack_id)
    return report


def _copy(
    store: StoreContext,
    session: str,
    reader: PackReader,
    group: list[PackRecord],
    live: dict[bytes, set[int]],
    report: RepackReport,
) -> dict[tuple[bytes, int], pages.ChunkLocation]:
    """Copy the group's live records into new packs, made durable and PRESENT; where each went."""
    moved: dict[tuple[bytes, int], pages.ChunkLocation] = {}
    # A chunk stored in two of the group's packs (a put that missed the first) is copied once.
    copied: dict[bytes, pages.ChunkLocation] = {}
    with PackWriter(store.blobs, store.packs, index=store.catalog.pack_index, session=session) as writer:
        for pack in group:
            table = reader.read_table(pack.pack_id, pack.stored_bytes)
            numbers = sorted(live[pack.pack_id])
            locations = [ChunkLocation(pack.pack_id, table[number], pack.stored_bytes) for number in numbers]
            for number, (location, data) in zip(numbers, reader.read_chunks(locations), strict=True):
                chunk_id = location.entry.chunk_id
                if chunk_id not in copied:
                    record = store.codec.encode(chunk_id, data)
                    copied[chunk_id] = writer.add(chunk_id, record)
                    report.bytes_written += len(record)
                moved[(pack.pack_id, number)] = copied[chunk_id]
            report.packs += 1
            report.bytes_read += pack.stored_bytes
    return moved


def _switched(body: bytes, moved: dict[tuple[bytes, int], pages.ChunkLocation], packs: set[bytes]) -> bytes | None:
    """The page's bytes with the runs in packs moved to where their entries went; None if it
    names none of packs."""
    page = pages.parse_page(body)
    if not any(run.pack_id in packs for run in page.runs):
        return None
    runs: list[pages.Run] = []
    for run in page.runs:
        if run.pack_id in packs:
            runs += pages.runs_of(moved[(run.pack_id, entry)] for entry in range(run.first_entry, run.end_entry))
        else:
            runs.append(run)
    return pages.build_page(runs)

"""rm, gc, verify and stats."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from chunkstore.backends.catalog import Catalog, ChunkState, VersionRecord
from chunkstore.backends.dictionaries import DICTIONARY_KEY_PREFIX
from chunkstore.core import recipes
from chunkstore.core.batching import batched
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_id_from_key, chunk_key
from chunkstore.core.names import normalize_name
from chunkstore.errors import (
    ChunkstoreError,
    ConcurrentModificationError,
    IntegrityError,
    InvalidArgumentError,
    NameNotFoundError,
    NotFoundError,
)
from chunkstore.operations import packedcheck, packedgc
from chunkstore.operations.context import StoreContext
from chunkstore.operations.read import read_chunk
from chunkstore.operations.verifyreport import Problem, VerifyReport

# gc claims and deletes this many chunks per catalog transaction: large enough to
# amortise the transaction, small enough that a put waiting on one of them waits briefly.
GC_BATCH = 1000


# ---- rm ------------------------------------------------------------------------------


def remove(
    store: StoreContext, names: Iterable[str], *, version: int | None = None, recursive: bool = False
) -> list[VersionRecord]:
    """Remove versions. Their chunks are freed by the next gc, once nothing references them."""
    selections: list[tuple[str, int | None]] = []
    for raw in names:
        name = normalize_name(raw)
        if recursive:
            if version is not None:
                raise InvalidArgumentError("--version cannot be combined with --recursive")
            # Names deleted by put --sync too: their earlier versions still hold chunks.
            below = sorted({record.name for record in store.catalog.list_versions(name, deleted=True)})
            if not below:
                raise NameNotFoundError(f"no stored file under {name!r}")
            selections.extend((each, None) for each in below)
        else:
            try:
                store.catalog.get_version(name)
            except NameNotFoundError:
                listed = {record.name for record in store.catalog.list_versions(name, deleted=True)}
                if name not in listed:  # else it was deleted by put --sync, and rm removes its history
                    if listed:
                        raise InvalidArgumentError(
                            f"{name!r} is a folder; use --recursive to remove everything under it"
                        ) from None
                    raise
            selections.append((name, version))
    return store.catalog.remove_versions(selections)


# ---- gc ------------------------------------------------------------------------------


@dataclass
class GcReport:
    dry_run: bool
    chunks_deleted: int = 0
    bytes_freed: int = 0
    orphans_deleted: int = 0
    temporaries_removed: int = 0
    # Storage format 2 only (None in a format 1 store): the packs and recipe pages collected,
    # and the catalog bytes of those pages (bytes_freed is what the blob store gives back).
    packs_deleted: int | None = None
    pages_deleted: int | None = None
    page_bytes_freed: int | None = None
    hooks_deleted: int | None = None  # the dedup hints that led to deleted pages
    # Repack (format 2): packs rewritten, the stored bytes read from them and written again
    # (their live records; a dry run estimates it). bytes_freed counts the old packs' bytes.
    packs_repacked: int | None = None
    repack_bytes_read: int | None = None
    repack_bytes_written: int | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}


def gc(
    store: StoreContext,
    *,
    dry_run: bool = False,
    on_progress: Callable[[GcReport], None] | None = None,
    max_repack: int | None = None,
) -> GcReport:
    """Delete the objects of chunks no version references any more.

    Safe against puts running at the same time: see the protocol in catalog/__init__.py.
    Refuses (IntegrityError, nothing deleted) while a chunk counted as unreferenced is still
    in a stored recipe: its count is wrong, and the count is all collection looks at."""
    if store.storage_format == 2:
        return _packed_gc(store, dry_run, on_progress, max_repack)
    report = GcReport(dry_run)
    catalog = store.catalog
    if dry_run:
        _refuse_live_chunks_counted_unreferenced(store)
        for chunk in catalog.iter_chunks():
            if chunk.refcount == 0:
                report.chunks_deleted += 1
                report.bytes_freed += chunk.stored_size
        return report
    with holding_gc_lock(catalog, "gc") as session:
        # Under the lock: no other gc marks chunks while this one looks at the counts.
        _refuse_live_chunks_counted_unreferenced(store)
        report.temporaries_removed = store.blobs.remove_stale_temporaries(catalog.lease_seconds)
        with ThreadPoolExecutor(max(8, store.workers), thread_name_prefix="chunkstore-gc") as pool:
            while True:
                candidates = catalog.collect_candidates(session, GC_BATCH)
                if not candidates:
                    break
                ids = [chunk.chunk_id for chunk in candidates]
                list(pool.map(store.blobs.delete, map(chunk_key, ids)))
                catalog.forget_chunks(session, ids)
                report.chunks_deleted += len(ids)
                report.bytes_freed += sum(chunk.stored_size for chunk in candidates)
                if on_progress:
                    on_progress(report)
            for batch in batched(store.blobs.list(CHUNK_KEY_PREFIX), GC_BATCH):
                sizes = {}
                for info in batch:
                    chunk_id = chunk_id_from_key(info.key)
                    if chunk_id is not None:
                        sizes[chunk_id] = info.size
                known = catalog.get_chunks(sizes)
                orphans = catalog.claim_orphans(session, [chunk_id for chunk_id in sizes if chunk_id not in known])
                if orphans:
                    list(pool.map(store.blobs.delete, map(chunk_key, orphans)))
                    catalog.forget_chunks(session, orphans)
                    report.orphans_deleted += len(orphans)
                    report.bytes_freed += sum(sizes[chunk_id] for chunk_id in orphans)
    return report


@contextmanager
def holding_gc_lock(catalog: Catalog, kind: str) -> Iterator[str]:
    """A session of kind that holds the catalog's gc lock for the block; released (and the session
    closed) however the block ends."""
    session = catalog.open_session(kind)
    try:
        catalog.acquire_gc_lock(session)
        yield session
    finally:
        try:
            catalog.release_gc_lock(session)
        finally:
            # Even when releasing fails: a session left open would pin its lock (and block
            # every later gc) for the whole lease in a process that keeps running.
            catalog.close_session(session)


def _packed_gc(
    store: StoreContext, dry_run: bool, on_progress: Callable[[GcReport], None] | None, max_repack: int | None
) -> GcReport:
    """A format 2 store: a round of mark, doom (with repack of at most max_repack bytes of live
    records, None for no bound), sweep and delete (operations/packedgc.py); the dry run is its
    mark pass alone."""
    if dry_run:
        return _packed_report(True, packedgc.find_garbage(store, max_repack))
    with (
        holding_gc_lock(store.catalog, "gc") as session,
        ThreadPoolExecutor(max(8, store.workers), thread_name_prefix="chunkstore-gc") as pool,
    ):
        temporaries = store.blobs.remove_stale_temporaries(store.catalog.lease_seconds)
        garbage = packedgc.collect(
            store,
            session,
            pool,
            on_progress and (lambda done: on_progress(_packed_report(False, done))),
            max_repack,
        )
    report = _packed_report(False, garbage)
    report.temporaries_removed = temporaries
    return report


def _packed_report(dry_run: bool, garbage: packedgc.Garbage) -> GcReport:
    return GcReport(
        dry_run,
        chunks_deleted=garbage.pack_entries,
        bytes_freed=garbage.pack_bytes + garbage.orphan_bytes,
        orphans_deleted=garbage.orphans,
        packs_deleted=garbage.packs,
        pages_deleted=garbage.pages,
        page_bytes_freed=garbage.page_bytes,
        hooks_deleted=None if dry_run else garbage.hooks,  # a dry run does not scan them
        packs_repacked=garbage.repacked,
        repack_bytes_read=garbage.repack_read,
        repack_bytes_written=garbage.repack_written,
    )


def _refuse_live_chunks_counted_unreferenced(store: StoreContext) -> None:
    """Raise IntegrityError if a recipe of a stored content uses a chunk whose reference count is 0.

    Counts are kept by every put and rm, so they only disagree with the recipes after damage or
    a hostile edit of the catalog; gc would then delete chunks that files still need. The
    recipes are read only when some chunk has a count of 0 (each gc that has work to do), and
    only the chunks that gc would collect are looked for in them."""
    unreferenced = {
        chunk.chunk_id
        for chunk in store.catalog.iter_chunks()
        if chunk.refcount == 0 and chunk.state != ChunkState.DELETING
    }
    if not unreferenced:
        return
    still_used: dict[bytes, bytes] = {}
    for content in store.catalog.iter_contents():
        try:
            for page in store.catalog.recipe_pages(content.digest):
                for entry in recipes.decode_page(page):
                    if entry.chunk_id in unreferenced:
                        still_used.setdefault(entry.chunk_id, content.digest)
        except IntegrityError:
            continue  # a recipe that cannot be read restores nothing; verify reports it
        except NotFoundError:
            continue  # removed by an rm since it was listed: it uses nothing any more
    # A put may have committed a recipe using a chunk of count 0 after the counts were read: the
    # same transaction raised the count, so what is 0 now and in a recipe still stored is wrong.
    current = store.catalog.get_chunks(still_used)
    still_used = {
        chunk_id: digest
        for chunk_id, digest in still_used.items()
        if chunk_id in current and current[chunk_id].refcount == 0 and store.catalog.get_content(digest) is not None
    }
    if still_used:
        chunk_id, digest = next(iter(still_used.items()))
        name = store.catalog.find_name_with_digest(digest)
        raise IntegrityError(
            f"gc deleted nothing: {len(still_used)} chunk(s) counted as unreferenced are used by stored files "
            f"(chunk {chunk_id.hex()}, of {name or 'content ' + digest.hex()}); "
            "run `chunkstore verify --repair` to recount references from the recipes, then gc again"
        )


# ---- verify --------------------------------------------------------------------------


# verify --repair rechecks after rewriting counts; a put committing meanwhile can make a
# recount stale, so it tries again, this many times at most.
REPAIR_ATTEMPTS = 5


def verify(
    store: StoreContext,
    *,
    read_data: bool = False,
    subset_percent: float = 100.0,
    repair: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check the catalog against itself and the blob store; with read_data, every chunk's bytes too.

    With repair, chunk reference counts that differ from the recount of recipes, and contents'
    counts of versions that differ from the versions that name them, are rewritten, and the
    report that is returned is the check after the repair: its damaged_names are the files that
    cannot be recovered. Repair never lowers a chunk count while a recipe cannot be read (the
    recount would miss its references); a content no version names is released, as rm releases
    one (its chunks or pages are left to the next gc), unless its recipe cannot be read. It holds
    the gc lock throughout, so nothing is collected on the strength of a count it is rewriting.

    A format 2 store (chunkstore/operations/packedcheck.py) keeps no chunk counts; with
    read_data and a subset, it reads that share of its contents whole. Its repair first rebuilds,
    from the packs themselves, the pack items that the index lost while pages still name the
    packs (packedgc.rebuild_pack_items; pack_items_rebuilt in the report)."""
    if not 0 < subset_percent <= 100:
        raise InvalidArgumentError(f"--subset must be within (0, 100], got {subset_percent}")
    if not repair:
        return _check(store, read_data, subset_percent, on_progress)
    catalog = store.catalog
    with holding_gc_lock(catalog, "repair") as session:
        rebuilt = packedgc.rebuild_pack_items(store, session) if store.storage_format == 2 else None
        chunk_counts = content_counts = 0
        for _ in range(REPAIR_ATTEMPTS):
            # Read before the check lists the versions it recounts: a put or rm of a version in
            # between moves the count away from what was read, and the compare and set leaves it.
            # An rm and a put of the same content both in between leave the count where it was and
            # are not seen; the next round raises the count back (chunk counts share this window).
            # A second scan of the contents a round: 0.02 s for 3,000 contents in SQLite, where
            # the check takes 0.19-0.66 s (format 1) and 0.22-0.33 s (format 2).
            recorded = {content.digest: content.refcount for content in catalog.iter_contents()}
            report = _check(store, read_data, subset_percent, on_progress)
            fixes = _refcount_fixes(report)
            content_fixes = _content_count_fixes(report, recorded)
            if not fixes and not content_fixes:
                report.counts_repaired = chunk_counts
                report.content_counts_repaired = content_counts
                report.pack_items_rebuilt = None if rebuilt is None else len(rebuilt)
                return report
            # Compare and set: a count a put or rm changed after this check read it keeps its
            # new value, and the next round recounts it, so a stale recount never lowers it.
            # Chunk counts first: a content released next gives back its chunks' counts from
            # the recount's value.
            if fixes:
                chunk_counts += len(fixes) - len(catalog.set_refcounts(fixes))
            if content_fixes:
                content_counts += len(content_fixes) - len(catalog.set_content_refcounts(content_fixes))
        raise ConcurrentModificationError(
            "reference counts kept changing while verify --repair ran; run it again when no put is running"
        )


def _refcount_fixes(report: VerifyReport) -> dict[bytes, tuple[int, int]]:
    """The counts to rewrite, as (recorded, recount): each to its recount, or, when the
    recount may miss references of an unreadable recipe, only those it would raise."""
    fixes = {}
    for chunk_id, recorded in report.recorded_counts.items():
        counted = report.recount.get(chunk_id, 0)
        if counted != recorded and (report.recount_complete or counted > recorded):
            fixes[chunk_id] = (recorded, counted)
    return fixes


def _content_count_fixes(report: VerifyReport, recorded: dict[bytes, int]) -> dict[bytes, tuple[int, int]]:
    """The contents' counts of versions to rewrite, as (recorded before the check, versions
    that name the content); a content that appeared since recorded was read is left to the next
    round, and one no version names whose recipe cannot be read is not released."""
    fixes = {}
    for digest, users in report.content_users.items():
        before = recorded.get(digest)
        if before is not None and before != users and (users or digest not in report.unreadable_recipes):
            fixes[digest] = (before, users)
    return fixes


def _check(
    store: StoreContext, read_data: bool, subset_percent: float, on_progress: Callable[[int, int], None] | None
) -> VerifyReport:
    catalog = store.catalog
    report = VerifyReport()
    # A catalog that can check its own file (SQLite) does; its damage affects every file.
    damage = catalog.integrity_problems()
    if damage:
        report.problems.append(Problem("damaged-catalog", f"the catalog file is damaged: {'; '.join(damage[:5])}"))
    names_by_digest: dict[bytes, list[str]] = defaultdict(list)
    for record in catalog.list_versions(all_versions=True):
        report.versions += 1
        names_by_digest[record.digest].append(f"{record.name}@{record.version}")
    if store.storage_format == 2:
        packedcheck.verify_packed(
            store, report, names_by_digest, read_data=read_data, subset_percent=subset_percent, on_progress=on_progress
        )
        return report

    chunks = {chunk.chunk_id: chunk for chunk in catalog.iter_chunks()}
    recount: Counter[bytes] = Counter()
    bad_chunks: dict[bytes, Problem] = {}
    contents_seen = set()
    for content in catalog.iter_contents():
        contents_seen.add(content.digest)
        names = sorted(names_by_digest.get(content.digest, []))
        report.check_content(content, names)
        try:
            entries = [entry for page in catalog.recipe_pages(content.digest) for entry in recipes.decode_page(page)]
        except ChunkstoreError as error:
            report.problems.append(Problem("corrupt-recipe", str(error), names))
            report.recount_complete = False
            report.unreadable_recipes.add(content.digest)
            continue
        if len(entries) != content.chunk_count or sum(entry.length for entry in entries) != content.size:
            report.problems.append(
                Problem("corrupt-recipe", f"recipe of {content.digest.hex()} does not add up", names)
            )
        for entry in entries:
            recount[entry.chunk_id] += 1
            chunk = chunks.get(entry.chunk_id)
            if (chunk is None or chunk.state != ChunkState.PRESENT) and entry.chunk_id not in bad_chunks:
                bad_chunks[entry.chunk_id] = Problem(
                    "missing-chunk-row", f"chunk {entry.chunk_id.hex()} is not recorded as stored"
                )
    report.check_versions_have_contents(names_by_digest, contents_seen)

    for chunk_id, chunk in chunks.items():
        if chunk.state != ChunkState.DELETING and chunk.refcount != recount.get(chunk_id, 0):
            report.problems.append(
                Problem(
                    "refcount",
                    f"chunk {chunk_id.hex()} counts {chunk.refcount} references,"
                    f" recipes hold {recount.get(chunk_id, 0)}",
                )
            )
    report.chunks = len(recount)
    report.recount = recount
    report.recorded_counts = {
        chunk_id: chunk.refcount for chunk_id, chunk in chunks.items() if chunk.state != ChunkState.DELETING
    }

    objects = {chunk_id_from_key(info.key): info.size for info in store.blobs.list(CHUNK_KEY_PREFIX)}
    for chunk_id in recount:
        if chunk_id in bad_chunks:
            continue
        size = objects.get(chunk_id)
        if size is None:
            bad_chunks[chunk_id] = Problem("missing-object", f"chunk {chunk_id.hex()} has no object in the blob store")
        elif size != chunks[chunk_id].stored_size:
            bad_chunks[chunk_id] = Problem(
                "corrupt-object",
                f"chunk {chunk_id.hex()} object is {size} bytes, catalog says {chunks[chunk_id].stored_size}",
            )

    if read_data:
        to_read = [chunk_id for chunk_id in recount if chunk_id not in bad_chunks]
        if subset_percent < 100:
            to_read = random.sample(to_read, max(1, round(len(to_read) * subset_percent / 100))) if to_read else []
        with ThreadPoolExecutor(store.workers, thread_name_prefix="chunkstore-verify") as pool:
            for done, (chunk_id, outcome) in enumerate(pool.map(lambda cid: _try_read(store, cid), to_read), 1):
                if isinstance(outcome, IntegrityError):
                    bad_chunks[chunk_id] = Problem("corrupt-object", str(outcome))
                else:
                    report.chunks_read += 1
                    report.bytes_read += outcome
                if on_progress:
                    on_progress(done, len(to_read))

    if bad_chunks:
        _name_damaged_files(store, bad_chunks, names_by_digest)
        report.problems.extend(bad_chunks.values())
    return report


def _try_read(store: StoreContext, chunk_id: bytes):
    try:
        return chunk_id, len(read_chunk(store, chunk_id))
    except IntegrityError as error:
        return chunk_id, error


def _name_damaged_files(store: StoreContext, bad_chunks: dict[bytes, Problem], names_by_digest) -> None:
    """Attach to each chunk problem the names of the files whose recipes use the chunk."""
    for content in store.catalog.iter_contents():
        try:
            ids = {
                entry.chunk_id
                for page in store.catalog.recipe_pages(content.digest)
                for entry in recipes.decode_page(page)
            }
        except ChunkstoreError:
            continue
        for chunk_id in ids & bad_chunks.keys():
            bad_chunks[chunk_id].names.extend(names_by_digest.get(content.digest, []))
    for problem in bad_chunks.values():
        problem.names.sort()


# ---- stats ---------------------------------------------------------------------------


def stats(store: StoreContext) -> dict:
    """Sizes and ratios. A format 2 store has no chunk rows: its chunks and unique and stored
    bytes come from its pack index and recipes (packedcheck.packed_stats), with its packs and
    pages added; its stored bytes count its dictionary objects too."""
    totals = store.catalog.stats()
    packed = packedcheck.packed_stats(store.catalog) if store.storage_format == 2 else {}
    if packed:
        # The store's zstd dictionaries are stored bytes too (112 KiB each, one LIST to find).
        dictionaries = [info.size for info in store.blobs.list(DICTIONARY_KEY_PREFIX)]
        packed.update(
            dictionaries=len(dictionaries),
            dictionary_bytes=sum(dictionaries),
            stored_bytes=packed["stored_bytes"] + sum(dictionaries),
        )
    chunks = packed.get("chunks", totals.chunks)
    unique = packed.get("unique_bytes", totals.unique_bytes)
    stored = packed.get("stored_bytes", totals.stored_bytes)

    def ratio(numerator: int, denominator: int) -> float | None:
        return round(numerator / denominator, 4) if denominator else None

    result = {
        "store": store.url,
        "files": totals.names,
        "versions": totals.versions,
        "contents": totals.contents,
        "chunks": chunks,
        "logical_bytes": totals.logical_bytes,
        "unique_bytes": unique,
        "stored_bytes": stored,
        "dedup_ratio": ratio(totals.logical_bytes, unique),
        "compression_ratio": ratio(unique, stored),
        "store_ratio": ratio(totals.logical_bytes, stored),
        "chunker": store.config.chunker.to_config(),
        "compression": str(store.config.compression),
    }
    if packed:
        result.update(packed, storage_format=2)
    catalog_bytes = store.catalog.storage_bytes()
    if catalog_bytes is not None:
        result["catalog_bytes"] = catalog_bytes
    return result

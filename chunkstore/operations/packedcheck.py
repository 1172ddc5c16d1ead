"""verify, stats and gc --dry-run of a storage format 2 store.

A format 2 store has no chunk rows (docs/design/format-v2.md): a content names its segments'
recipe pages (one inline page, or root pages naming page items of the pack index), a page names
runs of packs, and a pack is an item of the pack index plus one object under `packs/`. These
passes follow those names from the catalog's contents down to the pack objects:

- verify: each content's recipe parses, its pages exist and agree with the segments its root
  claims, the segments add up to the content; each pack a page names has a PRESENT item and
  an object of the size the item records (one LIST of `packs/`); with read_data, contents are
  read back through the page reader and checked against their digests (records compressed
  with a dictionary decoded with it); each dictionary under `dicts/` decodes and matches its ID.
- stats: chunks and stored bytes from the PRESENT pack items, unique bytes from the distinct
  segments the contents name, packs by size class.
gc's mark pass and rounds (operations/packedgc.py) use its reading of recipes and of `packs/`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.catalog import Catalog, ContentRecord
from chunkstore.backends.packindex import IndexState, PackIndex, Phase
from chunkstore.backends.packs import PACK_KEY_PREFIX, pack_key
from chunkstore.core import pages
from chunkstore.core.packformat import PACK_ID_SIZE
from chunkstore.errors import (
    CorruptObjectError,
    DigestMismatchError,
    IntegrityError,
    MissingChunkError,
    NotFoundError,
)
from chunkstore.operations.contentpages import root_entries
from chunkstore.operations.context import StoreContext
from chunkstore.operations.read import ChunkFetcher
from chunkstore.operations.verifyreport import Problem, VerifyReport

# stats reports packs in these classes of stored size, each from its lower bound: gc merges packs
# under 4 MiB (the design's "Small writers and small packs"), a writer closes a pack at 16 MiB.
SMALL_PACK_BYTES = 4 * 1024 * 1024
FULL_PACK_BYTES = 16 * 1024 * 1024
PACK_SIZE_CLASSES = (("under_4mib", 0), ("4mib_to_16mib", SMALL_PACK_BYTES), ("16mib_and_over", FULL_PACK_BYTES))


@dataclass(frozen=True)
class ContentRecipe:
    """A content's recipe as the catalog holds it: its inline page, or the segments its root
    pages name (neither for a content of no chunk)."""

    inline_page: bytes | None
    segments: list[pages.RootEntry]


def read_recipe(catalog: Catalog, digest: bytes) -> ContentRecipe:
    """The content's recipe; CorruptObjectError if its root does not parse, NotFoundError if the
    content is gone (an rm since it was listed)."""
    recipe_pages = list(catalog.recipe_pages(digest))
    entries = root_entries(recipe_pages)
    if entries is None:
        return ContentRecipe(recipe_pages[0] if recipe_pages else None, [])
    return ContentRecipe(None, entries)


def pack_ids_of(page: pages.RecipePage) -> set[bytes]:
    return {run.pack_id for run in page.runs}


def pack_objects(blobs: BlobStore) -> dict[bytes, int]:
    """Each pack object's ID and size, from one listing of `packs/`; keys that are not pack
    keys (no shard, not 32 hex digits) are not packs and are left out."""
    objects = {}
    for info in blobs.list(PACK_KEY_PREFIX):
        hex_id = info.key.rsplit("/", 1)[-1]
        try:
            pack_id = bytes.fromhex(hex_id)
        except ValueError:
            continue
        if len(pack_id) == PACK_ID_SIZE and pack_key(pack_id) == info.key:
            objects[pack_id] = info.size
    return objects


def _usable_states(index: PackIndex) -> frozenset[IndexState]:
    """The states of a page or pack a stored content may name. Out of a gc round's idle phase a
    named item may be DOOMED: the round's sweep gives it back (design, gc rounds)."""
    if index.read_round().phase == Phase.IDLE:
        return frozenset({IndexState.PRESENT})
    return frozenset({IndexState.PRESENT, IndexState.DOOMED})


# ---- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CheckedPage:
    """A page item that exists and parses: what its header holds and which packs its runs name."""

    chunk_count: int
    plaintext_bytes: int
    pack_ids: frozenset[bytes]


@dataclass
class _ContentPlan:
    """A content, the packs its readable pages name, and whether its whole recipe checked out
    (only such a content is read back)."""

    content: ContentRecord
    names: list[str]
    pack_ids: set[bytes] = field(default_factory=set)
    whole: bool = True


def verify_packed(
    store: StoreContext,
    report: VerifyReport,
    names_by_digest: dict[bytes, list[str]],
    *,
    read_data: bool,
    subset_percent: float,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Add to report what a format 2 store's contents, pages and packs show (see the module
    docstring); the versions and names_by_digest are the caller's."""
    catalog = store.catalog
    usable = _usable_states(catalog.pack_index)
    checked_pages: dict[bytes, _CheckedPage | Problem] = {}
    plans: list[_ContentPlan] = []
    contents_seen = set()
    for content in catalog.iter_contents():
        contents_seen.add(content.digest)
        names = sorted(names_by_digest.get(content.digest, []))
        report.check_content(content, names)
        plan = _check_recipe(catalog, content, names, usable, checked_pages, report)
        if plan is not None:
            plans.append(plan)
    report.check_versions_have_contents(names_by_digest, contents_seen)
    report.problems.extend(_check_dictionaries(store))
    report.pages = len(checked_pages)
    report.chunks += sum(page.chunk_count for page in checked_pages.values() if isinstance(page, _CheckedPage))
    for problem in checked_pages.values():
        if isinstance(problem, Problem):
            problem.names = sorted(set(problem.names))  # a content may name a page twice
            report.problems.append(problem)

    names_by_pack: dict[bytes, set[str]] = defaultdict(set)
    for plan in plans:
        for pack_id in plan.pack_ids:
            names_by_pack[pack_id].update(plan.names)
    report.packs = len(names_by_pack)
    bad_packs = _check_packs(store, names_by_pack, usable)
    report.problems.extend(bad_packs.values())
    if read_data:
        to_read = [plan for plan in plans if plan.whole and not plan.pack_ids & bad_packs.keys()]
        if subset_percent < 100 and to_read:
            to_read = random.sample(to_read, max(1, round(len(to_read) * subset_percent / 100)))
        _read_contents(store, to_read, report, on_progress)


def _check_dictionaries(store: StoreContext) -> list[Problem]:
    """Each dictionary object must decode and hash to its ID (one LIST of `dicts/`, a GET each).
    Which records name one is seen only by reading them (read_data): a missing dictionary makes
    them fail to decode, naming it."""
    problems = []
    for dictionary_id in store.dictionaries.stored_ids():
        try:
            store.dictionaries.fetch(dictionary_id)
        except CorruptObjectError as error:
            problems.append(Problem("corrupt-object", str(error)))
    return problems


def _check_recipe(
    catalog: Catalog,
    content: ContentRecord,
    names: list[str],
    usable: frozenset[IndexState],
    checked_pages: dict[bytes, _CheckedPage | Problem],
    report: VerifyReport,
) -> _ContentPlan | None:
    """Check one content's recipe down to its pages: its plan, not whole if a problem was found (in
    report, or in checked_pages for a page several contents share), None if its recipe is unreadable."""
    where = f"content {content.digest.hex()}"
    try:
        recipe = read_recipe(catalog, content.digest)
    except NotFoundError:
        return None  # removed since it was listed
    except IntegrityError as error:
        report.problems.append(Problem("corrupt-recipe", f"{where}: {error}", names))
        report.unreadable_recipes.add(content.digest)
        return None
    plan = _ContentPlan(content, names)
    if recipe.inline_page is not None:
        try:
            page = pages.parse_page(recipe.inline_page)
        except CorruptObjectError as error:
            problem = Problem("corrupt-recipe", f"{where}: its inline recipe page is damaged: {error}", names)
            report.problems.append(problem)
            report.unreadable_recipes.add(content.digest)
            return None
        report.chunks += page.chunk_count
        plan.pack_ids.update(pack_ids_of(page))
        totals = (page.chunk_count, page.plaintext_bytes)
    else:
        for number, segment in enumerate(recipe.segments):
            checked = checked_pages.get(segment.page_id)
            if checked is None:
                checked = checked_pages[segment.page_id] = _check_page(catalog.pack_index, segment.page_id, usable)
            if isinstance(checked, Problem):
                checked.names.extend(names)
                plan.whole = False
                continue
            if (checked.chunk_count, checked.plaintext_bytes) != (segment.chunk_count, segment.plaintext_bytes):
                report.problems.append(
                    Problem(
                        "corrupt-recipe",
                        f"{where}: its root gives segment {number} {segment.chunk_count} chunks of "
                        f"{segment.plaintext_bytes} bytes, its page {segment.page_id.hex()} holds "
                        f"{checked.chunk_count} chunks of {checked.plaintext_bytes} bytes",
                        names,
                    )
                )
                plan.whole = False
            plan.pack_ids.update(checked.pack_ids)
        totals = (
            sum(segment.chunk_count for segment in recipe.segments),
            sum(segment.plaintext_bytes for segment in recipe.segments),
        )
    if totals != (content.chunk_count, content.size):
        report.problems.append(
            Problem(
                "corrupt-recipe",
                f"{where}: its recipe holds {totals[0]} chunks of {totals[1]} bytes, the content "
                f"{content.chunk_count} chunks of {content.size} bytes",
                names,
            )
        )
        plan.whole = False
    return plan


def _check_page(index: PackIndex, page_id: bytes, usable: frozenset[IndexState]) -> _CheckedPage | Problem:
    record = index.get_page(page_id)
    if record is None:
        return Problem("missing-page", f"page {page_id.hex()} is missing from the pack index")
    if record.state not in usable:
        return Problem("missing-page", f"page {page_id.hex()} is {record.state.name} in the pack index, not PRESENT")
    try:
        page = pages.parse_page(record.body)
    except CorruptObjectError as error:
        return Problem("corrupt-recipe", f"page {page_id.hex()} is damaged: {error}")
    return _CheckedPage(page.chunk_count, page.plaintext_bytes, frozenset(pack_ids_of(page)))


def _check_packs(
    store: StoreContext, names_by_pack: dict[bytes, set[str]], usable: frozenset[IndexState]
) -> dict[bytes, Problem]:
    """A problem for each pack the pages name that has no usable item, no object, or an object of
    another size than its item records."""
    objects = pack_objects(store.blobs)
    items = store.catalog.pack_index.get_packs(names_by_pack)
    bad: dict[bytes, Problem] = {}
    for pack_id, names in names_by_pack.items():
        item = items.get(pack_id)
        size = objects.get(pack_id)
        if item is None:
            problem = Problem("missing-pack-item", f"pack {pack_id.hex()} is not recorded in the pack index")
        elif item.state not in usable:
            problem = Problem(
                "missing-pack-item", f"pack {pack_id.hex()} is {item.state.name} in the pack index, not PRESENT"
            )
        elif size is None:
            problem = Problem("missing-object", f"pack {pack_id.hex()} has no object in the blob store")
        elif size != item.stored_bytes:
            problem = Problem(
                "corrupt-object",
                f"pack {pack_id.hex()} object is {size} bytes, the pack index says {item.stored_bytes}",
            )
        else:
            continue
        problem.names = sorted(names)
        bad[pack_id] = problem
    return bad


def _read_contents(
    store: StoreContext,
    plans: list[_ContentPlan],
    report: VerifyReport,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Read each content through the page reader (every chunk checked against its ID, every page
    against its page ID) and check it against its digest and size. A damaged pack fails every
    content that reads it with the same message: one problem names them all. Progress counts
    chunks, as format 1's does, a content's at a time."""
    problems: dict[tuple[str, str], Problem] = {}
    total_chunks = sum(plan.content.chunk_count for plan in plans)
    done = 0
    with ChunkFetcher(store) as fetcher:
        for plan in plans:
            try:
                chunks, size = _read_content(store, fetcher, plan.content)
            except IntegrityError as error:
                kind = "missing-object" if isinstance(error, MissingChunkError) else "corrupt-object"
                problems.setdefault((kind, str(error)), Problem(kind, str(error))).names.extend(plan.names)
            except NotFoundError:
                pass  # removed since it was listed
            else:
                report.chunks_read += chunks
                report.bytes_read += size
            done += plan.content.chunk_count
            if on_progress:
                on_progress(done, total_chunks)
    for problem in problems.values():
        problem.names.sort()
        report.problems.append(problem)


def _read_content(store: StoreContext, fetcher: ChunkFetcher, content: ContentRecord) -> tuple[int, int]:
    file_hasher = store.hasher.file_hasher()
    chunks = size = 0
    for data in fetcher.content_chunks(content.digest):
        file_hasher.update(data)
        chunks += 1
        size += len(data)
    if size != content.size or file_hasher.digest() != content.digest:
        raise DigestMismatchError(
            f"content {content.digest.hex()} does not match its digest after reading ({size} bytes read, "
            f"{content.size} recorded)"
        )
    return chunks, size


# ---- stats -------------------------------------------------------------------------------


def packed_stats(catalog: Catalog) -> dict:
    """The figures of a format 2 store that format 1 takes from its chunk rows, and its packs.

    chunks and stored_bytes are the entries and bytes of the PRESENT packs (dead ones included
    until gc collects them, as format 1 counts unreferenced chunks). Pack items record no
    plaintext, so unique_bytes is the plaintext of the distinct pack entries that the contents'
    pages select (referenced_chunks of them), from the runs' byte counts (distinct_entries).
    page_bytes, root_pages and root_bytes size the recipe items, for the cost estimate."""
    packs = [pack for pack in catalog.pack_index.iter_packs() if pack.state == IndexState.PRESENT]
    by_size = {name: {"packs": 0, "bytes": 0} for name, _ in PACK_SIZE_CLASSES}
    for pack in packs:
        name = next(name for name, lower in reversed(PACK_SIZE_CLASSES) if pack.stored_bytes >= lower)
        by_size[name]["packs"] += 1
        by_size[name]["bytes"] += pack.stored_bytes
    runs_by_pack: dict[bytes, set[pages.Run]] = defaultdict(set)
    named_pages: set[bytes] = set()
    inline_pages = root_pages = root_bytes = 0
    for _, recipe in _readable_recipes(catalog):
        if recipe.inline_page is not None:
            inline_pages += 1
            _add_runs(runs_by_pack, recipe.inline_page)
        named_pages.update(segment.page_id for segment in recipe.segments)
        if recipe.segments:
            content_root_pages = -(-len(recipe.segments) // pages.ROOT_PAGE_ENTRIES)
            root_pages += content_root_pages
            root_bytes += content_root_pages * pages.ROOT_HEADER.size + len(recipe.segments) * pages.ROOT_ENTRY.size
    pages_found = page_bytes = 0
    for page in catalog.pack_index.iter_pages():
        if page.page_id in named_pages:
            pages_found += 1
            page_bytes += len(page.body)
            _add_runs(runs_by_pack, page.body)
    referenced = unique = 0
    for runs in runs_by_pack.values():
        entries, plaintext = distinct_entries(runs)
        referenced += entries
        unique += plaintext
    return {
        "chunks": sum(pack.entries for pack in packs),
        "unique_bytes": unique,
        "stored_bytes": sum(pack.stored_bytes for pack in packs),
        "referenced_chunks": referenced,
        "packs": len(packs),
        "packs_by_size": by_size,
        "pages": pages_found,
        "page_bytes": page_bytes,
        "inline_pages": inline_pages,
        "root_pages": root_pages,
        "root_bytes": root_bytes,
    }


def _add_runs(runs_by_pack: dict[bytes, set[pages.Run]], body: bytes) -> None:
    try:
        page = pages.parse_page(body)
    except CorruptObjectError:
        return  # verify reports it
    for run in page.runs:
        runs_by_pack[run.pack_id].add(run)


def distinct_entries(runs: Iterable[pages.Run]) -> tuple[int, int]:
    """How many distinct entries of one pack the runs select, and their plaintext bytes.

    Runs that overlap form a group. A group is usually covered by runs that do not overlap one
    another (the run that stored the chunks, which later versions select parts of), and its bytes
    are then exact: the sum of those runs'. Entries that no such tiling covers (only partial
    overlaps reach them) are counted at the group's mean bytes per entry."""
    groups: list[list[pages.Run]] = []
    group_end = 0
    for run in sorted(runs, key=lambda run: (run.first_entry, -run.entry_count)):
        if groups and run.first_entry < group_end:
            groups[-1].append(run)
            group_end = max(group_end, run.end_entry)
        else:
            groups.append([run])
            group_end = run.end_entry
    entries = plaintext = 0
    for group in groups:
        group_entries, group_bytes = _group_bytes(group)
        entries += group_entries
        plaintext += group_bytes
    return entries, plaintext


def _group_bytes(group: list[pages.Run]) -> tuple[int, int]:
    """(entries, bytes) of a group of overlapping runs, ordered by first entry, longest first."""
    start, end = group[0].first_entry, max(run.end_entry for run in group)
    longest_from: dict[int, pages.Run] = {}
    for run in group:
        longest_from.setdefault(run.first_entry, run)
    position = start
    exact = uncovered = 0
    while position < end:
        tile = longest_from.get(position)
        if tile is not None:
            exact += tile.plaintext_bytes
            position = tile.end_entry
            continue
        following = min((first for first in longest_from if first > position), default=end)
        uncovered += following - position
        position = following
    if uncovered:
        mean = sum(run.plaintext_bytes for run in group) / sum(run.entry_count for run in group)
        exact += round(uncovered * mean)
    return end - start, exact


def _readable_recipes(catalog: Catalog) -> Iterator[tuple[ContentRecord, ContentRecipe]]:
    """Each stored content with its recipe; stats skips what cannot be read (verify reports it)."""
    for content in catalog.iter_contents():
        try:
            yield content, read_recipe(catalog, content.digest)
        except (IntegrityError, NotFoundError):
            continue

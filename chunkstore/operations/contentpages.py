"""A storage format 2 content's recipe as the catalog holds it, read back as recipe pages.

A content keeps either its one recipe page inline (`CSRP` version 2) or its root pages (`CSRR`
version 2) naming page items of the pack index (docs/design/format-v2.md, Object layout). Put
reads a parent version's pages to deduplicate against, get, restore and verify read a content's
pages to fetch its chunks: both through these functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from chunkstore.backends.catalog import Catalog
from chunkstore.core import pages
from chunkstore.errors import CorruptObjectError, MissingChunkError, NotFoundError
from chunkstore.operations.pageread import StoredPage


def root_entries(recipe_pages: Sequence[bytes]) -> list[pages.RootEntry] | None:
    """The segments a content's root pages name, or None for a content whose page is inline
    (or that has no chunk). The root of a 1 GiB file is 64 entries (2.6 KB)."""
    if not recipe_pages:
        return None
    if recipe_pages[0][:4] == pages.ROOT_MAGIC:
        return pages.parse_root(recipe_pages)
    if len(recipe_pages) != 1:
        raise CorruptObjectError(f"a content holds {len(recipe_pages)} pages but no root: only one may be inline")
    return None


def stored_pages(catalog: Catalog, digest: bytes, *, consistent: bool = False) -> Iterator[StoredPage]:
    """The content's recipe pages in order, each read when the caller reaches it (a content
    of any size costs one page in memory). A reader of a committed content may read its pages
    eventually consistently: gc cannot collect them while the content exists."""
    recipe_pages = list(catalog.recipe_pages(digest))
    entries = root_entries(recipe_pages)
    if entries is None:
        if recipe_pages:
            yield StoredPage(None, recipe_pages[0], digest)
        return
    for number, entry in enumerate(entries):
        yield segment_page(catalog, digest, number, entry, consistent=consistent)


def segment_page(
    catalog: Catalog, digest: bytes, number: int, entry: pages.RootEntry, *, consistent: bool = False
) -> StoredPage:
    """The page of segment number of a content, read from the catalog's pack index."""
    record = catalog.pack_index.get_page(entry.page_id, consistent)
    if record is None:
        raise MissingChunkError(
            f"content {digest.hex()}: page {entry.page_id.hex()} (segment {number}) is missing from the catalog"
        )
    return StoredPage(entry.page_id, record.body)


def reread_page(catalog: Catalog, stored: StoredPage) -> bytes | None:
    """A page read again, consistently, after a pack it named was found missing (repack may have
    moved its chunks since it was read): a page item by its ID, an inline page by its content's
    digest; None if it is gone."""
    if stored.page_id is not None:
        record = catalog.pack_index.get_page(stored.page_id, consistent=True)
        return record.body if record is not None else None
    if stored.digest is None:
        return None
    try:
        recipe_pages = list(catalog.recipe_pages(stored.digest))
    except NotFoundError:
        return None
    return recipe_pages[0] if len(recipe_pages) == 1 and root_entries(recipe_pages) is None else None

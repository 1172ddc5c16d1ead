"""Recipes: the ordered chunk list of a content, stored in pages.

A page is self-describing:

    offset size field
    0      4    magic b"CSRP"
    4      1    recipe format version (1)
    5      1    flags, must be 0
    6      2    reserved, must be 0
    8      4    entry count, big-endian
    12     36*n entries: 32-byte chunk ID, 4-byte plaintext length

Pages keep every catalog item small whatever the file size: DynamoDB items are
limited to 400 KB, and 4,096 entries make a 147 KB page.

A content of storage format 2 keeps other pages under the same catalog keys: its inline recipe
page (`CSRP` version 2) or its root pages (`CSRR` version 2), chunkstore/core/pages.py. Their
chunks are not counted (gc marks pages and packs instead, docs/design/format-v2.md, Catalog),
so the catalogs count references through counted_entries, which knows both.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from chunkstore.errors import CorruptObjectError

MAGIC = b"CSRP"
VERSION = 1
# The magics and version of format 2's recipe pages and content roots (chunkstore.core.pages).
FORMAT_2_MAGICS = (b"CSRP", b"CSRR")
FORMAT_2_VERSION = 2
PAGE_HEADER = struct.Struct(">4sBBHI")
ENTRY = struct.Struct(">32sI")
DEFAULT_PAGE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class RecipeEntry:
    chunk_id: bytes
    length: int


def encode_page(entries: list[RecipeEntry]) -> bytes:
    parts = [PAGE_HEADER.pack(MAGIC, VERSION, 0, 0, len(entries))]
    parts.extend(ENTRY.pack(entry.chunk_id, entry.length) for entry in entries)
    return b"".join(parts)


def decode_page(blob: bytes) -> list[RecipeEntry]:
    if len(blob) < PAGE_HEADER.size:
        raise CorruptObjectError("recipe page is shorter than its header")
    magic, version, flags, reserved, count = PAGE_HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptObjectError(f"recipe page does not start with {MAGIC!r}")
    if version != VERSION:
        raise CorruptObjectError(f"recipe format version {version} is not supported (this chunkstore reads {VERSION})")
    if flags or reserved:
        raise CorruptObjectError("recipe page has unknown flags")
    if len(blob) != PAGE_HEADER.size + count * ENTRY.size:
        raise CorruptObjectError(f"recipe page is {len(blob)} bytes, its header announces {count} entries")
    return [
        RecipeEntry(chunk_id, length) for chunk_id, length in ENTRY.iter_unpack(memoryview(blob)[PAGE_HEADER.size :])
    ]


class PageBuilder:
    """Encodes entries into pages of at most page_entries each as they come, so a recipe
    is held as 36 bytes an entry, never as a list of entry objects."""

    def __init__(self, page_entries: int):
        self.page_entries = page_entries
        self.pages: list[bytes] = []
        self.count = 0
        self._page: list[RecipeEntry] = []

    def add(self, entry: RecipeEntry) -> None:
        self._page.append(entry)
        self.count += 1
        if len(self._page) == self.page_entries:
            self.pages.append(encode_page(self._page))
            self._page = []

    def finish(self) -> list[bytes]:
        """The pages, the last one possibly short (an empty recipe has no page)."""
        if self._page:
            self.pages.append(encode_page(self._page))
            self._page = []
        return self.pages


def paginate(entries: Iterable[RecipeEntry], page_entries: int) -> list[bytes]:
    """Encode entries into pages of at most page_entries each."""
    builder = PageBuilder(page_entries)
    for entry in entries:
        builder.add(entry)
    return builder.finish()


def recipe_format(pages: Sequence[bytes]) -> int:
    """The recipe format of a content's pages, from the first page's header: 1 (chunk entries,
    counted) or 2 (a format 2 inline page or root pages, not counted). A content without pages
    (an empty file) counts nothing in either format and reads as 1."""
    if not pages:
        return VERSION
    header = pages[0][:5]
    if header[:4] in FORMAT_2_MAGICS and header[4:] == bytes([FORMAT_2_VERSION]):
        return FORMAT_2_VERSION
    return VERSION


def counted_entries(pages: Iterable[bytes]) -> Iterator[RecipeEntry]:
    """The entries whose chunks a content holds a reference count on: every entry of format 1
    pages, none of format 2 ones. A content's pages are all of one format: a format 2 content
    with a page of another format is refused rather than counted in part."""
    first_format: int | None = None
    for page in pages:
        page_format = recipe_format([page])
        if first_format is None:
            first_format = page_format
        elif page_format != first_format:
            raise CorruptObjectError(f"a recipe mixes pages of recipe formats {first_format} and {page_format}")
        if page_format == VERSION:
            yield from decode_page(page)


def counted_total(chunk_count: int, pages: Sequence[bytes]) -> int:
    """How many entries counted_entries yields for a content of chunk_count chunks."""
    return chunk_count if recipe_format(pages) == VERSION else 0

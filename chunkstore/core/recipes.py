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
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from chunkstore.errors import CorruptObjectError

MAGIC = b"CSRP"
VERSION = 1
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

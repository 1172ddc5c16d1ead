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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import CorruptObjectError

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
    return [RecipeEntry(chunk_id, length) for chunk_id, length in ENTRY.iter_unpack(memoryview(blob)[PAGE_HEADER.size:])]


def paginate(entries: Iterable[RecipeEntry], page_entries: int) -> Iterator[bytes]:
    """Encode entries into pages of at most page_entries each (an empty recipe has no page)."""
    page: list[RecipeEntry] = []
    for entry in entries:
        page.append(entry)
        if len(page) == page_entries:
            yield encode_page(page)
            page = []
    if page:
        yield encode_page(page)

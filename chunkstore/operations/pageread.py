"""The read side of a format 2 restore: a content's recipe pages in, its plaintext out.

docs/design/format-v2.md, Protocols / Restore. Each page is parsed, the tables of the packs it
names are read once (tables never change, so they are cached for the reader's life), and the
page is resolved against them: the chunk IDs its runs select must hash to its page ID. The runs'
records are then fetched with PackReader.read_chunks (whole packs where the chunks ahead select
half of one or more, coalesced ranged GETs elsewhere, a bounded number of bytes in flight) and
each chunk is checked against its ID before it is yielded. Pages are consumed lazily, as far as
the reader looks ahead of the GETs, so memory is bounded whatever the content's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from operator import itemgetter

from chunkstore.backends.packs import ChunkLocation, PackReader, StoredPack
from chunkstore.core.hashing import Hasher
from chunkstore.core.pages import parse_page, resolve_page
from chunkstore.errors import CorruptObjectError, DigestMismatchError, MissingChunkError


class PagePackMissingError(MissingChunkError):
    """A pack a recipe page names is not in the store. Repack may have moved its chunks since
    the page was read, so PageReader reads the page again, consistently, once when it can: this
    is raised when it cannot, when the page is gone, or when the page read again names a missing
    pack too."""

    def __init__(self, page: StoredPage, pack_id: bytes):
        super().__init__(f"{page.name}: pack {pack_id.hex()} is missing from the store")
        self.page_id = page.page_id
        self.pack_id = pack_id


@dataclass(frozen=True)
class StoredPage:
    """A recipe page as the catalog holds it: its ID (the catalog key) and its bytes. A
    content's inline page has no ID (None); the whole-file digest checks it."""

    page_id: bytes | None
    page: bytes
    digest: bytes | None = None  # of the content whose inline page it is, to read it again by

    @property
    def name(self) -> str:
        return "inline page" if self.page_id is None else f"page {self.page_id.hex()}"


class PageReader:
    """Reads contents from their recipe pages through one PackReader, caching pack tables."""

    def __init__(
        self,
        packs: PackReader,
        chunk_id_key: bytes | None = None,
        pack_sizes: Mapping[bytes, int] | None = None,
        *,
        reread_page: Callable[[StoredPage], bytes | None] | None = None,
    ):
        """chunk_id_key keys page IDs as chunk IDs are (an encrypted store); pack_sizes, the sizes
        the catalog recorded, save a stat per pack before its table is read.

        reread_page(stored) reads a page again, consistently (a page item by its ID, an inline page
        by its content's digest), and returns its bytes, or None if it is gone. When a page names
        a missing pack (repack may have moved its chunks since the page was read), the page is
        read again once and resolved anew; without reread_page, or if the page is gone or names a
        missing pack again, PagePackMissingError is raised."""
        self._packs = packs
        self._chunk_id_key = chunk_id_key
        self._pack_sizes = pack_sizes or {}
        self._reread_page = reread_page
        self._known_packs: dict[bytes, StoredPack] = {}

    def read(self, pages: Iterable[StoredPage], *, in_this_thread: bool = False) -> Iterator[bytes]:
        """The content's chunks' plaintext, in order, each checked against its ID; in_this_thread
        reads a small content in the calling thread (PackReader.read_chunks_here)."""
        read_chunks = self._packs.read_chunks_here if in_this_thread else self._packs.read_chunks
        # map, not a generator of its own: one frame less for each chunk handed out.
        return map(itemgetter(1), read_chunks(self._locations(pages)))

    def _locations(self, pages: Iterable[StoredPage]) -> Iterator[ChunkLocation]:
        for stored in pages:
            try:
                locations = self._resolve(stored)
            except PagePackMissingError:
                if self._reread_page is None:
                    raise
                page = self._reread_page(stored)
                if page is None:
                    raise
                locations = self._resolve(replace(stored, page=page))
            yield from locations

    def _resolve(self, stored: StoredPage) -> list[ChunkLocation]:
        """Where the chunks a page selects lie, in order; every pack it names has been found."""
        try:
            page = parse_page(stored.page)
        except CorruptObjectError as error:
            raise CorruptObjectError(f"{stored.name} is damaged: {error}") from None
        packs = {pack_id: self._pack(stored, pack_id) for pack_id in dict.fromkeys(run.pack_id for run in page.runs)}
        tables = {pack_id: pack.entries for pack_id, pack in packs.items()}
        entries = resolve_page(stored.page_id, page, tables, self._chunk_id_key)
        # resolve_page returns the runs' entries in run order, entry_count of them per run.
        locations: list[ChunkLocation] = []
        start = 0
        for run in page.runs:
            end = start + run.entry_count
            size = packs[run.pack_id].size
            locations += (ChunkLocation(run.pack_id, entry, size) for entry in entries[start:end])
            start = end
        return locations

    def _pack(self, stored: StoredPage, pack_id: bytes) -> StoredPack:
        pack = self._known_packs.get(pack_id)
        if pack is None:
            try:
                size = self._pack_sizes.get(pack_id)
                if size is None:
                    size = self._packs.pack_size(pack_id)
                pack = StoredPack(pack_id, size, self._packs.read_table(pack_id, size))
            except MissingChunkError:
                raise PagePackMissingError(stored, pack_id) from None
            except CorruptObjectError as error:
                raise CorruptObjectError(f"{stored.name}: {error}") from None
            self._known_packs[pack_id] = pack
        return pack


def checked_against_digest(chunks: Iterable[bytes], hasher: Hasher, digest: bytes) -> Iterator[bytes]:
    """The chunks, passed through while the whole-file digest is kept; DigestMismatchError after
    the last one if the content does not hash to digest (the end-to-end check of format 1 too)."""
    file_hasher = hasher.file_hasher()
    for data in chunks:
        file_hasher.update(data)
        yield data
    if file_hasher.digest() != digest:
        raise DigestMismatchError(f"content {digest.hex()} does not match its digest after reading")

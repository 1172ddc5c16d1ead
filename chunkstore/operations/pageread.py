"""The read side of a format 2 restore: a content's recipe pages in, its plaintext out.

docs/design/format-v2.md, Protocols / Restore. Each page is parsed, the tables of the packs it
names are read once (tables never change, so they are cached for the reader's life), and the
page is resolved against them: the chunk IDs its runs select must hash to its page ID. The runs'
records are then fetched with PackReader.read_chunks (coalesced ranged GETs, a bounded number in
flight) and each chunk is checked against its ID before it is yielded. Pages are consumed
lazily, one at a time ahead of the GETs, so memory is bounded whatever the content's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from chunkstore.backends.packs import ChunkLocation, PackReader
from chunkstore.core.hashing import Hasher
from chunkstore.core.packformat import PackEntry
from chunkstore.core.pages import parse_page, resolve_page
from chunkstore.errors import CorruptObjectError, DigestMismatchError, MissingChunkError


class PagePackMissingError(MissingChunkError):
    """A pack a recipe page names is not in the store. Repack may have moved its chunks since
    the page was read: the caller reads the page again, consistently, once, and a second miss
    is final."""

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
    ):
        """chunk_id_key keys page IDs as chunk IDs are (an encrypted store); pack_sizes, the sizes
        the catalog recorded, save a stat per pack before its table is read."""
        self._packs = packs
        self._chunk_id_key = chunk_id_key
        self._pack_sizes = pack_sizes or {}
        self._tables: dict[bytes, list[PackEntry]] = {}

    def read(self, pages: Iterable[StoredPage]) -> Iterator[bytes]:
        """The content's chunks' plaintext, in order, each checked against its ID."""
        for _, data in self._packs.read_chunks(self._locations(pages)):
            yield data

    def _locations(self, pages: Iterable[StoredPage]) -> Iterator[ChunkLocation]:
        for stored in pages:
            try:
                page = parse_page(stored.page)
            except CorruptObjectError as error:
                raise CorruptObjectError(f"{stored.name} is damaged: {error}") from None
            tables = {run.pack_id: self._table(stored, run.pack_id) for run in page.runs}
            entries = iter(resolve_page(stored.page_id, page, tables, self._chunk_id_key))
            # resolve_page returns the runs' entries in run order, entry_count of them per run.
            for run in page.runs:
                for _ in range(run.entry_count):
                    yield ChunkLocation(run.pack_id, next(entries))

    def _table(self, stored: StoredPage, pack_id: bytes) -> list[PackEntry]:
        table = self._tables.get(pack_id)
        if table is None:
            try:
                table = self._packs.read_table(pack_id, self._pack_sizes.get(pack_id))
            except MissingChunkError:
                raise PagePackMissingError(stored, pack_id) from None
            except CorruptObjectError as error:
                raise CorruptObjectError(f"{stored.name}: {error}") from None
            self._tables[pack_id] = table
        return table


def checked_against_digest(chunks: Iterable[bytes], hasher: Hasher, digest: bytes) -> Iterator[bytes]:
    """The chunks, passed through while the whole-file digest is kept; DigestMismatchError after
    the last one if the content does not hash to digest (the end-to-end check of format 1 too)."""
    file_hasher = hasher.file_hasher()
    for data in chunks:
        file_hasher.update(data)
        yield data
    if file_hasher.digest() != digest:
        raise DigestMismatchError(f"content {digest.hex()} does not match its digest after reading")

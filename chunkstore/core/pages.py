"""Recipes of storage format 2: segments, recipe pages and content roots.

docs/design/format-v2.md gives the design. A content's chunk sequence is cut into segments
after chunks whose ID ends in boundary_bits zero bits, so an edit changes only the segments
around it and equal chunk sequences are cut alike in every content. A segment's page ID is
the BLAKE3 of its chunk IDs concatenated (keyed with the chunk-ID subkey in an encrypted
store); its recipe page says where its chunks are stored, as runs of consecutive pack
entries. A content's root lists its segments. The layouts, all integers big-endian:

    recipe page (the catalog keys it by its page ID, which it does not hold)
        0   4    magic b"CSRP" (format 1's pages, recipes.py, are version 1)
        4   1    recipe format version (2)
        5   3    flags and reserved, must be 0
        8   4    chunk count, 1..8,192
        12  4    run count r, 1..chunk count
        16  8    plaintext bytes
        24  24r  runs: pack ID (16), first entry (2), entry count (2), plaintext bytes of the run (4)

    content root page number n (of 4,096 segments each; only the last one holds fewer)
        0   4    magic b"CSRR"
        4   1    recipe format version (2)
        5   3    flags and reserved, must be 0
        8   4    entry count e, 1..4,096
        12  4    root page number n (a root page stored under another number is refused)
        16  40e  entries: page ID (32), plaintext bytes (4), chunk count (2), reserved (2, must be 0)

Everything here is pure: the caller reads and writes the bytes.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import NamedTuple

import blake3

from chunkstore.core.packformat import MAX_ENTRIES as MAX_PACK_ENTRIES
from chunkstore.core.packformat import PACK_ID_SIZE, PackEntry
from chunkstore.errors import ChunkstoreError, CorruptObjectError, InvalidArgumentError

VERSION = 2
CHUNK_ID_SIZE = 32
PAGE_ID_SIZE = 32

PAGE_MAGIC = b"CSRP"
PAGE_HEADER = struct.Struct(">4sB3sIIQ")
RUN = struct.Struct(">16sHHI")

ROOT_MAGIC = b"CSRR"
ROOT_HEADER = struct.Struct(">4sB3sII")
ROOT_ENTRY = struct.Struct(">32sIHH")
# 4,096 entries make a 163,856-byte root page (64 GiB of content at 16 MiB segments): well
# inside a 400 KB DynamoDB item.
ROOT_PAGE_ENTRIES = 4096

# A segment of ~16 MiB of plaintext: 64 pages per GiB, so the root of a 1 GiB file is 2.6 KB.
PAGE_TARGET_BYTES = 16 * 1024 * 1024
# FastCDC-2020 cuts chunks larger than its nominal average: none before min (avg / 4), then one
# chance in 2 avg per byte up to avg and one in avg / 2 after it, so on random bytes the mean
# is 1/4 + 2 (1 - e^-3/8) + e^-3/8 / 2 = 1.22 times the nominal size. Measured with
# `python -m benchmarks.chunk_means` (2026-12-05, 4, 8 and 16 KiB): 1.20-1.28x on JavaScript
# release tars, Debian packages' file trees and their .deb files, a SQLite database and random
# bytes; 1.46-1.62x on Django's sdist tars (3-5% of their chunks are cut at the maximum size).
# Sizing segments for the nominal size made them average 23.7 MiB on those tars; 1.3 puts the
# first kinds within 8% of the target and the tars within 12% at 8 KiB (24% at 16 KiB).
FASTCDC2020_MEAN_FACTOR = 1.3
# Hooks (a format 2 put's sparse index): one chunk in 2**(boundary_bits - 3) of a segment, about
# 8 a segment (one per 2 MiB of a 16 MiB segment, the rate the design's curve measured at 97% of
# exact dedup on 30 releases put under their own names).
HOOKS_PER_SEGMENT_BITS = 3
# A page holds at most 8,192 runs: 196,632 bytes, half a DynamoDB item. Each chunk may be a run
# of its own (chunks scattered over many packs), so no segment has more chunks than that; the
# root's 2-byte chunk count holds it too.
MAX_PAGE_CHUNKS = 8192
# The root's and a run's plaintext bytes are 4-byte fields.
MAX_SEGMENT_BYTES = 2**32 - 1
# A content of one segment whose page is this small (20 runs) keeps it in its content item:
# every small file is one catalog item, with no page and no root.
MAX_INLINE_PAGE_BYTES = 512
# One chunk in 2**24 as a boundary would be 16 MiB pages of 1-byte chunks: beyond any chunker.
MAX_BOUNDARY_BITS = 24


# ---- segments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentSpec:
    """Where a chunk sequence is cut into segments; recorded in a format 2 store's config.

    A segment ends after a chunk whose ID's last boundary_bits bits are 0, once it holds at
    least min_chunks chunks; it ends anyway at max_chunks."""

    boundary_bits: int
    min_chunks: int
    max_chunks: int

    @classmethod
    def for_chunks(
        cls, avg_chunk_size: int, max_chunk_size: int, page_target_bytes: int = PAGE_TARGET_BYTES
    ) -> SegmentSpec:
        """Segments of about page_target_bytes of chunks from a FastCDC-2020 chunker of this
        nominal average, whose chunks average FASTCDC2020_MEAN_FACTOR times that.

        One boundary in 2**k chunks, with 2**k the chunks in a target rounded down to a power of
        two; at most 4 x 2**k chunks, MAX_PAGE_CHUNKS, and no more chunks than keep a segment's
        plaintext below 4 GiB (its 4-byte fields) whatever their size. The minimum, at least
        2**k / 16, makes up for the rounding: it is raised until the mean segment holds the
        target's chunks, but to at most 2**k and to no more than leaves 3 x 2**k chunks for the
        boundary to fall in (so at most e**-3, 5%, of segments are cut at the maximum)."""
        if not 0 < avg_chunk_size <= max_chunk_size <= MAX_SEGMENT_BYTES or page_target_bytes <= 0:
            raise InvalidArgumentError(
                f"cannot segment chunks of {avg_chunk_size} (at most {max_chunk_size}) bytes "
                f"into pages of {page_target_bytes}"
            )
        target_chunks = page_target_bytes / (avg_chunk_size * FASTCDC2020_MEAN_FACTOR)
        bits = min(max(0, math.floor(math.log2(target_chunks))), MAX_BOUNDARY_BITS)
        expected = 1 << bits
        max_chunks = min(4 * expected, MAX_PAGE_CHUNKS, MAX_SEGMENT_BYTES // max_chunk_size)
        lowest = min(max(1, expected // 16), max_chunks)
        highest = max(lowest, min(expected, max_chunks - 3 * expected))
        candidates = range(lowest, highest + 1)
        chosen = bisect.bisect_left(
            candidates, target_chunks, key=lambda min_chunks: cls(bits, min_chunks, max_chunks).expected_chunks()
        )
        spec = cls(bits, candidates[min(chosen, len(candidates) - 1)], max_chunks)
        spec.validate(max_chunk_size)
        return spec

    def expected_chunks(self) -> float:
        """The mean chunk count of a segment in a long content of random chunk IDs: min_chunks - 1
        chunks, then up to the first boundary (one chunk in 2**boundary_bits) or to max_chunks."""
        boundary = 2.0**-self.boundary_bits
        searched = self.max_chunks - self.min_chunks + 1
        return self.min_chunks - 1 + (1 - (1 - boundary) ** searched) / boundary

    def validate(self, max_chunk_size: int) -> None:
        if not 0 <= self.boundary_bits <= MAX_BOUNDARY_BITS:
            raise InvalidArgumentError(f"segment boundary bits must be within 0..{MAX_BOUNDARY_BITS}")
        if not 1 <= self.min_chunks <= self.max_chunks <= MAX_PAGE_CHUNKS:
            raise InvalidArgumentError(
                f"segment chunk counts need 1 <= min <= max <= {MAX_PAGE_CHUNKS}, "
                f"got {self.min_chunks}..{self.max_chunks}"
            )
        if self.max_chunks * max_chunk_size > MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(
                f"{self.max_chunks} chunks of up to {max_chunk_size} bytes overflow a segment's "
                f"{MAX_SEGMENT_BYTES} bytes"
            )

    def to_config(self) -> dict:
        return {"boundary_bits": self.boundary_bits, "min_chunks": self.min_chunks, "max_chunks": self.max_chunks}

    @classmethod
    def from_config(cls, data: dict, max_chunk_size: int) -> SegmentSpec:
        values = [data["boundary_bits"], data["min_chunks"], data["max_chunks"]]
        if any(type(value) is not int for value in values):
            raise TypeError(f"segment parameters must be integers, got {data!r}")
        spec = cls(*values)
        spec.validate(max_chunk_size)
        return spec


def page_id(chunk_ids: Iterable[bytes], chunk_id_key: bytes | None = None) -> bytes:
    """The ID of the segment of these chunks: BLAKE3 of the IDs concatenated, keyed as chunk IDs are."""
    joined = b"".join(chunk_ids)
    if chunk_id_key is None:
        return blake3.blake3(joined).digest()
    return blake3.blake3(joined, key=chunk_id_key).digest()


@dataclass(frozen=True, slots=True)
class Segment:
    page_id: bytes
    chunk_ids: list[bytes]
    sizes: list[int]  # plaintext bytes of each chunk
    plaintext_bytes: int

    def root_entry(self) -> RootEntry:
        return RootEntry(self.page_id, self.plaintext_bytes, len(self.chunk_ids))


class Segmenter:
    """Cuts a stream of chunks into segments as they come: only the open segment is held
    (at most MAX_PAGE_CHUNKS IDs, < 400 KB), whatever the content's size. 0.37 us a chunk on
    this machine (random IDs, 8 KiB spec), ~1% of what put spends on an 8 KiB chunk at 300 MB/s."""

    def __init__(self, spec: SegmentSpec, chunk_id_key: bytes | None = None):
        self.spec = spec
        self._boundary_mask = (1 << spec.boundary_bits) - 1
        self._chunk_id_key = chunk_id_key
        self._ids: list[bytes] = []
        self._sizes: list[int] = []
        self._bytes = 0

    def add(self, chunk_id: bytes, size: int) -> Segment | None:
        """Append the content's next chunk; the segment it ends, if it ends one."""
        if len(chunk_id) != CHUNK_ID_SIZE or size <= 0:
            raise InvalidArgumentError(
                f"a chunk is a {CHUNK_ID_SIZE}-byte ID and a size above 0, got {len(chunk_id)} bytes and {size}"
            )
        self._ids.append(chunk_id)
        self._sizes.append(size)
        self._bytes += size
        count = len(self._ids)
        if count >= self.spec.max_chunks or (
            count >= self.spec.min_chunks and int.from_bytes(chunk_id[-4:], "big") & self._boundary_mask == 0
        ):
            return self._close()
        return None

    def finish(self) -> Segment | None:
        """The content's last segment (None when its chunks ended a segment, or it has none)."""
        return self._close() if self._ids else None

    def _close(self) -> Segment:
        if self._bytes > MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(
                f"a segment holds at most {MAX_SEGMENT_BYTES} bytes, this one {self._bytes} "
                "(a chunk larger than the store's maximum size)"
            )
        segment = Segment(page_id(self._ids, self._chunk_id_key), self._ids, self._sizes, self._bytes)
        self._ids, self._sizes, self._bytes = [], [], 0
        return segment


# ---- recipe pages ------------------------------------------------------------------------------


class Run(NamedTuple):
    """entry_count consecutive entries of one pack's table, from first_entry on. A tuple: a page
    parses into one for each of its runs (3.2 chunks a run restoring the 10 Django sdists), and a
    frozen dataclass took 0.55 us to make against 0.20 us (timeit, this class's fields)."""

    pack_id: bytes
    first_entry: int
    entry_count: int
    plaintext_bytes: int

    @property
    def end_entry(self) -> int:
        return self.first_entry + self.entry_count


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """Where one chunk of a segment is stored: its pack and its entry in the pack's table."""

    pack_id: bytes
    entry: int
    plaintext_bytes: int


@dataclass(frozen=True, slots=True)
class RecipePage:
    chunk_count: int
    plaintext_bytes: int
    runs: list[Run]


def runs_of(locations: Iterable[ChunkLocation]) -> list[Run]:
    """The fewest runs that select a segment's chunks in order: a chunk stored at the entry after
    the previous chunk's, in the same pack, extends its run."""
    runs: list[Run] = []
    for location in locations:
        last = runs[-1] if runs else None
        if last is not None and last.pack_id == location.pack_id and last.end_entry == location.entry:
            runs[-1] = Run(
                last.pack_id, last.first_entry, last.entry_count + 1, last.plaintext_bytes + location.plaintext_bytes
            )
        else:
            runs.append(Run(location.pack_id, location.entry, 1, location.plaintext_bytes))
    return runs


def _check_run(run: Run, where: Callable[[], str], error: type[ChunkstoreError]) -> None:
    """Raise error, its message led by where() (worked out only then), if the run is malformed."""
    if run.entry_count == 0:
        raise error(f"{where()} selects no entry")
    if run.first_entry + run.entry_count > MAX_PACK_ENTRIES:
        raise error(
            f"{where()} selects entries {run.first_entry}..{run.end_entry - 1}, "
            f"past the {MAX_PACK_ENTRIES} a pack holds"
        )
    if run.plaintext_bytes < run.entry_count:
        raise error(
            f"{where()} claims {run.plaintext_bytes} plaintext bytes for {run.entry_count} chunks "
            "(a chunk holds at least one byte)"
        )


def _check_page_totals(chunk_count: int, run_count: int, plaintext_bytes: int, error: type[ChunkstoreError]) -> None:
    if not 1 <= chunk_count <= MAX_PAGE_CHUNKS:
        raise error(f"recipe page holds {chunk_count} chunks (a page holds 1 to {MAX_PAGE_CHUNKS})")
    if not 1 <= run_count <= chunk_count:
        raise error(f"recipe page holds {run_count} runs for {chunk_count} chunks (1 to one per chunk)")
    if plaintext_bytes > MAX_SEGMENT_BYTES:
        raise error(f"a segment holds at most {MAX_SEGMENT_BYTES} bytes, this page {plaintext_bytes}")


def build_page(runs: Sequence[Run]) -> bytes:
    """The recipe page (CSRP version 2) of a segment stored in these runs, in order."""
    chunk_count = sum(run.entry_count for run in runs)
    plaintext_bytes = sum(run.plaintext_bytes for run in runs)
    _check_page_totals(chunk_count, len(runs), plaintext_bytes, InvalidArgumentError)
    for number, run in enumerate(runs):
        if len(run.pack_id) != PACK_ID_SIZE:
            raise InvalidArgumentError(f"a pack ID is {PACK_ID_SIZE} bytes, run {number} has {len(run.pack_id)}")
        _check_run(run, partial("run {}".format, number), InvalidArgumentError)
    return b"".join(
        [
            PAGE_HEADER.pack(PAGE_MAGIC, VERSION, bytes(3), chunk_count, len(runs), plaintext_bytes),
            *(RUN.pack(run.pack_id, run.first_entry, run.entry_count, run.plaintext_bytes) for run in runs),
        ]
    )


def parse_page(blob: bytes) -> RecipePage:
    """A recipe page's runs, each checked, and their totals checked against the header."""
    if len(blob) < PAGE_HEADER.size:
        raise CorruptObjectError(f"recipe page is {len(blob)} bytes, shorter than its {PAGE_HEADER.size}-byte header")
    magic, version, reserved, chunk_count, run_count, plaintext_bytes = PAGE_HEADER.unpack_from(blob)
    if magic != PAGE_MAGIC:
        raise CorruptObjectError(f"recipe page does not start with {PAGE_MAGIC!r} (found {magic!r})")
    if version != VERSION:
        raise CorruptObjectError(f"recipe page has unknown version {version} (this parser reads version {VERSION})")
    if reserved != bytes(3):
        raise CorruptObjectError("recipe page has unknown flags or reserved bytes")
    # Checked before the length, so a crafted count costs nothing.
    _check_page_totals(chunk_count, run_count, plaintext_bytes, CorruptObjectError)
    if len(blob) != PAGE_HEADER.size + run_count * RUN.size:
        raise CorruptObjectError(
            f"recipe page is {len(blob)} bytes, {run_count} runs make {PAGE_HEADER.size + run_count * RUN.size}"
        )
    runs = list(map(Run._make, RUN.iter_unpack(memoryview(blob)[PAGE_HEADER.size :])))
    for number, run in enumerate(runs):
        _check_run(run, partial(_page_run_name, number, run), CorruptObjectError)
    selected = sum(run.entry_count for run in runs)
    run_bytes = sum(run.plaintext_bytes for run in runs)
    if selected != chunk_count or run_bytes != plaintext_bytes:
        raise CorruptObjectError(
            f"recipe page runs select {selected} chunks of {run_bytes} bytes, its header "
            f"says {chunk_count} chunks of {plaintext_bytes} bytes"
        )
    return RecipePage(chunk_count, plaintext_bytes, runs)


def resolve_page(
    expected_page_id: bytes | None,
    page: RecipePage,
    tables: Mapping[bytes, Sequence[PackEntry]],
    chunk_id_key: bytes | None = None,
) -> list[PackEntry]:
    """The pack entries a page's runs select, in segment order, given the tables of its packs.

    Refused (CorruptObjectError): a run past the end of its pack's table, a run whose entries'
    plaintext lengths do not add up to its own, and chunk IDs that do not hash to the page ID:
    the catalog and the packs cannot disagree unnoticed. The caller still checks each chunk
    against its ID, and the file against its digest. A content's inline page has no ID
    (expected_page_id None): the whole-file digest is its only check, as the design says."""
    entries: list[PackEntry] = []
    for number, run in enumerate(page.runs):
        table = tables.get(run.pack_id)
        if table is None:
            raise InvalidArgumentError(f"the table of pack {run.pack_id.hex()} was not given")
        if run.end_entry > len(table):
            raise CorruptObjectError(
                f"{_resolved_run_name(expected_page_id, number, run)} selects entries up to {run.end_entry - 1}, "
                f"the pack holds {len(table)}"
            )
        selected = table[run.first_entry : run.end_entry]
        if sum(map(_plaintext_length, selected)) != run.plaintext_bytes:
            raise CorruptObjectError(
                f"{_resolved_run_name(expected_page_id, number, run)}: the pack's entries do not hold "
                f"the {run.plaintext_bytes} bytes the page says"
            )
        entries += selected
    if (
        expected_page_id is not None
        and page_id((entry.chunk_id for entry in entries), chunk_id_key) != expected_page_id
    ):
        raise CorruptObjectError(f"page {expected_page_id.hex()}: the chunks its runs select do not hash to its ID")
    return entries


_plaintext_length = attrgetter("plaintext_length")


def _page_run_name(number: int, run: Run) -> str:
    return f"recipe page run {number} (pack {run.pack_id.hex()})"


def _resolved_run_name(page_id_or_inline: bytes | None, number: int, run: Run) -> str:
    return f"page {_page_name(page_id_or_inline)} run {number} (pack {run.pack_id.hex()})"


def _page_name(page_id_or_inline: bytes | None) -> str:
    return "(inline)" if page_id_or_inline is None else page_id_or_inline.hex()


# ---- content roots -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootEntry:
    """One segment of a content, in order."""

    page_id: bytes
    plaintext_bytes: int
    chunk_count: int


def keeps_page_inline(segment_count: int, page: bytes) -> bool:
    """Whether a content keeps its page in its content item, with no page item and no root."""
    return segment_count == 1 and len(page) <= MAX_INLINE_PAGE_BYTES


def _check_root_entry(entry: RootEntry, where: str, error: type[ChunkstoreError]) -> None:
    if not 1 <= entry.chunk_count <= MAX_PAGE_CHUNKS:
        raise error(f"{where} has {entry.chunk_count} chunks (a segment holds 1 to {MAX_PAGE_CHUNKS})")
    if not entry.chunk_count <= entry.plaintext_bytes <= MAX_SEGMENT_BYTES:
        raise error(f"{where} claims {entry.plaintext_bytes} plaintext bytes for {entry.chunk_count} chunks")


def build_root_page(entries: Sequence[RootEntry], number: int) -> bytes:
    """Root page number `number`: the entries of segments number * ROOT_PAGE_ENTRIES on."""
    if not 1 <= len(entries) <= ROOT_PAGE_ENTRIES:
        raise InvalidArgumentError(f"a root page holds 1 to {ROOT_PAGE_ENTRIES} segments, got {len(entries)}")
    if not 0 <= number < 2**32:
        raise InvalidArgumentError(f"a root page number is a 4-byte number, got {number}")
    for index, entry in enumerate(entries):
        if len(entry.page_id) != PAGE_ID_SIZE:
            raise InvalidArgumentError(
                f"a page ID is {PAGE_ID_SIZE} bytes, root entry {index} has {len(entry.page_id)}"
            )
        _check_root_entry(entry, f"root entry {index}", InvalidArgumentError)
    return b"".join(
        [
            ROOT_HEADER.pack(ROOT_MAGIC, VERSION, bytes(3), len(entries), number),
            *(ROOT_ENTRY.pack(entry.page_id, entry.plaintext_bytes, entry.chunk_count, 0) for entry in entries),
        ]
    )


def parse_root_page(blob: bytes, number: int) -> list[RootEntry]:
    """The entries of a root page read as page number `number` of its content's root."""
    if len(blob) < ROOT_HEADER.size:
        raise CorruptObjectError(
            f"content root page is {len(blob)} bytes, shorter than its {ROOT_HEADER.size}-byte header"
        )
    magic, version, reserved, count, stored_number = ROOT_HEADER.unpack_from(blob)
    if magic != ROOT_MAGIC:
        raise CorruptObjectError(f"content root page does not start with {ROOT_MAGIC!r} (found {magic!r})")
    if version != VERSION:
        raise CorruptObjectError(
            f"content root page has unknown version {version} (this parser reads version {VERSION})"
        )
    if reserved != bytes(3):
        raise CorruptObjectError("content root page has unknown flags or reserved bytes")
    if not 1 <= count <= ROOT_PAGE_ENTRIES:
        raise CorruptObjectError(
            f"content root page holds {count} segments (a root page holds 1 to {ROOT_PAGE_ENTRIES})"
        )
    if stored_number != number:
        raise CorruptObjectError(f"content root page {number} holds page {stored_number} of a root")
    if len(blob) != ROOT_HEADER.size + count * ROOT_ENTRY.size:
        raise CorruptObjectError(
            f"content root page is {len(blob)} bytes, {count} segments make "
            f"{ROOT_HEADER.size + count * ROOT_ENTRY.size}"
        )
    entries = []
    for index, (entry_page_id, plaintext_bytes, chunk_count, entry_reserved) in enumerate(
        ROOT_ENTRY.iter_unpack(memoryview(blob)[ROOT_HEADER.size :])
    ):
        where = f"content root page {number} entry {index}"
        if entry_reserved:
            raise CorruptObjectError(f"{where} has unknown reserved bits")
        entry = RootEntry(entry_page_id, plaintext_bytes, chunk_count)
        _check_root_entry(entry, where, CorruptObjectError)
        entries.append(entry)
    return entries


def parse_root(pages: Sequence[bytes]) -> list[RootEntry]:
    """A content's segments from its root pages, in number order: every page but the last is full."""
    entries: list[RootEntry] = []
    for number, blob in enumerate(pages):
        page_entries = parse_root_page(blob, number)
        if number < len(pages) - 1 and len(page_entries) != ROOT_PAGE_ENTRIES:
            raise CorruptObjectError(
                f"content root page {number} holds {len(page_entries)} segments, but it is "
                f"not the last: only the last page holds fewer than {ROOT_PAGE_ENTRIES}"
            )
        entries.extend(page_entries)
    return entries


class RootBuilder:
    """Encodes a content's segments into root pages as they come: at most one page's entries
    (160 KB) are held, whatever the content's size."""

    def __init__(self) -> None:
        self._entries: list[RootEntry] = []
        self.pages_built = 0
        self.segment_count = 0
        self.chunk_count = 0
        self.plaintext_bytes = 0

    def add(self, entry: RootEntry) -> bytes | None:
        """Append the content's next segment; a root page, when this segment fills one."""
        _check_root_entry(entry, f"segment {self.segment_count}", InvalidArgumentError)
        self._entries.append(entry)
        self.segment_count += 1
        self.chunk_count += entry.chunk_count
        self.plaintext_bytes += entry.plaintext_bytes
        return self._page() if len(self._entries) == ROOT_PAGE_ENTRIES else None

    def finish(self) -> bytes | None:
        """The last root page (None when the last segment filled one, or there is no segment)."""
        return self._page() if self._entries else None

    def _page(self) -> bytes:
        page = build_root_page(self._entries, self.pages_built)
        self.pages_built += 1
        self._entries = []
        return page

"""The catalog interface: names and versions, recipes, chunks and their reference counts.

The catalog is the source of truth for what is stored; the blob store only holds
bytes. Every implementation (SQLite, DynamoDB) keeps this contract, and
tests/catalog_conformance.py checks it for each one.

Chunk rows have a state:
    PENDING   a writer has announced it is uploading the object; it may not exist yet
    PRESENT   the object is durable
    DELETING  gc has claimed the chunk and is deleting its object; no writer may use it

The protocol that keeps a concurrent put and gc from losing data:
  * A writer opens a session and claims the chunks it meets (claim_chunks): a
    PRESENT chunk is pinned for the session, so gc will not collect it; any other
    chunk gets a PENDING row (pinned) before the writer uploads it. A writer that
    meets a DELETING chunk waits until gc has removed it, then uploads it anew.
  * After the objects are durable the writer marks them PRESENT (chunks_stored), then
    commits versions (commit). For a new content, commit increments the count of
    every chunk in its recipe *only if the chunk is PRESENT*, in the same atomic
    step that makes the version visible; if any chunk is not, nothing is committed.
  * gc (collect_candidates) moves to DELETING only chunks with count 0 and no pin
    from a live session, deletes their objects, then drops the rows (forget_chunks).
So a committed recipe only ever names chunks that were PRESENT with a count > 0 from
the moment of the commit on, and gc never deletes an object whose count is above 0.

Storage format 2 (docs/design/format-v2.md) keeps no chunk rows: a content's recipe pages are
its inline recipe page or its root pages, commit and removal count contents only
(recipes.counted_entries), and gc marks pages and packs through the pack index instead.

History: every version records when it was stored (stored_at_ns, UTC). A deletion
marker is a version that says its name stopped existing at that time (the S3
versioning model): it has no content and takes a version number like any other, so a
name's state at any time T is its highest-numbered version stored at or before T, and
a name whose state is a marker does not exist then. Snapshots record each put run
(when, on which host, which paths, what it did); they name points in time, the
versions themselves carry the history.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from chunkstore.backends.packindex import PackIndex, RoundGuard
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, HOST
from chunkstore.errors import NameNotFoundError, VersionNotFoundError


class ChunkState(IntEnum):
    PENDING = 0
    PRESENT = 1
    DELETING = 2


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: bytes
    size: int
    stored_size: int
    refcount: int
    state: ChunkState
    location: str | None = None  # None: its own object at config.chunk_key(id); reserved for packs


@dataclass(frozen=True, slots=True)
class ContentRecord:
    digest: bytes
    size: int
    chunk_count: int
    page_count: int
    refcount: int


# The largest file mode a catalog may hold: the stat module's functions (S_ISLNK, S_IMODE)
# take a C unsigned int and raise OverflowError beyond it. Every st_mode fits in 16 bits.
MAX_MODE = 2**32 - 1


@dataclass(frozen=True, slots=True)
class FileStat:
    """What put records of a file, and compares to skip rereading it."""

    size: int
    mtime_ns: int
    mode: int
    inode: int = 0
    ctime_ns: int = 0
    # A store that seals its metadata (docs/design/encrypted-metadata.md) keeps mtime, mode,
    # inode and ctime here, encrypted, and zeros in their fields; b"" in every other store.
    sealed: bytes = b""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    name: str
    version: int
    digest: bytes  # b"" for a deletion marker
    stat: FileStat  # all zero for a deletion marker
    stored_at_ns: int
    deleted: bool = False  # a deletion marker: the name did not exist from stored_at_ns on

    @property
    def size(self) -> int:
        return self.stat.size


# What a deletion marker records of its name: nothing.
MARKER_STAT = FileStat(0, 0, 0)


def deletion_marker(name: str, version: int, at_ns: int) -> VersionRecord:
    return VersionRecord(name, version, b"", MARKER_STAT, at_ns, deleted=True)


def refuse_marker(record: VersionRecord, asked_version: int | None) -> VersionRecord:
    """The record itself, or the error get_version raises for a deletion marker."""
    if not record.deleted:
        return record
    if asked_version is None:
        raise NameNotFoundError(
            f"{record.name!r} was deleted (its version {record.version} is a deletion marker); "
            "earlier versions can still be read with --version or --as-of"
        )
    raise VersionNotFoundError(f"version {record.version} of {record.name!r} is a deletion marker, not a file")


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A file a writer asks to commit: its stat, digest and the recipe pages of its content."""

    name: str
    stat: FileStat
    digest: bytes
    chunk_count: int
    pages: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    name: str
    version: int
    outcome: str  # "stored", "duplicate" or "unchanged"
    duplicate_of: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """One put run: when (UTC), where, what ran it, the paths it was given (as stored names, ""
    for a folder put as the root, `put .`) and what it did."""

    snapshot_id: str
    at_ns: int
    host: str
    paths: tuple[str, ...]
    stored: int = 0  # files that got a version of new content
    duplicate: int = 0  # files that got a version of content already stored
    unchanged: int = 0
    deleted: int = 0  # deletion markers recorded
    errors: int = 0
    added_bytes: int = 0  # plaintext of the chunks the run added
    added_stored_bytes: int = 0  # what their objects take in the store
    program: str = ""  # what ran the put: "chunkstore put", "web upload", "lambda ingest", ...; "" if unknown
    # A store that seals its metadata keeps host, paths and program here, encrypted, and empty
    # values in their fields; b"" in every other store.
    sealed: bytes = b""


# The counters of a snapshot record, as both catalogs store them.
SNAPSHOT_COUNTS = ("stored", "duplicate", "unchanged", "deleted", "errors", "added_bytes", "added_stored_bytes")


@dataclass(frozen=True, slots=True)
class CatalogStats:
    names: int
    versions: int
    logical_bytes: int
    contents: int
    content_bytes: int
    chunks: int
    unique_bytes: int
    stored_bytes: int


class Catalog(ABC):
    """See the module docstring for the protocol every method takes part in."""

    # How long a session lives without a heartbeat before others may take it for dead.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # What this machine's sessions record as their host, and what liveness compares a session's
    # host with: the host name, or in a store that seals its metadata a keyed hash of it.
    session_host: str = HOST
    # Storage format 2's packs, pages and gc round (chunkstore/backends/packindex.py, whose
    # docstrings are its contract); every catalog has one, a format 1 store leaves it empty.
    pack_index: PackIndex

    # ---- writer sessions -------------------------------------------------------------

    @abstractmethod
    def open_session(self, kind: str) -> str:
        """Register a live session (a put, a gc) and return its ID."""

    @abstractmethod
    def heartbeat(self, session: str) -> None:
        """Keep the session alive. Safe to call from another thread than the writer's."""

    @abstractmethod
    def close_session(self, session: str) -> None:
        """Drop the session and its pins. Idempotent."""

    @abstractmethod
    def claim_chunks(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
        """Claim (chunk ID, plaintext size) pairs for a writer; return the IDs it must upload.

        PRESENT chunks are pinned and not returned; absent and PENDING ones get a pinned
        PENDING row and are returned. Waits for DELETING chunks to be removed first, and
        raises ConcurrentModificationError if the gc deleting them has died."""

    @abstractmethod
    def chunks_stored(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> None:
        """Mark (chunk ID, stored size) as PRESENT. The caller has made the objects durable."""

    @abstractmethod
    def commit(
        self,
        session: str,
        versions: Sequence[NewVersion],
        at_ns: int | None = None,
        *,
        round_guard: RoundGuard | None = None,
    ) -> list[CommitOutcome]:
        """Atomically make versions visible, in order.

        New versions of a name are numbered 1, 2, 3, ...; a number is never given twice,
        even after the versions holding it were removed, and deletion markers take
        numbers from the same sequence.
        A version whose content is already stored is a duplicate (its pages are ignored);
        one whose digest equals its name's latest version (not a deletion marker) only
        refreshes that version's stat ("unchanged"). A new content's chunks must all be
        PRESENT: otherwise nothing is committed and ConcurrentModificationError is raised.
        New versions are stored at at_ns (UTC nanoseconds), or now when it is None.

        A storage format 2 writer passes its round_guard (packindex.RoundGuard): each version
        that makes a new content live is committed only while the gc round item holds
        round_guard.current(), and after round_guard.moved(seen) when it no longer does.
        Duplicates and refreshes name a content that is live already and need no check."""

    # ---- reading ---------------------------------------------------------------------

    @abstractmethod
    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        """The given or latest version of name. Raises NameNotFoundError when the name has no
        version or its latest version is a deletion marker (saying so), and
        VersionNotFoundError when the given version does not exist or is a deletion marker."""

    @abstractmethod
    def list_versions(
        self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None, deleted: bool = False
    ) -> Iterator[VersionRecord]:
        """Versions of names equal to prefix or under prefix + '/', ordered by name then version.

        Only versions stored at or before as_of_ns count (all of them when it is None).
        Without all_versions, one version a name: its highest-numbered one, and names whose
        highest-numbered one is a deletion marker are left out. Deletion markers are
        yielded only with deleted=True (then a deleted name yields its marker)."""

    @abstractmethod
    def find_name_with_digest(self, digest: bytes) -> str | None:
        """Some name whose version has this content (the oldest stored), or None."""

    @abstractmethod
    def get_content(self, digest: bytes) -> ContentRecord | None:
        """The stored content with this digest, or None."""

    @abstractmethod
    def recipe_pages(self, digest: bytes) -> Iterator[bytes]:
        """The content's recipe pages in order. Raises NotFoundError if it has none."""

    @abstractmethod
    def replace_inline_page(self, digest: bytes, old: bytes, new: bytes) -> bool:
        """Replace a storage format 2 content's inline page (the one page of its recipe) with
        new, if it is still old: gc's repack moved the chunks its runs select to other packs. The
        page names the same chunks, so the content does not change. False, and nothing changed,
        if the content has no such page (it changed, or is gone)."""

    @abstractmethod
    def iter_contents(self) -> Iterator[ContentRecord]:
        """Every stored content."""

    @abstractmethod
    def iter_chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk row, in any state."""

    @abstractmethod
    def get_chunks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, ChunkRecord]:
        """The rows of the given chunks that exist."""

    @abstractmethod
    def stats(self) -> CatalogStats:
        """Totals over the whole catalog."""

    # ---- history ---------------------------------------------------------------------

    @abstractmethod
    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        """Record a deletion marker stored at at_ns for each (name, version) whose latest version
        is still that version (a content version), and return the markers written in order.

        Each marker is written atomically against commits: a name that got a newer version
        (or a marker) since the caller read it, or that no longer exists, is skipped."""

    @abstractmethod
    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot record. Raises InvalidArgumentError if its ID is already taken."""

    @abstractmethod
    def list_snapshots(self) -> list[SnapshotRecord]:
        """Every snapshot record, ordered by time, then ID."""

    @abstractmethod
    def remove_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        """Drop snapshot records; IDs that do not exist are ignored."""

    # ---- removal and gc --------------------------------------------------------------

    @abstractmethod
    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        """Remove (name, version) pairs; version None removes every version of name,
        deletion markers included.

        Atomically decrements content counts (a deletion marker holds none); a content
        that drops to 0 is deleted with its recipe and decrements its chunks' counts.
        Returns what was removed; names or versions that do not exist raise
        NameNotFoundError / VersionNotFoundError and nothing is removed."""

    @abstractmethod
    def acquire_gc_lock(self, session: str) -> None:
        """Become the only gc. Raises ConcurrentModificationError if a live gc holds it;
        a lock whose session stopped heartbeating is taken over."""

    @abstractmethod
    def release_gc_lock(self, session: str) -> None:
        """Give the gc lock up. Idempotent."""

    @abstractmethod
    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        """Move up to limit collectable chunks (count 0, no live pin) to DELETING and return
        them, together with chunks left DELETING by an interrupted gc. Expires dead sessions.
        Raises ConcurrentModificationError if the caller no longer holds the gc lock."""

    @abstractmethod
    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        """For objects found in the blob store: give every ID that has no row a DELETING row
        and return those IDs (the caller deletes their objects, then forget_chunks)."""

    @abstractmethod
    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        """Drop DELETING rows whose objects the caller has deleted."""

    # ---- repair ----------------------------------------------------------------------

    @abstractmethod
    def set_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        """Compare and set chunk reference counts (verify --repair, from a recount of recipes):
        counts maps a chunk to (expected, new), and its count becomes new only if it is still
        expected. Returns the chunks whose count had changed (or that are gone): a put or rm
        that ran after the recount read them; they are left as they are, to be recounted."""

    @abstractmethod
    def set_content_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        """Compare and set contents' counts of versions (verify --repair, from a recount of the
        versions that name each content): counts maps a content digest to (expected, new), and
        its count becomes new only if it is still expected. A content set to 0 is released as
        remove_versions releases one whose last version goes: its recipe is deleted and (format 1)
        its chunks' counts are decremented, for gc to collect. Returns the contents whose count
        had changed (or that are gone): a put or rm that ran after the recount read them; they are
        left as they are, to be recounted."""

    # ---- capabilities with a default ---------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """Damage the catalog finds in its own storage (a file's checksum), for verify.
        A catalog kept by a service (DynamoDB) has none to check."""
        return []

    def storage_bytes(self) -> int | None:
        """What the catalog's own files take on disk, or None when a service keeps it."""
        return None

    def close(self) -> None:
        """Release connections."""


class WrappedCatalog(Catalog):
    """A catalog that works over another one, inner (faults injected, metadata sealed): its
    capabilities (lease_seconds, session_host, integrity_problems, storage_bytes) and close
    are inner's. A subclass gives the methods of the contract."""

    def __init__(self, inner: Catalog):
        self.inner = inner

    @property
    def lease_seconds(self) -> float:
        return self.inner.lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, seconds: float) -> None:
        self.inner.lease_seconds = seconds

    @property
    def session_host(self) -> str:
        return self.inner.session_host

    @session_host.setter
    def session_host(self, host: str) -> None:
        self.inner.session_host = host

    def integrity_problems(self) -> list[str]:
        return self.inner.integrity_problems()

    def storage_bytes(self) -> int | None:
        return self.inner.storage_bytes()

    def close(self) -> None:
        self.inner.close()

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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum


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


@dataclass(frozen=True, slots=True)
class FileStat:
    """What put records of a file, and compares to skip rereading it."""

    size: int
    mtime_ns: int
    mode: int
    inode: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True, slots=True)
class VersionRecord:
    name: str
    version: int
    digest: bytes
    stat: FileStat
    stored_at_ns: int

    @property
    def size(self) -> int:
        return self.stat.size


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
    def commit(self, session: str, versions: Sequence[NewVersion]) -> list[CommitOutcome]:
        """Atomically make versions visible, in order.

        New versions of a name are numbered 1, 2, 3, ...; a number is never given twice,
        even after the versions holding it were removed.
        A version whose content is already stored is a duplicate (its pages are ignored);
        one whose digest equals its name's latest version only refreshes that version's
        stat ("unchanged"). A new content's chunks must all be PRESENT: otherwise nothing
        is committed and ConcurrentModificationError is raised."""

    # ---- reading ---------------------------------------------------------------------

    @abstractmethod
    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        """The given or latest version of name. Raises NameNotFoundError / VersionNotFoundError."""

    @abstractmethod
    def list_versions(self, prefix: str = "", all_versions: bool = False) -> Iterator[VersionRecord]:
        """Versions of names equal to prefix or under prefix + '/', ordered by name then
        version; only the latest of each name unless all_versions."""

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

    # ---- removal and gc --------------------------------------------------------------

    @abstractmethod
    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        """Remove (name, version) pairs; version None removes every version of name.

        Atomically decrements content counts; a content that drops to 0 is deleted with
        its recipe and decrements its chunks' counts. Returns what was removed; names or
        versions that do not exist raise NameNotFoundError / VersionNotFoundError and
        nothing is removed."""

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
    def set_refcounts(self, counts: dict[bytes, int]) -> None:
        """Overwrite chunk reference counts (verify --repair, from a recount of recipes)."""

    def close(self) -> None:
        """Release connections."""

"""A store kept in this process's memory: objects in a dict, the catalog in dicts under one lock.

It is for fast unit tests and for trying the library without a folder or a cloud account:
`Store.init("memory://NAME", ...)` creates a store that any later `Store.open("memory://NAME")`
in the same process finds, objects and catalog alike. Nothing survives the process: there is
no file, no fsync and no other process to share it with. discard_memory_store frees one.

MemoryBlobStore and MemoryCatalog keep the contracts of BlobStore and Catalog on their own
(tests/blobstore_conformance.py and tests/catalog_conformance.py run against them), so a test
that passes here tests the library's logic, not a shortcut of this backend. Several handles
(MemoryBlobStore(space), MemoryCatalog(state)) on one space or state behave as several
processes on one folder do; each catalog handle has its own lease, as each process does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from chunkstore.backends.backend import Backend
from chunkstore.backends.blobstore import BlobInfo, BlobStore, validate_key
from chunkstore.backends.catalog import (
    Catalog,
    CatalogStats,
    ChunkRecord,
    ChunkState,
    CommitOutcome,
    ContentRecord,
    NewVersion,
    SnapshotRecord,
    VersionRecord,
    deletion_marker,
    refuse_marker,
)
from chunkstore.backends.packindex import (
    FIRST_ROUND,
    GcRound,
    IndexItem,
    IndexState,
    NewPage,
    PackIndex,
    PackRecord,
    PageRecord,
    RoundGuard,
    check_doom_round,
    check_new_pack,
    check_new_pages,
    check_page_body,
    delete_step,
    doom_step,
    new_generation,
    not_pending,
    pack_exists,
    round_moved,
    spare_step,
)
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, new_session_id, now_ns
from chunkstore.core import recipes
from chunkstore.errors import (
    BlobNotFoundError,
    ChunkstoreError,
    ConcurrentModificationError,
    InvalidArgumentError,
    NameNotFoundError,
    NotFoundError,
    VersionNotFoundError,
)

MEMORY_CATALOG_SECTION = {"type": "memory"}
# How long a writer waits for a gc to finish deleting a chunk it needs, and how often it
# looks whether that gc is still alive while it waits (the same figures as SQLite's).
_DELETING_WAIT_SECONDS = 120.0
_DELETING_POLL_SECONDS = 0.05


# ---- objects -----------------------------------------------------------------------------


class BlobSpace:
    """The objects of one memory location, shared by every MemoryBlobStore handle on it."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.created = False


class MemoryBlobStore(BlobStore):
    """Objects in a dict. A put replaces the whole value under the lock, so a reader sees the
    old object or the new one, never a part; every put is as durable as it will ever be."""

    def __init__(self, space: BlobSpace | None = None, url: str = "memory://"):
        self.space = space if space is not None else BlobSpace()
        self.url = url

    def put(self, key: str, data: bytes) -> None:
        # A copy: the caller may reuse a bytearray or a view after the call.
        value = bytes(data)
        with self.space.lock:
            self.space.objects[validate_key(key)] = value
            self.space.created = True

    def _object(self, key: str) -> bytes:
        with self.space.lock:
            value = self.space.objects.get(validate_key(key))
        if value is None:
            raise BlobNotFoundError(f"no object {key!r} in {self.url}")
        return value

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        value = self._object(key)
        if offset == 0 and length is None:
            return value
        return value[offset:] if length is None else value[offset : offset + length]

    def stat(self, key: str) -> BlobInfo:
        return BlobInfo(key, len(self._object(key)))

    def delete(self, key: str) -> None:
        with self.space.lock:
            self.space.objects.pop(validate_key(key), None)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        # Python orders str by code point, which for the ASCII of valid keys is byte order, as S3's.
        with self.space.lock:
            found = sorted((key, len(value)) for key, value in self.space.objects.items() if key.startswith(prefix))
        for key, size in found:
            yield BlobInfo(key, size)

    def create(self) -> None:
        with self.space.lock:
            self.space.created = True

    def exists(self) -> bool:
        return self.space.created


# ---- catalog -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    size: int
    state: ChunkState
    stored_size: int = 0
    refcount: int = 0

    def record(self, chunk_id: bytes) -> ChunkRecord:
        return ChunkRecord(chunk_id, self.size, self.stored_size, self.refcount, self.state)


@dataclass(slots=True)
class _Content:
    size: int
    chunk_count: int
    pages: list[bytes]
    refcount: int = 1

    def record(self, digest: bytes) -> ContentRecord:
        return ContentRecord(digest, self.size, self.chunk_count, len(self.pages), self.refcount)


@dataclass(slots=True)
class _Session:
    kind: str
    heartbeat_ns: int
    pins: set[bytes] = field(default_factory=set)


class CatalogState:
    """Everything one memory catalog holds, shared by every MemoryCatalog handle on it.

    `changed` is the one lock every method holds; claims that wait for gc wait on it."""

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.chunks: dict[bytes, _Chunk] = {}
        self.pinned_by: dict[bytes, set[str]] = {}
        self.contents: dict[bytes, _Content] = {}
        # name -> version -> record; versions only grow, so each dict is in version order.
        self.versions: dict[str, dict[int, VersionRecord]] = {}
        # Never lowered, even when a name's versions are all removed: numbers are not given twice.
        self.last_version: dict[str, int] = {}
        # digest -> the (name, version) of every content version holding it (find_name_with_digest).
        self.holders: dict[bytes, set[tuple[str, int]]] = {}
        self.sessions: dict[str, _Session] = {}
        self.gc_holder: str | None = None
        self.snapshots: dict[str, SnapshotRecord] = {}
        # The pack index (chunkstore/backends/packindex.py).
        self.gc_round: GcRound = FIRST_ROUND
        self.packs: dict[bytes, PackRecord] = {}
        self.pages: dict[bytes, PageRecord] = {}
        self.hooks: dict[bytes, bytes] = {}


def _chunk_ids(pages: Sequence[bytes]) -> list[bytes]:
    """The chunks a content's pages hold counts on (none for a format 2 content)."""
    return [entry.chunk_id for entry in recipes.counted_entries(pages)]


class MemoryCatalog(Catalog):
    """A handle on a CatalogState. Every method is one step under the state's lock, so each is
    atomic against every other handle, as a transaction is."""

    def __init__(
        self,
        state: CatalogState | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ):
        self.state = state if state is not None else CatalogState()
        self.lease_seconds = lease_seconds
        self.read_only = read_only
        self.pack_index: PackIndex = MemoryPackIndex(self)

    @contextmanager
    def _reading(self) -> Iterator[CatalogState]:
        with self.state.changed:
            yield self.state

    @contextmanager
    def _writing(self) -> Iterator[CatalogState]:
        if self.read_only:
            raise ChunkstoreError("this memory catalog was opened read-only")
        with self.state.changed:
            yield self.state
            # Claims waiting for gc to forget DELETING chunks look again.
            self.state.changed.notify_all()

    def _is_dead(self, session: _Session | None, at_ns: int) -> bool:
        """Sessions all live in this process, so only a missed heartbeat can tell one dead."""
        return session is None or at_ns - session.heartbeat_ns > self.lease_seconds * 1_000_000_000

    # ---- writer sessions -------------------------------------------------------------

    def open_session(self, kind: str) -> str:
        session = new_session_id()
        with self._writing() as state:
            state.sessions[session] = _Session(kind, now_ns())
        return session

    def heartbeat(self, session: str) -> None:
        with self._writing() as state:
            if session in state.sessions:
                state.sessions[session].heartbeat_ns = now_ns()

    def close_session(self, session: str) -> None:
        with self._writing() as state:
            self._drop_session(state, session)
            if state.gc_holder == session:
                state.gc_holder = None

    @staticmethod
    def _drop_session(state: CatalogState, session: str) -> None:
        dropped = state.sessions.pop(session, None)
        for chunk_id in dropped.pins if dropped is not None else ():
            holders = state.pinned_by[chunk_id]
            holders.discard(session)
            if not holders:
                del state.pinned_by[chunk_id]

    @staticmethod
    def _touch_live_session(state: CatalogState, session: str) -> _Session:
        """Heartbeat, and refuse to go on for a session gc has expired (its pins are gone, so a
        chunk it claimed may have been deleted and claimed anew by another writer)."""
        alive = state.sessions.get(session)
        if alive is None:
            raise ConcurrentModificationError(
                "this put stalled past its session lease and gc expired it; nothing more is committed, put again"
            )
        alive.heartbeat_ns = now_ns()
        return alive

    def claim_chunks(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
        to_upload: set[bytes] = set()
        waiting = list(chunks)
        deadline = time.monotonic() + _DELETING_WAIT_SECONDS
        with self._writing() as state:
            while True:
                alive = self._touch_live_session(state, session)
                deleting: list[tuple[bytes, int]] = []
                for chunk_id, size in waiting:
                    row = state.chunks.get(chunk_id)
                    if row is not None and row.state == ChunkState.DELETING:
                        deleting.append((chunk_id, size))
                        continue
                    if row is None:
                        state.chunks[chunk_id] = row = _Chunk(size, ChunkState.PENDING)
                    if row.state != ChunkState.PRESENT:
                        to_upload.add(chunk_id)
                    alive.pins.add(chunk_id)
                    state.pinned_by.setdefault(chunk_id, set()).add(session)
                if not deleting:
                    return to_upload
                # Under the lock a gc cannot finish between this look and the next: DELETING rows
                # with no live gc holding the lock were left by one that stopped half-way.
                if not self._gc_alive(state) or time.monotonic() > deadline:
                    raise ConcurrentModificationError(
                        f"{len(deleting)} chunk(s) this put needs are being deleted by a gc that "
                        "stopped before finishing; run `chunkstore gc` to complete it, then put again"
                    )
                waiting = deleting
                state.changed.wait(_DELETING_POLL_SECONDS)

    def _gc_alive(self, state: CatalogState) -> bool:
        return state.gc_holder is not None and not self._is_dead(state.sessions.get(state.gc_holder), now_ns())

    def chunks_stored(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> None:
        with self._writing() as state:
            self._touch_live_session(state, session)
            for chunk_id, stored_size in chunks:
                row = state.chunks.get(chunk_id)
                if row is not None and row.state == ChunkState.PENDING:
                    row.state, row.stored_size = ChunkState.PRESENT, stored_size

    def commit(
        self,
        session: str,
        versions: Sequence[NewVersion],
        at_ns: int | None = None,
        *,
        round_guard: RoundGuard | None = None,
    ) -> list[CommitOutcome]:
        stamp = now_ns() if at_ns is None else at_ns
        if round_guard is None:
            with self._writing() as state:
                return self._commit_all(state, session, versions, stamp)
        while True:
            seen = round_guard.current()
            with self._writing() as state:
                if state.gc_round == seen:
                    return self._commit_all(state, session, versions, stamp)
            # The guard reads the index, which takes this catalog's lock: called outside it.
            round_guard.moved(seen)

    def _commit_all(
        self, state: CatalogState, session: str, versions: Sequence[NewVersion], stamp: int
    ) -> list[CommitOutcome]:
        self._touch_live_session(state, session)
        # Checked before anything changes, so a refused commit leaves nothing behind. Chunk
        # states do not change during a commit, so checking every content not stored yet is
        # the same as checking each when its first version is met.
        new_chunks: dict[bytes, list[bytes]] = {}
        for new in versions:
            if new.digest in state.contents or new.digest in new_chunks:
                continue
            chunk_ids = _chunk_ids(new.pages)
            present = [state.chunks.get(chunk_id) for chunk_id in chunk_ids]
            missing = sum(1 for row in present if row is None or row.state != ChunkState.PRESENT)
            if missing:
                raise ConcurrentModificationError(
                    f"{missing} chunk(s) of {new.name!r} were collected by a concurrent gc while this put "
                    "was stalled past its session lease; nothing was committed, put again"
                )
            new_chunks[new.digest] = chunk_ids
        return [self._commit_one(state, new, stamp, new_chunks) for new in versions]

    def _commit_one(
        self, state: CatalogState, new: NewVersion, stamp: int, new_chunks: dict[bytes, list[bytes]]
    ) -> CommitOutcome:
        latest = self._latest(state, new.name)
        if latest is not None and latest.digest == new.digest:
            refreshed = VersionRecord(new.name, latest.version, latest.digest, new.stat, latest.stored_at_ns)
            state.versions[new.name][latest.version] = refreshed
            return CommitOutcome(new.name, latest.version, "unchanged")
        content = state.contents.get(new.digest)
        if content is not None:
            content.refcount += 1
            outcome, duplicate_of = "duplicate", self._oldest_name(state, new.digest)
        else:
            state.contents[new.digest] = _Content(new.stat.size, new.chunk_count, list(new.pages))
            for chunk_id in new_chunks[new.digest]:
                state.chunks[chunk_id].refcount += 1
            outcome, duplicate_of = "stored", None
        record = VersionRecord(new.name, self._next_version(state, new.name), new.digest, new.stat, stamp)
        self._insert_version(state, record)
        return CommitOutcome(new.name, record.version, outcome, duplicate_of)

    @staticmethod
    def _latest(state: CatalogState, name: str) -> VersionRecord | None:
        versions = state.versions.get(name)
        return versions[next(reversed(versions))] if versions else None

    @staticmethod
    def _next_version(state: CatalogState, name: str) -> int:
        state.last_version[name] = state.last_version.get(name, 0) + 1
        return state.last_version[name]

    @staticmethod
    def _insert_version(state: CatalogState, record: VersionRecord) -> None:
        state.versions.setdefault(record.name, {})[record.version] = record
        if not record.deleted:
            state.holders.setdefault(record.digest, set()).add((record.name, record.version))

    @staticmethod
    def _oldest_name(state: CatalogState, digest: bytes) -> str | None:
        holders = state.holders.get(digest)
        if not holders:
            return None
        return min((state.versions[name][version].stored_at_ns, name) for name, version in holders)[1]

    # ---- reading ---------------------------------------------------------------------

    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        with self._reading() as state:
            versions = state.versions.get(name, {})
            record = self._latest(state, name) if version is None else versions.get(version)
        if record is None:
            if version is not None and versions:
                raise VersionNotFoundError(f"{name!r} has no version {version}")
            raise NameNotFoundError(f"no stored file named {name!r}")
        return refuse_marker(record, version)

    def list_versions(
        self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None, deleted: bool = False
    ) -> Iterator[VersionRecord]:
        below = prefix + "/"
        listed: list[VersionRecord] = []
        with self._reading() as state:
            for name in sorted(state.versions):
                if prefix and name != prefix and not name.startswith(below):
                    continue
                in_time = [
                    record
                    for record in state.versions[name].values()
                    if as_of_ns is None or record.stored_at_ns <= as_of_ns
                ]
                chosen = in_time if all_versions else in_time[-1:]
                listed.extend(record for record in chosen if deleted or not record.deleted)
        return iter(listed)

    def find_name_with_digest(self, digest: bytes) -> str | None:
        with self._reading() as state:
            return self._oldest_name(state, digest)

    def get_content(self, digest: bytes) -> ContentRecord | None:
        with self._reading() as state:
            content = state.contents.get(digest)
            return content.record(digest) if content is not None else None

    def recipe_pages(self, digest: bytes) -> Iterator[bytes]:
        with self._reading() as state:
            content = state.contents.get(digest)
            pages = list(content.pages) if content is not None else None
        if pages is None:
            raise NotFoundError(f"no recipe for content {digest.hex()}")
        return iter(pages)

    def replace_inline_page(self, digest: bytes, old: bytes, new: bytes) -> bool:
        with self._writing() as state:
            content = state.contents.get(digest)
            if content is None or content.pages != [old]:
                return False
            content.pages = [new]
            return True

    def iter_contents(self) -> Iterator[ContentRecord]:
        with self._reading() as state:
            return iter([content.record(digest) for digest, content in sorted(state.contents.items())])

    def iter_chunks(self) -> Iterator[ChunkRecord]:
        with self._reading() as state:
            return iter([row.record(chunk_id) for chunk_id, row in sorted(state.chunks.items())])

    def get_chunks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, ChunkRecord]:
        with self._reading() as state:
            return {
                chunk_id: state.chunks[chunk_id].record(chunk_id) for chunk_id in chunk_ids if chunk_id in state.chunks
            }

    def stats(self) -> CatalogStats:
        with self._reading() as state:
            content_versions = [
                record for versions in state.versions.values() for record in versions.values() if not record.deleted
            ]
            present = [row for row in state.chunks.values() if row.state == ChunkState.PRESENT]
            return CatalogStats(
                names=len({record.name for record in content_versions}),
                versions=len(content_versions),
                logical_bytes=sum(record.size for record in content_versions),
                contents=len(state.contents),
                content_bytes=sum(content.size for content in state.contents.values()),
                chunks=len(present),
                unique_bytes=sum(row.size for row in present),
                stored_bytes=sum(row.stored_size for row in present),
            )

    # ---- history ---------------------------------------------------------------------

    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        markers: list[VersionRecord] = []
        with self._writing() as state:
            for name, version in expected:
                latest = self._latest(state, name)
                if latest is None or latest.version != version or latest.deleted:
                    continue
                marker = deletion_marker(name, self._next_version(state, name), at_ns)
                self._insert_version(state, marker)
                markers.append(marker)
        return markers

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        with self._writing() as state:
            if snapshot.snapshot_id in state.snapshots:
                raise InvalidArgumentError(f"a snapshot with ID {snapshot.snapshot_id} already exists")
            state.snapshots[snapshot.snapshot_id] = snapshot

    def list_snapshots(self) -> list[SnapshotRecord]:
        with self._reading() as state:
            return sorted(state.snapshots.values(), key=lambda snapshot: (snapshot.at_ns, snapshot.snapshot_id))

    def remove_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        with self._writing() as state:
            for snapshot_id in snapshot_ids:
                state.snapshots.pop(snapshot_id, None)

    # ---- removal and gc --------------------------------------------------------------

    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        with self._writing() as state:
            # Every selection is resolved, in order, before anything is removed: one that names
            # something missing (or already selected) raises with nothing changed.
            doomed: dict[tuple[str, int], VersionRecord] = {}
            for name, version in selections:
                left = [number for number in state.versions.get(name, {}) if (name, number) not in doomed]
                chosen = left if version is None else [version] if version in left else []
                if not chosen:
                    if version is not None and left:
                        raise VersionNotFoundError(f"{name!r} has no version {version}")
                    raise NameNotFoundError(f"no stored file named {name!r}")
                for number in chosen:
                    doomed[name, number] = state.versions[name][number]
            for (name, number), record in doomed.items():
                del state.versions[name][number]
                if not state.versions[name]:
                    del state.versions[name]
                if not record.deleted:
                    self._release_content(state, record)
        return list(doomed.values())

    @staticmethod
    def _release_content(state: CatalogState, record: VersionRecord) -> None:
        holders = state.holders[record.digest]
        holders.discard((record.name, record.version))
        if not holders:
            del state.holders[record.digest]
        content = state.contents[record.digest]
        content.refcount -= 1
        if content.refcount == 0:
            MemoryCatalog._drop_content(state, record.digest)

    @staticmethod
    def _drop_content(state: CatalogState, digest: bytes) -> None:
        """Delete a content no version counts any more, and give back its chunks' counts."""
        content = state.contents.pop(digest)
        for chunk_id in _chunk_ids(content.pages):
            row = state.chunks.get(chunk_id)
            if row is not None and row.refcount > 0:
                row.refcount -= 1

    def acquire_gc_lock(self, session: str) -> None:
        with self._writing() as state:
            holder = state.gc_holder
            if holder is not None and holder != session and not self._is_dead(state.sessions.get(holder), now_ns()):
                raise ConcurrentModificationError(f"another gc is running (session {holder})")
            state.gc_holder = session

    def release_gc_lock(self, session: str) -> None:
        with self._writing() as state:
            if state.gc_holder == session:
                state.gc_holder = None

    @staticmethod
    def _check_gc_lock(state: CatalogState, session: str) -> None:
        if state.gc_holder != session:
            raise ConcurrentModificationError("this gc lost its lock to another gc; stopping")
        if session in state.sessions:
            state.sessions[session].heartbeat_ns = now_ns()

    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        with self._writing() as state:
            self._check_gc_lock(state, session)
            self._expire_dead_sessions(state, session)
            left_deleting = [chunk_id for chunk_id, row in state.chunks.items() if row.state == ChunkState.DELETING][
                :limit
            ]
            fresh: list[bytes] = []
            for chunk_id, row in state.chunks.items():
                if len(left_deleting) + len(fresh) >= limit:
                    break
                if row.refcount == 0 and row.state != ChunkState.DELETING and chunk_id not in state.pinned_by:
                    fresh.append(chunk_id)
            for chunk_id in fresh:
                state.chunks[chunk_id].state = ChunkState.DELETING
            return [state.chunks[chunk_id].record(chunk_id) for chunk_id in left_deleting + fresh]

    def _expire_dead_sessions(self, state: CatalogState, current: str) -> None:
        stamp = now_ns()
        for dead in [
            other for other, alive in state.sessions.items() if other != current and self._is_dead(alive, stamp)
        ]:
            self._drop_session(state, dead)

    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        claimed = []
        with self._writing() as state:
            self._check_gc_lock(state, session)
            for chunk_id in chunk_ids:
                if chunk_id not in state.chunks:
                    state.chunks[chunk_id] = _Chunk(0, ChunkState.DELETING)
                    claimed.append(chunk_id)
        return claimed

    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        with self._writing() as state:
            self._check_gc_lock(state, session)
            for chunk_id in chunk_ids:
                row = state.chunks.get(chunk_id)
                if row is not None and row.state == ChunkState.DELETING:
                    del state.chunks[chunk_id]

    # ---- repair ----------------------------------------------------------------------

    def set_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        return self._compare_and_set_counts(lambda state: state.chunks, counts)

    def set_content_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        return self._compare_and_set_counts(lambda state: state.contents, counts, release=self._drop_content)

    def _compare_and_set_counts(
        self,
        rows_of: Callable[[CatalogState], Mapping[bytes, _Chunk | _Content]],
        counts: dict[bytes, tuple[int, int]],
        release: Callable[[CatalogState, bytes], None] | None = None,
    ) -> set[bytes]:
        """Set the count of each key's row (in rows_of the state) to new where it is still the
        count expected; return the keys whose row is gone or whose count moved. A row set to 0
        is released instead when release is given."""
        moved = set()
        with self._writing() as state:
            rows = rows_of(state)
            for key, (expected, new) in counts.items():
                row = rows.get(key)
                if row is None or row.refcount != expected:
                    moved.add(key)
                elif new == 0 and release is not None:
                    release(state, key)
                else:
                    row.refcount = new
        return moved


class MemoryPackIndex:
    """The PackIndex of a MemoryCatalog, in its state and under its lock: each call is atomic."""

    def __init__(self, catalog: MemoryCatalog):
        self._catalog = catalog

    def read_round(self) -> GcRound:
        with self._catalog._reading() as state:
            return state.gc_round

    def advance_round(self, gc_session: str, seen: GcRound) -> GcRound:
        with self._catalog._writing() as state:
            MemoryCatalog._check_gc_lock(state, gc_session)
            _check_round(state, seen)
            state.gc_round = GcRound(*seen.following(), gc_session)
            return state.gc_round

    def expire_sessions(self, gc_session: str) -> set[str]:
        with self._catalog._writing() as state:
            self._catalog._expire_dead_sessions(state, gc_session)
            return set(state.sessions) | {gc_session}

    def create_pack(self, session: str, pack_id: bytes, stored_bytes: int, entries: int) -> PackRecord:
        check_new_pack(pack_id, stored_bytes, entries)
        record = PackRecord(pack_id, IndexState.PENDING, new_generation(), session, stored_bytes, entries)
        with self._catalog._writing() as state:
            if pack_id in state.packs:
                raise pack_exists(pack_id)
            state.packs[pack_id] = record
        return record

    def pack_stored(self, pack: PackRecord) -> PackRecord:
        with self._catalog._writing() as state:
            current = state.packs.get(pack.pack_id)
            if current is None or (current.state, current.owner, current.generation) != (
                IndexState.PENDING,
                pack.owner,
                pack.generation,
            ):
                raise not_pending(pack)
            state.packs[pack.pack_id] = replace(current, state=IndexState.PRESENT, generation=new_generation())
            return state.packs[pack.pack_id]

    def get_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, PackRecord]:
        with self._catalog._reading() as state:
            return {pack_id: state.packs[pack_id] for pack_id in pack_ids if pack_id in state.packs}

    def iter_packs(self) -> Iterator[PackRecord]:
        with self._catalog._reading() as state:
            return iter(list(state.packs.values()))

    def record_live_bytes(self, live_bytes: Mapping[bytes, int]) -> list[bytes]:
        with self._catalog._writing() as state:
            for pack_id, live in live_bytes.items():
                if pack_id in state.packs:
                    state.packs[pack_id] = replace(state.packs[pack_id], live_bytes=live)
            return [pack_id for pack_id in live_bytes if pack_id not in state.packs]

    def write_pages(self, seen: GcRound, pages: Sequence[NewPage]) -> list[bytes]:
        check_new_pages(pages)
        with self._catalog._writing() as state:
            _check_round(state, seen)
            existing = [page.page_id for page in pages if page.page_id in state.pages]
            for page in pages:
                if page.page_id not in state.pages:
                    state.pages[page.page_id] = PageRecord(
                        page.page_id, page.body, IndexState.PRESENT, new_generation(), page.origin, page.origin_segment
                    )
            return existing

    def get_page(self, page_id: bytes, consistent: bool = True) -> PageRecord | None:
        with self._catalog._reading() as state:
            return state.pages.get(page_id)

    def iter_pages(self) -> Iterator[PageRecord]:
        with self._catalog._reading() as state:
            return iter(list(state.pages.values()))

    def switch_page(self, page: PageRecord, body: bytes) -> PageRecord | None:
        check_page_body(page.page_id, body)
        with self._catalog._writing() as state:
            current = state.pages.get(page.page_id)
            if current is None or (current.state, current.generation) != (IndexState.PRESENT, page.generation):
                return None
            state.pages[page.page_id] = replace(current, body=body, generation=new_generation())
            return state.pages[page.page_id]

    def put_hooks(self, hooks: Mapping[bytes, bytes]) -> None:
        with self._catalog._writing() as state:
            state.hooks.update(hooks)

    def get_hooks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        with self._catalog._reading() as state:
            return {chunk_id: state.hooks[chunk_id] for chunk_id in chunk_ids if chunk_id in state.hooks}

    def forget_hooks(self, chunk_ids: Iterable[bytes]) -> None:
        with self._catalog._writing() as state:
            for chunk_id in chunk_ids:
                state.hooks.pop(chunk_id, None)

    def iter_hooks(self) -> Iterator[tuple[bytes, bytes]]:
        with self._catalog._reading() as state:
            return iter(list(state.hooks.items()))

    def doom(self, gc_round: GcRound, items: Sequence[IndexItem]) -> list[IndexItem]:
        check_doom_round(gc_round)
        with self._catalog._writing() as state:
            _check_round(state, gc_round)
            return self._transition(state, items, doom_step(gc_round, lambda owner: owner not in state.sessions))

    def spare(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        with self._catalog._writing() as state:
            return self._transition(state, items, spare_step)

    def start_deleting(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        with self._catalog._writing() as state:
            return self._transition(state, items, delete_step)

    @staticmethod
    def _transition(state: CatalogState, items: Sequence[IndexItem], step: Callable) -> list[IndexItem]:
        """Apply step to each item as it is now; return the items it refused."""
        refused = []
        for item in items:
            stored = _items_of(state, item)
            changed = step(item, stored.get(item.item_id))
            if changed is None:
                refused.append(item)
            else:
                stored[item.item_id] = changed
        return refused

    def forget(self, items: Sequence[IndexItem]) -> None:
        with self._catalog._writing() as state:
            for item in items:
                current = _items_of(state, item).get(item.item_id)
                if current is not None and current.state == IndexState.DELETING:
                    del _items_of(state, item)[item.item_id]


def _check_round(state: CatalogState, seen: GcRound) -> None:
    if state.gc_round != seen:
        raise round_moved(seen)


def _items_of(state: CatalogState, item: PackRecord | PageRecord) -> dict:
    return state.packs if isinstance(item, PackRecord) else state.pages


# ---- memory://NAME -----------------------------------------------------------------------


@dataclass
class _MemoryLocation:
    blobs: BlobSpace = field(default_factory=BlobSpace)
    catalog: CatalogState | None = None  # made by init


# Every memory://NAME store of the process, by name.
_LOCATIONS: dict[str, _MemoryLocation] = {}
_LOCATIONS_LOCK = threading.Lock()


def discard_memory_store(name: str) -> None:
    """Free the objects and catalog of memory://NAME; a later open finds no store there.
    Handles still open on it keep what they hold."""
    with _LOCATIONS_LOCK:
        _LOCATIONS.pop(name, None)


class MemoryBackend(Backend):
    """memory://NAME: a MemoryBlobStore and a MemoryCatalog on the location of that name."""

    def __init__(self, name: str, concurrency: int | None):
        if not name:
            raise InvalidArgumentError("a memory:// store needs a name: memory://NAME")
        with _LOCATIONS_LOCK:
            self.location = _LOCATIONS.setdefault(name, _MemoryLocation())
        blobs = MemoryBlobStore(self.location.blobs, f"memory://{name}")
        if concurrency is not None:
            blobs.concurrency = concurrency
        super().__init__(blobs.url, blobs)

    def new_catalog_section(self, table: str | None, create: bool) -> dict:
        if table is not None or create:
            raise InvalidArgumentError("--table and --create apply only to s3:// stores")
        return dict(MEMORY_CATALOG_SECTION)

    def open_catalog(
        self,
        catalog_section: dict,
        *,
        store_id: str,
        create: bool,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ) -> Catalog:
        if catalog_section.get("type") != MEMORY_CATALOG_SECTION["type"]:
            raise self.refuse(catalog_section)
        with _LOCATIONS_LOCK:
            if create and self.location.catalog is None:
                self.location.catalog = CatalogState()
            state = self.location.catalog
        if state is None:
            raise NotFoundError(f"the catalog of {self.url} does not exist")
        return MemoryCatalog(state, lease_seconds=lease_seconds, read_only=read_only)

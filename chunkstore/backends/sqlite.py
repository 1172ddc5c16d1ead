"""The embedded catalog: one SQLite file in WAL mode, shared safely by many processes.

Every change is one transaction (BEGIN IMMEDIATE), so the steps of the protocol in
catalog/__init__.py are atomic by SQLite's own locking.

Schema versions (meta.schema_version):
    1  chunks, contents, recipe pages, versions, names, sessions, pins, the gc lock
    2  versions.deleted (1 for a deletion marker: digest X'' and a zero stat) and the
       snapshots table.
    3  snapshots.program (what ran the put; '' for a snapshot recorded before).
    4  the pack index of storage format 2 (chunkstore/backends/packindex.py): gc_round, packs,
       pages and hooks, empty in a format 1 store.
    5  versions.sealed and snapshots.sealed: the encrypted stat and snapshot fields of a store
       that seals its metadata (docs/design/encrypted-metadata.md); X'' in every other row.
An older file is upgraded in place when it is opened: each upgrade only adds, so every older
row means the same after it.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeGuard

from chunkstore.backends.catalog import (
    MAX_MODE,
    SNAPSHOT_COUNTS,
    Catalog,
    CatalogStats,
    ChunkRecord,
    ChunkState,
    CommitOutcome,
    ContentRecord,
    FileStat,
    NewVersion,
    SnapshotRecord,
    VersionRecord,
    deletion_marker,
    refuse_marker,
)
from chunkstore.backends.packindex import (
    CHUNK_ID_SIZE,
    FIRST_ROUND,
    PACK_INDEX_CALLS,
    PAGE_ID_SIZE,
    GcRound,
    IndexItem,
    IndexState,
    NewPage,
    PackIndex,
    PackRecord,
    PageRecord,
    Phase,
    RoundGuard,
    check_doom_round,
    check_index_item,
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
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, new_session_id, now_ns, session_is_dead
from chunkstore.core import recipes
from chunkstore.core.batching import batched
from chunkstore.core.names import is_stored_name
from chunkstore.core.packformat import PACK_ID_SIZE
from chunkstore.errors import (
    ChunkstoreError,
    ConcurrentModificationError,
    CorruptObjectError,
    InvalidArgumentError,
    NameNotFoundError,
    NotFoundError,
    UnsupportedFormatError,
    VersionNotFoundError,
)

SCHEMA_VERSION = 5

_SNAPSHOTS_TABLE_V2 = """
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    host TEXT NOT NULL,
    paths TEXT NOT NULL,
    stored INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    unchanged INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    added_bytes INTEGER NOT NULL,
    added_stored_bytes INTEGER NOT NULL
) WITHOUT ROWID;
"""

_SNAPSHOTS_TABLE = _SNAPSHOTS_TABLE_V2.replace(
    "added_stored_bytes INTEGER NOT NULL\n",
    "added_stored_bytes INTEGER NOT NULL,\n    program TEXT NOT NULL DEFAULT '',\n"
    "    sealed BLOB NOT NULL DEFAULT X''\n",
)

# The pack index (schema 4). Pages are up to 197 KB: they live in a rowid table, whose rows
# may overflow onto pages of their own, unlike a WITHOUT ROWID table's.
_PACK_INDEX_TABLES = [
    """CREATE TABLE IF NOT EXISTS gc_round (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    number INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    session TEXT
)""",
    """CREATE TABLE IF NOT EXISTS packs (
    id BLOB PRIMARY KEY,
    state INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    owner TEXT NOT NULL,
    stored INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    live INTEGER,
    round INTEGER,
    was INTEGER
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS pages (
    id BLOB PRIMARY KEY,
    body BLOB NOT NULL,
    state INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    origin BLOB NOT NULL,
    origin_segment INTEGER NOT NULL,
    round INTEGER
)""",
    "CREATE TABLE IF NOT EXISTS hooks (chunk BLOB PRIMARY KEY, page BLOB NOT NULL) WITHOUT ROWID",
]

# Each step takes a file from the schema version it is keyed by to the next one.
_UPGRADES = {
    1: ["ALTER TABLE versions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0", _SNAPSHOTS_TABLE_V2],
    2: ["ALTER TABLE snapshots ADD COLUMN program TEXT NOT NULL DEFAULT ''"],
    3: _PACK_INDEX_TABLES,
    4: [
        "ALTER TABLE versions ADD COLUMN sealed BLOB NOT NULL DEFAULT X''",
        "ALTER TABLE snapshots ADD COLUMN sealed BLOB NOT NULL DEFAULT X''",
    ],
}

_SCHEMA = (
    _SNAPSHOTS_TABLE
    + "".join(f"{statement};\n" for statement in _PACK_INDEX_TABLES)
    + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL DEFAULT 0,
    refcount INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL,
    location TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks (id) WHERE refcount = 0;
CREATE INDEX IF NOT EXISTS chunks_deleting ON chunks (id) WHERE state = 2;
CREATE TABLE IF NOT EXISTS contents (
    digest BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    page_count INTEGER NOT NULL,
    refcount INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipe_pages (
    digest BLOB NOT NULL,
    page INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (digest, page)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    stored_at_ns INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    sealed BLOB NOT NULL DEFAULT X'',
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_digest ON versions (digest);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ns INTEGER NOT NULL,
    heartbeat_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pins (
    chunk BLOB NOT NULL,
    session TEXT NOT NULL,
    PRIMARY KEY (chunk, session)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pins_session ON pins (session);
CREATE TABLE IF NOT EXISTS gc_lock (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    session TEXT NOT NULL
);
"""
)

_VERSION_COLUMNS = "name, version, digest, size, mtime_ns, mode, inode, ctime_ns, sealed, stored_at_ns, deleted"
_CONTENT_COLUMNS = "digest, size, chunk_count, page_count, refcount"
_SNAPSHOT_COLUMNS = "id, at_ns, host, paths, " + ", ".join(SNAPSHOT_COUNTS) + ", program, sealed"
# How long a writer waits for a gc to finish deleting a chunk it needs (gc deletes in
# batches of a few thousand objects, well under a second on a local disk).
_DELETING_WAIT_SECONDS = 120.0
# SQLite limits host parameters per statement (32766 since 3.32); stay far below.
_IN_BATCH = 500


class _Column:
    """What one column of a catalog row must hold; rows are checked as they are read, so a
    row of the wrong type or a name chunkstore would never store (an edited or damaged file)
    is an integrity error naming the row, not a crash further on."""

    def __init__(self, name: str, expected: str, accepts: Callable[[object], bool]):
        self.name = name
        self.expected = expected
        self.accepts = accepts


def _is_integer(value: object) -> TypeGuard[int]:
    return type(value) is int


def _integers(*names: str) -> list[_Column]:
    return [_Column(name, "an integer", _is_integer) for name in names]


_NAME = _Column("name", "a stored name (normalised, relative, no '..' or NUL)", is_stored_name)
_DIGEST = _Column("digest", "bytes", lambda value: type(value) is bytes)
_SEALED = _Column("sealed", "bytes", lambda value: type(value) is bytes)
_VERSION_ROW = (
    _NAME,
    *_integers("version"),
    _DIGEST,
    *_integers("size", "mtime_ns"),
    _Column("mode", f"an integer within 0..{MAX_MODE}", lambda value: _is_integer(value) and 0 <= value <= MAX_MODE),
    *_integers("inode", "ctime_ns"),
    _SEALED,
    *_integers("stored_at_ns", "deleted"),
)
# A version row as duplicate_of reads it, and a names row.
_HOLDER_ROW = (*_integers("stored_at_ns"), _NAME)
_NAMES_ROW = (_Column("name", "text", lambda value: type(value) is str), *_integers("last_version"))
_CHUNK_STATE = _Column(
    "state",
    f"one of {[int(state) for state in ChunkState]}",
    lambda value: _is_integer(value) and value in ChunkState._value2member_map_,
)
_CHUNK_ROW = (
    _Column("id", "bytes", lambda value: type(value) is bytes),
    *_integers("size", "stored_size", "refcount"),
    _CHUNK_STATE,
    _Column("location", "text or NULL", lambda value: value is None or type(value) is str),
)
_CONTENT_ROW = (_DIGEST, *_integers("size", "chunk_count", "page_count", "refcount"))
_SNAPSHOT_ROW = (
    _Column("id", "text", lambda value: type(value) is str),
    *_integers("at_ns"),
    _Column("host", "text", lambda value: type(value) is str),
    _Column("paths", "a JSON list of stored names ('' for the root)", lambda value: _is_name_list(value)),
    *_integers(*SNAPSHOT_COUNTS),
    _Column("program", "text", lambda value: type(value) is str),
    _SEALED,
)
_PAGE_ROW = (_Column("data", "bytes", lambda value: type(value) is bytes),)
# What session_is_dead reads of a session: host, pid, heartbeat_ns.
_SESSION_ROW = (_Column("host", "text", lambda value: type(value) is str), *_integers("pid", "heartbeat_ns"))


def _is_blob(size: int) -> _Column:
    return _Column("id", f"{size} bytes", lambda value: type(value) is bytes and len(value) == size)


def _is_one_of(name: str, values: type[IntEnum], optional: bool = False) -> _Column:
    return _Column(
        name,
        f"one of {[int(value) for value in values]}{' or NULL' if optional else ''}",
        lambda value: (optional and value is None) or (_is_integer(value) and value in values._value2member_map_),
    )


def _optional_integer(name: str) -> _Column:
    return _Column(name, "an integer or NULL", lambda value: value is None or _is_integer(value))


_ROUND_ROW = (
    *_integers("number"),
    _is_one_of("phase", Phase),
    _Column("session", "text or NULL", lambda value: value is None or type(value) is str),
)
_PACK_COLUMNS = "id, state, gen, owner, stored, entries, live, round, was"
_PACK_ROW = (
    _is_blob(PACK_ID_SIZE),
    _is_one_of("state", IndexState),
    *_integers("gen"),
    _Column("owner", "text", lambda value: type(value) is str),
    *_integers("stored", "entries"),
    _optional_integer("live"),
    _optional_integer("round"),
    _is_one_of("was", IndexState, optional=True),
)
_PAGE_COLUMNS = "id, body, state, gen, origin, origin_segment, round"
_INDEX_PAGE_ROW = (
    _is_blob(PAGE_ID_SIZE),
    _Column("body", "bytes", lambda value: type(value) is bytes),
    _is_one_of("state", IndexState),
    *_integers("gen"),
    _Column("origin", f"{PAGE_ID_SIZE} bytes", lambda value: type(value) is bytes and len(value) == 32),
    *_integers("origin_segment"),
    _optional_integer("round"),
)
_HOOK_ROW = (
    _is_blob(CHUNK_ID_SIZE),
    _Column("page", f"{PAGE_ID_SIZE} bytes", lambda value: type(value) is bytes and len(value) == PAGE_ID_SIZE),
)


def _is_name_list(text: object) -> bool:
    try:
        paths = json.loads(text) if type(text) is str else None
    except (json.JSONDecodeError, RecursionError):
        return False
    return isinstance(paths, list) and all(path == "" or is_stored_name(path) for path in paths)


def _session_row_is_dead(row: Sequence, lease_seconds: float, at_ns: int, local_host: str) -> bool:
    host, pid, heartbeat_ns = _checked("sessions", _SESSION_ROW, row)
    return session_is_dead(host, pid, heartbeat_ns, lease_seconds, at_ns, local_host)


def _checked(table: str, columns: Sequence[_Column], row: Sequence) -> Sequence:
    """row, once every value is what its column must hold; else CorruptObjectError naming it."""
    for column, value in zip(columns, row, strict=True):
        if not column.accepts(value):
            raise _row_damaged(table, row)(f"{column.name} is {value!r:.80}, not {column.expected}")
    return row


def _row_damaged(table: str, row: Sequence) -> Callable[[str], CorruptObjectError]:
    """What raises CorruptObjectError naming a row and its problem."""
    return lambda problem: CorruptObjectError(
        f"catalog row of {table} {row[0]!r:.80} is damaged: {problem}; "
        "restore the catalog from a backup or remove the row"
    )


def _version_from_row(row) -> VersionRecord:
    name, version, digest, size, mtime_ns, mode, inode, ctime_ns, sealed, stored_at_ns, deleted = _checked(
        "versions", _VERSION_ROW, row
    )
    return VersionRecord(
        name, version, digest, FileStat(size, mtime_ns, mode, inode, ctime_ns, sealed), stored_at_ns, bool(deleted)
    )


def _snapshot_from_row(row) -> SnapshotRecord:
    snapshot_id, at_ns, host, paths, *counts, program, sealed = _checked("snapshots", _SNAPSHOT_ROW, row)
    named_counts: dict[str, Any] = dict(zip(SNAPSHOT_COUNTS, counts, strict=True))
    return SnapshotRecord(
        snapshot_id, at_ns, host, tuple(json.loads(paths)), **named_counts, program=program, sealed=sealed
    )


def _chunk_from_row(row) -> ChunkRecord:
    chunk_id, size, stored_size, refcount, state, location = _checked("chunks", _CHUNK_ROW, row)
    return ChunkRecord(chunk_id, size, stored_size, refcount, ChunkState(state), location)


def _content_from_row(row) -> ContentRecord:
    return ContentRecord(*_checked("contents", _CONTENT_ROW, row))


def _page_from_row(row) -> bytes:
    return _checked("recipe_pages", _PAGE_ROW, row)[0]


def _round_from_row(row) -> GcRound:
    number, phase, session = _checked("gc_round", _ROUND_ROW, row)
    return GcRound(number, Phase(phase), session)


def _pack_from_row(row) -> PackRecord:
    pack_id, state, gen, owner, stored, entries, live, doomed_in, was = _checked("packs", _PACK_ROW, row)
    return check_index_item(
        PackRecord(
            pack_id,
            IndexState(state),
            gen,
            owner,
            stored,
            entries,
            live,
            doomed_in,
            None if was is None else IndexState(was),
        ),
        _row_damaged("packs", row),
    )


def _index_page_from_row(row) -> PageRecord:
    page_id, body, state, gen, origin, segment, doomed_in = _checked("pages", _INDEX_PAGE_ROW, row)
    return check_index_item(
        PageRecord(page_id, body, IndexState(state), gen, origin, segment, doomed_in), _row_damaged("pages", row)
    )


def _pack_values(record: PackRecord) -> tuple:
    return (
        record.pack_id,
        int(record.state),
        record.generation,
        record.owner,
        record.stored_bytes,
        record.entries,
        record.live_bytes,
        record.doomed_in,
        None if record.doomed_from is None else int(record.doomed_from),
    )


def _page_values(record: PageRecord) -> tuple:
    return (
        record.page_id,
        record.body,
        int(record.state),
        record.generation,
        record.origin,
        record.origin_segment,
        record.doomed_in,
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SQLiteCatalog(Catalog):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ):
        """read_only connections cannot write, and never checkpoint the WAL when they close:
        a checkpoint fsyncs the catalog, which on ext4 also flushes every file a restore has
        just written (0.6 s after restoring 1 GB here), work that belongs to nobody's read."""
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        if not create and not self.path.exists():
            raise NotFoundError(f"catalog {self.path} does not exist")
        connection = self._connection()
        if create:
            # Every statement is idempotent, so a create that dies half-way can run again.
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        try:
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as error:
            raise CorruptObjectError(f"catalog {self.path} cannot be read: {error}") from None
        version = None if row is None else row[0]
        if version is not None and (type(version) is not str or not (version.isascii() and version.isdigit())):
            # A version this chunkstore does not know is a number (or none, in a file it did
            # not make); anything else is damage.
            raise CorruptObjectError(
                f"catalog {self.path} is damaged: its schema version is {version!r:.80}, "
                "not a number; restore the catalog from a backup"
            )
        if version in {str(old) for old in _UPGRADES}:
            self._upgrade()
        elif version != str(SCHEMA_VERSION):
            raise UnsupportedFormatError(
                f"catalog schema version {version!r} is not supported (this chunkstore reads {SCHEMA_VERSION})"
            )
        self.pack_index: PackIndex = SQLitePackIndex(self)

    def _upgrade(self) -> None:
        """Bring an older file up to SCHEMA_VERSION in one transaction. Its own connection, because
        a read-only handle opens the file read-only, and a command that only reads still has to
        upgrade it once (every later command would otherwise find the old schema)."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
        except sqlite3.Error as error:
            raise CorruptObjectError(f"catalog {self.path} cannot be opened: {error}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            # Another process may have upgraded it since this one looked.
            version = int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            while version in _UPGRADES:
                for statement in _UPGRADES[version]:
                    db.execute(statement)
                version += 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise UnsupportedFormatError(
                f"catalog {self.path} has an older schema that this chunkstore upgrades in place, and the upgrade "
                f"failed ({error}); run chunkstore once with write access to it"
            ) from None
        finally:
            db.close()

    # ---- connections and transactions ------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                if self.read_only:
                    connection = sqlite3.connect(
                        f"{self.path.resolve().as_uri()}?mode=ro",
                        uri=True,
                        isolation_level=None,
                        timeout=60.0,
                        check_same_thread=False,
                    )
                else:
                    connection = sqlite3.connect(self.path, isolation_level=None, timeout=60.0, check_same_thread=False)
                    connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA foreign_keys = OFF")
            except sqlite3.DatabaseError as error:
                raise CorruptObjectError(f"catalog {self.path} cannot be opened: {error}") from None
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _write(self, durable: bool):
        """One write transaction. durable=False skips the WAL fsync: for session
        bookkeeping (pins, pending rows) that a crash makes moot anyway. Commits that
        make versions visible or remove them are durable."""
        db = self._connection()
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    # ---- writer sessions -------------------------------------------------------------

    def open_session(self, kind: str) -> str:
        session = new_session_id()
        stamp = now_ns()
        with self._write(durable=False) as db:
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (session, kind, self.session_host, os.getpid(), stamp, stamp),
            )
        return session

    def heartbeat(self, session: str) -> None:
        with self._write(durable=False) as db:
            db.execute("UPDATE sessions SET heartbeat_ns = ? WHERE id = ?", (now_ns(), session))

    def close_session(self, session: str) -> None:
        with self._write(durable=False) as db:
            db.execute("DELETE FROM pins WHERE session = ?", (session,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session,))
            db.execute("DELETE FROM gc_lock WHERE session = ?", (session,))

    def claim_chunks(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
        to_upload: set[bytes] = set()
        waiting = list(chunks)
        deadline = time.monotonic() + _DELETING_WAIT_SECONDS
        gc_seen_dead = False
        while waiting:
            deleting: list[tuple[bytes, int]] = []
            with self._write(durable=False) as db:
                self._touch_live_session(db, session)
                states = self._states(db, [chunk_id for chunk_id, _ in waiting])
                new_rows: dict[bytes, int] = {}
                pinned: list[bytes] = []
                for chunk_id, size in waiting:
                    state = states.get(chunk_id)
                    if state == ChunkState.DELETING:
                        deleting.append((chunk_id, size))
                        continue
                    if state is None:
                        new_rows.setdefault(chunk_id, size)
                    if state != ChunkState.PRESENT:
                        to_upload.add(chunk_id)
                    pinned.append(chunk_id)
                db.executemany(
                    "INSERT INTO chunks (id, size, state) VALUES (?, ?, ?)",
                    [(chunk_id, size, int(ChunkState.PENDING)) for chunk_id, size in new_rows.items()],
                )
                db.executemany("INSERT OR IGNORE INTO pins VALUES (?, ?)", [(chunk_id, session) for chunk_id in pinned])
            if deleting:
                # A gc that has just finished has released its lock too: only a gc seen dead
                # before a read that still finds DELETING rows has really stopped half-way.
                if time.monotonic() > deadline or gc_seen_dead:
                    raise ConcurrentModificationError(
                        f"{len(deleting)} chunk(s) this put needs are being deleted by a gc that "
                        "stopped before finishing; run `chunkstore gc` to complete it, then put again"
                    )
                gc_seen_dead = not self._gc_alive()
                if not gc_seen_dead:
                    time.sleep(0.05)
            waiting = deleting
        return to_upload

    def _states(self, db, chunk_ids: Sequence[bytes]) -> dict[bytes, ChunkState]:
        states: dict[bytes, ChunkState] = {}
        for batch in batched(chunk_ids, _IN_BATCH):
            marks = ",".join("?" * len(batch))
            for chunk_id, state in db.execute(f"SELECT id, state FROM chunks WHERE id IN ({marks})", batch):
                states[chunk_id] = ChunkState(_checked("chunks", (_CHUNK_STATE,), (state,))[0])
        return states

    def _gc_alive(self) -> bool:
        db = self._connection()
        row = db.execute(
            "SELECT s.host, s.pid, s.heartbeat_ns FROM gc_lock g JOIN sessions s ON s.id = g.session"
        ).fetchone()
        return row is not None and not _session_row_is_dead(row, self.lease_seconds, now_ns(), self.session_host)

    @staticmethod
    def _touch_live_session(db, session: str) -> None:
        """Heartbeat, and refuse to go on for a session gc has already expired: its pins are
        gone, so a chunk it claimed may since have been deleted and claimed anew by another
        writer, whose PENDING row this session must not mark PRESENT."""
        cursor = db.execute("UPDATE sessions SET heartbeat_ns = ? WHERE id = ?", (now_ns(), session))
        if cursor.rowcount == 0:
            raise ConcurrentModificationError(
                "this put stalled past its session lease and gc expired it; nothing more is committed, put again"
            )

    def chunks_stored(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> None:
        with self._write(durable=False) as db:
            self._touch_live_session(db, session)
            db.executemany(
                "UPDATE chunks SET state = ?, stored_size = ? WHERE id = ? AND state = ?",
                [
                    (int(ChunkState.PRESENT), stored_size, chunk_id, int(ChunkState.PENDING))
                    for chunk_id, stored_size in chunks
                ],
            )

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
            with self._write(durable=True) as db:
                return self._commit_all(db, session, versions, stamp)
        while True:
            seen = round_guard.current()
            with self._write(durable=True) as db:
                # Serialisable: the round cannot move between this check and the commit.
                if SQLitePackIndex._round(db) == seen:
                    return self._commit_all(db, session, versions, stamp)
            round_guard.moved(seen)

    def _commit_all(self, db, session: str, versions: Sequence[NewVersion], stamp: int) -> list[CommitOutcome]:
        """The versions in order, worked out in memory from one read per table of what they
        touch, then written with one statement per table: the per-version statements (seven
        for a duplicate) were most of the catalog's share of a put of many small files."""
        self._touch_live_session(db, session)
        names = list(dict.fromkeys(new.name for new in versions))
        latest = self._latest_versions(db, names)
        last_numbers = self._last_numbers(db, names)
        stored = self._stored_digests(db, list(dict.fromkeys(new.digest for new in versions)))
        # digest -> (stored_at_ns, name) of its oldest version, as duplicate_of names it.
        oldest = self._oldest_holders(db, stored)
        refreshed: dict[tuple[str, int], FileStat] = {}
        inserted: dict[tuple[str, int], VersionRecord] = {}
        new_contents: list[NewVersion] = []
        added_references: dict[bytes, int] = {}
        outcomes: list[CommitOutcome] = []
        for new in versions:
            current = latest.get(new.name)
            if current is not None and current.digest == new.digest:
                key = (new.name, current.version)
                if key in inserted:
                    inserted[key] = replace(inserted[key], stat=new.stat)
                else:
                    refreshed[key] = new.stat
                outcomes.append(CommitOutcome(new.name, current.version, "unchanged"))
                continue
            holder = oldest.get(new.digest)
            if new.digest in stored:
                added_references[new.digest] = added_references.get(new.digest, 0) + 1
                outcome, duplicate_of = "duplicate", holder[1] if holder else None
            else:
                stored.add(new.digest)
                new_contents.append(new)
                outcome, duplicate_of = "stored", None
            # As _next_version numbers them.
            version = last_numbers[new.name] = last_numbers.get(new.name, 0) + 1
            latest[new.name] = inserted[(new.name, version)] = VersionRecord(
                new.name, version, new.digest, new.stat, stamp
            )
            if holder is None or (stamp, new.name) < holder:
                oldest[new.digest] = (stamp, new.name)
            outcomes.append(CommitOutcome(new.name, version, outcome, duplicate_of))
        db.executemany(
            "UPDATE versions SET size = ?, mtime_ns = ?, mode = ?, inode = ?, ctime_ns = ?, sealed = ? "
            "WHERE name = ? AND version = ?",
            [(*self._stat_values(stat), name, version) for (name, version), stat in refreshed.items()],
        )
        self._insert_contents(db, new_contents)
        db.executemany(
            "UPDATE contents SET refcount = refcount + ? WHERE digest = ?",
            [(count, digest) for digest, count in added_references.items()],
        )
        self._insert_versions(db, inserted.values())
        db.executemany(
            "INSERT INTO names VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
            [(record.name, last_numbers[record.name]) for record in inserted.values()],
        )
        return outcomes

    def _insert_versions(self, db, records: Iterable[VersionRecord]) -> None:
        db.executemany(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    record.name,
                    record.version,
                    record.digest,
                    *self._stat_values(record.stat),
                    record.stored_at_ns,
                    int(record.deleted),
                )
                for record in records
            ],
        )

    @staticmethod
    def _next_version(db, name: str) -> int:
        """Version numbers only grow, even after removals, so a number always means one content."""
        db.execute(
            "INSERT INTO names VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET last_version = last_version + 1", (name,)
        )
        return db.execute("SELECT last_version FROM names WHERE name = ?", (name,)).fetchone()[0]

    @staticmethod
    def _latest_versions(db, names: Sequence[str]) -> dict[str, VersionRecord]:
        """Each name's highest-numbered version, for the names that have one."""
        latest: dict[str, VersionRecord] = {}
        for batch in batched(names, _IN_BATCH):
            # SQLite takes the bare columns of a max() aggregate from the row holding the maximum.
            for row in db.execute(
                f"SELECT {_VERSION_COLUMNS}, max(version) FROM versions WHERE name IN ({_marks(len(batch))}) "
                "GROUP BY name",
                batch,
            ):
                record = _version_from_row(row[:-1])
                latest[record.name] = record
        return latest

    @staticmethod
    def _last_numbers(db, names: Sequence[str]) -> dict[str, int]:
        """The last version number each name was given, removed or not."""
        numbers: dict[str, int] = {}
        for batch in batched(names, _IN_BATCH):
            for row in db.execute(f"SELECT name, last_version FROM names WHERE name IN ({_marks(len(batch))})", batch):
                name, number = _checked("names", _NAMES_ROW, row)
                numbers[name] = number
        return numbers

    @staticmethod
    def _stored_digests(db, digests: Sequence[bytes]) -> set[bytes]:
        stored: set[bytes] = set()
        for batch in batched(digests, _IN_BATCH):
            query = f"SELECT digest FROM contents WHERE digest IN ({_marks(len(batch))})"
            stored.update(row[0] for row in db.execute(query, batch))
        return stored

    @staticmethod
    def _oldest_holders(db, digests: Iterable[bytes]) -> dict[bytes, tuple[int, str]]:
        """(stored_at_ns, name) of each digest's oldest version, names breaking ties."""
        oldest: dict[bytes, tuple[int, str]] = {}
        for batch in batched(digests, _IN_BATCH):
            for digest, stored_at_ns, name in db.execute(
                "SELECT digest, stored_at_ns, name FROM (SELECT digest, stored_at_ns, name, row_number() OVER "
                "(PARTITION BY digest ORDER BY stored_at_ns, name) AS rank FROM versions "
                f"WHERE digest IN ({_marks(len(batch))})) WHERE rank = 1",
                batch,
            ):
                oldest[digest] = tuple(_checked("versions", _HOLDER_ROW, (stored_at_ns, name)))
        return oldest

    @staticmethod
    def _stat_values(stat: FileStat) -> tuple[int, int, int, int, int, bytes]:
        return stat.size, stat.mtime_ns, stat.mode, stat.inode, stat.ctime_ns, stat.sealed

    def _insert_contents(self, db, contents: Sequence[NewVersion]) -> None:
        """New contents with their recipe pages, and a reference on each chunk their pages count."""
        for batch in batched([new.digest for new in contents], _IN_BATCH):
            row = db.execute(
                f"SELECT digest, page FROM recipe_pages WHERE digest IN ({_marks(len(batch))}) LIMIT 1", batch
            ).fetchone()
            if row is not None:
                # The content row was absent, so its pages should be too: the file was edited or damaged.
                raise CorruptObjectError(
                    f"catalog {self.path} is damaged: recipe page {row[1]} of content {row[0].hex()} "
                    "exists without its content row; restore the catalog from a backup"
                )
        db.executemany(
            "INSERT INTO contents VALUES (?, ?, ?, ?, 1)",
            [(new.digest, new.stat.size, new.chunk_count, len(new.pages)) for new in contents],
        )
        db.executemany(
            "INSERT INTO recipe_pages VALUES (?, ?, ?)",
            [(new.digest, number, page) for new in contents for number, page in enumerate(new.pages)],
        )
        counted = sum(recipes.counted_total(new.chunk_count, new.pages) for new in contents)
        if not counted:
            return
        referenced = db.executemany(
            "UPDATE chunks SET refcount = refcount + 1 WHERE id = ? AND state = ?",
            [
                (entry.chunk_id, int(ChunkState.PRESENT))
                for new in contents
                for entry in recipes.counted_entries(new.pages)
            ],
        ).rowcount
        if referenced != counted:
            # Some chunk was not PRESENT: name the first content that counts one.
            new, missing = next((new, missing) for new in contents if (missing := self._missing_chunks(db, new)))
            raise ConcurrentModificationError(
                f"{missing} chunk(s) of {new.name!r} were collected by a concurrent gc "
                "while this put was stalled past its session lease; nothing was committed, put again"
            )

    def _missing_chunks(self, db, new: NewVersion) -> int:
        """How many of the chunk references a new content counts are to chunks not PRESENT."""
        chunk_ids = [entry.chunk_id for entry in recipes.counted_entries(new.pages)]
        states = self._states(db, chunk_ids)
        return sum(1 for chunk_id in chunk_ids if states.get(chunk_id) != ChunkState.PRESENT)

    # ---- reading ---------------------------------------------------------------------

    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        db = self._connection()
        if version is None:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            if version is not None and db.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone():
                raise VersionNotFoundError(f"{name!r} has no version {version}")
            raise NameNotFoundError(f"no stored file named {name!r}")
        return refuse_marker(_version_from_row(row), version)

    def list_versions(
        self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None, deleted: bool = False
    ) -> Iterator[VersionRecord]:
        # Conditions and their parameters, in the order they appear in the query.
        conditions: list[str] = []
        parameters: list = []
        if prefix:
            conditions.append("(name = ? OR name LIKE ? ESCAPE '\\')")
            parameters += [prefix, _escape_like(prefix) + "/%"]
        in_time = "" if as_of_ns is None else " AND w.stored_at_ns <= ?"
        if all_versions:
            if as_of_ns is not None:
                conditions.append("stored_at_ns <= ?")
                parameters.append(as_of_ns)
        else:
            conditions.append(f"version = (SELECT MAX(version) FROM versions w WHERE w.name = v.name{in_time})")
            if as_of_ns is not None:
                parameters.append(as_of_ns)
        if not deleted:
            conditions.append("deleted = 0")
        query = (
            f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE {' AND '.join(conditions) or 'TRUE'} "
            "ORDER BY name, version"
        )
        for row in self._connection().execute(query, parameters):
            yield _version_from_row(row)

    def find_name_with_digest(self, digest: bytes) -> str | None:
        holder = self._oldest_holders(self._connection(), [digest]).get(digest)
        return holder[1] if holder else None

    def get_content(self, digest: bytes) -> ContentRecord | None:
        row = (
            self._connection()
            .execute(f"SELECT {_CONTENT_COLUMNS} FROM contents WHERE digest = ?", (digest,))
            .fetchone()
        )
        return _content_from_row(row) if row else None

    def recipe_pages(self, digest: bytes) -> Iterator[bytes]:
        content = self.get_content(digest)
        if content is None:
            raise NotFoundError(f"no recipe for content {digest.hex()}")
        db = self._connection()
        for page_number in range(content.page_count):
            row = db.execute(
                "SELECT data FROM recipe_pages WHERE digest = ? AND page = ?", (digest, page_number)
            ).fetchone()
            if row is None:
                raise CorruptObjectError(f"recipe of content {digest.hex()} is missing page {page_number}")
            yield _page_from_row(row)

    def replace_inline_page(self, digest: bytes, old: bytes, new: bytes) -> bool:
        with self._write(durable=True) as db:
            cursor = db.execute(
                "UPDATE recipe_pages SET data = ? WHERE digest = ? AND page = 0 AND data = ? "
                "AND (SELECT page_count FROM contents WHERE digest = ?) = 1",
                (new, digest, old, digest),
            )
        return cursor.rowcount == 1

    def iter_contents(self) -> Iterator[ContentRecord]:
        for row in self._connection().execute(f"SELECT {_CONTENT_COLUMNS} FROM contents ORDER BY digest"):
            yield _content_from_row(row)

    def iter_chunks(self) -> Iterator[ChunkRecord]:
        for row in self._connection().execute(
            "SELECT id, size, stored_size, refcount, state, location FROM chunks ORDER BY id"
        ):
            yield _chunk_from_row(row)

    def get_chunks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, ChunkRecord]:
        db = self._connection()
        found: dict[bytes, ChunkRecord] = {}
        for batch in batched(chunk_ids, _IN_BATCH):
            marks = ",".join("?" * len(batch))
            for row in db.execute(
                f"SELECT id, size, stored_size, refcount, state, location FROM chunks WHERE id IN ({marks})", batch
            ):
                found[row[0]] = _chunk_from_row(row)
        return found

    def stats(self) -> CatalogStats:
        db = self._connection()
        names, versions, logical = db.execute(
            "SELECT COUNT(DISTINCT name), COUNT(*), COALESCE(SUM(size), 0) FROM versions WHERE deleted = 0"
        ).fetchone()
        contents, content_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM contents").fetchone()
        chunks, unique, stored = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(stored_size), 0) FROM chunks WHERE state = ?",
            (int(ChunkState.PRESENT),),
        ).fetchone()
        return CatalogStats(names, versions, logical, contents, content_bytes, chunks, unique, stored)

    # ---- removal and gc --------------------------------------------------------------

    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        removed: list[VersionRecord] = []
        with self._write(durable=True) as db:
            for name, version in selections:
                if version is None:
                    rows = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ?", (name,)).fetchall()
                else:
                    rows = db.execute(
                        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?", (name, version)
                    ).fetchall()
                if not rows:
                    if version is not None and db.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone():
                        raise VersionNotFoundError(f"{name!r} has no version {version}")
                    raise NameNotFoundError(f"no stored file named {name!r}")
                for row in rows:
                    record = _version_from_row(row)
                    db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (record.name, record.version))
                    if not record.deleted:
                        self._release_content(db, record.digest)
                    removed.append(record)
        return removed

    # ---- history ---------------------------------------------------------------------

    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        markers: list[VersionRecord] = []
        with self._write(durable=True) as db:
            for name, version in expected:
                latest = db.execute(
                    "SELECT version, deleted FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
                if latest != (version, 0):
                    continue
                marker = deletion_marker(name, self._next_version(db, name), at_ns)
                self._insert_versions(db, [marker])
                markers.append(marker)
        return markers

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        values = (
            snapshot.snapshot_id,
            snapshot.at_ns,
            snapshot.host,
            json.dumps(list(snapshot.paths)),
            *(getattr(snapshot, count) for count in SNAPSHOT_COUNTS),
            snapshot.program,
            snapshot.sealed,
        )
        with self._write(durable=True) as db:
            try:
                db.execute(
                    f"INSERT INTO snapshots ({_SNAPSHOT_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values
                )
            except sqlite3.IntegrityError:
                raise InvalidArgumentError(f"a snapshot with ID {snapshot.snapshot_id} already exists") from None

    def list_snapshots(self) -> list[SnapshotRecord]:
        rows = self._connection().execute(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots ORDER BY at_ns, id")
        return [_snapshot_from_row(row) for row in rows]

    def remove_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        with self._write(durable=True) as db:
            db.executemany("DELETE FROM snapshots WHERE id = ?", [(snapshot_id,) for snapshot_id in snapshot_ids])

    def _release_content(self, db, digest: bytes) -> None:
        db.execute("UPDATE contents SET refcount = refcount - 1 WHERE digest = ?", (digest,))
        row = db.execute(f"SELECT {_CONTENT_COLUMNS} FROM contents WHERE digest = ?", (digest,)).fetchone()
        if row is not None and _content_from_row(row).refcount == 0:
            self._drop_content(db, digest)

    @staticmethod
    def _drop_content(db, digest: bytes) -> None:
        """Delete a content no version counts any more, and give back its chunks' counts."""
        rows = db.execute("SELECT data FROM recipe_pages WHERE digest = ? ORDER BY page", (digest,)).fetchall()
        db.executemany(
            "UPDATE chunks SET refcount = refcount - 1 WHERE id = ? AND refcount > 0",
            [(entry.chunk_id,) for entry in recipes.counted_entries(_page_from_row(row) for row in rows)],
        )
        db.execute("DELETE FROM recipe_pages WHERE digest = ?", (digest,))
        db.execute("DELETE FROM contents WHERE digest = ?", (digest,))

    def acquire_gc_lock(self, session: str) -> None:
        with self._write(durable=False) as db:
            row = db.execute(
                "SELECT g.session, s.host, s.pid, s.heartbeat_ns"
                " FROM gc_lock g LEFT JOIN sessions s ON s.id = g.session"
            ).fetchone()
            if row is not None and row[0] != session:
                holder, *session_row = row
                host, pid, heartbeat_ns = session_row
                at_ns = now_ns()
                if host is not None and not _session_row_is_dead(
                    session_row, self.lease_seconds, at_ns, self.session_host
                ):
                    raise ConcurrentModificationError(f"another gc is running (on {host}, pid {pid})")
                db.execute("DELETE FROM gc_lock")
            db.execute("INSERT OR REPLACE INTO gc_lock VALUES (0, ?)", (session,))

    def release_gc_lock(self, session: str) -> None:
        with self._write(durable=False) as db:
            db.execute("DELETE FROM gc_lock WHERE session = ?", (session,))

    def _check_gc_lock(self, db, session: str) -> None:
        row = db.execute("SELECT session FROM gc_lock").fetchone()
        if row is None or row[0] != session:
            raise ConcurrentModificationError("this gc lost its lock to another gc; stopping")
        db.execute("UPDATE sessions SET heartbeat_ns = ? WHERE id = ?", (now_ns(), session))

    def _expire_dead_sessions(self, db, current: str) -> set[str]:
        """Delete the sessions that are dead and their pins; return the others, current included."""
        stamp = now_ns()
        alive = {current}
        for session_id, *row in db.execute("SELECT id, host, pid, heartbeat_ns FROM sessions").fetchall():
            if session_id == current or not _session_row_is_dead(row, self.lease_seconds, stamp, self.session_host):
                alive.add(session_id)
            else:
                db.execute("DELETE FROM pins WHERE session = ?", (session_id,))
                db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return alive

    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        with self._write(durable=True) as db:
            self._check_gc_lock(db, session)
            self._expire_dead_sessions(db, session)
            columns = "id, size, stored_size, refcount, state, location"
            rows = db.execute(
                f"SELECT {columns} FROM chunks WHERE state = ? LIMIT ?", (int(ChunkState.DELETING), limit)
            ).fetchall()
            fresh = db.execute(
                f"SELECT {columns} FROM chunks c WHERE refcount = 0 AND state != ? "
                "AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.chunk = c.id) LIMIT ?",
                (int(ChunkState.DELETING), limit - len(rows)),
            ).fetchall()
            db.executemany(
                "UPDATE chunks SET state = ? WHERE id = ?", [(int(ChunkState.DELETING), row[0]) for row in fresh]
            )
        return [_chunk_from_row(row) for row in rows + fresh]

    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        claimed = []
        with self._write(durable=True) as db:
            self._check_gc_lock(db, session)
            for chunk_id in chunk_ids:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO chunks (id, size, state) VALUES (?, 0, ?)",
                    (chunk_id, int(ChunkState.DELETING)),
                )
                if cursor.rowcount:
                    claimed.append(chunk_id)
        return claimed

    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        with self._write(durable=True) as db:
            self._check_gc_lock(db, session)
            db.executemany(
                "DELETE FROM chunks WHERE id = ? AND state = ?",
                [(chunk_id, int(ChunkState.DELETING)) for chunk_id in chunk_ids],
            )

    # ---- repair ----------------------------------------------------------------------

    def storage_bytes(self) -> int:
        return sum(
            os.path.getsize(f"{self.path}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{self.path}{suffix}")
        )

    def integrity_problems(self) -> list[str]:
        """What SQLite's own structural check finds wrong with the file (verify runs it: a
        damaged index page is not met by verify's table scans, yet would mislead later queries)."""
        rows = self._connection().execute("PRAGMA quick_check").fetchall()
        return [] if rows == [("ok",)] else [row[0] for row in rows]

    def set_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        return self._compare_and_set_counts("UPDATE chunks SET refcount = ? WHERE id = ? AND refcount = ?", counts)

    def set_content_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        return self._compare_and_set_counts(
            "UPDATE contents SET refcount = ? WHERE digest = ? AND refcount = ?", counts, release=self._drop_content
        )

    def _compare_and_set_counts(
        self,
        update: str,
        counts: dict[bytes, tuple[int, int]],
        release: Callable[[sqlite3.Connection, bytes], None] | None = None,
    ) -> set[bytes]:
        """Run update (new count, key, expected count) for each key, in one transaction; return the
        keys it changed nothing for. release runs for a key whose count was set to 0."""
        moved = set()
        with self._write(durable=True) as db:
            for key, (expected, new) in counts.items():
                if db.execute(update, (new, key, expected)).rowcount == 0:
                    moved.add(key)
                elif new == 0 and release is not None:
                    release(db, key)
        return moved


class SQLitePackIndex:
    """The PackIndex of a SQLiteCatalog, in tables of the same file. Every call that writes is one
    transaction (BEGIN IMMEDIATE), so it is atomic and serialised with commits and gc: the round
    check of a page write, for one, sees the round as no other transaction can change it."""

    def __init__(self, catalog: SQLiteCatalog):
        self._catalog = catalog
        self.path = catalog.path

    # ---- the round -----------------------------------------------------------------------

    def read_round(self) -> GcRound:
        return self._round(self._catalog._connection())

    @staticmethod
    def _round(db) -> GcRound:
        row = db.execute("SELECT number, phase, session FROM gc_round").fetchone()
        return _round_from_row(row) if row else FIRST_ROUND

    def _check_round(self, db, seen: GcRound) -> None:
        if self._round(db) != seen:
            raise round_moved(seen)

    def expire_sessions(self, gc_session: str) -> set[str]:
        with self._catalog._write(durable=True) as db:
            return self._catalog._expire_dead_sessions(db, gc_session)

    def advance_round(self, gc_session: str, seen: GcRound) -> GcRound:
        number, phase = seen.following()
        with self._catalog._write(durable=True) as db:
            self._catalog._check_gc_lock(db, gc_session)
            self._check_round(db, seen)
            db.execute("INSERT OR REPLACE INTO gc_round VALUES (0, ?, ?, ?)", (number, int(phase), gc_session))
        return GcRound(number, phase, gc_session)

    # ---- packs ---------------------------------------------------------------------------

    def create_pack(self, session: str, pack_id: bytes, stored_bytes: int, entries: int) -> PackRecord:
        check_new_pack(pack_id, stored_bytes, entries)
        record = PackRecord(pack_id, IndexState.PENDING, new_generation(), session, stored_bytes, entries)
        # Not durable: a crash that loses the row leaves at most a pack object without one, an orphan for gc.
        with self._catalog._write(durable=False) as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO packs ({_PACK_COLUMNS}) VALUES ({_marks(9)})", _pack_values(record)
            )
            if cursor.rowcount == 0:
                raise pack_exists(pack_id)
        return record

    def pack_stored(self, pack: PackRecord) -> PackRecord:
        present = replace(pack, state=IndexState.PRESENT, generation=new_generation())
        with self._catalog._write(durable=False) as db:
            cursor = db.execute(
                "UPDATE packs SET state = ?, gen = ? WHERE id = ? AND state = ? AND owner = ? AND gen = ?",
                (
                    int(present.state),
                    present.generation,
                    pack.pack_id,
                    int(IndexState.PENDING),
                    pack.owner,
                    pack.generation,
                ),
            )
        if cursor.rowcount == 0:
            raise not_pending(pack)
        return present

    def get_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, PackRecord]:
        return {
            record.pack_id: record for record in map(_pack_from_row, self._select("packs", _PACK_COLUMNS, pack_ids))
        }

    def iter_packs(self) -> Iterator[PackRecord]:
        for row in self._catalog._connection().execute(f"SELECT {_PACK_COLUMNS} FROM packs ORDER BY id"):
            yield _pack_from_row(row)

    def record_live_bytes(self, live_bytes: Mapping[bytes, int]) -> list[bytes]:
        with self._catalog._write(durable=False) as db:
            return [
                pack_id
                for pack_id, live in live_bytes.items()
                if db.execute("UPDATE packs SET live = ? WHERE id = ?", (live, pack_id)).rowcount == 0
            ]

    def _select(self, table: str, columns: str, ids: Iterable[bytes], key: str = "id") -> Iterator[Sequence]:
        db = self._catalog._connection()
        for batch in batched(ids, _IN_BATCH):
            yield from db.execute(f"SELECT {columns} FROM {table} WHERE {key} IN ({_marks(len(batch))})", batch)

    # ---- pages ---------------------------------------------------------------------------

    def write_pages(self, seen: GcRound, pages: Sequence[NewPage]) -> list[bytes]:
        check_new_pages(pages)
        with self._catalog._write(durable=True) as db:
            self._check_round(db, seen)
            existing = []
            for page in pages:
                record = PageRecord(
                    page.page_id, page.body, IndexState.PRESENT, new_generation(), page.origin, page.origin_segment
                )
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO pages ({_PAGE_COLUMNS}) VALUES ({_marks(7)})", _page_values(record)
                )
                if cursor.rowcount == 0:
                    existing.append(page.page_id)
        return existing

    def get_page(self, page_id: bytes, consistent: bool = True) -> PageRecord | None:
        row = (
            self._catalog._connection()
            .execute(f"SELECT {_PAGE_COLUMNS} FROM pages WHERE id = ?", (page_id,))
            .fetchone()
        )
        return _index_page_from_row(row) if row else None

    def iter_pages(self) -> Iterator[PageRecord]:
        for row in self._catalog._connection().execute(f"SELECT {_PAGE_COLUMNS} FROM pages ORDER BY id"):
            yield _index_page_from_row(row)

    def switch_page(self, page: PageRecord, body: bytes) -> PageRecord | None:
        check_page_body(page.page_id, body)
        generation = new_generation()
        with self._catalog._write(durable=True) as db:
            cursor = db.execute(
                "UPDATE pages SET body = ?, gen = ? WHERE id = ? AND state = ? AND gen = ?",
                (body, generation, page.page_id, int(IndexState.PRESENT), page.generation),
            )
        if cursor.rowcount == 0:
            return None
        return replace(page, body=body, state=IndexState.PRESENT, generation=generation)

    # ---- hooks ---------------------------------------------------------------------------

    def put_hooks(self, hooks: Mapping[bytes, bytes]) -> None:
        with self._catalog._write(durable=False) as db:
            db.executemany("INSERT OR REPLACE INTO hooks VALUES (?, ?)", hooks.items())

    def get_hooks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        hooks: dict[bytes, bytes] = {}
        for row in self._select("hooks", "chunk, page", chunk_ids, key="chunk"):
            chunk_id, page_id = _checked("hooks", _HOOK_ROW, row)
            hooks[chunk_id] = page_id
        return hooks

    def forget_hooks(self, chunk_ids: Iterable[bytes]) -> None:
        with self._catalog._write(durable=False) as db:
            db.executemany("DELETE FROM hooks WHERE chunk = ?", [(chunk_id,) for chunk_id in chunk_ids])

    def iter_hooks(self) -> Iterator[tuple[bytes, bytes]]:
        for row in self._catalog._connection().execute("SELECT chunk, page FROM hooks ORDER BY chunk"):
            chunk_id, page_id = _checked("hooks", _HOOK_ROW, row)
            yield chunk_id, page_id

    # ---- gc transitions ------------------------------------------------------------------

    def doom(self, gc_round: GcRound, items: Sequence[IndexItem]) -> list[IndexItem]:
        check_doom_round(gc_round)
        with self._catalog._write(durable=True) as db:
            self._check_round(db, gc_round)

            def owner_gone(owner: str) -> bool:
                return db.execute("SELECT 1 FROM sessions WHERE id = ?", (owner,)).fetchone() is None

            return self._transition(db, items, doom_step(gc_round, owner_gone))

    def spare(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        with self._catalog._write(durable=True) as db:
            return self._transition(db, items, spare_step)

    def start_deleting(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        with self._catalog._write(durable=True) as db:
            return self._transition(db, items, delete_step)

    @staticmethod
    def _transition(db, items: Sequence[IndexItem], step: Callable) -> list[IndexItem]:
        """Apply step to each item as it is now, in the caller's transaction; return the items it refused."""
        refused = []
        for item in items:
            if isinstance(item, PackRecord):
                row = db.execute(f"SELECT {_PACK_COLUMNS} FROM packs WHERE id = ?", (item.pack_id,)).fetchone()
                changed = step(item, _pack_from_row(row) if row else None)
                statement, values = f"REPLACE INTO packs ({_PACK_COLUMNS}) VALUES ({_marks(9)})", _pack_values
            else:
                row = db.execute(f"SELECT {_PAGE_COLUMNS} FROM pages WHERE id = ?", (item.page_id,)).fetchone()
                changed = step(item, _index_page_from_row(row) if row else None)
                statement, values = f"REPLACE INTO pages ({_PAGE_COLUMNS}) VALUES ({_marks(7)})", _page_values
            if changed is None:
                refused.append(item)
            else:
                db.execute(statement, values(changed))
        return refused

    def forget(self, items: Sequence[IndexItem]) -> None:
        with self._catalog._write(durable=True) as db:
            for item in items:
                table = "packs" if isinstance(item, PackRecord) else "pages"
                db.execute(f"DELETE FROM {table} WHERE id = ? AND state = ?", (item.item_id, int(IndexState.DELETING)))


def _marks(count: int) -> str:
    return ", ".join("?" * count)


# ---- sqlite3 errors ----------------------------------------------------------------------


def _catalog_error(catalog: SQLiteCatalog, error: sqlite3.Error) -> ChunkstoreError:
    """A damaged file is an integrity error naming the catalog; a locked, read-only or failing
    disk is a plain error. Errors that mean a bug in a query (IntegrityError, ProgrammingError)
    are left alone, so they are not mistaken for damage."""
    if isinstance(error, sqlite3.OperationalError):
        return ChunkstoreError(f"catalog {catalog.path}: {error}")
    return CorruptObjectError(
        f"catalog {catalog.path} is damaged ({error}); "
        "restore it from a backup, or copy what still reads with `sqlite3 .recover`"
    )


_TRANSLATED = (sqlite3.OperationalError, sqlite3.DataError, sqlite3.NotSupportedError)


def _is_translated(error: sqlite3.Error) -> bool:
    # sqlite3.DatabaseError itself (not a subclass) is what SQLite raises for a malformed file.
    return isinstance(error, _TRANSLATED) or type(error) is sqlite3.DatabaseError


def _translate_errors(method):
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.Error as error:
                if not _is_translated(error):
                    raise
                raise _catalog_error(self, error) from None

        return generator

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            if not _is_translated(error):
                raise
            raise _catalog_error(self, error) from None

    return call


for _method in Catalog.__abstractmethods__ | {"integrity_problems"}:
    setattr(SQLiteCatalog, _method, _translate_errors(getattr(SQLiteCatalog, _method)))
for _method in PACK_INDEX_CALLS:
    setattr(SQLitePackIndex, _method, _translate_errors(getattr(SQLitePackIndex, _method)))
del _method

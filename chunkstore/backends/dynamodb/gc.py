"""gc in the table: the gc lock, finding collectable chunks, orphans, and forgetting deleted chunks.

A pass (a round) starts with one scan: it expires dead sessions, unpins them from every
chunk, settles contents that dead writers or interrupted removals left half done (which
gives counts back), and queues the chunk rows with count 0 or in DELETING. Each call of
collect then moves queued rows to DELETING for this gc, each conditional on the row
being as the scan saw it (same generation, count 0, no pins), so a writer that pinned a
chunk since makes gc's move fail: pins, owner and state live on one item. Only the gc
named on a DELETING row (`gcs`) deletes its object; a gc that finds a row whose gc died
names itself on it first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from chunkstore.backends.catalog import ChunkRecord, ChunkState
from chunkstore.backends.dynamodb import commits
from chunkstore.backends.dynamodb.items import (
    CHUNK_SK,
    CONTENT_SK,
    GC_LOCK_KEY,
    LIVE,
    RELEASING,
    chunk_id_of,
    chunk_key,
    chunk_record,
    chunk_state,
    content_state,
    digest_of,
    generation,
    n,
    number,
    pins,
    s,
    session_key,
    text,
)
from chunkstore.backends.dynamodb.sessions import Sessions
from chunkstore.backends.dynamodb.table import Table
from chunkstore.backends.sessions import new_session_id
from chunkstore.errors import ConcurrentModificationError


@dataclass
class _Round:
    """One pass of a gc: the chunks its table scan found, and what it learnt of sessions."""

    queue: deque = field(default_factory=deque)
    alive: dict = field(default_factory=dict)


class GarbageCollector:
    """The gc side of the catalog, for the sessions of one catalog handle."""

    def __init__(self, table: Table, sessions: Sessions):
        self._table = table
        self._sessions = sessions
        self._lock = threading.Lock()
        self._rounds: dict[str, _Round] = {}
        self._holders: set[str] = set()  # sessions of this handle that took the gc lock

    # ---- the lock --------------------------------------------------------------------

    def acquire_lock(self, session: str) -> None:
        lock = self._table.get(GC_LOCK_KEY)
        holder = text(lock, "ses") if lock else None
        if holder is not None and holder != session:
            holder_session = self._table.get(session_key(holder))
            if holder_session is not None and not self._sessions.expired(holder_session):
                raise ConcurrentModificationError(
                    f"another gc is running (on {text(holder_session, 'host')}, pid {number(holder_session, 'pid')})"
                )
            condition, values = "ses = :holder", {":holder": s(holder)}
        else:
            condition, values = "attribute_not_exists(pk) OR ses = :me", {":me": s(session)}
        if not self._table.put({**GC_LOCK_KEY, "ses": s(session)}, condition, values):
            raise ConcurrentModificationError("another gc took the gc lock first")
        with self._lock:
            self._holders.add(session)

    def release_lock(self, session: str) -> None:
        self.forget_session(session)
        self._table.delete(GC_LOCK_KEY, "ses = :me", {":me": s(session)})

    def forget_session(self, session: str) -> bool:
        """Drop what this handle knows of a session's gc; return whether it took the lock."""
        with self._lock:
            self._rounds.pop(session, None)
            held = session in self._holders
            self._holders.discard(session)
        return held

    def _check_lock(self, session: str) -> None:
        lock = self._table.get(GC_LOCK_KEY)
        if lock is None or text(lock, "ses") != session:
            raise ConcurrentModificationError("this gc does not hold the gc lock (another gc took it over); stopping")
        self._sessions.heartbeat(session)

    # ---- candidates ------------------------------------------------------------------

    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        self._check_lock(session)
        with self._lock:
            gc_round = self._rounds.get(session)
        if gc_round is None:
            gc_round = self._start_round(session)
            with self._lock:
                self._rounds[session] = gc_round
        collected: list[ChunkRecord] = []
        while gc_round.queue and len(collected) < limit:
            batch = [gc_round.queue.popleft() for _ in range(min(limit - len(collected), len(gc_round.queue)))]
            collected += self._collect(session, batch, gc_round.alive)
        if not collected:
            # This pass is over; the next call scans the table again.
            with self._lock:
                self._rounds.pop(session, None)
        return collected

    def _start_round(self, session: str) -> _Round:
        """Expire dead sessions, settle contents that dead writers or removals left half done,
        and queue every chunk row that may be collectable."""
        gc_round = _Round(alive=self._sessions.expire_dead(session))
        settled = False
        for item in self._scan(gc_round):
            if content_state(item) == RELEASING:
                commits.release(self._table, digest_of(item))
                settled = True
            elif not self._sessions.alive(text(item, "own", None), gc_round.alive):
                commits.roll_back(self._table, digest_of(item), text(item, "own", None), number(item, "done"))
                settled = True
        if settled:
            # Settling gave counts back: look again for chunks that reached 0.
            gc_round.queue.clear()
            self._scan(gc_round)
        return gc_round

    def _scan(self, gc_round: _Round) -> list[dict]:
        """Queue the rows of chunks with count 0 or in DELETING, unpin dead sessions from any
        chunk, and return the contents that are not live (committing or releasing)."""
        contents = []
        for item in self._table.scan(
            "(sk = :c AND (rc = :zero OR st = :deleting OR attribute_exists(pins))) OR (sk = :d AND st <> :live)",
            {
                ":c": s(CHUNK_SK),
                ":zero": n(0),
                ":deleting": n(ChunkState.DELETING),
                ":d": s(CONTENT_SK),
                ":live": s(LIVE),
            },
        ):
            if text(item, "sk") == CONTENT_SK:
                contents.append(item)
                continue
            row = self._unpin_dead(item, gc_round.alive)
            if row is not None and (number(row, "rc") == 0 or chunk_state(row) == ChunkState.DELETING):
                gc_round.queue.append(row)
        return contents

    def _unpin_dead(self, row: dict, alive: dict) -> dict | None:
        """Remove the pins of dead sessions from a chunk row; return the row as it is now (None if it changed)."""
        dead = [pin for pin in pins(row) if not self._sessions.alive(pin, alive)]
        if not dead:
            return row
        return self._table.update(
            chunk_key(chunk_id_of(row)),
            "DELETE pins :dead",
            {":dead": {"SS": dead}, ":gen": s(generation(row))},
            "gen = :gen",
            ReturnValues="ALL_NEW",
        )

    def _collect(self, session: str, rows: list[dict], alive: dict) -> list[ChunkRecord]:
        """Move to DELETING, for this gc, the rows that nothing can still need; return them."""
        collected, fresh = [], []
        for row in rows:
            if chunk_state(row) != ChunkState.DELETING:
                if "pins" not in row and not self._sessions.alive(text(row, "own", None), alive):
                    fresh.append(row)
                continue
            if self._deletes(session, row, alive):
                collected.append(row)
        # A pin added since the scan, a count taken, or a row collected and made again (by a
        # new owner) makes its condition fail: pins, owner and state live on one item.
        refused = self._table.transact_each(
            fresh,
            lambda row: {
                "Update": {
                    "Key": chunk_key(chunk_id_of(row)),
                    "UpdateExpression": "SET st = :deleting, gcs = :me",
                    "ConditionExpression": "st = :seen AND rc = :zero AND gen = :gen AND attribute_not_exists(pins)",
                    "ExpressionAttributeValues": {
                        ":deleting": n(ChunkState.DELETING),
                        ":me": s(session),
                        ":seen": n(chunk_state(row)),
                        ":zero": n(0),
                        ":gen": s(generation(row)),
                    },
                }
            },
        )
        refused_ids = {chunk_id_of(row) for row in refused}
        collected += [row for row in fresh if chunk_id_of(row) not in refused_ids]
        return [
            ChunkRecord(record.chunk_id, record.size, record.stored_size, 0, ChunkState.DELETING, record.location)
            for record in map(chunk_record, collected)
        ]

    def _deletes(self, session: str, row: dict, alive: dict) -> bool:
        """Whether this gc deletes the object of a DELETING row: one it moved itself, or one an
        interrupted gc left (this gc then names itself on the row). Deleting is never undone."""
        tag = text(row, "gcs", None)
        if tag == session:
            return True
        if self._sessions.alive(tag, alive):
            return False
        return (
            self._table.update(
                chunk_key(chunk_id_of(row)),
                "SET gcs = :me",
                {":me": s(session), ":deleting": n(ChunkState.DELETING), ":tag": s(tag or "")},
                "st = :deleting AND (gcs = :tag OR attribute_not_exists(gcs))",
            )
            is not None
        )

    def abandoned(self, deleting: list[dict]) -> list[dict]:
        """Of DELETING chunk rows, those whose gc is dead, read again: a gc that has just
        finished has forgotten its rows before its session ended."""
        suspects = [chunk_key(chunk_id_of(row)) for row in deleting if not self._sessions.alive(text(row, "gcs", None))]
        return [
            row
            for row in self._table.get_many(suspects)
            if chunk_state(row) == ChunkState.DELETING and not self._sessions.alive(text(row, "gcs", None))
        ]

    # ---- objects the catalog does not know, and objects deleted ------------------------

    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        self._check_lock(session)
        taken = set(
            self._table.transact_each(
                list(dict.fromkeys(chunk_ids)),
                lambda chunk_id: {
                    "Put": {
                        "Item": {
                            **chunk_key(chunk_id),
                            "st": n(ChunkState.DELETING),
                            "gcs": s(session),
                            "sz": n(0),
                            "ss": n(0),
                            "rc": n(0),
                            "gen": s(new_session_id()),
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            )
        )
        return [chunk_id for chunk_id in chunk_ids if chunk_id not in taken]

    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        self._check_lock(session)
        self._table.transact_each(
            list(dict.fromkeys(chunk_ids)),
            lambda chunk_id: {
                "Delete": {
                    "Key": chunk_key(chunk_id),
                    "ConditionExpression": "st = :deleting AND gcs = :me",
                    "ExpressionAttributeValues": {":deleting": n(ChunkState.DELETING), ":me": s(session)},
                }
            },
        )

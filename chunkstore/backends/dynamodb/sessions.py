"""Sessions in the table: one item each (pk "s"), its heartbeat, and whether it is still alive.

Writers and gc both judge other sessions by these items: a session is dead once its
heartbeat is older than the lease, or at once when its process is gone on this host
(chunkstore.backends.sessions).
"""

from __future__ import annotations

import os

from chunkstore.backends.dynamodb.items import (
    SESSIONS_PK,
    n,
    number,
    s,
    session_expired,
    session_item,
    session_key,
    text,
)
from chunkstore.backends.dynamodb.table import Table
from chunkstore.backends.sessions import HOST, new_session_id, now_ns


class Sessions:
    def __init__(self, table: Table, lease_seconds: float):
        self._table = table
        self.lease_seconds = lease_seconds
        self.host = HOST  # the catalog's session_host

    def open(self, kind: str) -> str:
        session = new_session_id()
        self._table.put(session_item(session, kind, self.host, os.getpid(), now_ns()))
        return session

    def heartbeat(self, session: str) -> None:
        # A session that gc expired stays expired: its pins may be gone.
        self._table.update(session_key(session), "SET hb = :now", {":now": n(now_ns())}, "attribute_exists(pk)")

    def end(self, session: str) -> None:
        self._table.delete(session_key(session))

    def expired(self, item: dict) -> bool:
        """Whether the session of this session item is dead."""
        return session_expired(item, self.lease_seconds, now_ns(), self.host)

    def alive(self, session: str | None, known: dict[str, bool] | None = None) -> bool:
        """Whether session is alive; known caches the answers (and answers first) when given."""
        if session is None:
            return False
        if known is not None and session in known:
            return known[session]
        item = self._table.get(session_key(session))
        alive = item is not None and not self.expired(item)
        if known is not None:
            known[session] = alive
        return alive

    def expire_dead(self, current: str) -> dict[str, bool]:
        """Delete the items of dead sessions (unless one heartbeat meanwhile); return every
        session's liveness, the current one counted alive."""
        alive: dict[str, bool] = {}
        for item in self._table.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": s(SESSIONS_PK)}, ConsistentRead=True
        ):
            session = text(item, "sk")
            alive[session] = session == current or not self.expired(item)
            if not alive[session]:
                self._table.delete(session_key(session), "hb = :hb", {":hb": n(number(item, "hb"))})
        return alive

"""DynamoDBCatalog: the Catalog interface over one DynamoDB table.

It composes the layers below it: items.py (what items hold), table.py (the requests),
sessions.py (writer sessions), commits.py (writing and taking back contents and
versions) and gc.py (the gc lock and collection). What it does itself: claiming and
pinning chunks for a writer, the order of a commit's steps, reading versions and
contents, removal, and history (deletion markers, snapshots).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from chunkstore.backends.aws import AwsClients
from chunkstore.backends.catalog import (
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
from chunkstore.backends.dynamodb import commits
from chunkstore.backends.dynamodb.gc import GarbageCollector
from chunkstore.backends.dynamodb.items import (
    CHUNK_SK,
    COMMITTING,
    CONTENT_SK,
    DELETION_MARK,
    HISTORY_SCHEMA,
    LIVE,
    META_KEY,
    PACK_INDEX_SCHEMA,
    RELEASING,
    SNAPSHOTS_PK,
    chunk_id_of,
    chunk_key,
    chunk_record,
    chunk_state,
    content_key,
    content_pk,
    content_record,
    content_state,
    counted_limit,
    digest_of,
    generation,
    key,
    n,
    name_pk,
    number,
    page_sk,
    pins,
    prefix_conditions,
    s,
    shard_pk,
    snapshot_item,
    snapshot_key,
    snapshot_record,
    stat_attributes,
    stored_name,
    text,
    version_key,
    version_range,
    version_record,
)
from chunkstore.backends.dynamodb.packindex import DynamoDBPackIndex
from chunkstore.backends.dynamodb.sessions import Sessions
from chunkstore.backends.dynamodb.table import DIGEST_INDEX, Cancelled, Table, translated
from chunkstore.backends.packindex import PackIndex, RoundGuard
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, new_session_id, now_ns
from chunkstore.core.names import name_matches_prefix
from chunkstore.errors import (
    ConcurrentModificationError,
    InvalidArgumentError,
    NameNotFoundError,
    NotFoundError,
    RoundMovedError,
    VersionNotFoundError,
)

# How long a writer waits for a gc to finish deleting a chunk it needs, and how often it looks.
_DELETING_WAIT_SECONDS = 120.0
_POLL_SECONDS = 0.1


class DynamoDBCatalog(Catalog):
    def __init__(
        self,
        clients: AwsClients,
        table: str,
        *,
        store_id: str,
        store_url: str,
        create: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ):
        self.table = Table(clients, table)
        self.clients = clients
        self._sessions = Sessions(self.table, lease_seconds)
        self._gc = GarbageCollector(self.table, self._sessions)
        self._lock = threading.Lock()
        self._pins: dict[str, set[bytes]] = {}
        self._generations: dict[str, dict[bytes, str]] = {}
        with self.table.errors():
            if create:
                self.table.claim(store_id, store_url)
            meta = self.table.meta(store_id, store_url)
        self._schema = meta.schema
        self._shards = meta.shards
        self.pack_index: PackIndex = DynamoDBPackIndex(
            self.table, self._sessions, functools.partial(self._require_schema, PACK_INDEX_SCHEMA)
        )

    @property
    def lease_seconds(self) -> float:
        return self._sessions.lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, seconds: float) -> None:
        self._sessions.lease_seconds = seconds

    @property
    def session_host(self) -> str:
        return self._sessions.host

    @session_host.setter
    def session_host(self, host: str) -> None:
        self._sessions.host = host

    @staticmethod
    def create_table(clients: AwsClients, table: str) -> None:
        """Make the table (on-demand billing) if it does not exist, and wait until it is active."""
        Table.create(clients, table)

    def close(self) -> None:
        self.table.close()

    # ---- sessions --------------------------------------------------------------------

    @translated
    def open_session(self, kind: str) -> str:
        return self._sessions.open(kind)

    @translated
    def heartbeat(self, session: str) -> None:
        self._sessions.heartbeat(session)

    @translated
    def close_session(self, session: str) -> None:
        with self._lock:
            pinned = self._pins.pop(session, set())
            self._generations.pop(session, None)
        held_gc_lock = self._gc.forget_session(session)
        self.table.transact_each(
            list(pinned),
            lambda chunk_id: {
                "Update": {
                    "Key": chunk_key(chunk_id),
                    "UpdateExpression": "DELETE pins :me",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":me": {"SS": [session]}},
                }
            },
        )
        self._sessions.end(session)
        if held_gc_lock:
            self._gc.release_lock(session)

    # ---- claims ----------------------------------------------------------------------

    @translated
    def claim_chunks(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
        sizes: dict[bytes, int] = {}
        for chunk_id, size in chunks:
            sizes.setdefault(chunk_id, size)
        to_upload: set[bytes] = set()
        waiting = list(sizes)
        deadline = time.monotonic() + _DELETING_WAIT_SECONDS
        while waiting:
            rows = {chunk_id_of(item): item for item in self.table.get_many([chunk_key(each) for each in waiting])}
            absent = [chunk_id for chunk_id in waiting if chunk_id not in rows]
            raced = self._announce(session, absent, sizes)
            to_upload.update(chunk_id for chunk_id in absent if chunk_id not in raced)
            deleting = [row for row in rows.values() if chunk_state(row) == ChunkState.DELETING]
            pinnable = [row for row in rows.values() if chunk_state(row) != ChunkState.DELETING]
            changed = self._pin(session, pinnable)
            to_upload.update(self._pending_to_upload(session, pinnable, changed))
            if deleting:
                self._wait_for_deletion(deleting, deadline)
            # Rows that changed under the claim are read again.
            waiting = raced + list(changed) + [chunk_id_of(row) for row in deleting]
        return to_upload

    def _pending_to_upload(self, session: str, pinned: list[dict], changed: set[bytes]) -> list[bytes]:
        """PENDING rows the session pinned as they were read: it uploads them (and remembers their generation)."""
        pending = [row for row in pinned if chunk_id_of(row) not in changed and chunk_state(row) == ChunkState.PENDING]
        with self._lock:
            self._generations.setdefault(session, {}).update((chunk_id_of(row), generation(row)) for row in pending)
        return [chunk_id_of(row) for row in pending]

    def _wait_for_deletion(self, deleting: list[dict], deadline: float) -> None:
        abandoned = self._gc.abandoned(deleting)
        if abandoned or time.monotonic() > deadline:
            raise ConcurrentModificationError(
                f"{len(abandoned or deleting)} chunk(s) this put needs are being deleted by a gc that "
                "stopped before finishing; run `chunkstore gc` to complete it, then put again"
            )
        time.sleep(_POLL_SECONDS)

    def _pin(self, session: str, rows: list[dict]) -> set[bytes]:
        """Add session to the pins of these rows, each as it was read (same generation, not DELETING);
        return the IDs of rows that changed since (they are not pinned)."""
        unpinned = [row for row in rows if session not in pins(row) and text(row, "own", None) != session]
        refused = self.table.transact_each(
            unpinned,
            lambda row: {
                "Update": {
                    "Key": chunk_key(chunk_id_of(row)),
                    "UpdateExpression": "ADD pins :me",
                    "ConditionExpression": "gen = :gen AND st <> :deleting",
                    "ExpressionAttributeValues": {
                        ":me": {"SS": [session]},
                        ":gen": s(generation(row)),
                        ":deleting": n(ChunkState.DELETING),
                    },
                }
            },
        )
        changed = {chunk_id_of(row) for row in refused}
        with self._lock:
            self._pins.setdefault(session, set()).update(
                chunk_id for chunk_id in map(chunk_id_of, rows) if chunk_id not in changed
            )
        return changed

    def _announce(self, session: str, chunk_ids: list[bytes], sizes: dict[bytes, int]) -> list[bytes]:
        """Create PENDING rows owned by session for chunks that have none; return those that got
        a row from someone else in the meantime. The owner pins the row for as long as it lives
        (and the generation cannot change under it), so it never has to unpin it."""
        generations = {chunk_id: new_session_id() for chunk_id in chunk_ids}

        def row(chunk_id: bytes) -> dict:
            return {
                "Put": {
                    "Item": {
                        **chunk_key(chunk_id),
                        "st": n(ChunkState.PENDING),
                        "sz": n(sizes[chunk_id]),
                        "rc": n(0),
                        "ss": n(0),
                        "gen": s(generations[chunk_id]),
                        "own": s(session),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }

        raced = self.table.transact_each(chunk_ids, row)
        announced = set(chunk_ids) - set(raced)
        with self._lock:
            self._generations.setdefault(session, {}).update(
                (chunk_id, generations[chunk_id]) for chunk_id in announced
            )
        return raced

    @translated
    def chunks_stored(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> None:
        with self._lock:
            generations = self._generations.get(session, {})
            # One action per item: a transaction may not name an item twice.
            work = [
                (chunk_id, stored_size, generations.pop(chunk_id, None))
                for chunk_id, stored_size in dict(chunks).items()
            ]
        refused = self.table.transact_each(
            work,
            lambda args: {
                "Update": {
                    "Key": chunk_key(args[0]),
                    "UpdateExpression": "SET st = :present, ss = :ss",
                    **self._mark_condition(args[1], args[2]),
                }
            },
        )
        self.table.in_parallel(lambda args: self._mark_present(*args), refused)

    @staticmethod
    def _mark_condition(stored_size: int, generation_seen: str | None) -> dict:
        """PENDING -> PRESENT only for the generation of the row the writer saw before uploading."""
        values = {":present": n(ChunkState.PRESENT), ":pending": n(ChunkState.PENDING), ":ss": n(stored_size)}
        condition = "st = :pending"
        if generation_seen is not None:
            condition += " AND gen = :gen"
            values[":gen"] = s(generation_seen)
        return {"ConditionExpression": condition, "ExpressionAttributeValues": values}

    def _mark_present(self, chunk_id: bytes, stored_size: int, generation_seen: str | None) -> None:
        """Mark one chunk whose row was not PENDING of that generation when the batch tried:
        done if it is PRESENT already; otherwise gc took it (commit will refuse it)."""
        condition = self._mark_condition(stored_size, generation_seen)
        item = self.table.get(chunk_key(chunk_id))
        if (
            item is not None
            and chunk_state(item) == ChunkState.PENDING
            and (generation_seen is None or generation(item) == generation_seen)
        ):
            self.table.update(
                chunk_key(chunk_id),
                "SET st = :present, ss = :ss",
                condition["ExpressionAttributeValues"],
                condition["ConditionExpression"],
            )

    # ---- commit ----------------------------------------------------------------------

    @translated
    def commit(
        self,
        session: str,
        versions: Sequence[NewVersion],
        at_ns: int | None = None,
        *,
        round_guard: RoundGuard | None = None,
    ) -> list[CommitOutcome]:
        if not versions:
            return []
        stamp = now_ns() if at_ns is None else at_ns
        self.heartbeat(session)
        self._check_new_chunks_present(versions)

        def run(group: list[int]) -> list[tuple[int, CommitOutcome]]:
            return [(index, self._commit_version(session, versions[index], stamp, round_guard)) for index in group]

        # Versions that share no name and no content commit in parallel; the others in order.
        outcomes = dict(pair for done in self.table.in_parallel(run, _dependent_groups(versions)) for pair in done)
        return [outcomes[index] for index in range(len(versions))]

    def _check_new_chunks_present(self, versions: Sequence[NewVersion]) -> None:
        """Refuse the whole commit, before writing anything, if a new content names a chunk that is not PRESENT."""
        digests = {new.digest for new in versions}
        live = {
            digest_of(item)
            for item in self.table.get_many([content_key(digest) for digest in digests])
            if content_state(item) == LIVE
        }
        checked: set[bytes] = set()
        for new in versions:
            if new.digest in live or new.digest in checked:
                continue
            checked.add(new.digest)
            missing = commits.missing_chunks(self.table, new)
            if missing:
                raise ConcurrentModificationError(
                    f"{missing} chunk(s) of {new.name!r} are not stored (collected by a concurrent gc while this put "
                    "was stalled past its session lease, or never uploaded); nothing was committed, put again"
                )

    def _commit_version(
        self, session: str, new: NewVersion, at_ns: int, round_guard: RoundGuard | None
    ) -> CommitOutcome:
        gc_round = round_guard.current() if round_guard is not None else None
        while True:
            latest = self._latest_version(new.name)
            if latest is not None and latest.digest == new.digest:
                if self._refresh_stat(latest, new.stat):
                    return CommitOutcome(new.name, latest.version, "unchanged")
                continue
            previous = commits.last_number(self.table, new.name, self._shards)
            content = self.table.get(content_key(new.digest))
            try:
                if not content:
                    number_given = commits.store_content(
                        self.table, session, new, previous, at_ns, self._shards, gc_round
                    )
                    return CommitOutcome(new.name, number_given, "stored")
                if content_state(content) == LIVE:
                    duplicate_of = self.find_name_with_digest(new.digest)
                    commits.add_duplicate(self.table, new, previous, at_ns, self._shards)
                    return CommitOutcome(new.name, previous + 1, "duplicate", duplicate_of)
            except commits.Retry:
                continue
            except RoundMovedError:
                assert round_guard is not None and gc_round is not None
                gc_round = round_guard.moved(gc_round)
                continue
            self._settle(session, content)

    def _refresh_stat(self, latest: VersionRecord, stat: FileStat) -> bool:
        attributes = stat_attributes(stat)
        return (
            self.table.update(
                version_key(latest.name, latest.version, self._shards),
                "SET " + ", ".join(f"{name} = :{name}" for name in attributes),
                {**{f":{name}": value for name, value in attributes.items()}, ":dg": s(latest.digest.hex())},
                "dg = :dg",
            )
            is not None
        )

    def _settle(self, session: str, content: dict) -> None:
        """Get a content that is neither live nor absent out of the way: wait for a live writer
        committing it, roll back a dead one's commit, finish a release."""
        digest = digest_of(content)
        if content_state(content) == COMMITTING:
            owner = text(content, "own", None)
            if owner != session and self._sessions.alive(owner):
                time.sleep(_POLL_SECONDS)
                return
            commits.roll_back(self.table, digest, owner, number(content, "done"))
        else:
            commits.release(self.table, digest)

    # ---- reading ---------------------------------------------------------------------

    def _version_query(self, name: str) -> dict:
        first, last = version_range(name)
        return {
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {":pk": s(name_pk(name, self._shards)), ":first": s(first), ":last": s(last)},
            "ConsistentRead": True,
        }

    def _latest_version(self, name: str) -> VersionRecord | None:
        items = self.table.query_page(**self._version_query(name), ScanIndexForward=False, Limit=1)
        return version_record(items[0]) if items else None

    def _versions_of(self, name: str) -> list[VersionRecord]:
        return [version_record(item) for item in self.table.query(**self._version_query(name))]

    @translated
    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        return refuse_marker(self._find_version(name, version), version)

    def _find_version(self, name: str, version: int | None) -> VersionRecord:
        """The given or latest version of name, deletion markers included."""
        if version is None:
            record = self._latest_version(name)
        else:
            item = self.table.get(version_key(name, version, self._shards))
            record = version_record(item) if item else None
        if record is None:
            if version is not None and self._latest_version(name) is not None:
                raise VersionNotFoundError(f"{name!r} has no version {version}")
            raise NameNotFoundError(f"no stored file named {name!r}")
        return record

    @translated
    def list_versions(
        self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None, deleted: bool = False
    ) -> Iterator[VersionRecord]:
        requests = [
            {
                "KeyConditionExpression": expression,
                "ExpressionAttributeValues": {":pk": s(shard_pk(shard)), **values},
                "ConsistentRead": True,
            }
            for shard in range(self._shards)
            for expression, values in prefix_conditions(prefix)
        ]
        # Every shard's query is ordered by sort key; merging them orders all names.
        merged = heapq.merge(*self.table.parallel_queries(requests), key=lambda item: text(item, "sk"))
        records = (record for record in map(version_record, merged) if name_matches_prefix(record.name, prefix))
        yield from _select_versions(records, all_versions, as_of_ns, deleted)

    @translated
    def find_name_with_digest(self, digest: bytes) -> str | None:
        # The index is eventually consistent: check each name it gives against the table.
        for indexed in self.table.query_page(
            IndexName=DIGEST_INDEX,
            KeyConditionExpression="dg = :dg",
            ExpressionAttributeValues={":dg": s(digest.hex())},
            Limit=10,
        ):
            if self.table.get(key(text(indexed, "pk"), text(indexed, "sk"))) is not None:
                return stored_name(indexed)
        content = self._live_content(digest)
        return stored_name(content) if content is not None else None

    def _live_content(self, digest: bytes) -> dict | None:
        item = self.table.get(content_key(digest))
        return item if item is not None and content_state(item) == LIVE else None

    @translated
    def get_content(self, digest: bytes) -> ContentRecord | None:
        item = self._live_content(digest)
        return content_record(item) if item is not None else None

    @translated
    def recipe_pages(self, digest: bytes) -> Iterator[bytes]:
        item = self._live_content(digest)
        if item is None:
            raise NotFoundError(f"no recipe for content {digest.hex()}")
        yield from commits.stored_pages(self.table, digest, number(item, "pg"))

    @translated
    def replace_inline_page(self, digest: bytes, old: bytes, new: bytes) -> bool:
        content = self._live_content(digest)
        if content is None or number(content, "pg") != 1:
            return False
        return (
            self.table.update(
                key(content_pk(digest), page_sk(0)),
                "SET #data = :new",
                {":new": {"B": new}, ":old": {"B": old}},
                "#data = :old",
                ExpressionAttributeNames={"#data": "data"},
            )
            is not None
        )

    @translated
    def iter_contents(self) -> Iterator[ContentRecord]:
        for item in self.table.scan("sk = :d AND st = :live", {":d": s(CONTENT_SK), ":live": s(LIVE)}):
            yield content_record(item)

    @translated
    def iter_chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk row. Its count is the references of committed contents: increments a
        commit in progress (or cut short by a crash) has applied, and decrements a release
        has not applied yet, are left out, so verify compares like with like."""
        chunks: list[ChunkRecord] = []
        in_flight: list[dict] = []
        for item in self.table.scan(
            "sk = :c OR (sk = :d AND st <> :live)", {":c": s(CHUNK_SK), ":d": s(CONTENT_SK), ":live": s(LIVE)}
        ):
            if text(item, "sk") == CHUNK_SK:
                chunks.append(chunk_record(item))
            else:
                in_flight.append(item)
        pending = commits.in_flight_counts(self.table, in_flight)
        for record in chunks:
            adjustment = pending.get(record.chunk_id, 0)
            yield (
                ChunkRecord(
                    record.chunk_id,
                    record.size,
                    record.stored_size,
                    record.refcount - adjustment,
                    record.state,
                    record.location,
                )
                if adjustment
                else record
            )

    @translated
    def get_chunks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, ChunkRecord]:
        keys = [chunk_key(chunk_id) for chunk_id in dict.fromkeys(chunk_ids)]
        return {record.chunk_id: record for record in map(chunk_record, self.table.get_many(keys))}

    @translated
    def stats(self) -> CatalogStats:
        names = versions = logical = 0
        previous = None
        for record in self.list_versions(all_versions=True):
            versions += 1
            logical += record.size
            names += record.name != previous
            previous = record.name
        contents = content_bytes = chunks = unique = stored = 0
        for item in self.table.scan(
            "(sk = :d AND st = :live) OR (sk = :c AND st = :present)",
            {":d": s(CONTENT_SK), ":live": s(LIVE), ":c": s(CHUNK_SK), ":present": n(ChunkState.PRESENT)},
        ):
            if text(item, "sk") == CONTENT_SK:
                contents += 1
                content_bytes += number(item, "sz")
            else:
                chunks += 1
                unique += number(item, "sz")
                stored += number(item, "ss")
        return CatalogStats(names, versions, logical, contents, content_bytes, chunks, unique, stored)

    # ---- removal ---------------------------------------------------------------------

    @translated
    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        chosen: dict[tuple[str, int], VersionRecord] = {}
        for name, version in selections:
            if version is None:
                found = self._versions_of(name)
                if not found:
                    raise NameNotFoundError(f"no stored file named {name!r}")
            else:
                found = [self._find_version(name, version)]
            chosen.update(((record.name, record.version), record) for record in found)
        records = list(chosen.values())
        removed = self.table.in_parallel(self._remove_version, records)
        return [record for record, done in zip(records, removed, strict=True) if done]

    def _remove_version(self, record: VersionRecord) -> bool:
        """Delete a version and give back its content's count, atomically; release the content
        if that was its last version. False if another process removed the version first."""
        version_at = version_key(record.name, record.version, self._shards)
        if record.deleted:
            return self.table.delete(version_at, "attribute_exists(dm)")
        same_content = {":dg": s(record.digest.hex())}
        while True:
            content = self._live_content(record.digest)
            if content is None:
                # A version without a live content (a damaged catalog): nothing to count down.
                return self.table.delete(version_at, "dg = :dg", same_content)
            refcount = number(content, "rc")
            values = {":live": s(LIVE), ":rc": n(refcount)}
            if refcount > 1:
                expression = "ADD rc :minus"
                values[":minus"] = n(-1)
            else:
                expression, releasing = _start_release(content)
                values.update(releasing)
            try:
                self.table.transact(
                    [
                        {
                            "Delete": {
                                "Key": version_at,
                                "ConditionExpression": "dg = :dg",
                                "ExpressionAttributeValues": same_content,
                            }
                        },
                        {
                            "Update": {
                                "Key": content_key(record.digest),
                                "UpdateExpression": expression,
                                "ConditionExpression": "st = :live AND rc = :rc",
                                "ExpressionAttributeValues": values,
                            }
                        },
                    ]
                )
            except Cancelled as cancelled:
                if cancelled.failed(0):
                    return False
                continue  # the count changed under us: read it again
            if refcount <= 1:
                commits.release(self.table, record.digest)
            return True

    # ---- history ---------------------------------------------------------------------

    def _require_schema(self, schema: int) -> None:
        """Move the table to schema (never back) before the first item that older schemas do not
        have: a chunkstore that knows only those refuses the table from then on."""
        if self._schema >= schema:
            return
        self.table.update(
            META_KEY,
            "SET #schema = :new",
            {":new": n(schema)},
            "#schema < :new",
            ExpressionAttributeNames={"#schema": "schema"},
        )
        self._schema = schema

    @translated
    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        self._require_schema(HISTORY_SCHEMA)
        markers = self.table.in_parallel(lambda pair: self._mark_deleted(*pair, at_ns), expected)
        return [marker for marker in markers if marker is not None]

    def _mark_deleted(self, name: str, version: int, at_ns: int) -> VersionRecord | None:
        while True:
            # The counter is read before the latest version: a version committed in between
            # shows in the latest, and one committed after changes the counter this write
            # is conditional on.
            previous = commits.last_number(self.table, name, self._shards)
            latest = self._latest_version(name)
            if latest is None or latest.deleted or latest.version != version:
                return None
            try:
                self.table.transact(commits.version_actions(name, previous, at_ns, DELETION_MARK, self._shards))
            except Cancelled:
                continue
            return deletion_marker(name, previous + 1, at_ns)

    @translated
    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._require_schema(HISTORY_SCHEMA)
        if not self.table.put(snapshot_item(snapshot), "attribute_not_exists(pk)"):
            raise InvalidArgumentError(f"a snapshot with ID {snapshot.snapshot_id} already exists")

    @translated
    def list_snapshots(self) -> list[SnapshotRecord]:
        items = self.table.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": s(SNAPSHOTS_PK)}, ConsistentRead=True
        )
        return sorted(map(snapshot_record, items), key=lambda snapshot: (snapshot.at_ns, snapshot.snapshot_id))

    @translated
    def remove_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        self.table.write_many(
            [{"DeleteRequest": {"Key": snapshot_key(snapshot_id)}} for snapshot_id in dict.fromkeys(snapshot_ids)]
        )

    # ---- gc --------------------------------------------------------------------------

    @translated
    def acquire_gc_lock(self, session: str) -> None:
        self._gc.acquire_lock(session)

    @translated
    def release_gc_lock(self, session: str) -> None:
        self._gc.release_lock(session)

    @translated
    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        return self._gc.collect_candidates(session, limit)

    @translated
    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        return self._gc.claim_orphans(session, chunk_ids)

    @translated
    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        self._gc.forget_chunks(session, chunk_ids)

    # ---- repair ----------------------------------------------------------------------

    @translated
    def set_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        # One conditional update a chunk, not transactions: a count that moved must not
        # hold back the others. Repair is rare and its fixes few.
        return {
            chunk_id
            for chunk_id, (expected, new) in counts.items()
            if self.table.update(
                chunk_key(chunk_id),
                "SET rc = :new",
                {":new": n(new), ":expected": n(expected)},
                "attribute_exists(pk) AND rc = :expected",
            )
            is None
        }

    @translated
    def set_content_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        # A content set to 0 is released, which needs its item (the counts its recipe holds).
        zeroed = [content_key(digest) for digest, (_, new) in counts.items() if new == 0]
        items = {digest_of(item): item for item in self.table.get_many(zeroed)}
        gone = {digest for digest, (_, new) in counts.items() if new == 0 and digest not in items}

        def update(digest: bytes) -> dict:
            expected, new = counts[digest]
            values = {":live": s(LIVE), ":expected": n(expected)}
            if new:
                expression = "SET rc = :new"
                values[":new"] = n(new)
            else:
                expression, releasing = _start_release(items[digest])
                values.update(releasing)
            return {
                "Update": {
                    "Key": content_key(digest),
                    "UpdateExpression": expression,
                    "ConditionExpression": "st = :live AND rc = :expected",
                    "ExpressionAttributeValues": values,
                }
            }

        # Up to 100 conditional updates a transaction; one whose count moved fails alone.
        moved = gone | set(self.table.transact_each([digest for digest in counts if digest not in gone], update))
        self.table.in_parallel(
            functools.partial(commits.release, self.table), [digest for digest in items if digest not in moved]
        )
        return moved


def _start_release(content: dict) -> tuple[str, dict]:
    """The update (expression, values) that moves a live content to RELEASING with a count of 0,
    for commits.release to give back the counts it holds and delete it."""
    return (
        "SET rc = :zero, st = :releasing, done = :zero, lim = :limit",
        {":zero": n(0), ":releasing": s(RELEASING), ":limit": n(counted_limit(content))},
    )


def _select_versions(
    records: Iterable[VersionRecord], all_versions: bool, as_of_ns: int | None, deleted: bool
) -> Iterator[VersionRecord]:
    """The versions list_versions yields, from every version ordered by name then version."""
    if as_of_ns is not None:
        records = (record for record in records if record.stored_at_ns <= as_of_ns)
    if all_versions:
        yield from (record for record in records if deleted or not record.deleted)
        return
    for _, versions in itertools.groupby(records, key=lambda record: record.name):
        *_, latest = versions
        if deleted or not latest.deleted:
            yield latest


def _dependent_groups(versions: Sequence[NewVersion]) -> list[list[int]]:
    """Indices of versions, grouped so that versions sharing a name or a content (directly or
    through others) are in one group, in their original order."""
    parent = list(range(len(versions)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_with: dict[object, int] = {}
    for index, new in enumerate(versions):
        for shared in (("name", new.name), ("digest", new.digest)):
            if shared in first_with:
                parent[root(index)] = root(first_with[shared])
            else:
                first_with[shared] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(versions)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())

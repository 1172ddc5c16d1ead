"""The DynamoDB catalog: one table that any number of writers on any number of machines share.

DynamoDB makes a conditional write atomic for one item, and TransactWriteItems for
at most 100 items (4 MB); there is nothing larger. The protocol of
catalog/__init__.py is kept with those alone (the README's design section gives the
argument in full).

Items (pk, sk):
    meta           meta          schema version, the store it belongs to, name shards
    s              SESSION       a live session: kind, host, pid, heartbeat
    gclock         gclock        the gc lock: the session holding it
    c#CHUNK        c             a chunk: size, stored size, count (rc), state (st), generation
                                 (gen), the session that made it (own), the other sessions
                                 pinning it (pins), the gc deleting it (gcs)
    d#DIGEST       d             a content: size, entries, pages, count, state
                                 (committing / live / releasing), owner and cursor
    d#DIGEST       rNNNNNNNN     a recipe page (at most 147 KB: an item holds 400 KB)
    n#SHARD        NAME\0VVVVVVVVVV a version; names are spread over a few partitions and
                                 listed by prefix with Query. A deletion marker (schema 2) is a
                                 version item with dm = true and no digest or stat
    m#SHARD        NAME          the last version number given to the name (never given twice)
    snap           ID            a snapshot (schema 2): time (t), host, paths (a list), and the
                                 counts of what its put did
A global secondary index on versions' digests finds a name that holds a content (deletion
markers have no digest, so the index leaves them out).

Schema versions (the meta item's schema): 1 has no deletion markers and no snapshots; 2
adds them. This chunkstore reads both; a table stays at 1 until the first marker or
snapshot is written, then moves to 2 in a conditional write just before it, so a read-only
user never writes and a chunkstore that knows only 1 refuses a table that has them.

Chunks:
  * Pins are on the chunk's own item: the session that created the row (`own`, for the
    life of that generation of the row) and the set of other sessions that rely on it
    (`pins`). So pinning and gc's move to DELETING (conditional on no pins, a count of 0
    and the generation gc read, whose owner it found dead) exclude each other
    atomically: a pin succeeds only while the chunk is not DELETING, and gc's move only
    while nothing pins it.
  * Counts grow only in transactions whose increments are conditional on the chunk
    being PRESENT, so a committed recipe only names chunks that are PRESENT with a
    count above 0, and gc only takes chunks whose count is 0.
  * PRESENT is set only from PENDING and only by a writer that saw that same
    generation of the row before uploading, so a stalled writer cannot mark a row
    that gc deleted and another writer made again.
  * Only the gc named on a DELETING row deletes its object, and DELETING is never undone.

Contents larger than one transaction are committed in steps: a content item in the
"committing" state owned by the session, the recipe pages, the increments in
transactions of 99 chunks that also advance a cursor on the content item, and
last the version, written together with the content turning "live" (the commit
point). A crash leaves a committing content whose cursor says exactly which
increments were applied; gc (or a writer that needs the same content) rolls it
back through the same cursor. Removing the last version of a content turns it
"releasing" in the same transaction, and the decrements follow through the cursor.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import inspect
import itertools
import os
import random
import re
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from chunkstore.core import recipes
from chunkstore.backends.aws import AwsClients, AwsError, error_code, translate_errors
from chunkstore.errors import ConcurrentModificationError, CorruptObjectError, InvalidArgumentError, NameNotFoundError, NotFoundError, StoreExistsError, StoreNotFoundError, UnsupportedFormatError, VersionNotFoundError
from chunkstore.core.names import name_matches_prefix
from chunkstore.backends.catalog import SNAPSHOT_COUNTS, Catalog, CatalogStats, ChunkRecord, ChunkState, CommitOutcome, ContentRecord, FileStat, NewVersion, SnapshotRecord, VersionRecord, deletion_marker, refuse_marker
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, HOST, new_session_id, now_ns, session_is_dead

SCHEMA_VERSION = 2
# Older schemas this chunkstore reads as they are (see the module docstring).
_READABLE_SCHEMAS = (1, SCHEMA_VERSION)
# Version items are spread over this many partitions (recorded in the meta item):
# one partition takes about 1,000 writes a second, and listing a prefix costs one
# query per shard.
NAME_SHARDS = 8
DIGEST_INDEX = "by-digest"

# DynamoDB limits: 100 keys per BatchGetItem, 25 requests per BatchWriteItem, 100
# actions and 4 MB per TransactWriteItems, 1024 bytes per sort key.
_BATCH_GET_KEYS = 100
_BATCH_WRITE_ITEMS = 25
_TRANSACTION_ACTIONS = 100
_TRANSACTION_BYTES = 3_500_000
# Chunk count updates per transaction of a large commit or a release: one action is the cursor.
_CHUNKS_PER_STEP = _TRANSACTION_ACTIONS - 1
# Steps whose chunks the pre-commit check reads at once (in parallel batches).
_STEPS_READ_AT_ONCE = 16
# Names longer than this are keyed by a head of them and a hash of the whole name.
_NAME_KEY_BYTES = 1000
_NAME_HEAD_BYTES = 960
# Prefixes up to this long are listed with exact key conditions; longer ones by their head.
_EXACT_PREFIX_BYTES = 950
_VERSION_DIGITS = 10

# How long a writer waits for a gc to finish deleting a chunk it needs, and how often it looks.
_DELETING_WAIT_SECONDS = 120.0
_POLL_SECONDS = 0.1
# Transactions cancelled by a conflicting transaction on the same items are retried.
_CONFLICT_ATTEMPTS = 12
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                      "RequestLimitExceeded"}
_POOL_WORKERS = 16

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")

_LIVE, _COMMITTING, _RELEASING = "live", "committing", "releasing"
_CHUNK_SK, _CONTENT_SK, _PAGE_PREFIX = "c", "d", "r"
_SESSIONS_PK = "s"
_SNAPSHOTS_PK = "snap"
_GC_LOCK_KEY = {"pk": {"S": "gclock"}, "sk": {"S": "gclock"}}
_META_KEY = {"pk": {"S": "meta"}, "sk": {"S": "meta"}}


# ---- keys and values --------------------------------------------------------------------


def _s(text: str) -> dict:
    return {"S": text}


def _n(number: int) -> dict:
    return {"N": str(number)}


def _int(item: dict, attribute: str, default: int = 0) -> int:
    value = item.get(attribute)
    return int(value["N"]) if value is not None else default


def _str(item: dict, attribute: str) -> str | None:
    value = item.get(attribute)
    return value["S"] if value is not None else None


def _key(pk: str, sk: str) -> dict:
    return {"pk": _s(pk), "sk": _s(sk)}


def _chunk_pk(chunk_id: bytes) -> str:
    return "c#" + chunk_id.hex()


def _chunk_key(chunk_id: bytes) -> dict:
    return _key(_chunk_pk(chunk_id), _CHUNK_SK)


def _content_pk(digest: bytes) -> str:
    return "d#" + digest.hex()


def _content_key(digest: bytes) -> dict:
    return _key(_content_pk(digest), _CONTENT_SK)


def _page_sk(number: int) -> str:
    return f"{_PAGE_PREFIX}{number:08d}"


def _session_key(session: str) -> dict:
    return _key(_SESSIONS_PK, session)


def _utf8_head(text: str, limit: int) -> str:
    return text.encode()[:limit].decode("utf-8", "ignore")


def _name_key(name: str) -> str:
    """The sort-key form of a name: the name itself, or for a name too long for a sort key,
    its head, a NUL (which no name contains) and a hash of the whole name."""
    if len(name.encode()) <= _NAME_KEY_BYTES:
        return name
    return _utf8_head(name, _NAME_HEAD_BYTES) + "\0#" + hashlib.sha256(name.encode()).hexdigest()[:32]


def _version_sk(name: str, version: int) -> str:
    return f"{_name_key(name)}\0{version:0{_VERSION_DIGITS}d}"


def _version_range(name: str) -> tuple[str, str]:
    """Sort keys from the first to the last possible version of name (and no other name)."""
    return _version_sk(name, 0), _version_sk(name, 10**_VERSION_DIGITS - 1)


def _chunk_id_of(item: dict) -> bytes:
    return bytes.fromhex(item["pk"]["S"][2:])


def _chunk_record(item: dict) -> ChunkRecord:
    return ChunkRecord(_chunk_id_of(item), _int(item, "sz"), _int(item, "ss"), _int(item, "rc"),
                       ChunkState(_int(item, "st")), _str(item, "loc"))


def _content_record(item: dict) -> ContentRecord:
    return ContentRecord(bytes.fromhex(item["pk"]["S"][2:]), _int(item, "sz"), _int(item, "n"), _int(item, "pg"),
                         _int(item, "rc"))


def _version_record(item: dict) -> VersionRecord:
    if "dm" in item:
        return deletion_marker(item["nm"]["S"], _int(item, "v"), _int(item, "at"))
    stat = FileStat(_int(item, "sz"), _int(item, "mt"), _int(item, "md"), _int(item, "ino"), _int(item, "ct"))
    return VersionRecord(item["nm"]["S"], _int(item, "v"), bytes.fromhex(item["dg"]["S"]), stat, _int(item, "at"))


def _snapshot_item(snapshot: SnapshotRecord) -> dict:
    return {**_key(_SNAPSHOTS_PK, snapshot.snapshot_id), "t": _n(snapshot.at_ns), "host": _s(snapshot.host),
            "paths": {"L": [_s(path) for path in snapshot.paths]},
            **{count: _n(getattr(snapshot, count)) for count in SNAPSHOT_COUNTS}}


def _snapshot_record(item: dict) -> SnapshotRecord:
    return SnapshotRecord(item["sk"]["S"], _int(item, "t"), _str(item, "host") or "",
                          tuple(path["S"] for path in item["paths"]["L"]),
                          *(_int(item, count) for count in SNAPSHOT_COUNTS))


def _select_versions(records: Iterable[VersionRecord], all_versions: bool, as_of_ns: int | None,
                     deleted: bool) -> Iterator[VersionRecord]:
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


def _stat_attributes(stat: FileStat) -> dict:
    return {"sz": _n(stat.size), "mt": _n(stat.mtime_ns), "md": _n(stat.mode), "ino": _n(stat.inode),
            "ct": _n(stat.ctime_ns)}


def _entries(pages: Iterable[bytes]) -> Iterator[recipes.RecipeEntry]:
    for page in pages:
        yield from recipes.decode_page(page)


def _count_steps(entries: Iterator[recipes.RecipeEntry], start: int, stop: int) -> Iterator[tuple[int, Counter]]:
    """Split entries [start, stop) of a recipe into steps of at most _CHUNKS_PER_STEP distinct chunks.

    Yields (end, counts): the entry index the step ends at and how often each chunk
    occurs in it. The split depends only on the recipe and start, so a step that a
    crash interrupted is cut the same way when it is resumed or rolled back."""
    position = start
    counts: Counter[bytes] = Counter()
    for entry in itertools.islice(entries, start, stop):
        if entry.chunk_id not in counts and len(counts) == _CHUNKS_PER_STEP:
            yield position, counts
            counts = Counter()
        counts[entry.chunk_id] += 1
        position += 1
    if counts:
        yield position, counts


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Cancelled(Exception):
    """A transaction failed a condition; reasons[i] is the code of action i ("None" where it held)."""

    def __init__(self, reasons: list[str]):
        super().__init__(reasons)
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return self.reasons[index] not in ("None", None)


class _Retry(Exception):
    """Another writer changed a content or a name under this commit: look again and start over."""


class _NotPresent(Exception):
    """A chunk of a large commit is not PRESENT."""


def _translated(method):
    """Run a public method (or the whole iteration of a generator method) with AWS errors translated."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator_wrapper(self, *args, **kwargs):
            with self._aws_errors():
                yield from method(self, *args, **kwargs)
        return generator_wrapper

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._aws_errors():
            return method(self, *args, **kwargs)
    return wrapper


@dataclass
class _GcRound:
    """One pass of a gc: the chunks its table scan found, and what it learnt of sessions."""

    queue: deque = field(default_factory=deque)
    alive: dict = field(default_factory=dict)


def validate_table(table: str) -> str:
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise InvalidArgumentError(f"{table!r} is not a valid DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
    return table


class DynamoDBCatalog(Catalog):
    def __init__(self, clients: AwsClients, table: str, *, store_id: str, store_url: str, create: bool = False,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.table = validate_table(table)
        self.clients = clients
        self.lease_seconds = lease_seconds
        self._db = clients.dynamodb
        self._conditional_failed = self._db.exceptions.ConditionalCheckFailedException
        self._pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="chunkstore-dynamodb")
        self._lock = threading.Lock()
        self._pins: dict[str, set[bytes]] = {}
        self._generations: dict[str, dict[bytes, str]] = {}
        self._gc_rounds: dict[str, _GcRound] = {}
        self._gc_sessions: set[str] = set()  # sessions of this handle that took the gc lock
        with self._aws_errors():
            if create:
                self._claim_table(store_id, store_url)
            meta = self._get(_META_KEY)
        if meta is None:
            raise StoreNotFoundError(f"DynamoDB table {table!r} holds no chunkstore catalog")
        self._schema = _int(meta, "schema")
        if self._schema not in _READABLE_SCHEMAS:
            raise UnsupportedFormatError(f"catalog schema version {_int(meta, 'schema')} in DynamoDB table {table!r} "
                                         f"is not supported (this chunkstore reads {SCHEMA_VERSION})")
        if _str(meta, "sid") != store_id:
            raise CorruptObjectError(f"DynamoDB table {table!r} holds the catalog of another store "
                                     f"({_str(meta, 'store')}), not of {store_url}")
        self._shards = _int(meta, "shards")

    # ---- the table -------------------------------------------------------------------

    @staticmethod
    def create_table(clients: AwsClients, table: str) -> None:
        """Make the table (on-demand billing) if it does not exist, and wait until it is active."""
        db = clients.dynamodb
        with translate_errors(f"creating DynamoDB table {table!r}"):
            try:
                db.create_table(
                    TableName=table,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": name, "AttributeType": kind}
                                          for name, kind in (("pk", "S"), ("sk", "S"), ("dg", "S"), ("at", "N"))],
                    GlobalSecondaryIndexes=[{
                        "IndexName": DIGEST_INDEX,
                        "KeySchema": [{"AttributeName": "dg", "KeyType": "HASH"},
                                      {"AttributeName": "at", "KeyType": "RANGE"}],
                        "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["nm"]},
                    }],
                )
            except db.exceptions.ResourceInUseException:
                pass
            db.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60})

    def _missing_table(self) -> str:
        return (f"DynamoDB table {self.table!r} does not exist in region {self.clients.region} "
                "(create it, or run `chunkstore init --create`)")

    def _aws_errors(self):
        return translate_errors(f"DynamoDB table {self.table!r}", missing=self._missing_table())

    def _claim_table(self, store_id: str, store_url: str) -> None:
        """Record in the table which store it belongs to; refuse a table another store uses."""
        try:
            self._db.put_item(
                TableName=self.table,
                Item={**_META_KEY, "schema": _n(SCHEMA_VERSION), "sid": _s(store_id), "store": _s(store_url),
                      "shards": _n(NAME_SHARDS)},
                # Re-running an init that died before writing the store config takes the table again.
                ConditionExpression="attribute_not_exists(pk) OR #store = :store",
                ExpressionAttributeNames={"#store": "store"},
                ExpressionAttributeValues={":store": _s(store_url)},
            )
        except self._conditional_failed:
            other = _str(self._get(_META_KEY) or {}, "store")
            raise StoreExistsError(f"DynamoDB table {self.table!r} already holds the catalog of {other}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ---- low-level access ------------------------------------------------------------

    def _get(self, key: dict) -> dict | None:
        return self._db.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")

    def _get_many(self, keys: Sequence[dict]) -> list[dict]:
        """Items of keys that exist (strongly consistent), in any order."""
        return [item for found in self._pool.map(self._get_batch, _batches(keys, _BATCH_GET_KEYS)) for item in found]

    def _get_batch(self, keys: Sequence[dict]) -> list[dict]:
        found: list[dict] = []
        request = {self.table: {"Keys": list(keys), "ConsistentRead": True}}
        attempt = 0
        while request:
            response = self._db.batch_get_item(RequestItems=request)
            found.extend(response["Responses"].get(self.table, ()))
            request = response.get("UnprocessedKeys") or {}
            attempt = self._back_off(attempt) if request else 0
        return found

    def _write_many(self, requests: Sequence[dict]) -> None:
        """BatchWriteItem (PutRequest / DeleteRequest items), resubmitting what DynamoDB left unprocessed."""
        for batch in _batches(requests, _BATCH_WRITE_ITEMS):
            pending = {self.table: list(batch)}
            attempt = 0
            while pending:
                response = self._db.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                attempt = self._back_off(attempt) if pending else 0

    @staticmethod
    def _back_off(attempt: int) -> int:
        time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        return attempt + 1

    @staticmethod
    def _items(call, request: dict) -> Iterator[dict]:
        """Every item a query or scan returns, page after page."""
        while True:
            response = call(**request)
            yield from response.get("Items", ())
            if "LastEvaluatedKey" not in response:
                return
            request = {**request, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def _query(self, **request) -> Iterator[dict]:
        return self._items(self._db.query, {"TableName": self.table, **request})

    def _scan(self, filter_expression: str, values: dict, names: dict | None = None) -> Iterator[dict]:
        request = {"TableName": self.table, "ConsistentRead": True, "FilterExpression": filter_expression,
                   "ExpressionAttributeValues": values}
        if names:
            request["ExpressionAttributeNames"] = names
        return self._items(self._db.scan, request)

    def _update(self, key: dict, expression: str, values: dict | None = None, condition: str | None = None,
                **options) -> dict | None:
        """UpdateItem; returns the new item with ReturnValues="ALL_NEW", None if the condition failed."""
        request = {"TableName": self.table, "Key": key, "UpdateExpression": expression, **options}
        if values:
            request["ExpressionAttributeValues"] = values
        if condition:
            request["ConditionExpression"] = condition
        try:
            return self._db.update_item(**request).get("Attributes", {})
        except self._conditional_failed:
            return None

    def _delete(self, key: dict, condition: str | None = None, values: dict | None = None) -> bool:
        request = {"TableName": self.table, "Key": key}
        if condition:
            request["ConditionExpression"] = condition
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._db.delete_item(**request)
            return True
        except self._conditional_failed:
            return False

    def _transact(self, actions: list[dict]) -> None:
        """TransactWriteItems (the table name is filled in). Raises _Cancelled if a condition
        failed; retries cancellations by conflicting transactions or throttling."""
        for action in actions:
            next(iter(action.values()))["TableName"] = self.table
        canceled = self._db.exceptions.TransactionCanceledException
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=actions)
                return
            except canceled as error:
                reasons = [reason.get("Code", "None") for reason in error.response.get("CancellationReasons", ())]
                if "ConditionalCheckFailed" in reasons:
                    raise _Cancelled(reasons) from None
                refused = set(reasons) - _RETRYABLE_REASONS - {"None"}
                if refused or not reasons:
                    raise AwsError(f"DynamoDB table {self.table!r}: a transaction was refused "
                                   f"({', '.join(sorted(refused)) or error_code(error)})") from None
            except self._db.exceptions.TransactionInProgressException:
                pass
            self._back_off(attempt)
        raise AwsError(f"DynamoDB table {self.table!r}: a transaction kept conflicting with others; try again")

    # ---- sessions --------------------------------------------------------------------

    @_translated
    def open_session(self, kind: str) -> str:
        session = new_session_id()
        stamp = now_ns()
        self._db.put_item(TableName=self.table, Item={
            **_session_key(session), "kind": _s(kind), "host": _s(HOST), "pid": _n(os.getpid()),
            "t0": _n(stamp), "hb": _n(stamp)})
        return session

    @_translated
    def heartbeat(self, session: str) -> None:
        # A session that gc expired stays expired: its pins may be gone.
        self._update(_session_key(session), "SET hb = :now", {":now": _n(now_ns())}, "attribute_exists(pk)")

    @_translated
    def close_session(self, session: str) -> None:
        with self._lock:
            pinned = self._pins.pop(session, set())
            self._generations.pop(session, None)
            self._gc_rounds.pop(session, None)
            held_gc_lock = session in self._gc_sessions
            self._gc_sessions.discard(session)
        self._transact_each(list(pinned), lambda chunk_id: {"Update": {
            "Key": _chunk_key(chunk_id), "UpdateExpression": "DELETE pins :me",
            "ConditionExpression": "attribute_exists(pk)", "ExpressionAttributeValues": {":me": {"SS": [session]}}}})
        self._delete(_session_key(session))
        if held_gc_lock:
            self._delete(_GC_LOCK_KEY, "ses = :me", {":me": _s(session)})

    def _session_alive(self, session: str | None, known: dict | None = None) -> bool:
        if session is None:
            return False
        if known is not None and session in known:
            return known[session]
        item = self._get(_session_key(session))
        alive = item is not None and not self._is_dead(item)
        if known is not None:
            known[session] = alive
        return alive

    def _is_dead(self, session_item: dict) -> bool:
        return session_is_dead(_str(session_item, "host"), _int(session_item, "pid"), _int(session_item, "hb"),
                               self.lease_seconds, now_ns())

    # ---- claims ----------------------------------------------------------------------

    @_translated
    def claim_chunks(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> set[bytes]:
        sizes: dict[bytes, int] = {}
        for chunk_id, size in chunks:
            sizes.setdefault(chunk_id, size)
        to_upload: set[bytes] = set()
        waiting = list(sizes)
        deadline = time.monotonic() + _DELETING_WAIT_SECONDS
        while waiting:
            rows = self._chunk_rows(waiting)
            absent = [chunk_id for chunk_id in waiting if chunk_id not in rows]
            raced = self._announce(session, absent, sizes)
            to_upload.update(chunk_id for chunk_id in absent if chunk_id not in raced)
            deleting = [row for row in rows.values() if _int(row, "st") == ChunkState.DELETING]
            pinnable = [row for row in rows.values() if _int(row, "st") != ChunkState.DELETING]
            changed = self._pin(session, pinnable)
            for row in pinnable:
                chunk_id = _chunk_id_of(row)
                if chunk_id not in changed and _int(row, "st") == ChunkState.PENDING:
                    to_upload.add(chunk_id)
                    with self._lock:
                        self._generations.setdefault(session, {})[chunk_id] = row["gen"]["S"]
            if deleting:
                abandoned = self._abandoned(deleting)
                if abandoned or time.monotonic() > deadline:
                    raise ConcurrentModificationError(
                        f"{len(abandoned or deleting)} chunk(s) this put needs are being deleted by a gc that "
                        "stopped before finishing; run `chunkstore gc` to complete it, then put again")
                time.sleep(_POLL_SECONDS)
            # Rows that changed under the claim are read again.
            waiting = raced + list(changed) + [_chunk_id_of(row) for row in deleting]
        return to_upload

    def _abandoned(self, deleting: list[dict]) -> list[dict]:
        """The DELETING rows whose gc is dead, read again: a gc that has just finished has
        forgotten its rows before its session ended."""
        suspects = [_chunk_id_of(row) for row in deleting if not self._session_alive(_str(row, "gcs"))]
        return [row for row in self._chunk_rows(suspects).values()
                if _int(row, "st") == ChunkState.DELETING and not self._session_alive(_str(row, "gcs"))]

    def _chunk_rows(self, chunk_ids: Sequence[bytes]) -> dict[bytes, dict]:
        return {_chunk_id_of(item): item for item in self._get_many([_chunk_key(each) for each in chunk_ids])}

    def _pin(self, session: str, rows: list[dict]) -> set[bytes]:
        """Add session to the pins of these rows, each as it was read (same generation, not DELETING);
        return the IDs of rows that changed since (they are not pinned)."""
        unpinned = [row for row in rows
                    if session not in row.get("pins", {}).get("SS", ()) and _str(row, "own") != session]
        refused = self._transact_each(unpinned, lambda row: {"Update": {
            "Key": _chunk_key(_chunk_id_of(row)), "UpdateExpression": "ADD pins :me",
            "ConditionExpression": "gen = :gen AND st <> :deleting",
            "ExpressionAttributeValues": {":me": {"SS": [session]}, ":gen": row["gen"],
                                          ":deleting": _n(ChunkState.DELETING)}}})
        changed = {_chunk_id_of(row) for row in refused}
        with self._lock:
            self._pins.setdefault(session, set()).update(
                chunk_id for chunk_id in map(_chunk_id_of, rows) if chunk_id not in changed)
        return changed

    def _announce(self, session: str, chunk_ids: list[bytes], sizes: dict[bytes, int]) -> list[bytes]:
        """Create PENDING rows owned by session for chunks that have none; return those that got
        a row from someone else in the meantime. The owner pins the row for as long as it lives
        (and the generation cannot change under it), so it never has to unpin it."""
        generations = {chunk_id: new_session_id() for chunk_id in chunk_ids}

        def row(chunk_id: bytes) -> dict:
            return {"Put": {"Item": {**_chunk_key(chunk_id), "st": _n(ChunkState.PENDING), "sz": _n(sizes[chunk_id]),
                                     "rc": _n(0), "ss": _n(0), "gen": _s(generations[chunk_id]), "own": _s(session)},
                            "ConditionExpression": "attribute_not_exists(pk)"}}

        raced = self._transact_each(chunk_ids, row)
        announced = set(chunk_ids) - set(raced)
        with self._lock:
            self._generations.setdefault(session, {}).update(
                (chunk_id, generations[chunk_id]) for chunk_id in announced)
        return raced

    def _transact_each(self, items: list, action) -> list:
        """Apply action(item) for every item, up to 100 to a transaction; return the items whose
        condition failed (the others are applied)."""
        def run(batch: list) -> list:
            failed = []
            while batch:
                try:
                    self._transact([action(item) for item in batch])
                    return failed
                except _Cancelled as cancelled:
                    failed += [item for index, item in enumerate(batch) if cancelled.failed(index)]
                    batch = [item for index, item in enumerate(batch) if not cancelled.failed(index)]
            return failed

        return [item for failed in self._pool.map(run, _batches(items, _TRANSACTION_ACTIONS)) for item in failed]

    @_translated
    def chunks_stored(self, session: str, chunks: Sequence[tuple[bytes, int]]) -> None:
        with self._lock:
            generations = self._generations.get(session, {})
            # One action per item: a transaction may not name an item twice.
            work = [(chunk_id, stored_size, generations.pop(chunk_id, None))
                    for chunk_id, stored_size in dict(chunks).items()]
        refused = self._transact_each(work, lambda args: {"Update": {
            "Key": _chunk_key(args[0]), "UpdateExpression": "SET st = :present, ss = :ss",
            **self._mark_condition(args[1], args[2])}})
        list(self._pool.map(lambda args: self._mark_present(*args), refused))

    @staticmethod
    def _mark_condition(stored_size: int, generation: str | None) -> dict:
        """PENDING -> PRESENT only for the generation of the row the writer saw before uploading."""
        values = {":present": _n(ChunkState.PRESENT), ":pending": _n(ChunkState.PENDING), ":ss": _n(stored_size)}
        condition = "st = :pending"
        if generation is not None:
            condition += " AND gen = :gen"
            values[":gen"] = _s(generation)
        return {"ConditionExpression": condition, "ExpressionAttributeValues": values}

    def _mark_present(self, chunk_id: bytes, stored_size: int, generation: str | None) -> None:
        """Mark one chunk whose row was not PENDING of that generation when the batch tried:
        done if it is PRESENT already; otherwise gc took it (commit will refuse it)."""
        condition = self._mark_condition(stored_size, generation)
        item = self._get(_chunk_key(chunk_id))
        if (item is not None and _int(item, "st") == ChunkState.PENDING
                and (generation is None or item["gen"]["S"] == generation)):
            self._update(_chunk_key(chunk_id), "SET st = :present, ss = :ss", condition["ExpressionAttributeValues"],
                         condition["ConditionExpression"])

    # ---- commit ----------------------------------------------------------------------

    @_translated
    def commit(self, session: str, versions: Sequence[NewVersion], at_ns: int | None = None) -> list[CommitOutcome]:
        if not versions:
            return []
        stamp = now_ns() if at_ns is None else at_ns
        self.heartbeat(session)
        self._check_new_chunks_present(versions)
        outcomes: list[CommitOutcome | None] = [None] * len(versions)

        def run(group: list[int]) -> None:
            for index in group:
                outcomes[index] = self._commit_version(session, versions[index], stamp)

        # Versions that share no name and no content commit in parallel; the others in order.
        futures = [self._pool.submit(run, group) for group in _dependent_groups(versions)]
        wait(futures)
        for future in futures:
            future.result()
        return outcomes

    def _check_new_chunks_present(self, versions: Sequence[NewVersion]) -> None:
        """Refuse the whole commit, before writing anything, if a new content names a chunk that is not PRESENT."""
        digests = {new.digest for new in versions}
        live = {bytes.fromhex(item["pk"]["S"][2:]) for item in self._get_many([_content_key(d) for d in digests])
                if _str(item, "st") == _LIVE}
        checked: set[bytes] = set()
        for new in versions:
            if new.digest in live or new.digest in checked:
                continue
            checked.add(new.digest)
            missing = 0
            # Distinct chunks of a few steps at a time: reads in parallel, memory bounded for any recipe.
            steps = _count_steps(_entries(new.pages), 0, new.chunk_count)
            while group := [chunk_id for _, counts in itertools.islice(steps, _STEPS_READ_AT_ONCE) for chunk_id in counts]:
                keys = [_chunk_key(chunk_id) for chunk_id in dict.fromkeys(group)]
                present = sum(1 for item in self._get_many(keys) if _int(item, "st") == ChunkState.PRESENT)
                missing += len(keys) - present
            if missing:
                raise ConcurrentModificationError(
                    f"{missing} chunk(s) of {new.name!r} are not stored (collected by a concurrent gc while this put "
                    "was stalled past its session lease, or never uploaded); nothing was committed, put again")

    def _commit_version(self, session: str, new: NewVersion, at_ns: int) -> CommitOutcome:
        while True:
            latest = self._latest_version(new.name)
            if latest is not None and latest.digest == new.digest:
                if self._refresh_stat(latest, new.stat):
                    return CommitOutcome(new.name, latest.version, "unchanged")
                continue
            previous = self._last_number(new.name)
            content = self._get(_content_key(new.digest))
            state = _str(content, "st") if content else None
            try:
                if state == _LIVE:
                    duplicate_of = self.find_name_with_digest(new.digest)
                    self._add_duplicate(new, previous, at_ns)
                    return CommitOutcome(new.name, previous + 1, "duplicate", duplicate_of)
                if state is None:
                    return CommitOutcome(new.name, self._store_content(session, new, previous, at_ns), "stored")
            except _Retry:
                continue
            self._settle(session, content)

    def _refresh_stat(self, latest: VersionRecord, stat: FileStat) -> bool:
        return self._update(
            _key(_name_pk(latest.name, self._shards), _version_sk(latest.name, latest.version)),
            "SET sz = :sz, mt = :mt, md = :md, ino = :ino, ct = :ct",
            {**{f":{name}": value for name, value in _stat_attributes(stat).items()}, ":dg": _s(latest.digest.hex())},
            "dg = :dg",
        ) is not None

    def _last_number(self, name: str) -> int:
        """The last version number given to name (0 for none); numbers are never given twice."""
        counter = self._get(_key(_counter_pk(name, self._shards), _name_key(name)))
        return _int(counter, "last") if counter else 0

    def _version_actions(self, name: str, previous: int, at_ns: int, attributes: dict) -> list[dict]:
        """Write version previous + 1 of name (with attributes: a digest and stat, or a deletion
        mark), taking the number from the name's counter (conditional on it still being
        previous, so two writers never take the same number)."""
        number = previous + 1
        item = {**_key(_name_pk(name, self._shards), _version_sk(name, number)), "nm": _s(name),
                "v": _n(number), "at": _n(at_ns), **attributes}
        counter: dict = {"Key": _key(_counter_pk(name, self._shards), _name_key(name)),
                         "UpdateExpression": "SET #last = :number, nm = :name",
                         "ExpressionAttributeNames": {"#last": "last"},
                         "ExpressionAttributeValues": {":number": _n(number), ":name": _s(name)}}
        if previous:
            counter["ConditionExpression"] = "#last = :previous"
            counter["ExpressionAttributeValues"][":previous"] = _n(previous)
        else:
            counter["ConditionExpression"] = "attribute_not_exists(pk)"
        return [{"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}, {"Update": counter}]

    @staticmethod
    def _content_version(new: NewVersion) -> dict:
        return {"dg": _s(new.digest.hex()), **_stat_attributes(new.stat)}

    def _add_duplicate(self, new: NewVersion, previous: int, at_ns: int) -> None:
        try:
            self._transact([
                {"Update": {"Key": _content_key(new.digest), "UpdateExpression": "ADD rc :one",
                            "ConditionExpression": "st = :live",
                            "ExpressionAttributeValues": {":one": _n(1), ":live": _s(_LIVE)}}},
                *self._version_actions(new.name, previous, at_ns, self._content_version(new)),
            ])
        except _Cancelled:
            raise _Retry from None

    def _content_item(self, new: NewVersion, state: str, refcount: int, **extra) -> dict:
        return {**_content_key(new.digest), "sz": _n(new.stat.size), "n": _n(new.chunk_count),
                "pg": _n(len(new.pages)), "rc": _n(refcount), "st": _s(state), "nm": _s(new.name), **extra}

    def _page_items(self, new: NewVersion) -> list[dict]:
        return [{**_key(_content_pk(new.digest), _page_sk(number)), "data": {"B": page}}
                for number, page in enumerate(new.pages)]

    @staticmethod
    def _increment(chunk_id: bytes, count: int) -> dict:
        return {"Update": {"Key": _chunk_key(chunk_id), "UpdateExpression": "ADD rc :count",
                           "ConditionExpression": "st = :present",
                           "ExpressionAttributeValues": {":count": _n(count), ":present": _n(ChunkState.PRESENT)}}}

    def _store_content(self, session: str, new: NewVersion, previous: int, at_ns: int) -> int:
        """Commit a new content and its version; return the version number it got."""
        steps = list(itertools.islice(_count_steps(_entries(new.pages), 0, new.chunk_count), 2))
        counts = steps[0][1] if steps else Counter()
        fits = (len(steps) <= 1 and len(counts) + len(new.pages) + 3 <= _TRANSACTION_ACTIONS
                and sum(map(len, new.pages)) <= _TRANSACTION_BYTES)
        if not fits:
            return self._store_large_content(session, new, previous, at_ns)
        actions = [{"Put": {"Item": self._content_item(new, _LIVE, 1), "ConditionExpression": "attribute_not_exists(pk)"}}]
        actions += [{"Put": {"Item": item}} for item in self._page_items(new)]
        chunk_actions = range(len(actions), len(actions) + len(counts))
        actions += [self._increment(chunk_id, count) for chunk_id, count in counts.items()]
        actions += self._version_actions(new.name, previous, at_ns, self._content_version(new))
        try:
            self._transact(actions)
        except _Cancelled as cancelled:
            if any(cancelled.failed(index) for index in chunk_actions):
                raise self._refused(new) from None
            raise _Retry from None
        return previous + 1

    @staticmethod
    def _refused(new: NewVersion) -> ConcurrentModificationError:
        return ConcurrentModificationError(
            f"chunk(s) of {new.name!r} were collected by a concurrent gc while this put was stalled past its "
            "session lease; nothing was committed, put again")

    def _store_large_content(self, session: str, new: NewVersion, previous: int, at_ns: int) -> int:
        """A content too large for one transaction: intent, pages, counted steps, then the commit point."""
        intent = self._content_item(new, _COMMITTING, 0, own=_s(session), done=_n(0), lim=_n(new.chunk_count))
        try:
            self._db.put_item(TableName=self.table, Item=intent, ConditionExpression="attribute_not_exists(pk)")
        except self._conditional_failed:
            raise _Retry from None
        done = 0
        owned = {":committing": _s(_COMMITTING), ":me": _s(session)}
        try:
            self._write_many([{"PutRequest": {"Item": item}} for item in self._page_items(new)])
            for end, counts in _count_steps(_entries(new.pages), 0, new.chunk_count):
                cursor = {"Update": {"Key": _content_key(new.digest), "UpdateExpression": "SET done = :end",
                                     "ConditionExpression": "st = :committing AND own = :me AND done = :done",
                                     "ExpressionAttributeValues": {**owned, ":end": _n(end), ":done": _n(done)}}}
                try:
                    self._transact([self._increment(chunk_id, count) for chunk_id, count in counts.items()] + [cursor])
                except _Cancelled as cancelled:
                    if cancelled.failed(len(cancelled.reasons) - 1):
                        raise self._rolled_back(new) from None
                    raise _NotPresent from None
                done = end
            while True:
                try:
                    self._transact([
                        {"Update": {"Key": _content_key(new.digest),
                                    "UpdateExpression": "SET st = :live, rc = :one REMOVE own",
                                    "ConditionExpression": "st = :committing AND own = :me AND done = :count",
                                    "ExpressionAttributeValues": {**owned, ":live": _s(_LIVE), ":one": _n(1),
                                                                  ":count": _n(new.chunk_count)}}},
                        *self._version_actions(new.name, previous, at_ns, self._content_version(new)),
                    ])
                    return previous + 1
                except _Cancelled as cancelled:
                    if cancelled.failed(0):
                        raise self._rolled_back(new) from None
                    # Another writer took the next version number of the name first.
                    previous = self._last_number(new.name)
        except _NotPresent:
            self._roll_back(new.digest, session, done)
            raise self._refused(new) from None
        except Exception:
            # Best effort: if this fails too, gc rolls the content back once this session is dead.
            try:
                self._roll_back(new.digest, session, done)
            except Exception:  # noqa: BLE001, S110 - the original error is the one to report
                pass
            raise

    @staticmethod
    def _rolled_back(new: NewVersion) -> ConcurrentModificationError:
        return ConcurrentModificationError(
            f"the commit of {new.name!r} was rolled back by a gc that took this put's session for dead "
            "(stalled past its lease); put again")

    def _settle(self, session: str, content: dict) -> None:
        """Get a content that is neither live nor absent out of the way: wait for a live writer
        committing it, roll back a dead one's commit, finish a release."""
        digest = bytes.fromhex(content["pk"]["S"][2:])
        state = _str(content, "st")
        if state == _COMMITTING:
            owner = _str(content, "own")
            if owner != session and self._session_alive(owner):
                time.sleep(_POLL_SECONDS)
                return
            self._roll_back(digest, owner, _int(content, "done"))
        elif state == _RELEASING:
            self._release(digest)

    # ---- rollback and release ----------------------------------------------------------

    def _roll_back(self, digest: bytes, owner: str | None, done: int) -> None:
        """Turn a committing content into a releasing one that undoes its first `done` entries."""
        self._update(
            _content_key(digest), "SET st = :releasing, lim = :done, done = :zero REMOVE own",
            {":releasing": _s(_RELEASING), ":committing": _s(_COMMITTING), ":owner": _s(owner or ""),
             ":done": _n(done), ":zero": _n(0)},
            "st = :committing AND own = :owner AND done = :done")
        self._release(digest)

    def _release(self, digest: bytes) -> None:
        """Decrement the counts a releasing content still holds, step by step through its cursor,
        then delete its pages and itself. Any number of processes may run this at once."""
        key = _content_key(digest)
        item = self._get(key)
        while item is not None and _str(item, "st") == _RELEASING:
            done, limit = _int(item, "done"), _int(item, "lim")
            if done < limit:
                entries = _entries(self._stored_pages(digest, _int(item, "pg")))
                try:
                    for end, counts in _count_steps(entries, done, limit):
                        if not self._release_step(digest, done, end, counts):
                            break  # another process advanced the cursor: look again
                        done = end
                except CorruptObjectError:
                    # Pages vanish when another process finishes the release; otherwise they are damaged.
                    current = self._get(key)
                    if current is not None and _str(current, "st") == _RELEASING and _int(current, "done") == done:
                        raise
            else:
                self._write_many([{"DeleteRequest": {"Key": _key(page["pk"]["S"], page["sk"]["S"])}}
                                  for page in self._query(
                                      KeyConditionExpression="pk = :pk AND begins_with(sk, :page)",
                                      ExpressionAttributeValues={":pk": _s(_content_pk(digest)),
                                                                 ":page": _s(_PAGE_PREFIX)},
                                      ProjectionExpression="pk, sk", ConsistentRead=True)])
                self._delete(key, "st = :releasing AND done = :limit",
                             {":releasing": _s(_RELEASING), ":limit": _n(limit)})
            item = self._get(key)

    def _release_step(self, digest: bytes, done: int, end: int, counts: Counter) -> bool:
        cursor = {"Update": {"Key": _content_key(digest), "UpdateExpression": "SET done = :end",
                             "ConditionExpression": "st = :releasing AND done = :done",
                             "ExpressionAttributeValues": {":releasing": _s(_RELEASING), ":end": _n(end),
                                                           ":done": _n(done)}}}
        remaining = list(counts.items())
        while True:
            decrements = [{"Update": {"Key": _chunk_key(chunk_id), "UpdateExpression": "ADD rc :count",
                                      "ConditionExpression": "attribute_exists(pk)",
                                      "ExpressionAttributeValues": {":count": _n(-count)}}}
                          for chunk_id, count in remaining]
            try:
                self._transact(decrements + [cursor])
                return True
            except _Cancelled as cancelled:
                if cancelled.failed(len(remaining)):
                    return False
                # A chunk row that does not exist (a damaged catalog) holds no count to give back.
                remaining = [pair for index, pair in enumerate(remaining) if not cancelled.failed(index)]

    def _stored_pages(self, digest: bytes, page_count: int) -> Iterator[bytes]:
        if page_count == 0:
            return
        expected = 0
        for item in self._query(
                KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
                ExpressionAttributeValues={":pk": _s(_content_pk(digest)), ":first": _s(_page_sk(0)),
                                           ":last": _s(_page_sk(page_count - 1))},
                ConsistentRead=True):
            if item["sk"]["S"] != _page_sk(expected):
                break
            yield item["data"]["B"]
            expected += 1
        if expected != page_count:
            raise CorruptObjectError(f"recipe of content {digest.hex()} is missing page {expected}")

    # ---- reading ---------------------------------------------------------------------

    def _latest_version(self, name: str) -> VersionRecord | None:
        first, last = _version_range(name)
        response = self._db.query(
            TableName=self.table, KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
            ExpressionAttributeValues={":pk": _s(_name_pk(name, self._shards)), ":first": _s(first), ":last": _s(last)},
            ScanIndexForward=False, Limit=1, ConsistentRead=True)
        items = response.get("Items")
        return _version_record(items[0]) if items else None

    def _versions_of(self, name: str) -> list[VersionRecord]:
        first, last = _version_range(name)
        return [_version_record(item) for item in self._query(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
            ExpressionAttributeValues={":pk": _s(_name_pk(name, self._shards)), ":first": _s(first),
                                       ":last": _s(last)},
            ConsistentRead=True)]

    @_translated
    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        return refuse_marker(self._find_version(name, version), version)

    def _find_version(self, name: str, version: int | None) -> VersionRecord:
        """The given or latest version of name, deletion markers included."""
        if version is None:
            record = self._latest_version(name)
        else:
            item = self._get(_key(_name_pk(name, self._shards), _version_sk(name, version)))
            record = _version_record(item) if item else None
        if record is None:
            if version is not None and self._latest_version(name) is not None:
                raise VersionNotFoundError(f"{name!r} has no version {version}")
            raise NameNotFoundError(f"no stored file named {name!r}")
        return record

    @_translated
    def list_versions(self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None,
                      deleted: bool = False) -> Iterator[VersionRecord]:
        conditions = self._prefix_conditions(prefix)
        requests = [{"KeyConditionExpression": expression,
                     "ExpressionAttributeValues": {":pk": _s(f"n#{shard:02x}"), **values},
                     "ConsistentRead": True}
                    for shard in range(self._shards) for expression, values in conditions]
        # Every shard's query is ordered by sort key; merging them orders all names.
        merged = heapq.merge(*self._parallel_queries(requests), key=lambda item: item["sk"]["S"])
        records = (_version_record(item) for item in merged if name_matches_prefix(item["nm"]["S"], prefix))
        yield from _select_versions(records, all_versions, as_of_ns, deleted)

    def _parallel_queries(self, requests: list[dict]) -> list[Iterator[dict]]:
        """Start every query at once (their first pages are fetched in parallel); each stream pages on lazily."""
        def first_page(request: dict) -> dict:
            return self._db.query(TableName=self.table, **request)

        def stream(request: dict, response: dict) -> Iterator[dict]:
            yield from response.get("Items", ())
            if "LastEvaluatedKey" in response:
                yield from self._query(**request, ExclusiveStartKey=response["LastEvaluatedKey"])

        return [stream(request, response) for request, response in zip(requests, self._pool.map(first_page, requests))]

    @staticmethod
    def _prefix_conditions(prefix: str) -> list[tuple[str, dict]]:
        if not prefix:
            return [("pk = :pk", {})]
        if len(prefix.encode()) < _EXACT_PREFIX_BYTES:
            first, last = _version_range(prefix)
            return [("pk = :pk AND sk BETWEEN :first AND :last", {":first": _s(first), ":last": _s(last)}),
                    ("pk = :pk AND begins_with(sk, :below)", {":below": _s(prefix + "/")})]
        # Long names are keyed by their head: take everything that shares the prefix's head.
        return [("pk = :pk AND begins_with(sk, :head)", {":head": _s(_utf8_head(prefix, _EXACT_PREFIX_BYTES))})]

    @_translated
    def find_name_with_digest(self, digest: bytes) -> str | None:
        # The index is eventually consistent: check each name it gives against the table.
        for indexed in self._db.query(
                TableName=self.table, IndexName=DIGEST_INDEX, KeyConditionExpression="dg = :dg",
                ExpressionAttributeValues={":dg": _s(digest.hex())}, Limit=10).get("Items", ()):
            if self._get(_key(indexed["pk"]["S"], indexed["sk"]["S"])) is not None:
                return indexed["nm"]["S"]
        content = self._get(_content_key(digest))
        return _str(content, "nm") if content is not None and _str(content, "st") == _LIVE else None

    def _live_content(self, digest: bytes) -> dict | None:
        item = self._get(_content_key(digest))
        return item if item is not None and _str(item, "st") == _LIVE else None

    @_translated
    def get_content(self, digest: bytes) -> ContentRecord | None:
        item = self._live_content(digest)
        return _content_record(item) if item is not None else None

    @_translated
    def recipe_pages(self, digest: bytes) -> Iterator[bytes]:
        item = self._live_content(digest)
        if item is None:
            raise NotFoundError(f"no recipe for content {digest.hex()}")
        yield from self._stored_pages(digest, _int(item, "pg"))

    @_translated
    def iter_contents(self) -> Iterator[ContentRecord]:
        for item in self._scan("sk = :d AND st = :live", {":d": _s(_CONTENT_SK), ":live": _s(_LIVE)}):
            yield _content_record(item)

    @_translated
    def iter_chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk row. Its count is the references of committed contents: increments a
        commit in progress (or cut short by a crash) has applied, and decrements a release
        has not applied yet, are left out, so verify compares like with like."""
        chunks: list[ChunkRecord] = []
        in_flight: list[dict] = []
        for item in self._scan("sk = :c OR (sk = :d AND st <> :live)",
                               {":c": _s(_CHUNK_SK), ":d": _s(_CONTENT_SK), ":live": _s(_LIVE)}):
            if item["sk"]["S"] == _CHUNK_SK:
                chunks.append(_chunk_record(item))
            else:
                in_flight.append(item)
        pending = self._in_flight_counts(in_flight)
        for record in chunks:
            adjustment = pending.get(record.chunk_id, 0)
            yield ChunkRecord(record.chunk_id, record.size, record.stored_size, record.refcount - adjustment,
                              record.state, record.location) if adjustment else record

    def _in_flight_counts(self, contents: list[dict]) -> Counter:
        """Counts applied by committing contents and still held by releasing ones."""
        pending: Counter[bytes] = Counter()
        for item in contents:
            digest = bytes.fromhex(item["pk"]["S"][2:])
            done, limit = _int(item, "done"), _int(item, "lim")
            start, stop = (0, done) if _str(item, "st") == _COMMITTING else (done, limit)
            try:
                for _, counts in _count_steps(_entries(self._stored_pages(digest, _int(item, "pg"))), start, stop):
                    pending.update(counts)
            except CorruptObjectError:
                continue  # settled (released and deleted) while we read it
        return pending

    @_translated
    def get_chunks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, ChunkRecord]:
        keys = [_chunk_key(chunk_id) for chunk_id in dict.fromkeys(chunk_ids)]
        return {record.chunk_id: record for record in map(_chunk_record, self._get_many(keys))}

    @_translated
    def stats(self) -> CatalogStats:
        names = versions = logical = 0
        previous = None
        for record in self.list_versions(all_versions=True):
            versions += 1
            logical += record.size
            names += record.name != previous
            previous = record.name
        contents = content_bytes = chunks = unique = stored = 0
        for item in self._scan("(sk = :d AND st = :live) OR (sk = :c AND st = :present)",
                               {":d": _s(_CONTENT_SK), ":live": _s(_LIVE), ":c": _s(_CHUNK_SK),
                                ":present": _n(ChunkState.PRESENT)}):
            if item["sk"]["S"] == _CONTENT_SK:
                contents += 1
                content_bytes += _int(item, "sz")
            else:
                chunks += 1
                unique += _int(item, "sz")
                stored += _int(item, "ss")
        return CatalogStats(names, versions, logical, contents, content_bytes, chunks, unique, stored)

    # ---- removal ---------------------------------------------------------------------

    @_translated
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
        removed = list(self._pool.map(self._remove_version, records))
        return [record for record, done in zip(records, removed) if done]

    def _remove_version(self, record: VersionRecord) -> bool:
        """Delete a version and give back its content's count, atomically; release the content
        if that was its last version. False if another process removed the version first."""
        version_key = _key(_name_pk(record.name, self._shards), _version_sk(record.name, record.version))
        if record.deleted:
            return self._delete(version_key, "attribute_exists(dm)")
        same_content = {":dg": _s(record.digest.hex())}
        while True:
            content = self._get(_content_key(record.digest))
            if content is None or _str(content, "st") != _LIVE:
                # A version without a live content (a damaged catalog): nothing to count down.
                return self._delete(version_key, "dg = :dg", same_content)
            refcount = _int(content, "rc")
            values = {":live": _s(_LIVE), ":rc": _n(refcount)}
            if refcount > 1:
                expression = "ADD rc :minus"
                values[":minus"] = _n(-1)
            else:
                expression = "SET rc = :zero, st = :releasing, done = :zero, lim = :limit"
                values.update({":zero": _n(0), ":releasing": _s(_RELEASING), ":limit": _n(_int(content, "n"))})
            try:
                self._transact([
                    {"Delete": {"Key": version_key, "ConditionExpression": "dg = :dg",
                                "ExpressionAttributeValues": same_content}},
                    {"Update": {"Key": _content_key(record.digest), "UpdateExpression": expression,
                                "ConditionExpression": "st = :live AND rc = :rc", "ExpressionAttributeValues": values}},
                ])
            except _Cancelled as cancelled:
                if cancelled.failed(0):
                    return False
                continue  # the count changed under us: read it again
            if refcount <= 1:
                self._release(record.digest)
            return True

    # ---- history ---------------------------------------------------------------------

    def _allow_history_items(self) -> None:
        """Move the table to schema 2 before the first item that schema 1 does not have."""
        if self._schema >= 2:
            return
        self._update(_META_KEY, "SET #schema = :new", {":new": _n(SCHEMA_VERSION), ":old": _n(self._schema)},
                     "#schema = :old OR #schema = :new", ExpressionAttributeNames={"#schema": "schema"})
        self._schema = SCHEMA_VERSION

    @_translated
    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        self._allow_history_items()
        markers = self._pool.map(lambda pair: self._mark_deleted(*pair, at_ns), expected)
        return [marker for marker in markers if marker is not None]

    def _mark_deleted(self, name: str, version: int, at_ns: int) -> VersionRecord | None:
        while True:
            # The counter is read before the latest version: a version committed in between
            # shows in the latest, and one committed after changes the counter this write
            # is conditional on.
            previous = self._last_number(name)
            latest = self._latest_version(name)
            if latest is None or latest.deleted or latest.version != version:
                return None
            try:
                self._transact(self._version_actions(name, previous, at_ns, {"dm": {"BOOL": True}}))
            except _Cancelled:
                continue
            return deletion_marker(name, previous + 1, at_ns)

    @_translated
    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._allow_history_items()
        try:
            self._db.put_item(TableName=self.table, Item=_snapshot_item(snapshot),
                              ConditionExpression="attribute_not_exists(pk)")
        except self._conditional_failed:
            raise InvalidArgumentError(f"a snapshot with ID {snapshot.snapshot_id} already exists") from None

    @_translated
    def list_snapshots(self) -> list[SnapshotRecord]:
        items = self._query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(_SNAPSHOTS_PK)},
                            ConsistentRead=True)
        return sorted(map(_snapshot_record, items), key=lambda snapshot: (snapshot.at_ns, snapshot.snapshot_id))

    @_translated
    def remove_snapshots(self, snapshot_ids: Sequence[str]) -> None:
        self._write_many([{"DeleteRequest": {"Key": _key(_SNAPSHOTS_PK, snapshot_id)}}
                          for snapshot_id in dict.fromkeys(snapshot_ids)])

    # ---- gc --------------------------------------------------------------------------

    @_translated
    def acquire_gc_lock(self, session: str) -> None:
        lock = self._get(_GC_LOCK_KEY)
        holder = _str(lock, "ses") if lock else None
        if holder is not None and holder != session:
            holder_session = self._get(_session_key(holder))
            if holder_session is not None and not self._is_dead(holder_session):
                raise ConcurrentModificationError(
                    f"another gc is running (on {_str(holder_session, 'host')}, pid {_int(holder_session, 'pid')})")
            condition, values = "ses = :holder", {":holder": _s(holder)}
        else:
            condition, values = "attribute_not_exists(pk) OR ses = :me", {":me": _s(session)}
        try:
            self._db.put_item(TableName=self.table, Item={**_GC_LOCK_KEY, "ses": _s(session)},
                              ConditionExpression=condition, ExpressionAttributeValues=values)
        except self._conditional_failed:
            raise ConcurrentModificationError("another gc took the gc lock first") from None
        with self._lock:
            self._gc_sessions.add(session)

    @_translated
    def release_gc_lock(self, session: str) -> None:
        with self._lock:
            self._gc_rounds.pop(session, None)
            self._gc_sessions.discard(session)
        self._delete(_GC_LOCK_KEY, "ses = :me", {":me": _s(session)})

    def _check_gc_lock(self, session: str) -> None:
        lock = self._get(_GC_LOCK_KEY)
        if lock is None or _str(lock, "ses") != session:
            raise ConcurrentModificationError("this gc does not hold the gc lock (another gc took it over); stopping")
        self.heartbeat(session)

    @_translated
    def collect_candidates(self, session: str, limit: int) -> list[ChunkRecord]:
        self._check_gc_lock(session)
        with self._lock:
            gc_round = self._gc_rounds.get(session)
        if gc_round is None:
            gc_round = self._start_gc_round(session)
            with self._lock:
                self._gc_rounds[session] = gc_round
        collected: list[ChunkRecord] = []
        while gc_round.queue and len(collected) < limit:
            batch = [gc_round.queue.popleft() for _ in range(min(limit - len(collected), len(gc_round.queue)))]
            collected += self._collect(session, batch, gc_round.alive)
        if not collected:
            # This pass is over; the next call scans the table again.
            with self._lock:
                self._gc_rounds.pop(session, None)
        return collected

    def _start_gc_round(self, session: str) -> _GcRound:
        """Expire dead sessions, settle contents that dead writers or removals left half done,
        and queue every chunk row that may be collectable."""
        gc_round = _GcRound()
        for item in self._query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(_SESSIONS_PK)},
                                ConsistentRead=True):
            session_id = item["sk"]["S"]
            alive = session_id == session or not self._is_dead(item)
            gc_round.alive[session_id] = alive
            if not alive:
                self._delete(_session_key(session_id), "hb = :hb", {":hb": item["hb"]})
        settled = False
        for item in self._scan_for_gc(gc_round):
            digest = bytes.fromhex(item["pk"]["S"][2:])
            if _str(item, "st") == _RELEASING:
                self._release(digest)
                settled = True
            elif not self._session_alive(_str(item, "own"), gc_round.alive):
                self._roll_back(digest, _str(item, "own"), _int(item, "done"))
                settled = True
        if settled:
            # Settling gave counts back: look again for chunks that reached 0.
            gc_round.queue.clear()
            self._scan_for_gc(gc_round)
        return gc_round

    def _scan_for_gc(self, gc_round: _GcRound) -> list[dict]:
        """Queue the rows of chunks with count 0 or in DELETING, unpin dead sessions from any
        chunk, and return the contents that are not live (committing or releasing)."""
        contents = []
        for item in self._scan(
                "(sk = :c AND (rc = :zero OR st = :deleting OR attribute_exists(pins))) OR (sk = :d AND st <> :live)",
                {":c": _s(_CHUNK_SK), ":zero": _n(0), ":deleting": _n(ChunkState.DELETING), ":d": _s(_CONTENT_SK),
                 ":live": _s(_LIVE)}):
            if item["sk"]["S"] == _CONTENT_SK:
                contents.append(item)
                continue
            item = self._unpin_dead(item, gc_round.alive)
            if item is not None and (_int(item, "rc") == 0 or _int(item, "st") == ChunkState.DELETING):
                gc_round.queue.append(item)
        return contents

    def _unpin_dead(self, row: dict, alive: dict) -> dict | None:
        """Remove the pins of dead sessions from a chunk row; return the row as it is now (None if it changed)."""
        dead = [pin for pin in row.get("pins", {}).get("SS", ()) if not self._session_alive(pin, alive)]
        if not dead:
            return row
        return self._update(_chunk_key(_chunk_id_of(row)), "DELETE pins :dead", {":dead": {"SS": dead},
                                                                                 ":gen": row["gen"]},
                            "gen = :gen", ReturnValues="ALL_NEW")

    def _collect(self, session: str, rows: list[dict], alive: dict) -> list[ChunkRecord]:
        """Move to DELETING, for this gc, the rows that nothing can still need; return them."""
        collected, fresh = [], []
        for row in rows:
            if _int(row, "st") != ChunkState.DELETING:
                if "pins" not in row and not self._session_alive(_str(row, "own"), alive):
                    fresh.append(row)
                continue
            if self._deletes(session, row, alive):
                collected.append(row)
        # A pin added since the scan, a count taken, or a row collected and made again (by a
        # new owner) makes its condition fail: pins, owner and state live on one item.
        refused = self._transact_each(fresh, lambda row: {"Update": {
            "Key": _chunk_key(_chunk_id_of(row)), "UpdateExpression": "SET st = :deleting, gcs = :me",
            "ConditionExpression": "st = :seen AND rc = :zero AND gen = :gen AND attribute_not_exists(pins)",
            "ExpressionAttributeValues": {":deleting": _n(ChunkState.DELETING), ":me": _s(session),
                                          ":seen": row["st"], ":zero": _n(0), ":gen": row["gen"]}}})
        refused_ids = {_chunk_id_of(row) for row in refused}
        collected += [row for row in fresh if _chunk_id_of(row) not in refused_ids]
        return [ChunkRecord(record.chunk_id, record.size, record.stored_size, 0, ChunkState.DELETING, record.location)
                for record in map(_chunk_record, collected)]

    def _deletes(self, session: str, row: dict, alive: dict) -> bool:
        """Whether this gc deletes the object of a DELETING row: one it moved itself, or one an
        interrupted gc left (this gc then names itself on the row). Deleting is never undone."""
        tag = _str(row, "gcs")
        if tag == session:
            return True
        if self._session_alive(tag, alive):
            return False
        return self._update(_chunk_key(_chunk_id_of(row)), "SET gcs = :me",
                            {":me": _s(session), ":deleting": _n(ChunkState.DELETING), ":tag": _s(tag or "")},
                            "st = :deleting AND (gcs = :tag OR attribute_not_exists(gcs))") is not None

    @_translated
    def claim_orphans(self, session: str, chunk_ids: Sequence[bytes]) -> list[bytes]:
        self._check_gc_lock(session)
        taken = set(self._transact_each(list(dict.fromkeys(chunk_ids)), lambda chunk_id: {"Put": {
            "Item": {**_chunk_key(chunk_id), "st": _n(ChunkState.DELETING), "gcs": _s(session), "sz": _n(0),
                     "ss": _n(0), "rc": _n(0), "gen": _s(new_session_id())},
            "ConditionExpression": "attribute_not_exists(pk)"}}))
        return [chunk_id for chunk_id in chunk_ids if chunk_id not in taken]

    @_translated
    def forget_chunks(self, session: str, chunk_ids: Sequence[bytes]) -> None:
        self._check_gc_lock(session)
        self._transact_each(list(dict.fromkeys(chunk_ids)), lambda chunk_id: {"Delete": {
            "Key": _chunk_key(chunk_id), "ConditionExpression": "st = :deleting AND gcs = :me",
            "ExpressionAttributeValues": {":deleting": _n(ChunkState.DELETING), ":me": _s(session)}}})

    # ---- repair ----------------------------------------------------------------------

    @_translated
    def set_refcounts(self, counts: dict[bytes, tuple[int, int]]) -> set[bytes]:
        # One conditional update a chunk, not transactions: a count that moved must not
        # hold back the others. Repair is rare and its fixes few.
        return {chunk_id for chunk_id, (expected, new) in counts.items()
                if self._update(_chunk_key(chunk_id), "SET rc = :new", {":new": _n(new), ":expected": _n(expected)},
                                "attribute_exists(pk) AND rc = :expected") is None}


def _shard(name: str, shards: int) -> int:
    return zlib.crc32(name.encode()) % shards


def _name_pk(name: str, shards: int) -> str:
    return f"n#{_shard(name, shards):02x}"


def _counter_pk(name: str, shards: int) -> str:
    """Where a name's last version number is kept, apart from its versions (not listed with them)."""
    return f"m#{_shard(name, shards):02x}"


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
        for key in (("name", new.name), ("digest", new.digest)):
            if key in first_with:
                parent[root(index)] = root(first_with[key])
            else:
                first_with[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(versions)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())

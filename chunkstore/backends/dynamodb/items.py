"""The catalog's items: their keys, how records become attributes, and how attributes are read back.

Everything here is pure. Reading is defensive and happens only here: an item whose
attribute is missing, has the wrong DynamoDB type, or holds a value chunkstore never
writes (an unknown state, a name the name rules refuse) raises IntegrityError naming
the item and what is wrong, never a KeyError or ValueError from deep inside a command.
The layout itself is described in the package docstring (__init__.py).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any, overload

from chunkstore.backends.catalog import (
    MAX_MODE,
    SNAPSHOT_COUNTS,
    ChunkRecord,
    ChunkState,
    ContentRecord,
    FileStat,
    NewVersion,
    SnapshotRecord,
    VersionRecord,
    deletion_marker,
)
from chunkstore.backends.packindex import (
    CHUNK_ID_SIZE,
    PAGE_ID_SIZE,
    GcRound,
    IndexState,
    PackRecord,
    PageRecord,
    Phase,
    check_index_item,
)
from chunkstore.backends.sessions import session_is_dead
from chunkstore.core import recipes
from chunkstore.core.names import normalize_name
from chunkstore.core.packformat import PACK_ID_SIZE
from chunkstore.errors import IntegrityError, InvalidArgumentError

# Schemas (the meta item's `schema`; see the package docstring): a table is made at
# HISTORY_SCHEMA and moves to PACK_INDEX_SCHEMA just before its first pack index item.
HISTORY_SCHEMA = 2
PACK_INDEX_SCHEMA = 3
SCHEMA_VERSION = PACK_INDEX_SCHEMA
# Older schemas this chunkstore reads as they are.
READABLE_SCHEMAS = (1, HISTORY_SCHEMA, PACK_INDEX_SCHEMA)
# Version items are spread over this many partitions (recorded in the meta item):
# one partition takes about 1,000 writes a second, and listing a prefix costs one
# query per shard.
_NAME_SHARDS = 8

# Names longer than this are keyed by a head of them and a hash of the whole name
# (DynamoDB allows 1024 bytes in a sort key).
_NAME_KEY_BYTES = 1000
_NAME_HEAD_BYTES = 960
# Prefixes up to this long are listed with exact key conditions; longer ones by their head.
_EXACT_PREFIX_BYTES = 950
_VERSION_DIGITS = 10

# A content's state (its `st`).
LIVE, COMMITTING, RELEASING = "live", "committing", "releasing"
_CONTENT_STATES = (LIVE, COMMITTING, RELEASING)

CHUNK_SK, CONTENT_SK, PAGE_PREFIX = "c", "d", "r"
SESSIONS_PK = "s"
SNAPSHOTS_PK = "snap"
GC_LOCK_KEY = {"pk": {"S": "gclock"}, "sk": {"S": "gclock"}}
META_KEY = {"pk": {"S": "meta"}, "sk": {"S": "meta"}}
_CHUNK_PREFIX, _CONTENT_PREFIX = "c#", "d#"


# ---- values and keys --------------------------------------------------------------------


def s(text: str) -> dict:
    """A string attribute value (DynamoDB's type S)."""
    return {"S": text}


def n(value: int) -> dict:
    """A number attribute value (DynamoDB's type N)."""
    return {"N": str(value)}


def key(pk: str, sk: str) -> dict:
    return {"pk": s(pk), "sk": s(sk)}


def chunk_key(chunk_id: bytes) -> dict:
    return key(_CHUNK_PREFIX + chunk_id.hex(), CHUNK_SK)


def content_pk(digest: bytes) -> str:
    return _CONTENT_PREFIX + digest.hex()


def content_key(digest: bytes) -> dict:
    return key(content_pk(digest), CONTENT_SK)


def page_sk(index: int) -> str:
    return f"{PAGE_PREFIX}{index:08d}"


def session_key(session: str) -> dict:
    return key(SESSIONS_PK, session)


def snapshot_key(snapshot_id: str) -> dict:
    return key(SNAPSHOTS_PK, snapshot_id)


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


def version_range(name: str) -> tuple[str, str]:
    """Sort keys from the first to the last possible version of name (and no other name)."""
    return _version_sk(name, 0), _version_sk(name, 10**_VERSION_DIGITS - 1)


def _shard(name: str, shards: int) -> int:
    return zlib.crc32(name.encode()) % shards


def shard_pk(shard: int) -> str:
    """The partition of version items of one shard."""
    return f"n#{shard:02x}"


def name_pk(name: str, shards: int) -> str:
    return shard_pk(_shard(name, shards))


def version_key(name: str, version: int, shards: int) -> dict:
    return key(name_pk(name, shards), _version_sk(name, version))


def counter_key(name: str, shards: int) -> dict:
    """Where a name's last version number is kept, apart from its versions (not listed with them)."""
    return key(f"m#{_shard(name, shards):02x}", _name_key(name))


def prefix_conditions(prefix: str) -> list[tuple[str, dict]]:
    """Key conditions (with their values, :pk left to the caller) that find, in one shard,
    the versions of names equal to prefix or under prefix + '/' (and possibly others that
    share a long prefix's head: the caller filters by name)."""
    if not prefix:
        return [("pk = :pk", {})]
    if len(prefix.encode()) < _EXACT_PREFIX_BYTES:
        first, last = version_range(prefix)
        return [
            ("pk = :pk AND sk BETWEEN :first AND :last", {":first": s(first), ":last": s(last)}),
            ("pk = :pk AND begins_with(sk, :below)", {":below": s(prefix + "/")}),
        ]
    # Long names are keyed by their head: take everything that shares the prefix's head.
    return [("pk = :pk AND begins_with(sk, :head)", {":head": s(_utf8_head(prefix, _EXACT_PREFIX_BYTES))})]


# ---- records as items -------------------------------------------------------------------


def meta_item(store_id: str, store_url: str) -> dict:
    return {
        **META_KEY,
        "schema": n(HISTORY_SCHEMA),
        "sid": s(store_id),
        "store": s(store_url),
        "shards": n(_NAME_SHARDS),
    }


def session_item(session: str, kind: str, host: str, pid: int, at_ns: int) -> dict:
    return {**session_key(session), "kind": s(kind), "host": s(host), "pid": n(pid), "t0": n(at_ns), "hb": n(at_ns)}


def stat_attributes(stat: FileStat) -> dict:
    return {
        "sz": n(stat.size),
        "mt": n(stat.mtime_ns),
        "md": n(stat.mode),
        "ino": n(stat.inode),
        "ct": n(stat.ctime_ns),
        **_sealed_attribute(stat.sealed),
    }


def _sealed_attribute(sealed: bytes) -> dict:
    """The encrypted fields of a store that seals its metadata (`x`); nothing in any other store."""
    return {"x": {"B": sealed}} if sealed else {}


def content_version_attributes(new: NewVersion) -> dict:
    """What a version of a content holds besides its name, number and time: digest and stat."""
    return {"dg": s(new.digest.hex()), **stat_attributes(new.stat)}


DELETION_MARK = {"dm": {"BOOL": True}}


def version_item(name: str, version: int, at_ns: int, attributes: dict, shards: int) -> dict:
    return {**version_key(name, version, shards), "nm": s(name), "v": n(version), "at": n(at_ns), **attributes}


def content_item(new: NewVersion, state: str, refcount: int, **extra) -> dict:
    # A format 2 content says so (`rf`): it counts none of its chunks, so releasing it has no
    # count to give back, whatever its chunk count `n`. Format 1 items stay as they were.
    recipe_format = recipes.recipe_format(new.pages)
    return {
        **content_key(new.digest),
        "sz": n(new.stat.size),
        "n": n(new.chunk_count),
        "pg": n(len(new.pages)),
        "rc": n(refcount),
        "st": s(state),
        "nm": s(new.name),
        **({} if recipe_format == recipes.VERSION else {"rf": n(recipe_format)}),
        **extra,
    }


def counted_limit(item: dict) -> int:
    """How many recipe entries a content item holds counts for: its chunk count in recipe
    format 1, none in format 2."""
    if "rf" not in item:
        return number(item, "n")
    if number(item, "rf") != recipes.FORMAT_2_VERSION:
        raise damaged(item, f"attribute 'rf' is {number(item, 'rf')}, not a recipe format this chunkstore counts")
    return 0


def page_items(new: NewVersion) -> list[dict]:
    return [
        {**key(content_pk(new.digest), page_sk(index)), "data": {"B": page}} for index, page in enumerate(new.pages)
    ]


def snapshot_item(snapshot: SnapshotRecord) -> dict:
    return {
        **snapshot_key(snapshot.snapshot_id),
        "t": n(snapshot.at_ns),
        "host": s(snapshot.host),
        "paths": {"L": [s(path) for path in snapshot.paths]},
        **{count: n(getattr(snapshot, count)) for count in SNAPSHOT_COUNTS},
        "prog": s(snapshot.program),
        **_sealed_attribute(snapshot.sealed),
    }


# ---- reading attributes -----------------------------------------------------------------


_REQUIRED = object()
_TYPE_NAMES = {
    "S": "a string",
    "N": "a number",
    "B": "binary",
    "BOOL": "a boolean",
    "NULL": "null",
    "L": "a list",
    "M": "a map",
    "SS": "a string set",
    "NS": "a number set",
    "BS": "a binary set",
}


def _describe(item: dict) -> str:
    """The item's key, for messages."""
    return f"DynamoDB item (pk {item.get('pk', {}).get('S')!r}, sk {item.get('sk', {}).get('S')!r})"


def damaged(item: dict, problem: str) -> IntegrityError:
    return IntegrityError(f"{_describe(item)} is damaged: {problem}")


def _value(item: dict, attribute: str, kind: str, default: object) -> Any:
    """The attribute's value of DynamoDB type kind; default when it is absent (required if not given).
    Any: what the value is depends on kind, as DynamoDB's JSON says."""
    if attribute not in item:
        if default is _REQUIRED:
            raise damaged(item, f"it has no attribute {attribute!r}")
        return default
    value = item[attribute]
    if not isinstance(value, dict) or kind not in value:
        found = next(iter(value), None) if isinstance(value, dict) else None
        raise damaged(
            item, f"attribute {attribute!r} is {_TYPE_NAMES.get(found or '', repr(found))}, not {_TYPE_NAMES[kind]}"
        )
    return value[kind]


def number(item: dict, attribute: str) -> int:
    """A required integer attribute."""
    value = _value(item, attribute, "N", _REQUIRED)
    try:
        return int(value)
    except ValueError:
        raise damaged(item, f"attribute {attribute!r} is {value}, not a whole number") from None


@overload
def text(item: dict, attribute: str) -> str: ...


@overload
def text(item: dict, attribute: str, default: str | None) -> str | None: ...


def text(item: dict, attribute: str, default: str | None | object = _REQUIRED) -> str | None:
    """A string attribute; default when it is absent (required if no default is given)."""
    return _value(item, attribute, "S", default)


def _hex(item: dict, value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise damaged(item, f"its {what} {value!r} is not hexadecimal") from None


def _id_in_pk(item: dict, prefix: str, what: str) -> bytes:
    pk = text(item, "pk")
    if not pk.startswith(prefix):
        raise damaged(item, f"its key is not that of a {what}")
    return _hex(item, pk[len(prefix) :], f"{what} ID")


def chunk_id_of(item: dict) -> bytes:
    return _id_in_pk(item, _CHUNK_PREFIX, "chunk")


def digest_of(item: dict) -> bytes:
    """The digest of a content item or a recipe page."""
    return _id_in_pk(item, _CONTENT_PREFIX, "content")


def chunk_state(item: dict) -> ChunkState:
    state = number(item, "st")
    try:
        return ChunkState(state)
    except ValueError:
        raise damaged(
            item, f"chunk state {state} is none of {', '.join(str(int(each)) for each in ChunkState)}"
        ) from None


def generation(item: dict) -> str:
    """The generation of a chunk row: new each time the row is made."""
    return text(item, "gen")


def pins(item: dict) -> tuple[str, ...]:
    """The sessions (other than its owner) pinning a chunk row."""
    return tuple(_value(item, "pins", "SS", ()))


def content_state(item: dict) -> str:
    state = text(item, "st")
    if state not in _CONTENT_STATES:
        raise damaged(item, f"content state {state!r} is none of {', '.join(_CONTENT_STATES)}")
    return state


def page_data(item: dict) -> bytes:
    return _value(item, "data", "B", _REQUIRED)


def stored_name(item: dict) -> str:
    """A name as stored (in a version, a content or the digest index): it passes the name rules unchanged."""
    name = text(item, "nm")
    try:
        normalized = normalize_name(name)
    except InvalidArgumentError as refused:
        raise damaged(item, f"its name is refused by the name rules ({refused})") from None
    if normalized != name:
        raise damaged(item, f"its name {name!r} is not in stored form ({normalized!r})")
    return name


def chunk_record(item: dict) -> ChunkRecord:
    return ChunkRecord(
        chunk_id_of(item),
        number(item, "sz"),
        number(item, "ss"),
        number(item, "rc"),
        chunk_state(item),
        text(item, "loc", None),
    )


def content_record(item: dict) -> ContentRecord:
    return ContentRecord(digest_of(item), number(item, "sz"), number(item, "n"), number(item, "pg"), number(item, "rc"))


def version_record(item: dict) -> VersionRecord:
    name, version, at_ns = stored_name(item), number(item, "v"), number(item, "at")
    if "dm" in item:
        return deletion_marker(name, version, at_ns)
    mode = number(item, "md")
    if not 0 <= mode <= MAX_MODE:
        raise damaged(item, f"its mode {mode} is not within 0..{MAX_MODE}")
    stat = FileStat(
        number(item, "sz"), number(item, "mt"), mode, number(item, "ino"), number(item, "ct"), _sealed_value(item)
    )
    return VersionRecord(name, version, _hex(item, text(item, "dg"), "digest"), stat, at_ns)


def _strings(item: dict, attribute: str) -> tuple[str, ...]:
    values = _value(item, attribute, "L", _REQUIRED)
    if not all(isinstance(value, dict) and "S" in value for value in values):
        raise damaged(item, f"attribute {attribute!r} is not a list of strings")
    return tuple(value["S"] for value in values)


def snapshot_record(item: dict) -> SnapshotRecord:
    # By name: the type checker cannot tell which fields the names are.
    counts: dict[str, Any] = {count: number(item, count) for count in SNAPSHOT_COUNTS}
    return SnapshotRecord(
        text(item, "sk"),
        number(item, "t"),
        text(item, "host", None) or "",
        _strings(item, "paths"),
        **counts,
        program=text(item, "prog", None) or "",
        sealed=_sealed_value(item),
    )


def _sealed_value(item: dict) -> bytes:
    return bytes(_value(item, "x", "B", b""))


def session_expired(item: dict, lease_seconds: float, at_ns: int, local_host: str) -> bool:
    """Whether the session of a session item stopped heartbeating (or its process is gone)."""
    host, pid, heartbeat_ns = text(item, "host"), number(item, "pid"), number(item, "hb")
    return session_is_dead(host, pid, heartbeat_ns, lease_seconds, at_ns, local_host)


@dataclass(frozen=True)
class TableMeta:
    """The meta item: the schema the table is at, the store it belongs to and its name shards."""

    schema: int
    store_id: str
    store_url: str
    shards: int


def table_schema(item: dict) -> int:
    return number(item, "schema")


def table_meta(item: dict) -> TableMeta:
    """The meta item read, once its schema is known to be readable."""
    shards = number(item, "shards")
    if shards < 1:
        raise damaged(item, f"it names {shards} name shards")
    return TableMeta(table_schema(item), text(item, "sid"), text(item, "store"), shards)


# ---- the pack index (schema 3) -----------------------------------------------------------

ROUND_KEY = {"pk": {"S": "round"}, "sk": {"S": "round"}}
PACK_SK, INDEX_PAGE_SK, HOOK_SK = "p", "g", "h"
_PACK_PREFIX, _INDEX_PAGE_PREFIX, _HOOK_PREFIX = "p#", "g#", "h#"
_PHASES = {phase.name.lower(): phase for phase in Phase}


def phase_name(phase: Phase) -> str:
    return phase.name.lower()


def pack_key(pack_id: bytes) -> dict:
    return key(_PACK_PREFIX + pack_id.hex(), PACK_SK)


def index_page_key(page_id: bytes) -> dict:
    return key(_INDEX_PAGE_PREFIX + page_id.hex(), INDEX_PAGE_SK)


def index_item_key(record: PackRecord | PageRecord) -> dict:
    return pack_key(record.pack_id) if isinstance(record, PackRecord) else index_page_key(record.page_id)


def hook_key(chunk_id: bytes) -> dict:
    return key(_HOOK_PREFIX + chunk_id.hex(), HOOK_SK)


def round_item(gc_round: GcRound) -> dict:
    item = {**ROUND_KEY, "r": n(gc_round.number), "ph": s(phase_name(gc_round.phase))}
    if gc_round.gc_session is not None:
        item["ses"] = s(gc_round.gc_session)
    return item


def pack_item(record: PackRecord) -> dict:
    item = {
        **pack_key(record.pack_id),
        "st": s(record.state.name),
        "gen": n(record.generation),
        "own": s(record.owner),
        "ss": n(record.stored_bytes),
        "ne": n(record.entries),
    }
    if record.live_bytes is not None:
        item["lb"] = n(record.live_bytes)
    return item


def index_page_item(record: PageRecord) -> dict:
    return {
        **index_page_key(record.page_id),
        "data": {"B": record.body},
        "st": s(record.state.name),
        "gen": n(record.generation),
        "og": {"B": record.origin},
        "os": n(record.origin_segment),
    }


def hook_item(chunk_id: bytes, page_id: bytes) -> dict:
    return {**hook_key(chunk_id), "pg": {"B": page_id}}


def _optional_number(item: dict, attribute: str) -> int | None:
    return number(item, attribute) if attribute in item else None


def _sized(item: dict, value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise damaged(item, f"its {what} is {len(value)} bytes, not {size}")
    return value


def _index_state(item: dict, attribute: str) -> IndexState:
    name = text(item, attribute)
    if name not in IndexState.__members__:
        raise damaged(item, f"state {name!r} is none of {', '.join(IndexState.__members__)}")
    return IndexState[name]


def round_record(item: dict) -> GcRound:
    phase = text(item, "ph")
    if phase not in _PHASES:
        raise damaged(item, f"round phase {phase!r} is none of {', '.join(_PHASES)}")
    return GcRound(number(item, "r"), _PHASES[phase], text(item, "ses", None))


def pack_record(item: dict) -> PackRecord:
    pack_id = _sized(item, _id_in_pk(item, _PACK_PREFIX, "pack"), PACK_ID_SIZE, "pack ID")
    was = _index_state(item, "was") if "was" in item else None
    record = PackRecord(
        pack_id,
        _index_state(item, "st"),
        number(item, "gen"),
        text(item, "own"),
        number(item, "ss"),
        number(item, "ne"),
        _optional_number(item, "lb"),
        _optional_number(item, "dr"),
        was,
    )
    return check_index_item(record, lambda problem: damaged(item, problem))


def index_page_record(item: dict) -> PageRecord:
    record = PageRecord(
        _sized(item, _id_in_pk(item, _INDEX_PAGE_PREFIX, "page"), PAGE_ID_SIZE, "page ID"),
        _value(item, "data", "B", _REQUIRED),
        _index_state(item, "st"),
        number(item, "gen"),
        _sized(item, _value(item, "og", "B", _REQUIRED), PAGE_ID_SIZE, "origin"),
        number(item, "os"),
        _optional_number(item, "dr"),
    )
    return check_index_item(record, lambda problem: damaged(item, problem))


def hook(item: dict) -> tuple[bytes, bytes]:
    """A hook item's chunk ID and page ID."""
    chunk_id = _sized(item, _id_in_pk(item, _HOOK_PREFIX, "hook"), CHUNK_ID_SIZE, "chunk ID")
    return chunk_id, _sized(item, _value(item, "pg", "B", _REQUIRED), PAGE_ID_SIZE, "page ID")

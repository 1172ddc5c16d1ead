"""Commits: writing contents and versions, and taking contents back.

A content whose recipe pages, chunk counts and version fit one transaction is
committed in it. A larger one goes in steps: a content item in the "committing"
state owned by the session, the recipe pages, the chunk increments in transactions
of 99 chunks that also advance a cursor (`done`) on the content item, and last the
version, written together with the content turning "live" (the commit point). A
crash leaves a committing content whose cursor says exactly which increments were
applied; roll_back turns it "releasing" with the cursor as its limit (`lim`), and
release gives the counts back step by step through the same cursor, then deletes
the pages and the content. Removing the last version of a content turns it
"releasing" as well. Version numbers come from a per-name counter item, taken by a
condition on its last value in the transaction that writes the version.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator

from chunkstore.backends.catalog import ChunkState, NewVersion
from chunkstore.backends.dynamodb.items import (
    COMMITTING,
    LIVE,
    PAGE_PREFIX,
    RELEASING,
    chunk_key,
    chunk_state,
    content_item,
    content_key,
    content_pk,
    content_state,
    content_version_attributes,
    counter_key,
    digest_of,
    key,
    n,
    number,
    page_data,
    page_items,
    page_sk,
    s,
    text,
    version_item,
)
from chunkstore.backends.dynamodb.packindex import round_check
from chunkstore.backends.dynamodb.table import TRANSACTION_ACTIONS, TRANSACTION_BYTES, Cancelled, Table
from chunkstore.backends.packindex import GcRound, round_moved
from chunkstore.core import recipes
from chunkstore.errors import ConcurrentModificationError, CorruptObjectError

# Chunk count updates per transaction of a large commit or a release: one action is the cursor.
_CHUNKS_PER_STEP = TRANSACTION_ACTIONS - 1
# Steps whose chunks the pre-commit check reads at once (in parallel batches).
_STEPS_READ_AT_ONCE = 16


class Retry(Exception):
    """Another writer changed a content or a name under this commit: look again and start over."""


class _NotPresent(Exception):
    """A chunk of a large commit is not PRESENT."""


def _counted(new: NewVersion) -> int:
    """The entries of a new content whose chunks it counts (none in recipe format 2)."""
    return recipes.counted_total(new.chunk_count, new.pages)


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


# ---- before writing ---------------------------------------------------------------------


def missing_chunks(table: Table, new: NewVersion) -> int:
    """How many distinct chunks of a new content are not PRESENT."""
    missing = 0
    # Distinct chunks of a few steps at a time: reads in parallel, memory bounded for any recipe.
    steps = _count_steps(recipes.counted_entries(new.pages), 0, _counted(new))
    while group := [chunk_id for _, counts in itertools.islice(steps, _STEPS_READ_AT_ONCE) for chunk_id in counts]:
        keys = [chunk_key(chunk_id) for chunk_id in dict.fromkeys(group)]
        present = sum(1 for item in table.get_many(keys) if chunk_state(item) == ChunkState.PRESENT)
        missing += len(keys) - present
    return missing


def last_number(table: Table, name: str, shards: int) -> int:
    """The last version number given to name (0 for none); numbers are never given twice."""
    counter = table.get(counter_key(name, shards))
    return number(counter, "last") if counter else 0


# ---- versions ---------------------------------------------------------------------------


def version_actions(name: str, previous: int, at_ns: int, attributes: dict, shards: int) -> list[dict]:
    """Write version previous + 1 of name (with attributes: a digest and stat, or a deletion
    mark), taking the number from the name's counter (conditional on it still being
    previous, so two writers never take the same number)."""
    number_given = previous + 1
    counter: dict = {
        "Key": counter_key(name, shards),
        "UpdateExpression": "SET #last = :number, nm = :name",
        "ExpressionAttributeNames": {"#last": "last"},
        "ExpressionAttributeValues": {":number": n(number_given), ":name": s(name)},
    }
    if previous:
        counter["ConditionExpression"] = "#last = :previous"
        counter["ExpressionAttributeValues"][":previous"] = n(previous)
    else:
        counter["ConditionExpression"] = "attribute_not_exists(pk)"
    return [
        {
            "Put": {
                "Item": version_item(name, number_given, at_ns, attributes, shards),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {"Update": counter},
    ]


def add_duplicate(table: Table, new: NewVersion, previous: int, at_ns: int, shards: int) -> None:
    """A version of a content that is live already: count it on the content."""
    try:
        table.transact(
            [
                {
                    "Update": {
                        "Key": content_key(new.digest),
                        "UpdateExpression": "ADD rc :one",
                        "ConditionExpression": "st = :live",
                        "ExpressionAttributeValues": {":one": n(1), ":live": s(LIVE)},
                    }
                },
                *version_actions(new.name, previous, at_ns, content_version_attributes(new), shards),
            ]
        )
    except Cancelled:
        raise Retry from None


# ---- new contents -----------------------------------------------------------------------


def _increment(chunk_id: bytes, count: int) -> dict:
    return {
        "Update": {
            "Key": chunk_key(chunk_id),
            "UpdateExpression": "ADD rc :count",
            "ConditionExpression": "st = :present",
            "ExpressionAttributeValues": {":count": n(count), ":present": n(ChunkState.PRESENT)},
        }
    }


def _refused(new: NewVersion) -> ConcurrentModificationError:
    return ConcurrentModificationError(
        f"chunk(s) of {new.name!r} were collected by a concurrent gc while this put was stalled past its "
        "session lease; nothing was committed, put again"
    )


def _rolled_back(new: NewVersion) -> ConcurrentModificationError:
    return ConcurrentModificationError(
        f"the commit of {new.name!r} was rolled back by a gc that took this put's session for dead "
        "(stalled past its lease); put again"
    )


def store_content(
    table: Table, session: str, new: NewVersion, previous: int, at_ns: int, shards: int, gc_round: GcRound | None
) -> int:
    """Commit a new content and its version; return the version number it got.

    With gc_round (storage format 2), the transaction that makes the content live also checks
    that the round item still holds it, else RoundMovedError (see packindex.RoundGuard)."""
    steps = list(itertools.islice(_count_steps(recipes.counted_entries(new.pages), 0, _counted(new)), 2))
    counts = steps[0][1] if steps else Counter()
    checks = [] if gc_round is None else [round_check(gc_round)]
    fits = (
        len(steps) <= 1
        and len(counts) + len(new.pages) + 3 + len(checks) <= TRANSACTION_ACTIONS
        and sum(map(len, new.pages)) <= TRANSACTION_BYTES
    )
    if not fits:
        return _store_large_content(table, session, new, previous, at_ns, shards, gc_round)
    actions = [{"Put": {"Item": content_item(new, LIVE, 1), "ConditionExpression": "attribute_not_exists(pk)"}}]
    actions += [{"Put": {"Item": item}} for item in page_items(new)]
    chunk_actions = range(len(actions), len(actions) + len(counts))
    actions += [_increment(chunk_id, count) for chunk_id, count in counts.items()]
    actions += version_actions(new.name, previous, at_ns, content_version_attributes(new), shards)
    try:
        table.transact(actions + checks)
    except Cancelled as cancelled:
        if any(cancelled.failed(index) for index in chunk_actions):
            raise _refused(new) from None
        _raise_if_round_moved(cancelled, gc_round)
        raise Retry from None
    return previous + 1


def _raise_if_round_moved(cancelled: Cancelled, gc_round: GcRound | None) -> None:
    """The round check is a transaction's last action when there is one."""
    if gc_round is not None and cancelled.failed(len(cancelled.reasons) - 1):
        raise round_moved(gc_round) from None


def _store_large_content(
    table: Table, session: str, new: NewVersion, previous: int, at_ns: int, shards: int, gc_round: GcRound | None
) -> int:
    """A content too large for one transaction: intent, pages, counted steps, then the commit point."""
    intent = content_item(new, COMMITTING, 0, own=s(session), done=n(0), lim=n(_counted(new)))
    if not table.put(intent, "attribute_not_exists(pk)"):
        raise Retry
    done = 0
    try:
        table.write_many([{"PutRequest": {"Item": item}} for item in page_items(new)])
        for end, counts in _count_steps(recipes.counted_entries(new.pages), 0, _counted(new)):
            _count_step(table, session, new, done, end, counts)
            done = end
        return _commit_point(table, session, new, previous, at_ns, shards, gc_round)
    except _NotPresent:
        roll_back(table, new.digest, session, done)
        raise _refused(new) from None
    except Exception:
        # Best effort: if this fails too, gc rolls the content back once this session is dead;
        # the original error is the one to report.
        with contextlib.suppress(Exception):
            roll_back(table, new.digest, session, done)
        raise


def _owned(session: str) -> dict:
    return {":committing": s(COMMITTING), ":me": s(session)}


def _count_step(table: Table, session: str, new: NewVersion, done: int, end: int, counts: Counter) -> None:
    """Increment the counts of one step and move the cursor from done to end, in one transaction."""
    cursor = {
        "Update": {
            "Key": content_key(new.digest),
            "UpdateExpression": "SET done = :end",
            "ConditionExpression": "st = :committing AND own = :me AND done = :done",
            "ExpressionAttributeValues": {**_owned(session), ":end": n(end), ":done": n(done)},
        }
    }
    try:
        table.transact([_increment(chunk_id, count) for chunk_id, count in counts.items()] + [cursor])
    except Cancelled as cancelled:
        if cancelled.failed(len(cancelled.reasons) - 1):
            raise _rolled_back(new) from None
        raise _NotPresent from None


def _commit_point(
    table: Table, session: str, new: NewVersion, previous: int, at_ns: int, shards: int, gc_round: GcRound | None
) -> int:
    """Turn the fully counted content live with its version; return the version number it got."""
    checks = [] if gc_round is None else [round_check(gc_round)]
    while True:
        try:
            table.transact(
                [
                    {
                        "Update": {
                            "Key": content_key(new.digest),
                            "UpdateExpression": "SET st = :live, rc = :one REMOVE own",
                            "ConditionExpression": "st = :committing AND own = :me AND done = :count",
                            "ExpressionAttributeValues": {
                                **_owned(session),
                                ":live": s(LIVE),
                                ":one": n(1),
                                ":count": n(_counted(new)),
                            },
                        }
                    },
                    *version_actions(new.name, previous, at_ns, content_version_attributes(new), shards),
                    *checks,
                ]
            )
            return previous + 1
        except Cancelled as cancelled:
            if cancelled.failed(0):
                raise _rolled_back(new) from None
            _raise_if_round_moved(cancelled, gc_round)
            # Another writer took the next version number of the name first.
            previous = last_number(table, new.name, shards)


# ---- taking contents back ---------------------------------------------------------------


def roll_back(table: Table, digest: bytes, owner: str | None, done: int) -> None:
    """Turn a committing content into a releasing one that undoes its first `done` entries."""
    table.update(
        content_key(digest),
        "SET st = :releasing, lim = :done, done = :zero REMOVE own",
        {
            ":releasing": s(RELEASING),
            ":committing": s(COMMITTING),
            ":owner": s(owner or ""),
            ":done": n(done),
            ":zero": n(0),
        },
        "st = :committing AND own = :owner AND done = :done",
    )
    release(table, digest)


def release(table: Table, digest: bytes) -> None:
    """Decrement the counts a releasing content still holds, step by step through its cursor,
    then delete its pages and itself. Any number of processes may run this at once."""
    item = table.get(content_key(digest))
    while item is not None and content_state(item) == RELEASING:
        done, limit = number(item, "done"), number(item, "lim")
        if done < limit:
            _release_steps(table, digest, done, limit, number(item, "pg"))
        else:
            _delete_released(table, digest, limit)
        item = table.get(content_key(digest))


def _release_steps(table: Table, digest: bytes, done: int, limit: int, page_count: int) -> None:
    entries = recipes.counted_entries(stored_pages(table, digest, page_count))
    try:
        for end, counts in _count_steps(entries, done, limit):
            if not _release_step(table, digest, done, end, counts):
                return  # another process advanced the cursor: look again
            done = end
    except CorruptObjectError:
        # Pages vanish when another process finishes the release; otherwise they are damaged.
        current = table.get(content_key(digest))
        if current is not None and content_state(current) == RELEASING and number(current, "done") == done:
            raise


def _release_step(table: Table, digest: bytes, done: int, end: int, counts: Counter) -> bool:
    cursor = {
        "Update": {
            "Key": content_key(digest),
            "UpdateExpression": "SET done = :end",
            "ConditionExpression": "st = :releasing AND done = :done",
            "ExpressionAttributeValues": {":releasing": s(RELEASING), ":end": n(end), ":done": n(done)},
        }
    }
    remaining = list(counts.items())
    while True:
        decrements = [
            {
                "Update": {
                    "Key": chunk_key(chunk_id),
                    "UpdateExpression": "ADD rc :count",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":count": n(-count)},
                }
            }
            for chunk_id, count in remaining
        ]
        try:
            table.transact(decrements + [cursor])
            return True
        except Cancelled as cancelled:
            if cancelled.failed(len(remaining)):
                return False
            # A chunk row that does not exist (a damaged catalog) holds no count to give back.
            remaining = [pair for index, pair in enumerate(remaining) if not cancelled.failed(index)]


def _delete_released(table: Table, digest: bytes, limit: int) -> None:
    """Delete the pages of a content whose counts were all given back, then the content."""
    pages = table.query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :page)",
        ExpressionAttributeValues={":pk": s(content_pk(digest)), ":page": s(PAGE_PREFIX)},
        ProjectionExpression="pk, sk",
        ConsistentRead=True,
    )
    table.write_many([{"DeleteRequest": {"Key": key(text(page, "pk"), text(page, "sk"))}} for page in pages])
    table.delete(
        content_key(digest), "st = :releasing AND done = :limit", {":releasing": s(RELEASING), ":limit": n(limit)}
    )


# ---- reading recipes --------------------------------------------------------------------


def stored_pages(table: Table, digest: bytes, page_count: int) -> Iterator[bytes]:
    """A content's recipe pages in order; CorruptObjectError for one that is missing."""
    if page_count == 0:
        return
    expected = 0
    for item in table.query(
        KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
        ExpressionAttributeValues={
            ":pk": s(content_pk(digest)),
            ":first": s(page_sk(0)),
            ":last": s(page_sk(page_count - 1)),
        },
        ConsistentRead=True,
    ):
        if text(item, "sk") != page_sk(expected):
            break
        yield page_data(item)
        expected += 1
    if expected != page_count:
        raise CorruptObjectError(f"recipe of content {digest.hex()} is missing page {expected}")


def in_flight_counts(table: Table, contents: Iterable[dict]) -> Counter:
    """Counts applied by committing contents and still held by releasing ones."""
    pending: Counter[bytes] = Counter()
    for item in contents:
        done, limit = number(item, "done"), number(item, "lim")
        start, stop = (0, done) if content_state(item) == COMMITTING else (done, limit)
        try:
            for _, counts in _count_steps(
                recipes.counted_entries(stored_pages(table, digest_of(item), number(item, "pg"))), start, stop
            ):
                pending.update(counts)
        except CorruptObjectError:
            continue  # settled (released and deleted) while we read it
    return pending

"""The pack index (chunkstore/backends/packindex.py) in the catalog's table: schema 3's items.

    round     round     the gc round: r, phase ph (idle / dooming / sweeping), the gc session ses
    p#PACK    p         a pack: state st (PENDING / PRESENT / DOOMED / DELETING), generation gen,
                        owner session own, stored bytes ss, entries ne, live bytes lb (after a
                        gc), and while doomed the round dr and the state it was doomed from was
    g#PAGE    g         a recipe page: its bytes (data), st, gen, origin content og and segment
                        os, and while doomed dr
    h#CHUNK   h         a hook: the page pg that stored the chunk (a hint)

Conditions live on the items themselves: a pack turns PRESENT by an update conditional on its
state, owner and generation; gc changes an item conditional on the state and generation it
read. Checks that span items are transactions: a page write carries a ConditionCheck that the
round item is still the value the writer read; a doom one that the round is still the gc's
dooming phase (and, for a PENDING pack, that its owner's session item is gone); a round move
one that its gc holds the gc lock.

Costs (on-demand units; a transaction's writes count twice): a pack 2 WCU (create, then
PRESENT); a page in a write of k pages 2 + 2/k WCU per KB; a hook 1 WCU in batches of 25; a
round move 4 WCU; per dead pack or page 4 WCU (doom 2, DELETING 1, delete 1), 5 if spared
and doomed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from chunkstore.backends.dynamodb.items import (
    GC_LOCK_KEY,
    HOOK_SK,
    INDEX_PAGE_SK,
    PACK_SK,
    ROUND_KEY,
    hook,
    hook_item,
    hook_key,
    index_item_key,
    index_page_item,
    index_page_key,
    index_page_record,
    n,
    pack_item,
    pack_key,
    pack_record,
    phase_name,
    round_item,
    round_record,
    s,
    session_key,
)
from chunkstore.backends.dynamodb.sessions import Sessions
from chunkstore.backends.dynamodb.table import TRANSACTION_ACTIONS, Cancelled, Table, translated
from chunkstore.backends.packindex import (
    FIRST_ROUND,
    GcRound,
    IndexItem,
    IndexState,
    NewPage,
    PackRecord,
    PageRecord,
    check_doom_round,
    check_new_pack,
    check_new_pages,
    check_page_body,
    new_generation,
    not_pending,
    pack_exists,
    round_moved,
)
from chunkstore.errors import ConcurrentModificationError

T = TypeVar("T")
# Only the first gc round finds no round item: a check of (0, idle) accepts its absence.
_ROUND_IS = "r = :r AND ph = :ph"


def _round_condition(seen: GcRound) -> dict:
    condition = _ROUND_IS if seen.number else f"attribute_not_exists(pk) OR ({_ROUND_IS})"
    return {
        "ConditionExpression": condition,
        "ExpressionAttributeValues": {":r": n(seen.number), ":ph": s(phase_name(seen.phase))},
    }


def round_check(seen: GcRound) -> dict:
    """A transaction's check that the round item is still seen (absent counts as the first round)."""
    return {"ConditionCheck": {"Key": ROUND_KEY, **_round_condition(seen)}}


def _at(item: PackRecord | PageRecord, state: IndexState) -> dict:
    """The condition that an item is in state at the generation of the record."""
    return {
        "ConditionExpression": "st = :st AND gen = :gen",
        "ExpressionAttributeValues": {":st": s(state.name), ":gen": n(item.generation)},
    }


class DynamoDBPackIndex:
    def __init__(self, table: Table, sessions: Sessions, require_schema: Callable[[], None]):
        """require_schema moves the table to schema 3 (once) before the first index item is written."""
        self.table = table
        self._sessions = sessions
        self._require_schema = require_schema

    @translated
    def expire_sessions(self, gc_session: str) -> set[str]:
        return {session for session, alive in self._sessions.expire_dead(gc_session).items() if alive} | {gc_session}

    # ---- the round -----------------------------------------------------------------------

    @translated
    def read_round(self) -> GcRound:
        item = self.table.get(ROUND_KEY)
        return round_record(item) if item is not None else FIRST_ROUND

    @translated
    def advance_round(self, gc_session: str, seen: GcRound) -> GcRound:
        self._require_schema()
        moved = GcRound(*seen.following(), gc_session)
        holds_lock = {"ConditionExpression": "ses = :me", "ExpressionAttributeValues": {":me": s(gc_session)}}
        try:
            self.table.transact(
                [
                    {"ConditionCheck": {"Key": GC_LOCK_KEY, **holds_lock}},
                    {"Put": {"Item": round_item(moved), **_round_condition(seen)}},
                ]
            )
        except Cancelled as cancelled:
            if cancelled.failed(0):
                raise ConcurrentModificationError(
                    "this gc does not hold the gc lock (another gc took it over); the round was not moved"
                ) from None
            raise round_moved(seen) from None
        return moved

    # ---- packs ---------------------------------------------------------------------------

    @translated
    def create_pack(self, session: str, pack_id: bytes, stored_bytes: int, entries: int) -> PackRecord:
        check_new_pack(pack_id, stored_bytes, entries)
        record = PackRecord(pack_id, IndexState.PENDING, new_generation(), session, stored_bytes, entries)
        self._require_schema()
        if not self.table.put(pack_item(record), "attribute_not_exists(pk)"):
            raise pack_exists(pack_id)
        return record

    @translated
    def pack_stored(self, pack: PackRecord) -> PackRecord:
        values = {
            ":present": s(IndexState.PRESENT.name),
            ":new": n(new_generation()),
            ":pending": s(IndexState.PENDING.name),
            ":own": s(pack.owner),
            ":gen": n(pack.generation),
        }
        item = self.table.update(
            pack_key(pack.pack_id),
            "SET st = :present, gen = :new",
            values,
            "st = :pending AND own = :own AND gen = :gen",
            ReturnValues="ALL_NEW",
        )
        if item is None:
            raise not_pending(pack)
        return pack_record(item)

    @translated
    def get_packs(self, pack_ids: Iterable[bytes]) -> dict[bytes, PackRecord]:
        keys = [pack_key(pack_id) for pack_id in dict.fromkeys(pack_ids)]
        return {record.pack_id: record for record in map(pack_record, self.table.get_many(keys))}

    @translated
    def iter_packs(self) -> Iterator[PackRecord]:
        yield from map(pack_record, self.table.scan("sk = :sk", {":sk": s(PACK_SK)}))

    @translated
    def record_live_bytes(self, live_bytes: Mapping[bytes, int]) -> list[bytes]:
        def record(pack: tuple[bytes, int]) -> bool:
            updated = self.table.update(pack_key(pack[0]), "SET lb = :lb", {":lb": n(pack[1])}, "attribute_exists(pk)")
            return updated is not None

        packs = list(live_bytes.items())
        return [
            pack_id for (pack_id, _), done in zip(packs, self.table.in_parallel(record, packs), strict=True) if not done
        ]

    # ---- pages ---------------------------------------------------------------------------

    @translated
    def write_pages(self, seen: GcRound, pages: Sequence[NewPage]) -> list[bytes]:
        check_new_pages(pages)
        if not pages:
            return []
        self._require_schema()

        def put(page: NewPage) -> list[dict]:
            record = PageRecord(
                page.page_id, page.body, IndexState.PRESENT, new_generation(), page.origin, page.origin_segment
            )
            return [{"Put": {"Item": index_page_item(record), "ConditionExpression": "attribute_not_exists(pk)"}}]

        existing = self._transact_with_round_check(seen, list(pages), put)
        return [page.page_id for page in existing]

    @translated
    def get_page(self, page_id: bytes, consistent: bool = True) -> PageRecord | None:
        item = self.table.get(index_page_key(page_id), consistent=consistent)
        return index_page_record(item) if item is not None else None

    @translated
    def iter_pages(self) -> Iterator[PageRecord]:
        yield from map(index_page_record, self.table.scan("sk = :sk", {":sk": s(INDEX_PAGE_SK)}))

    @translated
    def switch_page(self, page: PageRecord, body: bytes) -> PageRecord | None:
        check_page_body(page.page_id, body)
        generation = new_generation()
        condition = _at(page, IndexState.PRESENT)
        condition["ExpressionAttributeValues"].update({":body": {"B": body}, ":new": n(generation)})
        if not self._update(page, "SET #data = :body, gen = :new", condition, names={"#data": "data"}):
            return None
        return replace(page, body=body, state=IndexState.PRESENT, generation=generation)

    # ---- hooks ---------------------------------------------------------------------------

    @translated
    def put_hooks(self, hooks: Mapping[bytes, bytes]) -> None:
        if hooks:
            self._require_schema()
        self.table.write_many([{"PutRequest": {"Item": hook_item(*pair)}} for pair in hooks.items()])

    @translated
    def get_hooks(self, chunk_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        keys = [hook_key(chunk_id) for chunk_id in dict.fromkeys(chunk_ids)]
        return dict(map(hook, self.table.get_many(keys, consistent=False)))

    @translated
    def forget_hooks(self, chunk_ids: Iterable[bytes]) -> None:
        self.table.write_many([{"DeleteRequest": {"Key": hook_key(chunk_id)}} for chunk_id in dict.fromkeys(chunk_ids)])

    @translated
    def iter_hooks(self) -> Iterator[tuple[bytes, bytes]]:
        yield from map(hook, self.table.scan("sk = :sk", {":sk": s(HOOK_SK)}))

    # ---- gc transitions ------------------------------------------------------------------

    @translated
    def doom(self, gc_round: GcRound, items: Sequence[IndexItem]) -> list[IndexItem]:
        check_doom_round(gc_round)
        # An item given twice is doomed once, and the second is refused (as it is where one
        # transaction reads and writes each in turn): a transaction names an item once.
        first: dict[bytes, int] = {}
        for position, item in enumerate(items):
            first.setdefault(item.item_id, position)
        once = [item for position, item in enumerate(items) if first[item.item_id] == position]
        present = [item for item in once if item.state == IndexState.PRESENT]
        pending = [item for item in once if isinstance(item, PackRecord) and item.state == IndexState.PENDING]

        def doomed(item: IndexItem) -> list[dict]:
            condition = _at(item, item.state)
            condition["ExpressionAttributeValues"].update(
                {":doomed": s(IndexState.DOOMED.name), ":new": n(new_generation()), ":r": n(gc_round.number)}
            )
            update = "SET st = :doomed, gen = :new, dr = :r"
            if isinstance(item, PackRecord):
                update += ", was = :st"
            return [{"Update": {"Key": index_item_key(item), "UpdateExpression": update, **condition}}]

        def doomed_with_owner_gone(item: IndexItem) -> list[dict]:
            # PENDING items are packs; one a transaction, as two packs of one owner would check one item twice.
            assert isinstance(item, PackRecord)
            gone = {"ConditionExpression": "attribute_not_exists(pk)"}
            return [*doomed(item), {"ConditionCheck": {"Key": session_key(item.owner), **gone}}]

        refused = self._transact_with_round_check(gc_round, present, doomed)
        for item in pending:
            refused += self._transact_with_round_check(gc_round, [item], doomed_with_owner_gone)
        doomed_ids = {item.item_id for item in present + pending} - {item.item_id for item in refused}
        return [
            item
            for position, item in enumerate(items)
            if first[item.item_id] != position or item.item_id not in doomed_ids
        ]

    @translated
    def spare(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        def back(item: IndexItem) -> bool:
            condition = _at(item, IndexState.DOOMED)
            was = item.doomed_from if isinstance(item, PackRecord) else IndexState.PRESENT
            if was is None:
                return False
            condition["ExpressionAttributeValues"].update({":was": s(was.name), ":new": n(new_generation())})
            expression = "SET st = :was, gen = :new REMOVE dr" + (", was" if isinstance(item, PackRecord) else "")
            return self._update(item, expression, condition)

        return self._each(items, back)

    @translated
    def start_deleting(self, items: Sequence[IndexItem]) -> list[IndexItem]:
        def deleting(item: IndexItem) -> bool:
            condition = _at(item, IndexState.DOOMED)
            condition["ExpressionAttributeValues"].update(
                {":deleting": s(IndexState.DELETING.name), ":new": n(new_generation())}
            )
            return self._update(item, "SET st = :deleting, gen = :new", condition)

        return self._each(items, deleting)

    @translated
    def forget(self, items: Sequence[IndexItem]) -> None:
        def delete(item: IndexItem) -> bool:
            return self.table.delete(index_item_key(item), "st = :deleting", {":deleting": s(IndexState.DELETING.name)})

        self._each(items, delete)

    def _update(self, item: IndexItem, expression: str, condition: dict, names: dict[str, str] | None = None) -> bool:
        updated = self.table.update(
            index_item_key(item),
            expression,
            condition["ExpressionAttributeValues"],
            condition["ConditionExpression"],
            **({"ExpressionAttributeNames": names} if names else {}),
        )
        return updated is not None

    def _each(self, items: Sequence[IndexItem], change: Callable[[IndexItem], bool]) -> list[IndexItem]:
        """change(item) for each item in parallel (one conditional write each); the items it refused."""
        return [item for item, done in zip(items, self.table.in_parallel(change, items), strict=True) if not done]

    def _transact_with_round_check(
        self, seen: GcRound, items: list[T], actions_of: Callable[[T], list[dict]]
    ) -> list[T]:
        """Each item's actions, with a check that the round item is still seen, in transactions of at
        most 100 actions (in parallel). Items whose actions failed their condition are left out of
        a transaction tried again without them, and returned; a failed round check raises
        RoundMovedError (transactions that had succeeded stay)."""
        batches: list[list[T]] = [[]]
        actions = 1  # the round check
        for item in items:
            count = len(actions_of(item))
            if actions + count > TRANSACTION_ACTIONS:
                batches.append([])
                actions = 1
            batches[-1].append(item)
            actions += count

        def run(batch: list[T]) -> list[T]:
            refused: list[T] = []
            while batch:
                planned = [(item, actions_of(item)) for item in batch]
                owners = [item for item, item_actions in planned for _ in item_actions]
                try:
                    self.table.transact([round_check(seen), *(action for _, each in planned for action in each)])
                    return refused
                except Cancelled as cancelled:
                    if cancelled.failed(0):
                        raise round_moved(seen) from None
                    failed = {
                        id(owners[index - 1]) for index in range(1, len(cancelled.reasons)) if cancelled.failed(index)
                    }
                    refused += [item for item in batch if id(item) in failed]
                    batch = [item for item in batch if id(item) not in failed]
            return refused

        return [
            item for refused in self.table.in_parallel(run, [batch for batch in batches if batch]) for item in refused
        ]

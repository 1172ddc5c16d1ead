"""DynamoDBCatalog: the conformance suite over real HTTP to moto, plus what only DynamoDB needs:
commits larger than one transaction, crashes in the middle of them, the gc/writer race on
a chunk's pins, unprocessed batch items, throttling, and tables that are missing or not ours."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import pytest

from chunkstore.backends.aws import AwsClients
from chunkstore.backends.catalog import ChunkState, CommitOutcome, NewVersion
from chunkstore.backends.dynamodb import DynamoDBCatalog
from chunkstore.core import recipes
from chunkstore.errors import (
    AccessDeniedError,
    CatalogOfAnotherStoreError,
    IntegrityError,
    NameNotFoundError,
    ResourceNotFoundError,
    StoreExistsError,
)
from support.catalog_conformance import (
    DEAD_AFTER,
    TINY_LEASE,
    CatalogConformance,
    chunk_id,
    collect_all,
    new_version,
    put,
    refcounts,
    states,
    upload,
)
from support.s3helpers import answer_with_error, unique_name


class TestDynamoDBCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self, make_dynamodb_catalog):
        def make(lease_seconds=None):
            return make_dynamodb_catalog(lease_seconds)

        return make


# A recipe of 600 entries over 150 distinct chunks, in 6 pages: more chunks than one
# transaction can count, so it commits in 7 steps of at most 99 chunk counts.
LARGE_CHUNKS = [number % 150 for number in range(600)]
LARGE_PAGE_ENTRIES = 100
DISTINCT_PER_STEP = 99


def large_version(name: str):
    return new_version(name, LARGE_CHUNKS, page_entries=LARGE_PAGE_ENTRIES)


class Crash(BaseException):
    """Stands for the process being killed: nothing in the library catches it."""


def crash_on_step(catalog: DynamoDBCatalog, cursor_update: str, after: int) -> None:
    """Kill the next TransactWriteItems that moves a content's cursor once `after` of them went through."""
    done = []

    def before(params, **_):
        if any(
            cursor_update in action.get("Update", {}).get("UpdateExpression", "") for action in params["TransactItems"]
        ):
            if len(done) == after:
                raise Crash()
            done.append(True)

    catalog.clients.dynamodb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", before)


# Items by kind: (partition key prefix, sort key prefix); see the layout in chunkstore/backends/dynamodb/__init__.py.
CHUNKS, CONTENTS, PAGES = ("c#", "c"), ("d#", "d"), ("d#", "r")


def table_items(catalog: DynamoDBCatalog, kind: tuple[str, str]) -> list[dict]:
    db = catalog.clients.dynamodb
    items, request = [], {"TableName": catalog.table.name}
    while True:
        response = db.scan(**request)
        items += [
            item
            for item in response["Items"]
            if item["pk"]["S"].startswith(kind[0]) and item["sk"]["S"].startswith(kind[1])
        ]
        if "LastEvaluatedKey" not in response:
            return items
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def entries_of(new) -> list[recipes.RecipeEntry]:
    return [entry for page in new.pages for entry in recipes.decode_page(page)]


def committed_refcounts(catalog: DynamoDBCatalog) -> dict[bytes, int]:
    return {record.chunk_id: record.refcount for record in catalog.iter_chunks()}


def test_a_content_larger_than_one_transaction_commits_in_steps(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    large = large_version("large")
    before = catalog.clients.requests.snapshot()["dynamodb"].get("TransactWriteItems", 0)
    assert put(catalog, large) == [CommitOutcome("large", 1, "stored")]
    transactions = catalog.clients.requests.snapshot()["dynamodb"]["TransactWriteItems"] - before
    assert transactions >= math.ceil(len(LARGE_CHUNKS) / DISTINCT_PER_STEP) + 1
    assert refcounts(catalog, range(150)) == [4] * 150
    assert list(catalog.recipe_pages(large.digest)) == large.pages
    assert catalog.get_content(large.digest).page_count == 6
    assert committed_refcounts(catalog) == {chunk_id(number): 4 for number in range(150)}
    assert table_items(catalog, CONTENTS) and all(item["st"]["S"] == "live" for item in table_items(catalog, CONTENTS))


def test_recipe_pages_of_full_size_fit_dynamodb_items(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    full = new_version("full", [number % 20 for number in range(5000)])
    assert [len(page) for page in full.pages] == [12 + 36 * 4096, 12 + 36 * 904]
    assert put(catalog, full) == [CommitOutcome("full", 1, "stored")]
    assert list(catalog.recipe_pages(full.digest)) == full.pages
    assert refcounts(catalog, [0, 19]) == [250, 250]


def killed_commit(make_dynamodb_catalog, steps: int) -> NewVersion:
    """A large version whose commit was killed after `steps` steps of its cursor."""
    catalog = make_dynamodb_catalog()
    large = large_version("large")
    session = catalog.open_session("put")
    upload(catalog, session, range(150))
    crash_on_step(catalog, "SET done = :end", after=steps)
    with pytest.raises(Crash):
        catalog.commit(session, [large])
    return large


def test_a_commit_killed_half_way_leaves_only_what_gc_rolls_back(make_dynamodb_catalog):
    large = killed_commit(make_dynamodb_catalog, steps=5)

    observer = make_dynamodb_catalog(lease_seconds=TINY_LEASE)
    applied = Counter(entry.chunk_id for entry in entries_of(large)[: 5 * DISTINCT_PER_STEP])
    assert {each: row.refcount for each, row in observer.get_chunks(applied).items()} == applied
    # Nothing is visible, and counted references leave the half-done commit out.
    assert observer.get_content(large.digest) is None
    with pytest.raises(NameNotFoundError):
        observer.get_version("large")
    assert set(committed_refcounts(observer).values()) == {0}

    time.sleep(DEAD_AFTER)
    gc = observer.open_session("gc")
    observer.acquire_gc_lock(gc)
    assert collect_all(observer, gc) == {chunk_id(number) for number in range(150)}
    assert table_items(observer, CONTENTS) == [] and table_items(observer, PAGES) == []
    assert list(observer.iter_chunks()) == []


def test_a_writer_takes_over_the_content_a_dead_writer_was_committing(make_dynamodb_catalog):
    killed_commit(make_dynamodb_catalog, steps=3)
    time.sleep(DEAD_AFTER)
    successor = make_dynamodb_catalog(lease_seconds=TINY_LEASE)
    assert put(successor, large_version("other-name")) == [CommitOutcome("other-name", 1, "stored")]
    # The dead writer's increments were given back before the content was counted again.
    assert refcounts(successor, range(150)) == [4] * 150
    assert set(committed_refcounts(successor).values()) == {4}


def test_a_removal_killed_half_way_is_finished_by_gc(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    large = large_version("large")
    put(catalog, large, new_version("small", [7, 300]))
    crash_on_step(catalog, "SET done = :end", after=4)
    with pytest.raises(Crash):
        catalog.remove_versions([("large", None)])
    observer = make_dynamodb_catalog()
    assert observer.get_content(large.digest) is None
    assert [record.name for record in observer.list_versions()] == ["small"]
    # Counts of the chunks the removal did not reach yet are left out, like a finished removal.
    expected = {chunk_id(number): 0 for number in range(150)}
    expected.update({chunk_id(7): 1, chunk_id(300): 1})
    assert committed_refcounts(observer) == expected
    gc = observer.open_session("gc")
    observer.acquire_gc_lock(gc)
    assert collect_all(observer, gc) == {chunk_id(number) for number in range(150)} - {chunk_id(7)}
    assert refcounts(observer, [7, 300]) == [1, 1]
    assert [item["pk"]["S"] for item in table_items(observer, CONTENTS)] == [
        f"d#{new_version('s', [7, 300]).digest.hex()}"
    ]


def test_a_chunk_pinned_after_the_gc_scan_is_not_collected(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    uploader = catalog.open_session("put")
    upload(catalog, uploader, [1, 2])
    catalog.close_session(uploader)
    writer_catalog = make_dynamodb_catalog()
    writer = writer_catalog.open_session("put")
    claimed = {}

    def claim_just_before_the_chunks_turn_deleting(params, **_):
        # The worst moment: gc has scanned (no pins, count 0) and is about to mark the chunks DELETING.
        if not claimed and any(
            action.get("Update", {}).get("UpdateExpression", "").startswith("SET st = :deleting")
            for action in params["TransactItems"]
        ):
            claimed["to_upload"] = writer_catalog.claim_chunks(writer, [(chunk_id(1), 1001)])

    gc_catalog = make_dynamodb_catalog()
    gc_catalog.clients.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.TransactWriteItems", claim_just_before_the_chunks_turn_deleting
    )
    gc = gc_catalog.open_session("gc")
    gc_catalog.acquire_gc_lock(gc)
    assert [chunk.chunk_id for chunk in gc_catalog.collect_candidates(gc, 100)] == [chunk_id(2)]
    assert claimed == {"to_upload": set()}
    assert states(catalog, [1, 2]) == [ChunkState.PRESENT, ChunkState.DELETING]
    assert writer_catalog.commit(writer, [new_version("kept", [1])]) == [CommitOutcome("kept", 1, "stored")]
    assert refcounts(catalog, [1]) == [1]


def test_pins_of_dead_sessions_are_removed_by_gc(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    uploader = catalog.open_session("put")
    upload(catalog, uploader, [1, 2])
    catalog.close_session(uploader)
    put(catalog, new_version("kept", [2]))
    crashed = catalog.open_session("put")
    assert catalog.claim_chunks(crashed, [(chunk_id(1), 1001), (chunk_id(2), 1002)]) == set()
    assert all(item.get("pins") == {"SS": [crashed]} for item in table_items(catalog, CHUNKS))
    time.sleep(DEAD_AFTER)
    impatient = make_dynamodb_catalog(lease_seconds=TINY_LEASE)
    gc = impatient.open_session("gc")
    impatient.acquire_gc_lock(gc)
    # The dead session's pins go from every chunk, collected (1) or still referenced (2).
    assert collect_all(impatient, gc) == {chunk_id(1)}
    assert [("pins" in item, item["pk"]["S"]) for item in table_items(catalog, CHUNKS)] == [
        (False, f"c#{chunk_id(2).hex()}")
    ]


def test_unprocessed_batch_items_and_keys_are_sent_again(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    table = catalog.table.name
    left_out = []
    calls = threading.local()  # a call's hooks run on the thread that makes it

    def leave_half_unprocessed(operation: str, field: str | None, unprocessed: str):
        def before(params, **_):
            batch = params["RequestItems"][table]
            items = batch[field] if field else batch
            calls.rest = None
            if len(items) > 1 and sum(1 for left in left_out if left == operation) < 3:
                half = len(items) // 2
                calls.rest = items[half:]
                del items[half:]

        def after(parsed, **_):
            if calls.rest:
                left_out.append(operation)
                parsed[unprocessed] = {table: {"Keys": calls.rest, "ConsistentRead": True} if field else calls.rest}

        events = catalog.clients.dynamodb.meta.events
        events.register(f"provide-client-params.dynamodb.{operation}", before)
        events.register(f"after-call.dynamodb.{operation}", after)

    leave_half_unprocessed("BatchWriteItem", "", "UnprocessedItems")
    leave_half_unprocessed("BatchGetItem", "Keys", "UnprocessedKeys")
    # The pages of a large content go by BatchWriteItem; chunk rows are read by BatchGetItem.
    large = large_version("large")
    assert put(catalog, large) == [CommitOutcome("large", 1, "stored")]
    assert list(catalog.recipe_pages(large.digest)) == large.pages
    assert set(catalog.get_chunks([chunk_id(number) for number in range(150)])) == {
        chunk_id(number) for number in range(150)
    }
    assert sorted(set(left_out)) == ["BatchGetItem", "BatchWriteItem"]


def test_version_numbers_are_never_given_twice(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    put(catalog, new_version("file", [1]), new_version("file", [2]))
    catalog.remove_versions([("file", 2)])
    assert put(catalog, new_version("file", [3])) == [CommitOutcome("file", 3, "stored")]
    catalog.remove_versions([("file", None)])
    assert put(catalog, new_version("file", [1])) == [CommitOutcome("file", 4, "stored")]
    assert [record.version for record in catalog.list_versions(all_versions=True)] == [4]


def test_throttled_requests_are_retried(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    put(catalog, new_version("file", [1]))
    answered = answer_with_error(catalog.clients.dynamodb, "Query", 400, "ThrottlingException", times=1)
    assert catalog.get_version("file").version == 1
    assert answered == [400]


def test_access_denied_is_one_clear_error(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    answer_with_error(catalog.clients.dynamodb, "Query", 400, "AccessDeniedException")
    with pytest.raises(AccessDeniedError, match=f"DynamoDB table '{catalog.table.name}'.*access denied.*IAM policy"):
        catalog.get_version("file")


def test_a_missing_table_is_reported_as_not_found(moto_endpoint):
    missing = unique_name("missing")
    with pytest.raises(ResourceNotFoundError, match=f"DynamoDB table '{missing}' does not exist") as raised:
        DynamoDBCatalog(AwsClients(), missing, store_id="x", store_url="s3://bucket/x")
    assert raised.value.exit_code == 3


def test_a_table_belongs_to_one_store(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    with pytest.raises(CatalogOfAnotherStoreError) as raised:
        DynamoDBCatalog(AwsClients(), catalog.table.name, store_id="someone-else", store_url="s3://elsewhere/store")
    assert str(raised.value) == (
        f"DynamoDB table '{catalog.table.name}' holds the catalog of another store (s3://conformance/catalog, "
        "store ID conformance), not of s3://elsewhere/store (store ID someone-else); give each store its own table"
    )
    # A problem with how the stores were set up, like init's refusal below, not damaged data.
    assert raised.value.exit_code == StoreExistsError.exit_code == 1
    assert not isinstance(raised.value, IntegrityError)
    with pytest.raises(StoreExistsError, match="already holds the catalog of s3://conformance/catalog"):
        DynamoDBCatalog(AwsClients(), catalog.table.name, store_id="new", store_url="s3://other/store", create=True)


def test_names_too_long_for_a_sort_key(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    folder = "d" * 990
    long_names = [f"{folder}/{'x' * 600}-a", f"{folder}/{'x' * 600}-b", f"{folder}/short"]
    for number, name in enumerate(long_names):
        put(catalog, new_version(name, [number]))
    put(catalog, new_version(long_names[0], [9]))
    assert catalog.get_version(long_names[0]).version == 2
    assert catalog.get_version(long_names[1], 1).name == long_names[1]
    assert sorted(
        (record.name, record.version) for record in catalog.list_versions(folder, all_versions=True)
    ) == sorted([(long_names[0], 1), (long_names[0], 2), (long_names[1], 1), (long_names[2], 1)])
    assert {record.name: record.version for record in catalog.list_versions(long_names[0])} == {long_names[0]: 2}
    catalog.remove_versions([(long_names[0], None)])
    assert sorted(record.name for record in catalog.list_versions(folder)) == sorted(long_names[1:])

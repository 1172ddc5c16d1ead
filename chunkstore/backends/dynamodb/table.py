"""The table client: the catalog's one DynamoDB table and the requests it takes.

Table sends get / batch get / batch write / query / scan / update / delete /
transaction requests for the catalog, resubmits what DynamoDB leaves unprocessed,
backs off and retries transactions that conflicted or were throttled, and runs
independent requests on its own thread pool. It also makes the table and records in
it (the meta item) which store it belongs to. It knows item keys and conditions only
as the callers give them; what the items mean is in items.py.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import repeat
from typing import TypeVar

from chunkstore.backends.aws import AwsClients, AwsError, error_code, translate_errors
from chunkstore.backends.dynamodb.items import (
    META_KEY,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    TableMeta,
    meta_item,
    s,
    table_meta,
    table_schema,
    text,
)
from chunkstore.core.batching import batched
from chunkstore.errors import (
    CatalogOfAnotherStoreError,
    InvalidArgumentError,
    StoreExistsError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

DIGEST_INDEX = "by-digest"

# DynamoDB limits: 100 keys per BatchGetItem, 25 requests per BatchWriteItem, 100
# actions and 4 MB per TransactWriteItems.
_BATCH_GET_KEYS = 100
_BATCH_WRITE_ITEMS = 25
TRANSACTION_ACTIONS = 100
TRANSACTION_BYTES = 3_500_000

# Transactions cancelled by a conflicting transaction on the same items are retried.
_CONFLICT_ATTEMPTS = 12
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
_POOL_WORKERS = 16

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def validate_table(table: object) -> str:
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise InvalidArgumentError(f"{table!r} is not a valid DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
    return table


class Cancelled(Exception):
    """A transaction failed a condition; reasons[i] is the code of action i ("None" where it held)."""

    def __init__(self, reasons: list[str]):
        super().__init__(reasons)
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return self.reasons[index] not in ("None", None)


_Item = TypeVar("_Item")
_Argument = TypeVar("_Argument")
_Result = TypeVar("_Result")


def _back_off(attempt: int) -> int:
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
    return attempt + 1


def translated(method):
    """Run a public method of an object with a `table` (or the whole iteration of a generator
    method) with AWS errors translated."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator_wrapper(self, *args, **kwargs):
            with self.table.errors():
                yield from method(self, *args, **kwargs)

        return generator_wrapper

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.table.errors():
            return method(self, *args, **kwargs)

    return wrapper


class Table:
    """One catalog table. Requests raise botocore's errors: callers translate them (errors())."""

    def __init__(self, clients: AwsClients, name: str):
        self.name = validate_table(name)
        self.clients = clients
        self._db = clients.dynamodb
        self._conditional_failed = self._db.exceptions.ConditionalCheckFailedException
        self._pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="chunkstore-dynamodb")

    def errors(self):
        """A context that turns AWS errors into ChunkstoreErrors naming this table."""
        missing = (
            f"DynamoDB table {self.name!r} does not exist in region {self.clients.region} "
            "(create it, or run `chunkstore init --create`)"
        )
        return translate_errors(f"DynamoDB table {self.name!r}", missing=missing)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def in_parallel(self, function: Callable[[_Argument], _Result], arguments: Iterable[_Argument]) -> list[_Result]:
        """function(argument) for each argument on the pool; the results in order, once all are done.

        The functions must not use the pool themselves (get_many, transact_each and
        parallel_queries do): a full pool would wait for itself."""
        futures = [self._pool.submit(function, argument) for argument in arguments]
        wait(futures)
        return [future.result() for future in futures]

    # ---- the table and the store it belongs to ----------------------------------------

    @staticmethod
    def create(clients: AwsClients, table: str) -> None:
        """Make the table (on-demand billing) if it does not exist, and wait until it is active."""
        db = clients.dynamodb
        with translate_errors(f"creating DynamoDB table {table!r}"):
            with contextlib.suppress(db.exceptions.ResourceInUseException):
                db.create_table(
                    TableName=table,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[
                        {"AttributeName": name, "AttributeType": kind}
                        for name, kind in (("pk", "S"), ("sk", "S"), ("dg", "S"), ("at", "N"))
                    ],
                    GlobalSecondaryIndexes=[
                        {
                            "IndexName": DIGEST_INDEX,
                            "KeySchema": [
                                {"AttributeName": "dg", "KeyType": "HASH"},
                                {"AttributeName": "at", "KeyType": "RANGE"},
                            ],
                            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["nm"]},
                        }
                    ],
                )
            db.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60})

    def claim(self, store_id: str, store_url: str) -> None:
        """Record in the table which store it belongs to; refuse a table another store uses."""
        # Re-running an init that died before writing the store config takes the table again.
        if not self.put(
            meta_item(store_id, store_url),
            "attribute_not_exists(pk) OR #store = :store",
            {":store": s(store_url)},
            {"#store": "store"},
        ):
            other = text(self.get(META_KEY) or {}, "store", None)
            raise StoreExistsError(f"DynamoDB table {self.name!r} already holds the catalog of {other}")

    def meta(self, store_id: str, store_url: str) -> TableMeta:
        """The meta item of a table that holds the catalog of this store, at a schema this chunkstore reads."""
        item = self.get(META_KEY)
        if item is None:
            raise StoreNotFoundError(f"DynamoDB table {self.name!r} holds no chunkstore catalog")
        schema = table_schema(item)
        if schema not in READABLE_SCHEMAS:
            raise UnsupportedFormatError(
                f"catalog schema version {schema} in DynamoDB table {self.name!r} "
                f"is not supported (this chunkstore reads {READABLE_SCHEMAS[0]} to {SCHEMA_VERSION})"
            )
        meta = table_meta(item)
        if meta.store_id != store_id:
            raise CatalogOfAnotherStoreError(
                f"DynamoDB table {self.name!r} holds the catalog of another store ({meta.store_url}, store ID "
                f"{meta.store_id}), not of {store_url} (store ID {store_id}); give each store its own table"
            )
        return meta

    # ---- reads -----------------------------------------------------------------------

    def get(self, key: dict, consistent: bool = True) -> dict | None:
        return self._db.get_item(TableName=self.name, Key=key, ConsistentRead=consistent).get("Item")

    def get_many(self, keys: Sequence[dict], consistent: bool = True) -> list[dict]:
        """Items of keys that exist (strongly consistent unless asked not to be: half the read units), in any order."""
        batches = batched(keys, _BATCH_GET_KEYS)
        return [item for found in self._pool.map(self._get_batch, batches, repeat(consistent)) for item in found]

    def _get_batch(self, keys: Sequence[dict], consistent: bool) -> list[dict]:
        found: list[dict] = []
        request = {self.name: {"Keys": list(keys), "ConsistentRead": consistent}}
        attempt = 0
        while request:
            response = self._db.batch_get_item(RequestItems=request)
            found.extend(response["Responses"].get(self.name, ()))
            request = response.get("UnprocessedKeys") or {}
            attempt = _back_off(attempt) if request else 0
        return found

    def query_page(self, **request) -> list[dict]:
        """The items of one Query request (for requests with a Limit)."""
        return self._db.query(TableName=self.name, **request).get("Items", [])

    def query(self, **request) -> Iterator[dict]:
        """Every item a query returns, page after page."""
        return self._items(self._db.query, {"TableName": self.name, **request})

    def scan(self, filter_expression: str, values: dict) -> Iterator[dict]:
        """Every item a strongly consistent scan with this filter returns, page after page."""
        return self._items(
            self._db.scan,
            {
                "TableName": self.name,
                "ConsistentRead": True,
                "FilterExpression": filter_expression,
                "ExpressionAttributeValues": values,
            },
        )

    @staticmethod
    def _items(call, request: dict) -> Iterator[dict]:
        while True:
            response = call(**request)
            yield from response.get("Items", ())
            if "LastEvaluatedKey" not in response:
                return
            request = {**request, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def parallel_queries(self, requests: list[dict]) -> list[Iterator[dict]]:
        """Start every query at once (their first pages are fetched in parallel); each stream pages on lazily."""

        def first_page(request: dict) -> dict:
            return self._db.query(TableName=self.name, **request)

        def stream(request: dict, response: dict) -> Iterator[dict]:
            yield from response.get("Items", ())
            if "LastEvaluatedKey" in response:
                yield from self.query(**request, ExclusiveStartKey=response["LastEvaluatedKey"])

        return [
            stream(request, response)
            for request, response in zip(requests, self._pool.map(first_page, requests), strict=True)
        ]

    # ---- writes ----------------------------------------------------------------------

    def put(
        self, item: dict, condition: str | None = None, values: dict | None = None, names: dict | None = None
    ) -> bool:
        """PutItem; False if the condition failed."""
        request = {"TableName": self.name, "Item": item}
        if condition:
            request["ConditionExpression"] = condition
        if names:
            request["ExpressionAttributeNames"] = names
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._db.put_item(**request)
            return True
        except self._conditional_failed:
            return False

    def update(
        self, key: dict, expression: str, values: dict | None = None, condition: str | None = None, **options
    ) -> dict | None:
        """UpdateItem; returns the new item with ReturnValues="ALL_NEW", None if the condition failed."""
        request = {"TableName": self.name, "Key": key, "UpdateExpression": expression, **options}
        if values:
            request["ExpressionAttributeValues"] = values
        if condition:
            request["ConditionExpression"] = condition
        try:
            return self._db.update_item(**request).get("Attributes", {})
        except self._conditional_failed:
            return None

    def delete(self, key: dict, condition: str | None = None, values: dict | None = None) -> bool:
        """DeleteItem; False if the condition failed."""
        request = {"TableName": self.name, "Key": key}
        if condition:
            request["ConditionExpression"] = condition
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._db.delete_item(**request)
            return True
        except self._conditional_failed:
            return False

    def write_many(self, requests: Sequence[dict]) -> None:
        """BatchWriteItem (PutRequest / DeleteRequest items), resubmitting what DynamoDB left unprocessed."""
        for batch in batched(requests, _BATCH_WRITE_ITEMS):
            pending = {self.name: list(batch)}
            attempt = 0
            while pending:
                response = self._db.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                attempt = _back_off(attempt) if pending else 0

    def transact(self, actions: list[dict]) -> None:
        """TransactWriteItems (the table name is filled in). Raises Cancelled if a condition
        failed; retries cancellations by conflicting transactions or throttling."""
        for action in actions:
            next(iter(action.values()))["TableName"] = self.name
        canceled = self._db.exceptions.TransactionCanceledException
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=actions)
                return
            except canceled as error:
                reasons = [reason.get("Code", "None") for reason in error.response.get("CancellationReasons", ())]
                if "ConditionalCheckFailed" in reasons:
                    raise Cancelled(reasons) from None
                refused = set(reasons) - _RETRYABLE_REASONS - {"None"}
                if refused or not reasons:
                    raise AwsError(
                        f"DynamoDB table {self.name!r}: a transaction was refused "
                        f"({', '.join(sorted(refused)) or error_code(error)})"
                    ) from None
            except self._db.exceptions.TransactionInProgressException:
                pass
            _back_off(attempt)
        raise AwsError(f"DynamoDB table {self.name!r}: a transaction kept conflicting with others; try again")

    def transact_each(self, items: list[_Item], action: Callable[[_Item], dict]) -> list[_Item]:
        """Apply action(item) for every item, up to 100 to a transaction; return the items whose
        condition failed (the others are applied)."""

        def run(batch: Sequence[_Item]) -> list[_Item]:
            failed: list[_Item] = []
            while batch:
                try:
                    self.transact([action(item) for item in batch])
                    return failed
                except Cancelled as cancelled:
                    failed += [item for index, item in enumerate(batch) if cancelled.failed(index)]
                    batch = [item for index, item in enumerate(batch) if not cancelled.failed(index)]
            return failed

        return [item for failed in self._pool.map(run, batched(items, TRANSACTION_ACTIONS)) for item in failed]

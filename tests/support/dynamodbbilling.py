"""What DynamoDB would bill for the requests a client sends, worked out from the requests and
their answers by the on-demand billing rules.

The moto server reports one capacity unit per write whatever the item's size, and none for
transactions, so the tests that price chunkstore's requests bill them here instead:

- a write costs one unit per started KB of the item (a Put's item as sent), twice inside
  TransactWriteItems. An Update, a Delete or a ConditionCheck is billed one unit (two in a
  transaction): DynamoDB bills it on the item it finds, and the items chunkstore updates while it
  puts and restores (session, meta, pack, name counter, round, content state) are under 1 KB;
- a read costs one unit per started 4 KB of what it returns (a GetItem or a BatchGetItem per item,
  a key found or not; a Query or a Scan per request, on the total), half of it when eventually
  consistent.

Item sizes follow DynamoDB's rules: attribute names and values in bytes, a number ~1 byte per two
digits plus 1, a list or map 3 bytes plus 1 per element.
"""

from __future__ import annotations

import math
import threading

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
TRANSACTION_WRITE_FACTOR = 2


def value_size(value: dict) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        return math.ceil(len(inner.lstrip("-").replace(".", "").lstrip("0")) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + value_size(element) for element in inner)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + value_size(element) for name, element in inner.items())
    if kind == "SS":
        return sum(len(element.encode()) for element in inner)
    if kind == "BS":
        return sum(len(element) for element in inner)
    if kind == "NS":
        return sum(value_size({"N": element}) for element in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _write_units(item: dict | None) -> int:
    """A Put of item, or an Update, Delete or ConditionCheck (None: an item under 1 KB)."""
    return max(1, math.ceil(item_size(item) / WRITE_UNIT_BYTES)) if item is not None else 1


def _read_units(items: list[dict], consistent: bool) -> float:
    units = max(1, math.ceil(sum(map(item_size, items)) / READ_UNIT_BYTES))
    return units if consistent else units / 2


class DynamoDBBill:
    """The write and read units of the requests a DynamoDB client sent since listen(client)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.write_units = 0.0
        self.read_units = 0.0

    def listen(self, client) -> None:
        client.meta.events.register("provide-client-params.dynamodb", self._keep_params)
        client.meta.events.register("after-call.dynamodb", self._bill)

    @staticmethod
    def _keep_params(params: dict, context: dict, **_) -> None:
        # The request context travels with the call to its after-call event.
        context["billed_params"] = params

    def _bill(self, parsed: dict, model, context: dict, **_) -> None:
        params = context.get("billed_params", {})
        writes, reads = _units(model.name, params, parsed)
        with self._lock:
            self.write_units += writes
            self.read_units += reads


def _units(operation: str, params: dict, answer: dict) -> tuple[float, float]:
    """(write units, read units) of one request and its answer."""
    consistent = bool(params.get("ConsistentRead"))
    if operation == "PutItem":
        return _write_units(params["Item"]), 0
    if operation in ("UpdateItem", "DeleteItem"):
        return _write_units(None), 0
    if operation == "BatchWriteItem":
        requests = [request for table in params["RequestItems"].values() for request in table]
        return sum(_write_units(request.get("PutRequest", {}).get("Item")) for request in requests), 0
    if operation == "TransactWriteItems":
        return sum(
            TRANSACTION_WRITE_FACTOR * _write_units(action.get("Put", {}).get("Item"))
            for action in params["TransactItems"]
        ), 0
    if operation == "GetItem":
        return 0, _read_units([answer["Item"]] if "Item" in answer else [], consistent)
    if operation == "BatchGetItem":
        reads = 0.0
        for table, request in params["RequestItems"].items():
            found = answer.get("Responses", {}).get(table, [])
            missing = len(request["Keys"]) - len(found)
            reads += sum(_read_units([item], request.get("ConsistentRead", False)) for item in found)
            reads += missing * _read_units([], request.get("ConsistentRead", False))
        return 0, reads
    if operation in ("Query", "Scan"):
        return 0, _read_units(answer.get("Items", []), consistent)
    return 0, 0

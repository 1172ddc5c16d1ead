"""S3 and DynamoDB on a local moto server, made to keep the two guarantees of DynamoDB that
chunkstore's catalog rests on, for the benchmarks and the tests alike.

- moto's server handles each request in its own thread and does not lock its in-memory
  tables, so a conditional write there is not atomic against a concurrent one, and two
  concurrent transactions can fail ("dictionary changed size during iteration") and be
  retried, which DynamoDB never does. DynamoDB requests are served one at a time; S3
  requests stay concurrent (nothing relies on S3 conditional writes).
- To roll a failed TransactWriteItems back, moto deep-copies the whole table once per action
  of the transaction: 100 copies of the table for a 100-action transaction (with 32 writers
  that grew the server past 13 GB here). A copy of just the items the transaction names is
  kept instead, and put back on failure.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import ThreadedMotoServer


def _one_dynamodb_request_at_a_time(app):
    lock = threading.Lock()

    def serve(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return app(environ, start_response)
        return app(environ, start_response)

    return serve


class _TablesAsTheyAre:
    """Stands in for the `copy` module inside moto's TransactWriteItems: gives back each table itself."""

    @staticmethod
    def deepcopy(thing, memo=None):
        return thing if isinstance(thing, Table) else copy.deepcopy(thing, memo)


def _transact_with_item_backups(original):
    def transact_write_items(backend, transact_items):
        saved = []
        for entry in transact_items:
            _, action = next(iter(entry.items()))
            table = backend.tables.get(action.get("TableName"))
            key = action.get("Item") or action.get("Key")
            if table is None or key is None:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr])
            item = table.get_item(hash_value, range_value)
            saved.append((table, hash_value, range_value, copy.deepcopy(item) if item is not None else None))
        # DynamoDB requests run one at a time (see above), so swapping the module global is safe.
        dynamodb_models.copy = _TablesAsTheyAre()
        try:
            return original(backend, transact_items)
        except BaseException:
            for table, hash_value, range_value, item in reversed(saved):
                if item is None:
                    table.items[hash_value].pop(range_value, None)
                else:
                    table.items[hash_value][range_value] = item
            raise
        finally:
            dynamodb_models.copy = copy

    return transact_write_items


@contextmanager
def emulator() -> Iterator[str]:
    """A moto server on a free port of 127.0.0.1 serving S3 and DynamoDB; yields its URL."""
    # The server's HTTP layer logs every request; a run makes thousands.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    wsgi_server = server._server
    if wsgi_server is None:
        raise RuntimeError("moto's server did not start")
    wsgi_server.app = _one_dynamodb_request_at_a_time(wsgi_server.app)
    original_transact = dynamodb_models.DynamoDBBackend.transact_write_items
    # Patched on the class: moto makes its backends itself, one per account and region.
    dynamodb_models.DynamoDBBackend.transact_write_items = _transact_with_item_backups(original_transact)  # type: ignore[method-assign]
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        dynamodb_models.DynamoDBBackend.transact_write_items = original_transact  # type: ignore[method-assign]

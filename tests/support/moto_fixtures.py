"""A moto server on a free local port that serves S3 and DynamoDB over real HTTP, shared by
every test that needs an s3:// store (registered as a plugin from tests/conftest.py).

boto3 reaches the server through AWS_ENDPOINT_URL, as a user would point chunkstore
at MinIO or any S3-compatible service; subprocesses (the CLI) inherit it.
"""

from __future__ import annotations

import copy
import logging
import threading

import pytest
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server import threaded_moto_server
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


class _OneDynamoDBRequestAtATime(threaded_moto_server.DomainDispatcherApplication):
    """moto's server handles each request in its own thread and does not lock its in-memory
    tables, so a conditional write there is not atomic against a concurrent one. DynamoDB
    makes every conditional write and every transaction atomic, and the catalog's safety
    rests on that: running DynamoDB requests one at a time gives the tests that guarantee.
    S3 requests stay concurrent; nothing relies on S3 conditional writes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dynamodb = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self._dynamodb:
                return super().__call__(environ, start_response)
        return super().__call__(environ, start_response)


class _TablesAsTheyAre:
    """Stands in for the `copy` module inside moto's TransactWriteItems: gives back each table itself.

    To roll a failed transaction back, moto deep-copies the whole table once per action
    of the transaction: 100 copies of the table for a 100-action transaction, which makes
    the test server slower with every item stored. _transact_with_item_backups keeps a
    copy of just the items the transaction names instead, and puts them back itself."""

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


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """The URL of a moto server that serves S3 and DynamoDB; the environment points boto3 at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threaded_moto_server, "DomainDispatcherApplication", _OneDynamoDBRequestAtATime)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    original_transact = dynamodb_models.DynamoDBBackend.transact_write_items
    dynamodb_models.DynamoDBBackend.transact_write_items = _transact_with_item_backups(original_transact)
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"):
            patch.delenv(variable, raising=False)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        # No configuration of the machine's user may leak in.
        patch.setenv("AWS_CONFIG_FILE", str(nowhere))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        yield endpoint
    server.stop()
    dynamodb_models.DynamoDBBackend.transact_write_items = original_transact

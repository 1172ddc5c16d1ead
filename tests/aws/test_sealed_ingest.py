"""The ingest function and `scan --import-into` on an encrypted store that seals its metadata: the
ingest ledger names no inbox key and no ETag (the MD5 of an object's bytes), the catalog no name,
and a replayed event is still refused by the ledger. S3 and DynamoDB on the moto server."""

from __future__ import annotations

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.apps.bucket import S3Object
from chunkstore.apps.ingest.ingestor import handler
from chunkstore.apps.ingest.ledger import IngestLedger
from chunkstore.core import crypto
from support.aws_events import lambda_context, put_object, s3_event
from support.clirunner import random_bytes
from support.inprocess import run_cli
from support.s3helpers import unique_name
from support.storechecks import get_bytes

PASSPHRASE = "ingest passphrase"
SIZE = 60_000


@pytest.fixture
def sealed_env(monkeypatch, moto_endpoint, ledger_table):
    """A sealed s3:// store (a cheap key derivation: its cost changes no code path) and the
    function's environment for it."""
    monkeypatch.setattr(crypto, "DEFAULT_KDF", {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1})
    with Store.init(
        f"s3://{unique_name('store')}/store",
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:1"),
        table=unique_name("catalog"),
        create=True,
        passphrase=PASSPHRASE.encode(),
    ) as store:
        assert store.metadata_cipher is not None
        monkeypatch.setenv("CHUNKSTORE_STORE", store.url)
        monkeypatch.setenv("CHUNKSTORE_PASSPHRASE", PASSPHRASE)
        monkeypatch.setenv("CHUNKSTORE_INGEST_TABLE", ledger_table)
        monkeypatch.delenv("CHUNKSTORE_DELETE_AFTER_INGEST", raising=False)
        monkeypatch.delenv("CHUNKSTORE_INGEST_MAX_BYTES", raising=False)
        yield store


def scan(clients, table: str) -> list[dict]:
    pages = clients.dynamodb.get_paginator("scan").paginate(TableName=table)
    return [item for page in pages for item in page["Items"]]


def test_the_ledger_and_catalog_name_no_inbox_key_or_etag(sealed_env, clients, inbox, ledger_table):
    store = sealed_env
    first = put_object(clients, inbox, "finance/payroll-march.csv", random_bytes(SIZE, 1))
    copy = put_object(clients, inbox, "finance/payroll-copy.csv", random_bytes(SIZE, 1))
    assert handler(s3_event(first), lambda_context())["results"][0]["outcome"] == "stored"
    duplicate = handler(s3_event(copy), lambda_context())["results"][0]
    assert (duplicate["message"], duplicate["duplicate_of"]) == ("Duplicate file detected", "finance/payroll-march.csv")
    # A replay is refused by the ledger, which finds the object under its keyed hash.
    replay = handler(s3_event(first), lambda_context())["results"][0]
    assert (replay["outcome"], replay["reason"]) == ("skipped", "replay")

    assert get_bytes(store, "finance/payroll-copy.csv") == random_bytes(SIZE, 1)
    ledger = scan(clients, ledger_table)
    assert len(ledger) == 2 and {item["res"]["S"] for item in ledger} == {"stored", "duplicate"}
    dumped = repr(ledger) + repr(scan(clients, store.config.catalog["table"]))
    for secret in ("finance", "payroll", first["etag"], inbox):
        assert secret not in dumped
    recorded = IngestLedger(clients, ledger_table, store.metadata_cipher).get(S3Object(inbox, first["key"]))
    assert recorded is not None and recorded["st"] == "done"
    assert IngestLedger(clients, ledger_table).get(S3Object(inbox, first["key"])) is None


def test_scan_imports_into_a_sealed_store(sealed_env, clients, inbox):
    store = sealed_env
    for key, seed in (("projects/alpha-roadmap.bin", 3), ("projects/alpha-copy.bin", 3), ("projects/beta.bin", 4)):
        put_object(clients, inbox, key, random_bytes(SIZE, seed))
    outcome = run_cli(store.url, "scan", f"s3://{inbox}", "--import-into", store.url)
    assert outcome.code == 0 and "imported into" in outcome.stdout.decode(), outcome
    with Store.open(store.url, passphrase=PASSPHRASE.encode()) as reopened:
        # Each distinct content once, under the first key of its group.
        assert sorted(record.name for record in reopened.list("projects")) == [
            "projects/alpha-copy.bin",
            "projects/beta.bin",
        ]
        assert get_bytes(reopened, "projects/beta.bin") == random_bytes(SIZE, 4)
    dumped = repr(scan(clients, store.config.catalog["table"]))
    assert "projects" not in dumped and "alpha" not in dumped

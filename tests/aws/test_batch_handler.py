"""The Distributed Map batch handler, called as a plain function with batches shaped as the map's
ItemBatcher sends them (items from the ListObjectsV2 reader and from an S3 Inventory manifest),
against S3 and DynamoDB on the moto server."""

from __future__ import annotations

import pytest

from chunkstore.apps.bucket import S3Object
from chunkstore.apps.ingest.batch import handler, parse_batch
from chunkstore.apps.ingest.ledger import IngestLedger
from chunkstore.errors import IngestRetryError, InvalidArgumentError
from support.aws_events import (
    ShrinkingTime,
    batch,
    emf_metrics,
    inventory_items,
    lambda_context,
    listed_items,
    log_lines,
)
from support.clirunner import random_bytes
from support.storechecks import get_bytes


def by_key(output: dict) -> dict[str, dict]:
    return {entry["key"]: entry for entry in output["results"]}


def test_a_listed_batch_is_ingested_like_uploads(lambda_env, clients, inbox, capsys):
    store = lambda_env
    for key, seed in (("photos/a.jpg", 1), ("photos/b.jpg", 2), ("photos/copy of a.jpg", 1)):
        clients.s3.put_object(Bucket=inbox, Key=key, Body=random_bytes(50_000, seed))
    output = handler(batch(listed_items(clients, inbox, "photos/"), inbox), lambda_context())
    results = by_key(output)
    assert output["action"] == "ingest" and output["objects"] == 3
    assert output["counts"] == {"stored": 2, "duplicate": 1}
    assert results["photos/a.jpg"]["outcome"] == "stored" and results["photos/a.jpg"]["new_bytes"] == 50_000
    assert results["photos/copy of a.jpg"]["duplicate_of"] == "photos/a.jpg"
    assert get_bytes(store, "photos/b.jpg") == random_bytes(50_000, 2)
    lines = log_lines(capsys.readouterr().out)
    messages = sorted(line["message"] for line in lines if "outcome" in line)
    assert messages == ["Duplicate file detected", "File processed successfully", "File processed successfully"]
    metrics = emf_metrics(lines)
    assert metrics["FilesProcessed"] == 3 and metrics["DuplicatesDetected"] == 1
    assert metrics["BytesIngested"] == 150_000


def test_a_retried_batch_counts_nothing_twice(lambda_env, clients, inbox, ledger_table, capsys):
    store = lambda_env
    for key, seed in (("a.bin", 3), ("b.bin", 4), ("c.bin", 3)):
        clients.s3.put_object(Bucket=inbox, Key=key, Body=random_bytes(50_000, seed))
    event = batch(listed_items(clients, inbox), inbox)
    # The first attempt runs out of time after the first object: the others are left for the retry.
    with pytest.raises(IngestRetryError, match="2 of 3 objects must be retried"):
        handler(event, ShrinkingTime(calls=2, after=5_000))
    first = emf_metrics(log_lines(capsys.readouterr().out))
    assert first["FilesProcessed"] == 1

    output = handler(event, lambda_context())
    results = by_key(output)
    assert (results["a.bin"]["outcome"], results["a.bin"]["reason"], results["a.bin"]["recorded"]) == (
        "skipped",
        "replay",
        "stored",
    )
    assert results["b.bin"]["outcome"] == "stored" and results["c.bin"]["outcome"] == "duplicate"
    second = emf_metrics(log_lines(capsys.readouterr().out))
    assert second["FilesProcessed"] == 2 and second["ObjectsSkipped"] == 1

    again = by_key(handler(event, lambda_context()))
    assert {key: (entry["outcome"], entry["recorded"]) for key, entry in again.items()} == {
        "a.bin": ("skipped", "stored"),
        "b.bin": ("skipped", "stored"),
        "c.bin": ("skipped", "duplicate"),
    }
    assert emf_metrics(log_lines(capsys.readouterr().out)).get("FilesProcessed", 0) == 0
    for name in ("a.bin", "b.bin", "c.bin"):
        assert [record.version for record in store.list(name, all_versions=True)] == [1]
    ledger = IngestLedger(clients, ledger_table)
    assert ledger.get(S3Object(inbox, "c.bin"))["res"] == "duplicate"


def test_an_unreadable_object_fails_alone(lambda_env, clients, inbox, ledger_table):
    store = lambda_env
    clients.s3.put_object(Bucket=inbox, Key="1-ok.bin", Body=random_bytes(50_000, 5))
    # Archived: S3 answers its HEAD but refuses to GET it until it is restored.
    clients.s3.put_object(Bucket=inbox, Key="2-archived.bin", Body=random_bytes(50_000, 6), StorageClass="DEEP_ARCHIVE")
    clients.s3.put_object(Bucket=inbox, Key="3-ok.bin", Body=random_bytes(50_000, 7))
    output = handler(batch(listed_items(clients, inbox), inbox), lambda_context())  # no retry for it
    results = by_key(output)
    assert output["counts"] == {"stored": 2, "error": 1}
    failed = results["2-archived.bin"]
    assert failed["outcome"] == "error" and failed["permanent"] is True and "InvalidObjectState" in failed["error"]
    assert get_bytes(store, "3-ok.bin") == random_bytes(50_000, 7)
    # Its claim was released: a later run (once it is restored) takes it at once.
    assert IngestLedger(clients, ledger_table).get(S3Object(inbox, "2-archived.bin"))["lease"] == "0"


def test_an_object_too_large_for_an_invocation_is_deferred_unread(
    lambda_env, clients, inbox, ledger_table, monkeypatch
):
    monkeypatch.setenv("CHUNKSTORE_INGEST_MAX_BYTES", "60000")
    clients.s3.put_object(Bucket=inbox, Key="big.iso", Body=random_bytes(80_000, 8))
    clients.s3.put_object(Bucket=inbox, Key="small.txt", Body=random_bytes(50_000, 9))
    output = handler(batch(listed_items(clients, inbox), inbox), lambda_context())
    results = by_key(output)
    assert results["big.iso"]["outcome"] == "deferred" and results["big.iso"]["size"] == 80_000
    assert results["small.txt"]["outcome"] == "stored"
    assert IngestLedger(clients, ledger_table).get(S3Object(inbox, "big.iso"))["st"] == "deferred"
    # Deferred objects are taken by `chunkstore ingest --key` (no time limit), which the ledger lets through.
    from chunkstore.apps.ingest.ingestor import Ingestor, IngestSettings

    ingestor = Ingestor(lambda_env, IngestSettings(lambda_env.url, ledger_table=ledger_table))
    assert [r.outcome for r in ingestor.ingest_listing(f"s3://{inbox}/big.iso")] == ["stored"]


def test_an_object_that_fits_no_whole_invocation_is_deferred(lambda_env, clients, inbox, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_INGEST_MIN_MBPS", "0.001")  # 1 KB/s: 50 KB needs 50 s
    clients.s3.put_object(Bucket=inbox, Key="slow.bin", Body=random_bytes(50_000, 10))
    output = handler(batch(listed_items(clients, inbox), inbox), lambda_context(remaining_ms=30_000))
    assert output["results"][0]["outcome"] == "deferred"


def test_inventory_items_with_versions(lambda_env, clients, inbox):
    store = lambda_env
    clients.s3.put_bucket_versioning(Bucket=inbox, VersioningConfiguration={"Status": "Enabled"})
    clients.s3.put_object(Bucket=inbox, Key="docs/old report.pdf", Body=random_bytes(50_000, 11))
    clients.s3.put_object(Bucket=inbox, Key="docs/old report.pdf", Body=random_bytes(50_000, 12))
    clients.s3.put_object(Bucket=inbox, Key="docs/100% done+.txt", Body=random_bytes(50_000, 13))
    items = inventory_items(clients, inbox)
    assert any("%25" in item["Key"] for item in items)  # the inventory's URL-encoding reaches the handler
    output = handler(batch(items), lambda_context())
    outcomes = sorted((entry["key"], entry["outcome"], entry.get("reason", "")) for entry in output["results"])
    assert outcomes == [
        ("docs/100% done+.txt", "stored", ""),
        ("docs/old report.pdf", "skipped", "superseded"),
        ("docs/old report.pdf", "stored", ""),
    ]
    assert get_bytes(store, "docs/old report.pdf") == random_bytes(50_000, 12)


def test_scan_batch_returns_digest_and_size(clients, inbox):
    clients.s3.put_object(Bucket=inbox, Key="x/one", Body=random_bytes(50_000, 14))
    clients.s3.put_object(Bucket=inbox, Key="x/two", Body=random_bytes(50_000, 14))
    clients.s3.put_object(Bucket=inbox, Key="x/three", Body=random_bytes(50_000, 15))
    clients.s3.put_object(Bucket=inbox, Key="x/empty", Body=b"")
    output = handler(batch(listed_items(clients, inbox, "x/"), inbox, action="scan"), lambda_context())
    results = by_key(output)
    assert output["counts"] == {"read": 3, "skipped": 1}
    assert results["x/one"]["digest"] == results["x/two"]["digest"] != results["x/three"]["digest"]
    assert results["x/one"]["size"] == 50_000 and results["x/one"]["last_modified"]
    assert results["x/empty"]["reason"] == "empty"


def test_scan_defers_an_object_no_invocation_could_read(clients, inbox):
    clients.s3.put_object(Bucket=inbox, Key="huge", Body=random_bytes(50_000, 16))
    clients.s3.put_object(Bucket=inbox, Key="small", Body=random_bytes(100, 17))
    # An invocation of 12 s: the 10 s margin leaves 2 s, 40 MB at 20 MB/s. "huge" is listed at
    # 60 GB, as the listing of a really huge object would say; "small" fits.
    items = listed_items(clients, inbox)
    items[0]["Size"] = 60 * 10**9
    output = handler(batch(items, inbox, action="scan"), lambda_context(remaining_ms=12_000))
    results = by_key(output)
    assert results["huge"]["outcome"] == "deferred" and "digest" not in results["huge"]
    assert results["small"]["outcome"] == "read"


@pytest.mark.parametrize(
    "event", [{}, {"Items": "x"}, {"Items": [], "BatchInput": {"action": "delete"}}, {"Items": [], "BatchInput": []}]
)
def test_what_is_not_a_batch_is_refused(event):
    with pytest.raises(InvalidArgumentError):
        parse_batch(event)


def test_malformed_items_are_skipped_not_fatal():
    _, items = parse_batch(batch([{"Size": 3}, {"Key": "k", "Size": "x"}, {"Key": "k"}]))
    assert [item.skip for item in items] == [
        "malformed: an item without a Key",
        "malformed: invalid literal for int() with base 10: 'x'",
        "malformed: no bucket in the item or the BatchInput",
    ]

"""The ingest function (Lambda handler) and `chunkstore ingest` on a storage format 2 store (packs
and recipe pages) whose bucket and catalog table are on the moto server."""

from __future__ import annotations

import json

import pytest

from chunkstore import Store
from chunkstore.apps.ingest.ingestor import handler
from support.aws_events import lambda_context, put_object, s3_event, sqs_event
from support.clirunner import random_bytes, run_command
from support.storechecks import get_bytes

SIZE = 300_000


@pytest.fixture
def storage_format() -> int:
    """s3_store and lambda_env (tests/aws/conftest.py) on a format 2 store."""
    return 2


def stored_keys(store: Store) -> list[str]:
    return [info.key for info in store.blobs.list()]


def test_new_file_duplicate_and_new_version_through_the_handler(lambda_env, clients, inbox):
    store = lambda_env
    data = random_bytes(SIZE, 1)
    first = handler(s3_event(put_object(clients, inbox, "in/report.bin", data)), lambda_context())["results"][0]
    assert (first["outcome"], first["message"], first["new_bytes"]) == (
        "stored",
        "File processed successfully",
        SIZE,
    )
    keys = stored_keys(store)
    assert any(key.startswith("packs/") for key in keys) and not any(key.startswith("chunks/") for key in keys)

    copy = put_object(clients, inbox, "in/copy.bin", data)
    again = handler(sqs_event(s3_event(copy)), lambda_context())
    assert again == {"batchItemFailures": []}
    duplicate = handler(s3_event(put_object(clients, inbox, "in/third.bin", data)), lambda_context())["results"][0]
    assert (duplicate["outcome"], duplicate["message"], duplicate["duplicate_of"], duplicate["new_bytes"]) == (
        "duplicate",
        "Duplicate file detected",
        "in/report.bin",
        0,
    )

    # A new version with 1,000 bytes changed in the middle stores a few chunks, not the file.
    edited = data[: SIZE // 2] + random_bytes(1_000, 2) + data[SIZE // 2 + 1_000 :]
    second = handler(s3_event(put_object(clients, inbox, "in/report.bin", edited)), lambda_context())["results"][0]
    assert second["outcome"] == "stored" and 0 < second["new_bytes"] < SIZE // 10, second

    assert get_bytes(store, "in/report.bin") == edited
    assert get_bytes(store, "in/report.bin", version=1) == data
    assert get_bytes(store, "in/copy.bin") == get_bytes(store, "in/third.bin") == data
    assert [(record.name, record.version) for record in store.list("in", all_versions=True)] == [
        ("in/copy.bin", 1),
        ("in/report.bin", 1),
        ("in/report.bin", 2),
        ("in/third.bin", 1),
    ]


def test_ingest_command_backfills_a_bucket_into_a_s3_store(s3_store, clients, inbox):
    for name, seed in (("a.bin", 3), ("b/c.bin", 4), ("b/same-as-a.bin", 3)):
        put_object(clients, inbox, name, random_bytes(SIZE, seed))
    out = run_command("ingest", f"s3://{inbox}", "--store", s3_store.url).stdout.decode()
    assert "a.bin: File processed successfully" in out and "b/c.bin: File processed successfully" in out
    assert "b/same-as-a.bin: Duplicate file detected (duplicate of a.bin)" in out
    assert get_bytes(s3_store, "b/c.bin") == random_bytes(SIZE, 4)
    assert get_bytes(s3_store, "b/same-as-a.bin") == random_bytes(SIZE, 3)
    lines = [
        json.loads(line)
        for line in run_command(
            "--store", s3_store.url, "ingest", f"s3://{inbox}", "--log-format", "json"
        ).stdout.splitlines()
    ]
    # Already stored: each object is a duplicate of its own name, and no version is added.
    assert [(line["key"], line["outcome"], line["duplicate_of"]) for line in lines] == [
        ("a.bin", "duplicate", "a.bin"),
        ("b/c.bin", "duplicate", "b/c.bin"),
        ("b/same-as-a.bin", "duplicate", "b/same-as-a.bin"),
    ]
    assert [record.version for record in s3_store.list(all_versions=True)] == [1, 1, 1]

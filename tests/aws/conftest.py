"""Fixtures for ingest and scan: an inbox bucket, an s3:// store and an ingest ledger on the
moto server (tests/support/moto_fixtures.py), and S3 event payloads shaped as AWS sends them."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote_plus

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.apps.ingest.ledger import IngestLedger

from support.s3helpers import unique_name

_TESTS = Path(__file__).resolve().parent.parent


def _s3_store_fixtures():
    """tests/s3/conftest.py, whose `clients` and `bucket` fixtures serve here too."""
    spec = importlib.util.spec_from_file_location("s3_store_fixtures", _TESTS / "s3" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_s3_fixtures = _s3_store_fixtures()
clients = _s3_fixtures.clients
bucket = _s3_fixtures.bucket


@pytest.fixture
def inbox(bucket) -> str:
    """The bucket uploads land in (empty)."""
    return bucket


@pytest.fixture
def s3_store(moto_endpoint):
    """A new s3:// store (4 KiB chunks) whose bucket and catalog table init makes."""
    spec = ChunkerSpec.from_average(avg_size=4096)
    with Store.init(f"s3://{unique_name('store')}/store", spec, CompressionSpec.parse("zstd:1"),
                    table=unique_name("catalog"), create=True) as opened:
        yield opened


@pytest.fixture
def ledger_table(clients) -> str:
    table = unique_name("ledger")
    IngestLedger.create_table(clients, table)
    return table


@pytest.fixture
def lambda_env(monkeypatch, s3_store, ledger_table):
    """The function's environment, as the template sets it."""
    monkeypatch.setenv("CHUNKSTORE_STORE", s3_store.url)
    monkeypatch.setenv("CHUNKSTORE_INGEST_TABLE", ledger_table)
    monkeypatch.delenv("CHUNKSTORE_DELETE_AFTER_INGEST", raising=False)
    monkeypatch.delenv("CHUNKSTORE_INGEST_MAX_BYTES", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Chunkstore")
    return s3_store


def lambda_context(remaining_ms: int = 900_000):
    return SimpleNamespace(aws_request_id=str(uuid.uuid4()), function_name="chunkstore-ingest",
                           get_remaining_time_in_millis=lambda: remaining_ms)


_sequence = [0x0055AE1D0C1E5E0000]


def next_sequencer() -> str:
    """Sequencers grow with time per key, and vary in length as S3's do (see events.py)."""
    _sequence[0] += 0x1000
    return f"{_sequence[0]:018X}"


def put_object(clients, bucket: str, key: str, body: bytes) -> dict:
    """Put an object; returns what its event notification says about it."""
    response = clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return {"bucket": bucket, "key": key, "size": len(body), "etag": response["ETag"].strip('"'),
            "version_id": response.get("VersionId"), "sequencer": next_sequencer()}


def s3_record(obj: dict, event_name: str = "ObjectCreated:Put") -> dict:
    """One record of an S3 event notification (version 2.1), key URL-encoded as S3 does."""
    s3_object = {"key": quote_plus(obj["key"]), "size": obj["size"], "eTag": obj["etag"],
                 "sequencer": obj["sequencer"]}
    if obj.get("version_id"):
        s3_object["versionId"] = obj["version_id"]
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z", "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "inbox-uploads",
               "bucket": {"name": obj["bucket"], "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{obj['bucket']}"},
               "object": s3_object},
    }


def s3_event(*objects: dict) -> dict:
    return {"Records": [s3_record(obj) for obj in objects]}


def eventbridge_event(obj: dict) -> dict:
    detail_object = {"key": obj["key"], "size": obj["size"], "etag": obj["etag"], "sequencer": obj["sequencer"]}
    if obj.get("version_id"):
        detail_object["version-id"] = obj["version_id"]
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
        "account": "123456789012", "time": "2024-05-01T12:00:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{obj['bucket']}"],
        "detail": {"version": "0", "bucket": {"name": obj["bucket"]}, "object": detail_object,
                   "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
                   "source-ip-address": "203.0.113.15", "reason": "PutObject"},
    }


def sqs_event(*bodies) -> dict:
    """SQS messages as Lambda receives them; each body is an event (dict) or raw text."""
    records = []
    for body in bodies:
        records.append({
            "messageId": str(uuid.uuid4()), "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "body": body if isinstance(body, str) else json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1714564800000",
                           "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1714564800001"},
            "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:chunkstore-inbox",
            "awsRegion": "us-east-1",
        })
    return {"Records": records}


def log_lines(text: str) -> list[dict]:
    """The JSON lines of captured stdout: log lines and EMF metric blobs."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def emf_metrics(lines: list[dict]) -> dict[str, float]:
    """Sum of every metric across the EMF blobs."""
    totals: dict[str, float] = {}
    for blob in lines:
        if "_aws" not in blob:
            continue
        for definition in blob["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                value = blob[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + (sum(value) if isinstance(value, list) else value)
    return totals

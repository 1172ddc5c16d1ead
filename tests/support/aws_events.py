"""S3 event payloads shaped as AWS sends them (notifications, EventBridge, SQS), a Lambda
context, and readers of the function's log lines and EMF metrics: what the ingest tests feed
the function and read back."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from urllib.parse import quote_plus


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

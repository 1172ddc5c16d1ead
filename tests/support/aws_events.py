"""Payloads shaped as AWS sends them: S3 event notifications, EventBridge and SQS events, the
batches of a Distributed Map and the results its ResultWriter leaves in S3, DescribeExecution
responses, Lambda contexts; and readers of the function's log lines and EMF metrics: what the
ingest tests feed the functions and read back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import quote_plus


def lambda_context(remaining_ms: int = 900_000):
    return SimpleNamespace(
        aws_request_id=str(uuid.uuid4()),
        function_name="chunkstore-ingest",
        get_remaining_time_in_millis=lambda: remaining_ms,
    )


_sequence = [0x0055AE1D0C1E5E0000]


def next_sequencer() -> str:
    """Sequencers grow with time per key, and vary in length as S3's do (see events.py)."""
    _sequence[0] += 0x1000
    return f"{_sequence[0]:018X}"


def put_object(clients, bucket: str, key: str, body: bytes) -> dict:
    """Put an object; returns what its event notification says about it."""
    response = clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return {
        "bucket": bucket,
        "key": key,
        "size": len(body),
        "etag": response["ETag"].strip('"'),
        "version_id": response.get("VersionId"),
        "sequencer": next_sequencer(),
    }


def s3_record(obj: dict, event_name: str = "ObjectCreated:Put") -> dict:
    """One record of an S3 event notification (version 2.1), key URL-encoded as S3 does."""
    s3_object = {"key": quote_plus(obj["key"]), "size": obj["size"], "eTag": obj["etag"], "sequencer": obj["sequencer"]}
    if obj.get("version_id"):
        s3_object["versionId"] = obj["version_id"]
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "inbox-uploads",
            "bucket": {
                "name": obj["bucket"],
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{obj['bucket']}",
            },
            "object": s3_object,
        },
    }


def s3_event(*objects: dict) -> dict:
    return {"Records": [s3_record(obj) for obj in objects]}


def eventbridge_event(obj: dict) -> dict:
    detail_object = {"key": obj["key"], "size": obj["size"], "etag": obj["etag"], "sequencer": obj["sequencer"]}
    if obj.get("version_id"):
        detail_object["version-id"] = obj["version_id"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2024-05-01T12:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{obj['bucket']}"],
        "detail": {
            "version": "0",
            "bucket": {"name": obj["bucket"]},
            "object": detail_object,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "203.0.113.15",
            "reason": "PutObject",
        },
    }


def sqs_event(*bodies) -> dict:
    """SQS messages as Lambda receives them; each body is an event (dict) or raw text."""
    records = []
    for body in bodies:
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1714564800000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1714564800001",
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:chunkstore-inbox",
                "awsRegion": "us-east-1",
            }
        )
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
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + (
                    sum(value) if isinstance(value, list) else value
                )
    return totals


def listed_items(clients, bucket: str, prefix: str = "") -> list[dict]:
    """What the ListObjectsV2 item reader hands the map: LastModified in epoch seconds, "Etag" quoted."""
    page = clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [
        {
            "Etag": entry["ETag"],
            "Key": entry["Key"],
            "LastModified": int(entry["LastModified"].timestamp()),
            "Size": entry["Size"],
            "StorageClass": entry.get("StorageClass", "STANDARD"),
        }
        for entry in page.get("Contents", ())
    ]


def inventory_items(clients, bucket: str) -> list[dict]:
    """What the manifest reader hands the map from an S3 Inventory (CSV, with versions): every field a
    string, keys URL-encoded."""
    items = []
    for version in clients.s3.list_object_versions(Bucket=bucket).get("Versions", ()):
        items.append(
            {
                "Bucket": bucket,
                "Key": quote_plus(version["Key"], safe="/"),
                "VersionId": version["VersionId"],
                "IsLatest": str(version["IsLatest"]).lower(),
                "IsDeleteMarker": "false",
                "Size": str(version["Size"]),
                "ETag": version["ETag"].strip('"'),
                "LastModifiedDate": version["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
        )
    return items


def batch(items: list[dict], bucket: str | None = None, action: str = "ingest") -> dict:
    batch_input = {"action": action}
    if bucket:
        batch_input["bucket"] = bucket
    return {"Items": items, "BatchInput": batch_input}


class ShrinkingTime:
    """A Lambda context whose remaining time drops to `after` once `calls` questions were asked."""

    def __init__(self, calls: int, after: int):
        self.calls, self.after = calls, after
        self.aws_request_id = "req-shrinking"

    def get_remaining_time_in_millis(self) -> int:
        self.calls -= 1
        return 900_000 if self.calls >= 0 else self.after


ACCOUNT = "123456789012"
# DescribeExecution as boto3 returns it (API reference shape).
STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EXECUTION = {
    "executionArn": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:cs-distributed:ingest-archive-1",
    "stateMachineArn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:cs-distributed",
    "name": "ingest-archive-1",
    "status": "RUNNING",
    "startDate": STARTED,
    "input": '{"action": "ingest", "bucket": "archive", "prefix": ""}',
    "inputDetails": {"included": True},
    "redriveCount": 0,
    "redriveStatus": "NOT_REDRIVABLE",
}


def write_results(clients, results_bucket: str, attempts: list[tuple[dict, dict | Exception]]) -> dict:
    """The ResultWriter's files for one map run: the manifest and one file per status, each
    record holding the batch's input and its last attempt's output (or error)."""
    run_id = str(uuid.uuid4())
    prefix = f"runs/{run_id}"
    records = {"SUCCEEDED": [], "FAILED": []}
    for number, (event, outcome) in enumerate(attempts):
        child = f"cs-distributed/Listed:{run_id}"
        record = {
            "ExecutionArn": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:{child}:{number}",
            "Input": json.dumps(event),
            "InputDetails": {"Included": True},
            "Name": f"{number}",
            "RedriveCount": 0,
            "StartDate": "2024-05-01T12:00:00.000Z",
            "StateMachineArn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{child}",
            "StopDate": "2024-05-01T12:01:00.000Z",
        }
        if isinstance(outcome, Exception):
            cause = json.dumps({"errorMessage": str(outcome), "errorType": type(outcome).__name__})
            record.update(Status="FAILED", Error=type(outcome).__name__, Cause=cause)
            records["FAILED"].append(record)
        else:
            record.update(Status="SUCCEEDED", Output=json.dumps(outcome), OutputDetails={"Included": True})
            records["SUCCEEDED"].append(record)
    files = {}
    for status, entries in records.items():
        key = f"{prefix}/{status}_0.json"
        body = json.dumps(entries).encode()
        clients.s3.put_object(Bucket=results_bucket, Key=key, Body=body)
        files[status] = [{"Key": key, "Size": len(body)}] if entries else []
    manifest = {
        "DestinationBucket": results_bucket,
        "MapRunArn": f"arn:aws:states:us-east-1:{ACCOUNT}:mapRun:cs-distributed/Listed:{run_id}",
        "ResultFiles": {"FAILED": files["FAILED"], "PENDING": [], "SUCCEEDED": files["SUCCEEDED"]},
    }
    clients.s3.put_object(Bucket=results_bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())
    return {
        "MapRunArn": manifest["MapRunArn"],
        "ResultWriterDetails": {"Bucket": results_bucket, "Key": f"{prefix}/manifest.json"},
    }


def finished_execution(run: dict, map_output: dict) -> dict:
    return {
        **EXECUTION,
        "status": "SUCCEEDED",
        "stopDate": STARTED + timedelta(minutes=5),
        "input": json.dumps(run),
        "output": json.dumps({**run, "settings": {}, "map": map_output}),
    }

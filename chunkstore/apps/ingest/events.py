"""S3 event notifications, as they reach a Lambda function, turned into object records.

Three shapes arrive:
  * S3 notifications invoking the function directly: {"Records": [{"eventSource": "aws:s3", ...}]},
    object keys URL-encoded ("red flower.jpg" arrives as "red+flower.jpg");
  * the same notifications, or EventBridge events, as the bodies of SQS messages:
    {"Records": [{"eventSource": "aws:sqs", "messageId", "body": "<JSON>"}]};
  * EventBridge "Object Created" events: {"source": "aws.s3", "detail-type": "Object Created",
    "detail": {"bucket": {"name"}, "object": {"key", "size", "etag", "version-id", "sequencer"}}},
    object keys as they are.

Nothing here raises on bad input: what cannot be read becomes a record with a reason,
so one malformed message is logged and skipped instead of failing (and re-running) a batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus

from chunkstore.apps.bucket import S3Object, clean_etag

TEST_EVENT = "s3:TestEvent"
# Sequencers are hexadecimal strings of varying length, ordered by comparing them after
# right-padding the shorter with zeros (S3's event documentation); padded to one width they
# compare as plain strings, which a DynamoDB condition can do.
SEQUENCER_WIDTH = 64


@dataclass
class EventRecord:
    """One object event, or why a part of the event could not be used (skip set)."""

    found: S3Object | None = None
    event_name: str = ""
    message_id: str | None = None  # the SQS message it came in, for partial batch failures
    skip: str | None = None  # why it is not an object to ingest: "test_event", "not_created", "malformed: ..."


def normalize_sequencer(sequencer: str | None) -> str | None:
    if not sequencer or len(sequencer) > SEQUENCER_WIDTH:
        return None
    try:
        int(sequencer, 16)
    except ValueError:
        return None
    return sequencer.upper().ljust(SEQUENCER_WIDTH, "0")


def event_source(event) -> str:
    """ "sqs", "s3", "eventbridge" or "unknown": how the function was invoked."""
    if isinstance(event, dict):
        records = event.get("Records")
        if isinstance(records, list) and records and isinstance(records[0], dict):
            return "sqs" if records[0].get("eventSource") == "aws:sqs" else "s3"
        if "detail-type" in event:
            return "eventbridge"
        if event.get("Event") == TEST_EVENT:
            return "s3"
    return "unknown"


def parse_event(event, message_id: str | None = None) -> list[EventRecord]:
    """The object records of one Lambda event (or SQS message body), in order."""
    if not isinstance(event, dict):
        return [EventRecord(message_id=message_id, skip="malformed: the event is not a JSON object")]
    if event.get("Event") == TEST_EVENT:
        return [EventRecord(event_name=TEST_EVENT, message_id=message_id, skip="test_event")]
    if "detail-type" in event:
        return [_eventbridge_record(event, message_id)]
    records = event.get("Records")
    if not isinstance(records, list):
        return [EventRecord(message_id=message_id, skip="malformed: neither S3 Records nor an EventBridge event")]
    parsed: list[EventRecord] = []
    for record in records:
        if isinstance(record, dict) and record.get("eventSource") == "aws:sqs":
            parsed.extend(_sqs_message(record))
        else:
            parsed.append(_s3_record(record, message_id))
    return parsed


def _sqs_message(message: dict) -> list[EventRecord]:
    message_id = message.get("messageId")
    try:
        body = json.loads(message.get("body") or "")
    except (TypeError, ValueError):
        return [EventRecord(message_id=message_id, skip="malformed: the SQS message body is not JSON")]
    # S3 through SNS into SQS: the notification is the SNS envelope's Message.
    if isinstance(body, dict) and body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:
            body = json.loads(body["Message"])
        except ValueError:
            return [EventRecord(message_id=message_id, skip="malformed: the SNS message is not JSON")]
    return parse_event(body, message_id)


def _s3_record(record, message_id: str | None) -> EventRecord:
    try:
        name = record.get("eventName", "")
        s3 = record["s3"]
        found = _found(s3["bucket"], s3["object"], unquote_plus(s3["object"]["key"]), "eTag", "versionId")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        return EventRecord(message_id=message_id, skip=f"malformed: S3 record without {error}")
    if not name.startswith("ObjectCreated:"):
        return EventRecord(found, name, message_id, skip="not_created")
    return EventRecord(found, name, message_id)


def _eventbridge_record(event: dict, message_id: str | None) -> EventRecord:
    kind = event.get("detail-type")
    try:
        detail = event["detail"]
        found = _found(detail["bucket"], detail["object"], detail["object"]["key"], "etag", "version-id")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        return EventRecord(message_id=message_id, skip=f"malformed: EventBridge event without {error}")
    if event.get("source") != "aws.s3" or kind != "Object Created":
        return EventRecord(found, str(kind), message_id, skip="not_created")
    return EventRecord(found, str(kind), message_id)


def _found(bucket: dict, obj: dict, key: str, etag_field: str, version_field: str) -> S3Object:
    """The object of an event: both shapes carry the same fields under different names."""
    size = obj.get("size")
    return S3Object(
        bucket=bucket["name"],
        key=key,
        size=None if size is None else int(size),
        etag=clean_etag(obj.get(etag_field)),
        version_id=obj.get(version_field) or None,
        sequencer=normalize_sequencer(obj.get("sequencer")),
    )

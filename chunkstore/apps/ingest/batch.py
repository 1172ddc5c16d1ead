"""Ingest and scan of a bucket that is already full, one batch of objects per invocation,
for an AWS Step Functions Distributed Map (deploy/template.yaml, chunkstore/apps/distributed.py).

`handler(event, context)` is the Lambda entry point. The map's ItemBatcher sends

    {"Items": [...], "BatchInput": {"action": "ingest" | "scan", "bucket": "BUCKET"}}

with items as one of its two item readers makes them:
  * ListObjectsV2 (arn:aws:states:::s3:listObjectsV2): {"Key", "Size", "Etag", "LastModified",
    "StorageClass"}, LastModified in epoch seconds, the ETag quoted, no bucket (BatchInput has it);
  * an S3 Inventory manifest (ReaderConfig InputType MANIFEST): {"Bucket", "Key", ...} with the
    inventory's optional fields as strings ("Size", "ETag", "LastModifiedDate", "VersionId",
    "IsLatest", "IsDeleteMarker"); inventory keys are URL-encoded.

ingest: each object goes through the one per-object path of the upload handler
(Ingestor.ingest: HEAD pinned to the listed ETag or version, claim in the ingest ledger, put,
finish), with the same log line and metrics per object. A retried batch repeats nothing: the
ledger refuses every version already done ("skipped: replay", reported with the outcome it
recorded then), so no object is stored, counted or reported as new twice.

scan: each object's BLAKE3 digest and size, for the grouping of identical contents that reads
the map's results (distributed.py), so no one machine reads every object. An object too large to
read in a whole invocation at CHUNKSTORE_INGEST_MIN_MBPS's default is reported "deferred", unread.

What the map sees: the invocation returns the per-object results when every object is done,
skipped, deferred or failed for good (an archived object, a refused read, a name the store
refuses: reported for that object, the others processed). It raises IngestRetryError, after
processing the rest, when an object failed in a way a retry may fix (throttling, a timeout, a
holder of the same key still working) or when the invocation ran out of time: the map's Retry
runs the batch again, and the retry finds the finished objects in the ledger.

Objects too large for one invocation (above CHUNKSTORE_INGEST_MAX_BYTES, or too large to finish in
a whole invocation at CHUNKSTORE_INGEST_MIN_MBPS) are not read: they are recorded "deferred" in
the ledger and reported, and `chunkstore ingest s3://BUCKET/KEY --table LEDGER` takes them (no
time limit). An object that would not fit the time this invocation has left, after others were
processed, is retried in a fresh invocation instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from chunkstore.apps.bucket import S3Object, clean_etag
from chunkstore.apps.ingest.ingestor import (
    DEFAULT_MIN_MBPS,
    SAFETY_MS,
    IngestResult,
    IngestSettings,
    lambda_ingestor,
    permanent_error,
)
from chunkstore.errors import (
    ChunkstoreError,
    IngestRetryError,
    InvalidArgumentError,
    ObjectChangedError,
    ObjectMissingError,
)

ACTIONS = ("ingest", "scan")


@dataclass
class BatchItem:
    """One item of the batch: the object it names, or why it names none (skip set)."""

    found: S3Object | None
    key: str | None
    skip: str | None = None


def _true(value) -> bool:
    return str(value).strip().lower() == "true"


def _listed_time(value) -> datetime | None:
    """LastModified of a ListObjectsV2 item (epoch seconds) or an inventory's LastModifiedDate (ISO 8601)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def parse_item(item, bucket: str | None) -> BatchItem:
    """The object of one item of either reader; never raises (a bad item is skipped "malformed")."""
    if not isinstance(item, dict) or not isinstance(item.get("Key"), str):
        return BatchItem(None, None, "malformed: an item without a Key")
    inventory = "Bucket" in item
    key = unquote_plus(item["Key"]) if inventory else item["Key"]
    item_bucket = item["Bucket"] if inventory else bucket
    if not isinstance(item_bucket, str) or not item_bucket:
        return BatchItem(None, key, "malformed: no bucket in the item or the BatchInput")
    try:
        if inventory and _true(item.get("IsDeleteMarker")):
            return BatchItem(None, key, "missing")
        if inventory and "IsLatest" in item and not _true(item["IsLatest"]):
            return BatchItem(None, key, "superseded")
        size = item.get("Size")
        found = S3Object(
            bucket=item_bucket,
            key=key,
            size=None if size in (None, "") else int(size),
            etag=clean_etag(item.get("ETag") or item.get("Etag")),
            version_id=(item.get("VersionId") or None) if inventory else None,
            last_modified=_listed_time(item.get("LastModifiedDate") if inventory else item.get("LastModified")),
        )
    except (TypeError, ValueError) as error:
        return BatchItem(None, key, f"malformed: {error}")
    return BatchItem(found, key)


def parse_batch(event) -> tuple[str, list[BatchItem]]:
    """(action, items) of a Distributed Map batch event; InvalidArgumentError if it is not one."""
    if not isinstance(event, dict) or not isinstance(event.get("Items"), list):
        raise InvalidArgumentError("not a Distributed Map batch: the event has no Items list")
    batch_input = event.get("BatchInput", {})
    if not isinstance(batch_input, dict):
        raise InvalidArgumentError("the batch's BatchInput is not a JSON object")
    action = batch_input.get("action", "ingest")
    if action not in ACTIONS:
        raise InvalidArgumentError(f"the batch's action must be one of {', '.join(ACTIONS)}, not {action!r}")
    return action, [parse_item(item, batch_input.get("bucket")) for item in event["Items"]]


def _compact(fields: dict) -> dict:
    """A result without its empty fields: a batch's output must stay under Step Functions' 256 KiB."""
    return {name: value for name, value in fields.items() if value is not None and value != "" and value is not False}


def ingest_item_json(result: IngestResult) -> dict:
    return _compact(
        {
            "key": result.key,
            "outcome": result.outcome,
            "reason": result.reason,
            "recorded": result.recorded,
            "size": result.size,
            "version_id": result.version_id,
            "stored_name": result.name,
            "duplicate_of": result.duplicate_of,
            "new_bytes": result.new_bytes,
            "error": result.error,
            "permanent": result.permanent,
        }
    )


class _Clock:
    """The invocation's time left (None outside Lambda), and whether an object was taken yet."""

    def __init__(self, context):
        self._remaining = getattr(context, "get_remaining_time_in_millis", None)
        self.started_any = False

    def left(self) -> int | None:
        return self._remaining() if self._remaining else None

    def must_wait(self, size: int | None, fits) -> bool:
        """Whether an object is left for a fresh invocation: the first object of an invocation is
        always taken (what does not fit a whole invocation is deferred by the ingest itself)."""
        left = self.left()
        if left is None or not self.started_any:
            return False
        return left < SAFETY_MS or (size is not None and not fits(size, left - SAFETY_MS))


def _ingest_batch(items: list[BatchItem], context) -> list[IngestResult]:
    from chunkstore.apps.ingest.observe import Observer

    observer = Observer.for_invocation(context)
    results = []
    try:
        ingestor = lambda_ingestor(IngestSettings.from_environment())
        clock = _Clock(context)
        for item in items:
            if item.skip is not None or item.found is None:
                result = IngestResult.for_object(item.found, "skipped", item.skip or "")
                result.key = item.key
            elif clock.must_wait(item.found.size, ingestor.fits):
                result = IngestResult.for_object(item.found, "retry", "the invocation has too little time left")
            else:
                clock.started_any = True
                # The HEAD and the claim come before the ingest's own check of the time left: the
                # margin taken above keeps that check from deferring an object that fits.
                result = ingestor.ingest(item.found, from_event=False, remaining_ms=clock.left())
            observer.result(result)
            results.append(result)
    except Exception as error:
        observer.logger.exception("batch ingest failed", extra={"error": str(error)})
        raise
    finally:
        observer.flush()
    return results


def _scan_item(s3, item: BatchItem, clock: _Clock) -> dict:
    from chunkstore.apps.scan import object_digest

    found = item.found
    if item.skip is not None or found is None:
        return {"key": item.key, "outcome": "skipped", "reason": item.skip}
    if not found.size:
        return {"key": found.key, "outcome": "skipped", "reason": "empty", "size": found.size or 0}

    def fits(size: int, left: int) -> bool:
        return size / (DEFAULT_MIN_MBPS * 1e6) * 1000 <= left - SAFETY_MS

    if clock.must_wait(found.size, fits):
        return {"key": found.key, "outcome": "retry", "size": found.size}
    left = clock.left()
    if left is not None and not fits(found.size, left):
        # Not even a whole invocation reads it: a retry could only time out again.
        return {
            "key": found.key,
            "outcome": "deferred",
            "size": found.size,
            "reason": "too large to read in one invocation: `chunkstore scan` reads it",
        }
    clock.started_any = True
    entry = {
        "key": found.key,
        "size": found.size,
        "etag": found.etag,
        "version_id": found.version_id,
        "last_modified": found.last_modified.isoformat() if found.last_modified else None,
    }
    try:
        entry["digest"] = object_digest(s3, found)
        entry["outcome"] = "read"
    except ObjectMissingError:
        entry.update(outcome="skipped", reason="missing")
    except ObjectChangedError:
        entry.update(outcome="skipped", reason="superseded")
    except (ChunkstoreError, OSError) as error:
        entry.update(outcome="error", error=str(error), permanent=permanent_error(error))
    return _compact(entry)


def _scan_batch(items: list[BatchItem], context) -> list[dict]:
    from chunkstore.backends.aws import AwsClients

    s3 = AwsClients().s3
    clock = _Clock(context)
    return [_scan_item(s3, item, clock) for item in items]


def _must_retry(entry: dict) -> bool:
    return entry["outcome"] == "retry" or (entry["outcome"] == "error" and not entry.get("permanent"))


def handler(event, context) -> dict:
    """AWS Lambda entry point for the Distributed Map: {"action", "objects", "counts", "results": [...]}
    per batch, or IngestRetryError (after every object was tried) when the batch must run again."""
    started = time.monotonic()
    action, items = parse_batch(event)
    if action == "scan":
        entries = _scan_batch(items, context)
    else:
        entries = [ingest_item_json(result) for result in _ingest_batch(items, context)]
    to_retry = [entry for entry in entries if _must_retry(entry)]
    if to_retry:
        keys = ", ".join(str(entry["key"]) for entry in to_retry[:5])
        raise IngestRetryError(
            f"{len(to_retry)} of {len(entries)} objects must be retried ({keys}{', ...' if len(to_retry) > 5 else ''})"
        )
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    return {
        "action": action,
        "objects": len(entries),
        "counts": counts,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "results": entries,
    }

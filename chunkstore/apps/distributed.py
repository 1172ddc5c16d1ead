"""Runs of the Distributed Map that deploy/template.yaml deploys: ingest or scan every object of
a bucket that is already full with up to 10,000 batch functions at once instead of one machine.

    start_run      starts an execution for s3://BUCKET[/PREFIX] (or an S3 Inventory manifest)
    run_progress   where an execution is: objects done and failed out of those listed, from
                   DescribeMapRun's item counts, which Step Functions updates as batches finish
    read_results   the per-batch outputs the map's ResultWriter left in S3 once it ended
    summarize_ingest, reduce_scan   what those outputs say, object by object

The scan's grouping of identical contents reads the results, not the objects: each batch
function returned the digest and size of its objects, so one machine only sorts 50 million
short records (spilled to disk by digest prefix, so memory holds one 256th of them at a time).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkstore.apps.bucket import S3Object, parse_s3_url
from chunkstore.apps.scan import DuplicateGroup, ScanReport, keep_order
from chunkstore.backends.aws import RETRY_ATTEMPTS, import_boto3, session_client, translate_errors
from chunkstore.errors import CorruptObjectError, InvalidArgumentError, NotFoundError

ACTIONS = ("ingest", "scan")
# Execution statuses after which nothing changes (PENDING_REDRIVE waits for a redrive).
FINISHED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Execution names are at most 80 characters.
_NAME_LENGTH = 80
# What object_digest returns: the results bucket can be edited by whoever holds it, and the
# digest names a spill file below.
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Ingest outcomes that mean the object is in the store, now or from an earlier attempt.
INGESTED = ("stored", "duplicate")
# Keys of failed or deferred objects kept in a summary (the results in S3 have them all).
LISTED_KEYS = 1000


def stepfunctions_client():
    """A Step Functions client from boto3's usual chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...), with
    AWS_REGION read first as for the store's clients."""
    import_boto3()
    from botocore.config import Config

    with translate_errors("setting up the Step Functions client"):
        return session_client("stepfunctions", Config(retries={"mode": "adaptive", "max_attempts": RETRY_ATTEMPTS}))


def run_input(action: str, url: str, manifest_url: str | None = None) -> dict:
    """The execution input the state machine takes (see the template's Definition)."""
    if action not in ACTIONS:
        raise InvalidArgumentError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    bucket, prefix = parse_s3_url(url)
    document: dict[str, Any] = {"action": action, "bucket": bucket, "prefix": prefix}
    if manifest_url:
        manifest_bucket, manifest_key = parse_s3_url(manifest_url)
        if not manifest_key.endswith("manifest.json"):
            raise InvalidArgumentError(f"{manifest_url!r} is not an S3 Inventory manifest.json")
        document["manifest"] = {"bucket": manifest_bucket, "key": manifest_key}
    return document


def execution_name(action: str, bucket: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"-{stamp}-{uuid.uuid4().hex[:8]}"
    return _NAME_UNSAFE.sub("-", f"{action}-{bucket}")[: _NAME_LENGTH - len(suffix)] + suffix


def start_run(sfn, state_machine_arn: str, action: str, url: str, manifest_url: str | None = None) -> str:
    """Start an execution; returns its ARN (what `--status` reattaches to)."""
    document = run_input(action, url, manifest_url)
    with translate_errors(f"starting {state_machine_arn}"):
        try:
            response = sfn.start_execution(
                stateMachineArn=state_machine_arn,
                name=execution_name(action, document["bucket"]),
                input=json.dumps(document),
            )
        except sfn.exceptions.StateMachineDoesNotExist:
            raise NotFoundError(f"no state machine {state_machine_arn!r} (deploy/template.yaml makes it)") from None
    return response["executionArn"]


@dataclass
class RunProgress:
    """An execution as DescribeExecution and DescribeMapRun show it. Item counts are objects:
    the map counts the items it read, whatever the batching."""

    execution_arn: str
    status: str
    started: datetime | None
    stopped: datetime | None = None
    run_input: dict = field(default_factory=dict)
    output: dict | None = None
    error: str | None = None
    cause: str | None = None
    map_run_arn: str | None = None
    total: int | None = None  # objects listed so far (the listing goes on while batches run)
    succeeded: int = 0
    failed: int = 0  # in batches that failed, timed out or were aborted after their retries
    running: int = 0
    pending: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def eta_seconds(self, now: datetime | None = None) -> float | None:
        """Time left at the rate so far, when the map has counted anything."""
        if self.finished or not self.total or not self.done or self.started is None:
            return None
        elapsed = ((now or datetime.now(UTC)) - self.started).total_seconds()
        return elapsed / self.done * (self.total - self.done)


def progress_from(execution: dict, map_run: dict | None) -> RunProgress:
    """RunProgress from a DescribeExecution response and, once the map has started, a
    DescribeMapRun response (boto3 shapes)."""
    output = execution.get("output")
    progress = RunProgress(
        execution_arn=execution["executionArn"],
        status=execution["status"],
        started=execution.get("startDate"),
        stopped=execution.get("stopDate"),
        run_input=json.loads(execution.get("input") or "{}"),
        output=json.loads(output) if output else None,
        error=execution.get("error"),
        cause=execution.get("cause"),
    )
    if map_run and map_run.get("itemCounts"):
        counts = map_run["itemCounts"]
        progress.map_run_arn = map_run.get("mapRunArn")
        progress.total = counts.get("total")
        progress.succeeded = counts.get("succeeded", 0)
        progress.failed = counts.get("failed", 0) + counts.get("timedOut", 0) + counts.get("aborted", 0)
        progress.running = counts.get("running", 0)
        progress.pending = counts.get("pending", 0)
    return progress


def run_progress(sfn, execution_arn: str) -> RunProgress:
    with translate_errors(f"describing {execution_arn}"):
        try:
            execution = sfn.describe_execution(executionArn=execution_arn)
        except sfn.exceptions.ExecutionDoesNotExist:
            raise NotFoundError(f"no execution {execution_arn!r}") from None
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        # One map state runs per execution; a redriven execution lists its one map run again.
        map_run = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]) if runs else None
    return progress_from(execution, map_run)


# ---- results ------------------------------------------------------------------------


@dataclass
class BatchRecord:
    """One child execution (one batch) as the ResultWriter recorded it."""

    status: str  # SUCCEEDED, FAILED, ...
    items: list[dict]  # the batch's input items
    output: dict | None  # what the batch function returned (SUCCEEDED)
    error: str | None = None
    cause: str | None = None


def _s3_json(s3, bucket: str, key: str):
    with translate_errors(f"reading s3://{bucket}/{key}", missing=f"S3 bucket {bucket!r} does not exist"):
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def results_manifest(s3, progress: RunProgress) -> dict:
    """The ResultWriter's manifest.json of a finished execution."""
    details = ((progress.output or {}).get("map") or {}).get("ResultWriterDetails")
    if not details:
        raise InvalidArgumentError(f"{progress.execution_arn} has written no results (status {progress.status})")
    return _s3_json(s3, details["Bucket"], details["Key"])


def read_results(s3, manifest: dict) -> Iterator[BatchRecord]:
    """Every batch the manifest lists, file by file: one file holds up to 5 GB of records."""
    bucket = manifest["DestinationBucket"]
    for status, files in (manifest.get("ResultFiles") or {}).items():
        for entry in files:
            for record in _s3_json(s3, bucket, entry["Key"]):
                batch_input = json.loads(record.get("Input") or "{}")
                output = record.get("Output")
                yield BatchRecord(
                    status=record.get("Status", status),
                    items=batch_input.get("Items", []),
                    output=json.loads(output) if output else None,
                    error=record.get("Error"),
                    cause=record.get("Cause"),
                )


@dataclass
class IngestSummary:
    objects: int = 0
    ingested_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # stored, duplicate, done earlier, skipped, ...
    failed: list[str] = field(default_factory=list)  # keys: permanent errors and failed batches
    failed_count: int = 0
    deferred: list[str] = field(default_factory=list)
    deferred_count: int = 0

    def add(self, outcome: str, key: str, size: int = 0) -> None:
        self.objects += 1
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome in INGESTED or outcome == "done earlier":
            self.ingested_bytes += size
        elif outcome in ("error", "failed batch"):
            self.failed_count += 1
            if len(self.failed) < LISTED_KEYS:
                self.failed.append(key)
        elif outcome == "deferred":
            self.deferred_count += 1
            if len(self.deferred) < LISTED_KEYS:
                self.deferred.append(key)

    def to_json(self) -> dict:
        return {
            "objects": self.objects,
            "ingested_bytes": self.ingested_bytes,
            "counts": self.counts,
            "failed_count": self.failed_count,
            "failed": self.failed,
            "deferred_count": self.deferred_count,
            "deferred": self.deferred,
        }


def _item_key(item: object) -> str:
    """The key of a listed or inventory item, as text whatever the item holds."""
    key = item.get("Key") if isinstance(item, dict) else None
    return key if isinstance(key, str) else "(an item without a key)"


def _result_size(entry: dict) -> int:
    """An entry's size, checked: the results are objects anyone holding the bucket can edit."""
    size = entry.get("size", 0)
    if type(size) is not int or size < 0:
        raise CorruptObjectError(
            f"the map's result for {str(entry.get('key'))!r:.200} has a size that is not a count of bytes: {size!r:.80}"
        )
    return size


def summarize_ingest(records: Iterator[BatchRecord]) -> IngestSummary:
    """Each object once, as its batch's last attempt reported it; an object that an earlier
    attempt (or run) ingested counts as "done earlier", not again as stored."""
    summary = IngestSummary()
    for record in records:
        if record.output is None:
            for item in record.items:
                summary.add("failed batch", _item_key(item))
            continue
        for entry in record.output.get("results", []):
            outcome = entry["outcome"]
            if entry.get("reason") == "replay" and entry.get("recorded") in INGESTED:
                outcome = "done earlier"
            summary.add(outcome, _item_key({"Key": entry.get("key")}), _result_size(entry))
    return summary


@dataclass
class MapScanReport(ScanReport):
    """A scan whose objects were read by the map: counts instead of the list of every object."""

    object_count: int = 0
    object_bytes: int = 0
    objects_read: int = 0
    not_read: list[dict] = field(default_factory=list)  # objects that failed, first LISTED_KEYS

    @property
    def total_bytes(self) -> int:
        return self.object_bytes

    def to_json(self) -> dict:
        figures = super().to_json()
        figures.update(objects=self.object_count, objects_read=self.objects_read, not_read=self.not_read)
        return figures


def _scanned(entry: dict, bucket: str) -> S3Object:
    modified = entry.get("last_modified")
    return S3Object(
        bucket,
        entry["key"],
        entry["size"],
        entry.get("etag"),
        entry.get("version_id"),
        last_modified=datetime.fromisoformat(modified) if modified else None,
    )


def reduce_scan(records: Iterator[BatchRecord], url: str, workdir: str | Path | None = None) -> MapScanReport:
    """Group the digests the map returned into groups of identical objects, as scan_bucket does.

    Records are spilled into 256 files by the digest's first byte, then each file is grouped
    on its own: memory holds one file's records, whatever the bucket's size."""
    bucket, _ = parse_s3_url(url)
    report = MapScanReport(url)
    with tempfile.TemporaryDirectory(prefix="chunkstore-scan-", dir=workdir) as spill:
        parts = {}
        with contextlib.ExitStack() as open_parts:
            for record in records:
                entries: list[dict[str, Any]] = (
                    record.output.get("results", [])
                    if record.output
                    else [
                        {"key": _item_key(item), "outcome": "failed batch", "error": record.error}
                        for item in record.items
                    ]
                )
                for entry in entries:
                    size = _result_size(entry)
                    report.object_count += 1
                    report.object_bytes += size
                    if entry["outcome"] == "read":
                        digest = entry.get("digest")
                        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                            raise CorruptObjectError(
                                f"the map's result for {str(entry.get('key'))!r:.200} has no "
                                f"digest of 64 hex digits: {str(entry.get('digest'))!r:.80}"
                            )
                        report.objects_read += 1
                        report.bytes_read += size
                        part = digest[:2]
                        if part not in parts:
                            parts[part] = open_parts.enter_context(open(Path(spill) / part, "w", encoding="utf-8"))
                        parts[part].write(json.dumps(entry) + "\n")
                    elif entry["outcome"] != "skipped" and len(report.not_read) < LISTED_KEYS:
                        report.not_read.append(entry)
        for part in sorted(parts):
            by_digest: dict[str, list[S3Object]] = defaultdict(list)
            with open(Path(spill) / part, encoding="utf-8") as handle:
                for line in handle:
                    entry = json.loads(line)
                    by_digest[entry["digest"]].append(_scanned(entry, bucket))
            for digest, same in by_digest.items():
                if len(same) > 1:
                    keep, *duplicates = sorted(same, key=keep_order)
                    report.groups.append(DuplicateGroup(digest, keep.size or 0, keep, duplicates))
    # The order scan_bucket reports them in: most bytes held by the group first.
    report.groups.sort(key=lambda group: (-group.size * (len(group.duplicates) + 1), group.digest))
    return report

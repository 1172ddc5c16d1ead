"""Distributed runs: starting and following an execution (Step Functions on the moto server),
progress from DescribeMapRun, and the results the map's ResultWriter leaves in S3.

moto's server accepts the state machine and starts, describes and stops executions, but runs
no state and answers ListMapRuns with [] and DescribeMapRun with {}: the progress computation
is tested on responses shaped as the API reference records them, and the results on files
shaped as the ResultWriter writes them, holding what the real batch handler returned."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chunkstore.apps.distributed import (
    progress_from,
    read_results,
    reduce_scan,
    results_manifest,
    run_input,
    run_progress,
    start_run,
    stepfunctions_client,
    summarize_ingest,
)
from chunkstore.apps.ingest.batch import handler
from chunkstore.apps.scan import scan_bucket
from chunkstore.errors import CorruptObjectError, IngestRetryError, InvalidArgumentError, NotFoundError
from support.aws_events import (
    ACCOUNT,
    EXECUTION,
    STARTED,
    ShrinkingTime,
    batch,
    finished_execution,
    lambda_context,
    listed_items,
    write_results,
)
from support.clirunner import random_bytes


def test_run_input_names_the_reader():
    assert run_input("ingest", "s3://bucket/photos/2024") == {
        "action": "ingest",
        "bucket": "bucket",
        "prefix": "photos/2024",
    }
    assert run_input("scan", "s3://bucket", "s3://inventory/bucket/all/2024-05-01T01-00Z/manifest.json")[
        "manifest"
    ] == {"bucket": "inventory", "key": "bucket/all/2024-05-01T01-00Z/manifest.json"}
    with pytest.raises(InvalidArgumentError):
        run_input("scan", "s3://bucket", "s3://inventory/bucket/data/part-0.csv.gz")
    with pytest.raises(InvalidArgumentError):
        run_input("delete", "s3://bucket")


def test_start_follow_and_stop_on_the_moto_server(state_machine):
    sfn = stepfunctions_client()
    arn = start_run(sfn, state_machine, "ingest", "s3://archive/2019")
    progress = run_progress(sfn, arn)
    assert (progress.status, progress.finished, progress.total) == ("RUNNING", False, None)
    assert progress.run_input == {"action": "ingest", "bucket": "archive", "prefix": "2019"}
    assert progress.eta_seconds() is None  # nothing counted yet
    sfn.stop_execution(executionArn=arn)
    assert run_progress(sfn, arn).status == "ABORTED" and run_progress(sfn, arn).finished
    with pytest.raises(NotFoundError):
        run_progress(sfn, arn.replace(arn.rsplit(":", 1)[1], "no-such-run"))


# DescribeMapRun as boto3 returns it (API reference shape).
MAP_RUN = {
    "mapRunArn": f"arn:aws:states:us-east-1:{ACCOUNT}:mapRun:cs-distributed/Listed:4c1b2f7e-1d2c-3a4b-8c9d",
    "executionArn": EXECUTION["executionArn"],
    "status": "RUNNING",
    "startDate": STARTED,
    "maxConcurrency": 200,
    "toleratedFailurePercentage": 1.0,
    "toleratedFailureCount": 0,
    "itemCounts": {
        "pending": 39_000_000,
        "running": 20_000,
        "succeeded": 10_950_000,
        "failed": 25_000,
        "timedOut": 4_000,
        "aborted": 1_000,
        "total": 50_000_000,
        "resultsWritten": 0,
        "failuresNotRedrivable": 0,
        "pendingRedrive": 0,
    },
    "executionCounts": {
        "pending": 390_000,
        "running": 200,
        "succeeded": 109_500,
        "failed": 300,
        "timedOut": 0,
        "aborted": 0,
        "total": 500_000,
        "resultsWritten": 0,
        "failuresNotRedrivable": 0,
        "pendingRedrive": 0,
    },
    "redriveCount": 0,
}


def test_progress_from_map_run_item_counts():
    progress = progress_from(EXECUTION, MAP_RUN)
    assert (progress.total, progress.succeeded, progress.failed, progress.running, progress.pending) == (
        50_000_000,
        10_950_000,
        30_000,
        20_000,
        39_000_000,
    )
    assert progress.done == 10_980_000 and not progress.finished
    # 10.98 M objects in 2 hours: the other 39.02 M take 7.1 hours more at that rate.
    eta = progress.eta_seconds(now=STARTED + timedelta(hours=2))
    assert eta == pytest.approx(2 * 3600 * 39_020_000 / 10_980_000)
    # Before the map starts there is no map run: no counts, no ETA.
    assert progress_from(EXECUTION, None).total is None
    failed = {
        **EXECUTION,
        "status": "FAILED",
        "stopDate": STARTED,
        "error": "States.ExceedToleratedFailureThreshold",
        "cause": "The specified tolerated failure threshold was exceeded",
    }
    finished = progress_from(failed, MAP_RUN)
    assert finished.finished and finished.eta_seconds() is None and finished.error.startswith("States.Exceed")


def test_ingest_results_count_each_object_once(lambda_env, clients, inbox, bucket):
    for number in range(6):
        clients.s3.put_object(
            Bucket=inbox, Key=f"k{number}", Body=random_bytes(50_000, number % 4)
        )  # k4, k5 copy k0, k1
    items = listed_items(clients, inbox)
    first, second = batch(items[:3], inbox), batch(items[3:], inbox)
    # The first batch's first attempt ran out of time after one object; its retry finished it.
    with pytest.raises(IngestRetryError):
        handler(first, ShrinkingTime(calls=2, after=5_000))
    attempts = [
        (first, handler(first, lambda_context())),
        (second, handler(second, lambda_context())),
        (batch([{"Key": "lost", "Size": 1, "Etag": '"x"'}], inbox), IngestRetryError("1 of 1")),
    ]
    map_output = write_results(clients, bucket, attempts)
    progress = progress_from(finished_execution(run_input("ingest", f"s3://{inbox}"), map_output), None)
    summary = summarize_ingest(read_results(clients.s3, results_manifest(clients.s3, progress)))
    assert summary.counts == {"done earlier": 1, "stored": 3, "duplicate": 2, "failed batch": 1}
    assert summary.objects == 7 and summary.ingested_bytes == 6 * 50_000
    assert summary.failed == ["lost"] and summary.failed_count == 1


def test_distributed_scan_groups_as_the_local_scan_does(clients, inbox, bucket):
    for number in range(8):
        clients.s3.put_object(Bucket=inbox, Key=f"photos/{number}.jpg", Body=random_bytes(20_000, number % 3))
    clients.s3.put_object(Bucket=inbox, Key="photos/other size.jpg", Body=random_bytes(30_000, 9))
    items = listed_items(clients, inbox, "photos/")
    attempts = [(batch(items[start : start + 4], inbox, "scan"), None) for start in range(0, len(items), 4)]
    attempts = [(event, handler(event, lambda_context())) for event, _ in attempts]
    map_output = write_results(clients, bucket, attempts)
    progress = progress_from(finished_execution(run_input("scan", f"s3://{inbox}/photos/"), map_output), None)
    distributed = reduce_scan(read_results(clients.s3, results_manifest(clients.s3, progress)), f"s3://{inbox}/photos/")
    local = scan_bucket(clients.s3, f"s3://{inbox}/photos/")
    assert distributed.to_json()["groups"] == local.to_json()["groups"]
    assert len(distributed.groups) == 3
    figures = distributed.to_json()
    assert (figures["objects"], figures["total_bytes"], figures["wasted_bytes"]) == (9, 190_000, 100_000)
    assert figures["objects_read"] == 9 and figures["not_read"] == []


def test_a_run_without_results_says_so(clients):
    progress = progress_from({**EXECUTION, "status": "ABORTED"}, None)
    with pytest.raises(InvalidArgumentError, match="has written no results"):
        results_manifest(clients.s3, progress)


# Only the first two characters named the spill file: "/t" was a file at the root.
@pytest.mark.parametrize("digest", ["/tmp/chunkstore-escape", "../" + "0" * 61, "A" * 64, None])
def test_a_scan_result_without_a_hex_digest_is_refused(clients, bucket, digest):
    """The results bucket may be edited by whoever holds it; a digest names a spill file."""
    entry = {"key": "photo.jpg", "outcome": "read", "size": 1, "digest": digest}
    map_output = write_results(clients, bucket, [(batch([], bucket, "scan"), {"results": [entry]})])
    progress = progress_from(finished_execution(run_input("scan", f"s3://{bucket}"), map_output), None)
    with pytest.raises(CorruptObjectError, match="64 hex digits"):
        reduce_scan(read_results(clients.s3, results_manifest(clients.s3, progress)), f"s3://{bucket}")


@pytest.mark.parametrize("action", ["scan", "ingest"])
@pytest.mark.parametrize("size", ["1", -1, None, 1.5])
def test_a_result_whose_size_is_not_a_count_of_bytes_is_refused(clients, bucket, action, size):
    entry = {"key": "photo.jpg", "outcome": "read" if action == "scan" else "stored", "size": size, "digest": "0" * 64}
    map_output = write_results(clients, bucket, [(batch([], bucket, action), {"results": [entry]})])
    progress = progress_from(finished_execution(run_input(action, f"s3://{bucket}"), map_output), None)
    records = read_results(clients.s3, results_manifest(clients.s3, progress))
    with pytest.raises(CorruptObjectError, match="not a count of bytes"):
        if action == "scan":
            reduce_scan(records, f"s3://{bucket}")
        else:
            summarize_ingest(records)

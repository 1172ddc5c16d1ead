"""The Lambda handler, called as a plain function with the events S3, SQS and EventBridge send,
against S3 and DynamoDB on the moto server."""

from __future__ import annotations

import pytest

from chunkstore.apps.ingest.ingestor import Ingestor, handler
from chunkstore.apps.ingest.ledger import IngestLedger
from chunkstore.errors import IngestRetryError, StoreWriteError
from support.aws_events import (
    emf_metrics,
    eventbridge_event,
    lambda_context,
    log_lines,
    put_object,
    s3_event,
    sqs_event,
)
from support.clirunner import random_bytes
from support.storechecks import get_bytes


def object_lines(captured: str) -> list[dict]:
    return [line for line in log_lines(captured) if "outcome" in line]


def test_new_file_then_duplicate_direct_events(lambda_env, clients, inbox, capsys):
    store = lambda_env
    first = put_object(clients, inbox, "uploads/report 2024.pdf", random_bytes(50_000, 1))
    handler(s3_event(first), lambda_context())
    lines = object_lines(capsys.readouterr().out)
    assert [line["outcome"] for line in lines] == ["stored"]
    line = lines[0]
    assert line["message"] == "File processed successfully"
    assert line["key"] == "uploads/report 2024.pdf" and line["size"] == 50_000 and line["new_bytes"] == 50_000
    assert line["service"] == "chunkstore-ingest" and line["level"] == "INFO"
    assert line["requests"]["s3"]["PutObject"] >= 1 and line["duration_ms"] > 0
    assert get_bytes(store, "uploads/report 2024.pdf") == random_bytes(50_000, 1)

    copy = put_object(clients, inbox, "uploads/copy.pdf", random_bytes(50_000, 1))
    result = handler(s3_event(copy), lambda_context())["results"][0]
    assert (result["outcome"], result["message"], result["duplicate_of"]) == (
        "duplicate",
        "Duplicate file detected",
        "uploads/report 2024.pdf",
    )
    assert result["new_bytes"] == 0
    metrics = emf_metrics(log_lines(capsys.readouterr().out))
    assert metrics["FilesProcessed"] == 1 and metrics["DuplicatesDetected"] == 1
    assert metrics["BytesIngested"] == 50_000 and metrics["BytesSaved"] == 50_000


def test_replayed_event_is_a_no_op(lambda_env, clients, inbox, ledger_table):
    store = lambda_env
    obj = put_object(clients, inbox, "a.bin", random_bytes(50_000, 2))
    event = s3_event(obj)
    assert handler(event, lambda_context())["results"][0]["outcome"] == "stored"
    again = handler(event, lambda_context())["results"][0]
    assert (again["outcome"], again["reason"]) == ("skipped", "replay")
    assert again["requests"]["s3"] == {"HeadObject": 1}  # nothing read, nothing written
    assert [record.version for record in store.list("a.bin", all_versions=True)] == [1]
    item = IngestLedger(clients, ledger_table).get(_found(obj))
    assert item["st"] == "done" and item["res"] == "stored"


def _found(obj):
    from chunkstore.apps.bucket import S3Object

    return S3Object(obj["bucket"], obj["key"])


def test_out_of_order_events_never_let_an_older_version_win(lambda_env, clients, inbox):
    store = lambda_env
    clients.s3.put_bucket_versioning(Bucket=inbox, VersioningConfiguration={"Status": "Enabled"})
    older = put_object(clients, inbox, "doc.txt", random_bytes(50_000, 3))
    newer = put_object(clients, inbox, "doc.txt", random_bytes(50_000, 4))
    assert older["version_id"] and older["version_id"] != newer["version_id"]
    assert handler(s3_event(newer), lambda_context())["results"][0]["outcome"] == "stored"
    late = handler(s3_event(older), lambda_context())["results"][0]
    assert (late["outcome"], late["reason"]) == ("skipped", "superseded")
    assert get_bytes(store, "doc.txt") == random_bytes(50_000, 4)
    assert len(list(store.list("doc.txt", all_versions=True))) == 1


def test_overwritten_object_without_versioning_is_left_to_its_own_event(lambda_env, clients, inbox):
    store = lambda_env
    older = put_object(clients, inbox, "doc.txt", random_bytes(50_000, 5))
    newer = put_object(clients, inbox, "doc.txt", random_bytes(50_000, 6))
    first = handler(s3_event(older), lambda_context())["results"][0]
    assert (first["outcome"], first["reason"]) == ("skipped", "superseded")
    assert handler(s3_event(newer), lambda_context())["results"][0]["outcome"] == "stored"
    assert get_bytes(store, "doc.txt") == random_bytes(50_000, 6)


def test_sqs_batch_of_test_event_malformed_missing_and_empty_objects(lambda_env, clients, inbox, capsys):
    good = put_object(clients, inbox, "ok.bin", random_bytes(50_000, 7))
    gone = put_object(clients, inbox, "gone.bin", random_bytes(50_000, 8))
    clients.s3.delete_object(Bucket=inbox, Key="gone.bin")
    empty = put_object(clients, inbox, "empty.bin", b"")
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-05-01T12:00:00.000Z",
        "Bucket": inbox,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    event = sqs_event(
        s3_event(good),
        test_event,
        "{not json",
        {"Records": [{"eventSource": "aws:s3"}]},
        s3_event(gone),
        s3_event(empty),
        {"unexpected": True},
    )
    assert handler(event, lambda_context()) == {"batchItemFailures": []}
    lines = object_lines(capsys.readouterr().out)
    outcomes = [(line["outcome"], line.get("reason")) for line in lines]
    assert outcomes[0] == ("stored", None)
    assert outcomes[1:3] == [("skipped", "test_event"), ("skipped", "malformed: the SQS message body is not JSON")]
    assert outcomes[3][1].startswith("malformed: S3 record without")
    assert outcomes[4:6] == [("skipped", "missing"), ("skipped", "empty")]
    assert outcomes[6][1].startswith("malformed")
    assert [line["level"] for line in lines if line.get("reason", "").startswith("malformed")] == ["WARNING"] * 3


def test_sqs_partial_batch_failure_names_only_the_failed_message_and_the_retry_succeeds(
    lambda_env, clients, inbox, monkeypatch, capsys
):
    good = put_object(clients, inbox, "fine.bin", random_bytes(50_000, 9))
    bad = put_object(clients, inbox, "flaky.bin", random_bytes(50_000, 10))
    real_put = Ingestor._put

    def failing_put(self, current, name, result):
        if name == "flaky.bin":
            raise StoreWriteError("storing a chunk of flaky.bin failed: injected")
        return real_put(self, current, name, result)

    monkeypatch.setattr(Ingestor, "_put", failing_put)
    event = sqs_event(s3_event(good), s3_event(bad))
    response = handler(event, lambda_context())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    errors = [line for line in object_lines(capsys.readouterr().out) if line["outcome"] == "error"]
    assert errors[0]["level"] == "ERROR" and "injected" in errors[0]["error"]

    monkeypatch.setattr(Ingestor, "_put", real_put)
    retried = sqs_event(s3_event(bad))
    retried["Records"][0]["messageId"] = event["Records"][1]["messageId"]
    assert handler(retried, lambda_context()) == {"batchItemFailures": []}
    assert get_bytes(lambda_env, "flaky.bin") == random_bytes(50_000, 10)


def test_direct_invocation_with_a_failure_raises_after_the_others(lambda_env, clients, inbox, monkeypatch):
    good = put_object(clients, inbox, "one.bin", random_bytes(50_000, 11))
    bad = put_object(clients, inbox, "two.bin", random_bytes(50_000, 12))
    monkeypatch.setattr(Ingestor, "_put", lambda *args: (_ for _ in ()).throw(StoreWriteError("injected")))
    with pytest.raises(IngestRetryError, match="2 of 2"):
        handler(s3_event(good, bad), lambda_context())


def test_eventbridge_event_direct_and_through_sqs(lambda_env, clients, inbox):
    first = put_object(clients, inbox, "eb/a b+c.csv", random_bytes(50_000, 13))
    result = handler(eventbridge_event(first), lambda_context())["results"][0]
    assert (result["outcome"], result["key"]) == ("stored", "eb/a b+c.csv")
    second = put_object(clients, inbox, "eb/copy.csv", random_bytes(50_000, 13))
    assert handler(sqs_event(eventbridge_event(second)), lambda_context()) == {"batchItemFailures": []}
    assert [record.name for record in lambda_env.list("eb")] == ["eb/a b+c.csv", "eb/copy.csv"]


def test_delete_after_ingest_removes_the_inbox_object_once_committed(lambda_env, clients, inbox, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_DELETE_AFTER_INGEST", "true")
    obj = put_object(clients, inbox, "to-delete.bin", random_bytes(50_000, 14))
    result = handler(s3_event(obj), lambda_context())["results"][0]
    assert result["outcome"] == "stored" and result["deleted"] is True
    assert clients.s3.list_objects_v2(Bucket=inbox).get("KeyCount") == 0
    assert get_bytes(lambda_env, "to-delete.bin") == random_bytes(50_000, 14)


def test_a_failed_put_leaves_the_inbox_object_in_place(lambda_env, clients, inbox, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_DELETE_AFTER_INGEST", "true")
    monkeypatch.setattr(Ingestor, "_put", lambda *args: (_ for _ in ()).throw(StoreWriteError("injected")))
    obj = put_object(clients, inbox, "kept.bin", random_bytes(50_000, 15))
    assert handler(sqs_event(s3_event(obj)), lambda_context())["batchItemFailures"]
    assert clients.s3.list_objects_v2(Bucket=inbox)["KeyCount"] == 1


def test_object_over_the_size_cap_is_deferred_to_the_batch_path(lambda_env, clients, inbox, ledger_table, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_INGEST_MAX_BYTES", "40000")
    big = put_object(clients, inbox, "big.bin", random_bytes(60_000, 16))
    small = put_object(clients, inbox, "small.bin", random_bytes(10_000, 17))
    results = handler(s3_event(big, small), lambda_context())["results"]
    assert [result["outcome"] for result in results] == ["deferred", "stored"]
    assert "chunkstore ingest" in results[0]["message"]
    ledger = IngestLedger(clients, ledger_table)
    assert ledger.get(_found(big))["st"] == "deferred"
    assert handler(s3_event(big), lambda_context())["results"][0]["reason"] == "replay"

    # The batch path: no size cap, takes the deferred object and skips what is done.
    from chunkstore.apps.ingest.ingestor import IngestSettings

    ingestor = Ingestor(lambda_env, IngestSettings(lambda_env.url, ledger_table=ledger_table))
    outcomes = {result.key: (result.outcome, result.reason) for result in ingestor.ingest_listing(f"s3://{inbox}")}
    assert outcomes == {"big.bin": ("stored", ""), "small.bin": ("skipped", "replay")}
    assert ledger.get(_found(big))["st"] == "done"
    assert get_bytes(lambda_env, "big.bin") == random_bytes(60_000, 16)


def test_object_that_does_not_fit_the_time_left_is_deferred(lambda_env, clients, inbox):
    obj = put_object(clients, inbox, "slow.bin", random_bytes(100_000, 18))
    # 100 kB at the assumed 20 MB/s needs 5 ms; 10.004 s left leaves 4 ms after the safety margin.
    result = handler(s3_event(obj), lambda_context(remaining_ms=10_004))["results"][0]
    assert result["outcome"] == "deferred"


def test_an_invocation_about_to_time_out_takes_no_new_object(lambda_env, clients, inbox):
    obj = put_object(clients, inbox, "late.bin", random_bytes(50_000, 19))
    response = handler(sqs_event(s3_event(obj)), lambda_context(remaining_ms=2_000))
    assert len(response["batchItemFailures"]) == 1


def test_missing_configuration_fails_with_one_clear_error(monkeypatch, moto_endpoint):
    monkeypatch.delenv("CHUNKSTORE_STORE", raising=False)
    with pytest.raises(Exception, match="CHUNKSTORE_STORE is not set"):
        handler({"Records": []}, lambda_context())

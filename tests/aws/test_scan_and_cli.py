"""`chunkstore scan` and `chunkstore ingest` on moto buckets, run as the real command."""

from __future__ import annotations

import csv
import json
import random
from html.parser import HTMLParser

import pytest

from chunkstore.apps.scan import scan_bucket
from support.aws_events import put_object
from support.clirunner import run_command


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def planted(clients, inbox) -> dict:
    """Three identical copies of A, two of B, same-size-but-different C and C', unique D, an empty object."""
    a, b = blob(1, 40_000), blob(2, 25_000)
    objects = {
        "a/1.bin": a,
        "a/2.bin": a,
        "x/a-copy.bin": a,
        "b/one": b,
        "b/two": b,
        "c/first": blob(3, 40_000),
        "c/second": blob(4, 40_000),
        "d/unique": blob(5, 33_333),
        "empty": b"",
    }
    for key, body in objects.items():
        put_object(clients, inbox, key, body)
    return objects


def test_scan_finds_exactly_the_planted_duplicates(clients, inbox, planted):
    report = scan_bucket(clients.s3, f"s3://{inbox}")
    groups = sorted(sorted([group.keep.key, *(dup.key for dup in group.duplicates)]) for group in report.groups)
    assert groups == [["a/1.bin", "a/2.bin", "x/a-copy.bin"], ["b/one", "b/two"]]
    assert report.wasted_bytes == 2 * 40_000 + 25_000
    # Only the sizes shared by several objects were read: never d/unique (nor the empty object).
    assert "d/unique" not in report.digests and "empty" not in report.digests
    assert report.to_json()["wasted_usd_per_month"] == pytest.approx(105_000 / 1e9 * 0.023)
    assert {found.key for found in report.unique_objects()} == {"a/1.bin", "b/one", "c/first", "c/second", "d/unique"}


def test_chunk_level_measures_what_chunking_would_save_besides(clients, inbox):
    base = blob(6, 200_000)
    put_object(clients, inbox, "v1", base)
    put_object(clients, inbox, "v2", base[:100_000] + b"edited" + base[100_000:])
    report = scan_bucket(
        clients.s3,
        f"s3://{inbox}",
        chunk_level=True,
        chunker=__import__("chunkstore").ChunkerSpec.from_average(avg_size=4096),
    )
    assert report.groups == []
    figures = report.chunk_level
    assert figures["unique_file_bytes"] == 400_006
    # Two versions that differ in one place: chunking keeps little more than one copy.
    assert 150_000 < figures["additional_saving_bytes"] < 200_000


def test_scan_reports_in_every_format(clients, inbox, planted, tmp_path):
    out = run_command("scan", f"s3://{inbox}", "--report", str(tmp_path / "r.json")).stdout.decode()
    assert "2 groups of identical objects, 3 duplicates" in out
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["duplicate_groups"] == 2 and document["wasted_bytes"] == 105_000

    run_command("-q", "scan", f"s3://{inbox}/a", "--report", str(tmp_path / "r.csv"))
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(row["role"], row["key"]) for row in rows] == [("keep", "a/1.bin"), ("duplicate", "a/2.bin")]

    run_command("scan", f"s3://{inbox}", "--report", str(tmp_path / "r.html"), "--chunk-level", "--avg-size", "4K")
    cells = []

    class Cells(HTMLParser):
        def handle_data(self, data):
            cells.append(data.strip())

    Cells().feed((tmp_path / "r.html").read_text())
    assert "x/a-copy.bin" in cells and "Chunk-level dedup would save besides" in cells

    as_json = json.loads(run_command("scan", f"s3://{inbox}", "--json").stdout)
    assert as_json["duplicate_objects"] == 3


def test_delete_duplicates_is_a_dry_run_without_yes(clients, inbox, planted, tmp_path):
    out = run_command("scan", f"s3://{inbox}", "--delete-duplicates", cwd=tmp_path).stdout.decode()
    assert "dry run: would delete 3 objects" in out
    assert clients.s3.list_objects_v2(Bucket=inbox)["KeyCount"] == len(planted)
    assert not list(tmp_path.iterdir())


def test_delete_duplicates_with_yes_keeps_one_copy_and_writes_a_manifest(clients, inbox, planted, tmp_path):
    manifest = tmp_path / "removed.jsonl"
    run_command("scan", f"s3://{inbox}", "--delete-duplicates", "--yes", "--manifest", str(manifest))
    left = {entry["Key"] for entry in clients.s3.list_objects_v2(Bucket=inbox)["Contents"]}
    assert left == set(planted) - {"a/2.bin", "x/a-copy.bin", "b/two"}
    removed = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {(entry["key"], entry["kept_key"]) for entry in removed} == {
        ("a/2.bin", "a/1.bin"),
        ("x/a-copy.bin", "a/1.bin"),
        ("b/two", "b/one"),
    }
    assert all(entry["outcome"] == "deleted" and entry["digest"] for entry in removed)


def test_a_duplicate_changed_after_the_scan_is_not_deleted(clients, inbox, planted, tmp_path):
    from chunkstore.apps.scan import delete_duplicates

    report = scan_bucket(clients.s3, f"s3://{inbox}")
    clients.s3.put_object(Bucket=inbox, Key="b/two", Body=b"new content")
    removals = delete_duplicates(clients.s3, report, dry_run=False, manifest=tmp_path / "m.jsonl")
    outcomes = {removal.found.key: removal.outcome for removal in removals}
    assert outcomes["b/two"].startswith("kept")
    assert clients.s3.get_object(Bucket=inbox, Key="b/two")["Body"].read() == b"new content"


def test_scan_import_into_stores_each_distinct_content_once(clients, inbox, planted, s3_store):
    out = run_command("scan", f"s3://{inbox}", "--import-into", s3_store.url).stdout.decode()
    assert "imported into" in out and "5 stored" in out
    names = sorted(record.name for record in s3_store.list())
    assert names == ["a/1.bin", "b/one", "c/first", "c/second", "d/unique"]


def test_ingest_command_backfills_a_bucket(clients, inbox, planted, s3_store):
    out = run_command("ingest", f"s3://{inbox}", "--store", s3_store.url).stdout.decode()
    assert "a/1.bin: File processed successfully" in out
    assert "a/2.bin: Duplicate file detected (duplicate of a/1.bin)" in out
    assert "empty: skipped" in out
    lines = [
        json.loads(line)
        for line in run_command(
            "--store", s3_store.url, "ingest", f"s3://{inbox}/b", "--log-format", "json"
        ).stdout.splitlines()
    ]
    assert [(line["key"], line["outcome"], line["duplicate_of"]) for line in lines] == [
        ("b/one", "duplicate", "b/one"),
        ("b/two", "duplicate", "b/two"),
    ]  # already stored: each its own
    assert all(line["service"] == "chunkstore-ingest" and "requests" in line for line in lines)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("scan", "bucket-without-scheme"), 2, "s3://BUCKET"),
        (("scan", "s3://x", "--report", "out.pdf"), 2, ".json, .csv or .html"),
        (("scan", "s3://x", "--yes"), 2, "--yes goes with --delete-duplicates"),
        (("ingest", "s3://"), 2, "s3://BUCKET"),
    ],
)
def test_bad_input_is_one_clear_error(args, code, message):
    done = run_command(*args, expect=code)
    assert message in done.stderr.decode()


def test_missing_bucket_is_not_found(moto_endpoint):
    done = run_command("scan", "s3://chunkstore-test-no-such-bucket", expect=3)
    assert done.stderr.decode().strip() == "chunkstore: S3 bucket 'chunkstore-test-no-such-bucket' does not exist"

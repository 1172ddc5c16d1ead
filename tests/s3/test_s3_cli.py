"""The `chunkstore` command on s3:// stores, run as a subprocess against the moto server."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from chunkstore.core.config import CHUNK_KEY_PREFIX
from support.clirunner import (
    TEST_AVG_SIZE,
    Chunkstore,
    assert_one_error,
    assert_usage_error,
    random_bytes,
    text_bytes,
    write,
)
from support.s3helpers import unique_name


@pytest.fixture
def s3_cli(tmp_path, moto_endpoint, clients) -> Chunkstore:
    """A runner whose store is s3://BUCKET/backups with its catalog in TABLE (neither exists yet)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    runner = Chunkstore(f"s3://{unique_name('bucket')}/backups", workdir)
    runner.table = unique_name("table")
    runner.clients = clients
    return runner


def bucket_of(runner: Chunkstore) -> str:
    return runner.store[len("s3://") :].split("/")[0]


def chunk_object_keys(runner: Chunkstore) -> list[str]:
    listing = runner.clients.s3.list_objects_v2(Bucket=bucket_of(runner), Prefix=f"backups/{CHUNK_KEY_PREFIX}")
    return [entry["Key"] for entry in listing.get("Contents", ())]


def test_every_command_on_an_s3_store(s3_cli, tmp_path):
    run = s3_cli("init", "--format", "1", "--table", s3_cli.table, "--create", "--avg-size", TEST_AVG_SIZE)
    assert run.out.startswith(f"created store at {s3_cli.store} ") and f"DynamoDB table {s3_cli.table}" in run.out
    tree = s3_cli.workdir / "data"
    report = write(tree / "report.txt", text_bytes(150_000, seed=1))
    image = write(tree / "sub" / "image.bin", random_bytes(60_000, seed=2))
    shutil.copyfile(report, tree / "copy.txt")
    os.chmod(image, 0o600)

    put = s3_cli.json("put", "data", "--json")
    # Files are put in name order: copy.txt comes first and report.txt is its duplicate.
    assert [(result["name"], result["outcome"], result["duplicate_of"]) for result in put["results"]] == [
        ("data/copy.txt", "stored", None),
        ("data/report.txt", "duplicate", "data/copy.txt"),
        ("data/sub/image.bin", "stored", None),
    ]
    # Two new chunk objects at least (the duplicate writes none), plus the config read.
    assert put["requests"]["s3"]["PutObject"] >= 2 and put["requests"]["s3"]["GetObject"] == 1
    assert s3_cli("put", "data/report.txt").out == "data/report.txt: unchanged\n"
    assert [entry["name"] for entry in s3_cli.json("ls", "data", "--json")] == [
        "data/copy.txt",
        "data/report.txt",
        "data/sub/image.bin",
    ]
    assert s3_cli("get", "data/sub/image.bin").stdout == image.read_bytes()

    s3_cli("restore", "data", "-o", tmp_path / "restored")
    restored = tmp_path / "restored" / "data"
    assert (restored / "report.txt").read_bytes() == report.read_bytes()
    assert (restored / "sub" / "image.bin").read_bytes() == image.read_bytes()
    assert (restored / "sub" / "image.bin").stat().st_mode & 0o777 == 0o600
    assert (restored / "copy.txt").stat().st_mtime_ns == (tree / "copy.txt").stat().st_mtime_ns

    figures = s3_cli.json("stats", "--json")
    assert (figures["files"], figures["versions"]) == (3, 3)
    assert figures["logical_bytes"] == 2 * 150_000 + 60_000
    assert figures["dedup_ratio"] > 1
    assert figures["requests"]["s3"] == {"GetObject": 1}  # the config; the rest is DynamoDB
    assert figures["requests"]["dynamodb"]["Scan"] >= 1
    assert figures["cost_estimate"]["chunk_objects_per_gb"] > 0
    text = s3_cli("stats").out
    assert "cost:" in text and "requests:" in text

    objects_before = len(chunk_object_keys(s3_cli))
    assert s3_cli("rm", "data/sub/image.bin").out == "removed data/sub/image.bin (version 1)\n"
    gc = s3_cli.json("gc", "--json")
    assert gc["chunks_deleted"] > 0 and gc["orphans_deleted"] == 0
    assert gc["requests"]["s3"]["DeleteObject"] >= gc["chunks_deleted"]
    assert len(chunk_object_keys(s3_cli)) == objects_before - gc["chunks_deleted"]
    assert s3_cli("verify", "--read-data").out.startswith("ok: 2 versions, 1 contents")
    assert s3_cli("get", "data/copy.txt").stdout == report.read_bytes()


def test_init_options_and_their_errors(s3_cli, tmp_path):
    assert_usage_error(s3_cli("init", expect=2), "--table")
    local = Chunkstore(tmp_path / "local", s3_cli.workdir)
    assert_usage_error(local("init", "--table", "some-table", expect=2), "only to s3://")
    assert_usage_error(local("init", "--create", expect=2), "only to s3://")
    missing = s3_cli("init", "--table", s3_cli.table, expect=3)
    assert_one_error(missing, "S3 bucket", bucket_of(s3_cli), "does not exist", "--create")
    s3_cli("init", "--table", s3_cli.table, "--create")
    table = s3_cli.clients.dynamodb.describe_table(TableName=s3_cli.table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    config = s3_cli.clients.s3.get_object(Bucket=bucket_of(s3_cli), Key="backups/config")["Body"].read()
    assert json.loads(config)["catalog"] == {"type": "dynamodb", "table": s3_cli.table}
    assert_one_error(s3_cli("init", "--table", s3_cli.table, "--create", expect=1), "already exists")
    other_prefix = Chunkstore(f"s3://{bucket_of(s3_cli)}/other", s3_cli.workdir)
    assert_one_error(
        other_prefix("init", "--table", s3_cli.table, expect=1), "already holds the catalog of", s3_cli.store
    )


def test_a_missing_bucket_or_table_is_not_found(s3_cli):
    assert_one_error(s3_cli("ls", expect=3), "S3 bucket", "does not exist")
    s3_cli("init", "--table", s3_cli.table, "--create")
    s3_cli.clients.dynamodb.delete_table(TableName=s3_cli.table)
    assert_one_error(s3_cli("ls", expect=3), f"DynamoDB table '{s3_cli.table}' does not exist")


def test_a_deleted_chunk_object_fails_get_and_verify_naming_the_file(s3_cli, tmp_path):
    s3_cli("init", "--format", "1", "--table", s3_cli.table, "--create", "--avg-size", TEST_AVG_SIZE)
    write(s3_cli.workdir / "precious.bin", random_bytes(50_000, seed=3))
    s3_cli("put", "precious.bin")
    victim = chunk_object_keys(s3_cli)[0]
    s3_cli.clients.s3.delete_object(Bucket=bucket_of(s3_cli), Key=victim)
    failed = s3_cli("get", "precious.bin", "-o", tmp_path / "out.bin", expect=4)
    assert_one_error(failed, "precious.bin", "missing")
    assert not (tmp_path / "out.bin").exists()
    verify = s3_cli("verify", expect=4)
    assert "missing-object" in verify.err and "precious.bin@1" in verify.err and victim.rsplit("/", 1)[1] in verify.err

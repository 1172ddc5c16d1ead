"""Ingest reads any object in bounded memory. Measured in a child process, which holds none of
the moto server's own copies of the data (that server runs inside the test process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from support.aws_events import s3_event


def run_child(code: str) -> dict:
    # The child imports the tests' support package.
    folders = [os.path.dirname(os.path.dirname(__file__)), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(folder for folder in folders if folder)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def upload_stream(clients, bucket: str, key: str, size: int) -> None:
    """A size-byte object of incompressible data, uploaded in parts (never whole in memory)."""
    block = os.urandom(8 * 1024 * 1024)
    upload = clients.s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts, number, left = [], 1, size
    while left:
        body = block[: min(left, len(block))]
        etag = clients.s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
        number, left = number + 1, left - len(body)
    clients.s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )


def test_object_reader_holds_only_its_parts_in_flight(clients, inbox):
    size = 48 * 1024 * 1024
    upload_stream(clients, inbox, "big.bin", size)
    figures = run_child(f"""
        import json, tracemalloc
        from chunkstore.backends.aws import AwsClients
        from chunkstore.apps.bucket import ObjectReader, S3Object, head_object
        s3 = AwsClients().s3
        found = head_object(s3, S3Object({inbox!r}, "big.bin"))
        tracemalloc.start()
        total = 0
        with ObjectReader(s3, found, part_size=1024 * 1024, parallel_parts=2) as reader:
            while block := reader.read(256 * 1024):
                total += len(block)
        print(json.dumps({{"total": total, "peak": tracemalloc.get_traced_memory()[1]}}))
    """)
    assert figures["total"] == size
    # Two 1 MiB parts in flight and one being read, plus the HTTP layer's buffers.
    assert figures["peak"] < 8 * 1024 * 1024, figures


@pytest.mark.slow
def test_handler_ingests_an_object_far_larger_than_its_memory(clients, inbox, ledger_table, monkeypatch):
    bucket = f"{inbox}-store"
    clients.s3.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/store"
    Store.init(
        url,
        ChunkerSpec.from_average(avg_size=1024 * 1024),
        CompressionSpec.parse("none"),
        table=f"{ledger_table}-catalog",
        create=True,
    ).close()
    size = 640 * 1024 * 1024
    upload_stream(clients, inbox, "huge.bin", size)
    head = clients.s3.head_object(Bucket=inbox, Key="huge.bin")
    obj = {
        "bucket": inbox,
        "key": "huge.bin",
        "size": size,
        "etag": head["ETag"].strip('"'),
        "version_id": None,
        "sequencer": "0055AE1D0C1E5E9999",
    }
    monkeypatch.setenv("CHUNKSTORE_STORE", url)
    monkeypatch.setenv("CHUNKSTORE_INGEST_TABLE", ledger_table)
    figures = run_child(f"""
        import json, tracemalloc
        from support.aws_events import lambda_context
        from chunkstore.apps.ingest.ingestor import handler

        def peak_rss_kib():
            # VmHWM starts afresh with the new program; ru_maxrss would carry the test process's over.
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        tracemalloc.start()
        response = handler({json.dumps(s3_event(obj))}, lambda_context())
        print(json.dumps({{"outcome": response["results"][0]["outcome"], "peak": tracemalloc.get_traced_memory()[1],
                          "rss_kib": peak_rss_kib()}}))
    """)
    assert figures["outcome"] == "stored"
    # The reader's 32 MiB and put's ~40 MiB of buffers, whatever the object's size.
    assert figures["peak"] < 160 * 1024 * 1024, figures
    assert figures["rss_kib"] * 1024 < size / 2, figures

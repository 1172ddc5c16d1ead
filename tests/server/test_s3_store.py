"""The server over an s3:// store (S3 and DynamoDB on a local moto server, reached over HTTP)."""

from __future__ import annotations

import logging
import random
import uuid

import pytest

from .serverprocess import ServerProcess, run_chunkstore

moto_server = pytest.importorskip("moto.server", reason="moto is not installed (it is in the test extra)")


@pytest.fixture
def aws_environment(tmp_path):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    nowhere = str(tmp_path / "no-aws-config")
    yield {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_ENDPOINT_URL_DYNAMODB": None,
    }
    moto.stop()


def test_upload_duplicate_range_and_delete_on_s3(aws_environment, tmp_path):
    suffix = uuid.uuid4().hex[:12]
    url = f"s3://chunkstore-serve-{suffix}/store"
    created = run_chunkstore(
        "--store",
        url,
        "init",
        "--table",
        f"chunkstore-serve-{suffix}",
        "--create",
        "--avg-size",
        "4K",
        env=aws_environment,
    )
    assert created.returncode == 0, created.stderr
    server = ServerProcess(url, (), aws_environment, log_path=tmp_path / "serve.log").start()
    data = random.Random(3).randbytes(120_000)
    try:
        with server.client() as client:
            first = client.post("/files", params={"name": "s3/a.bin"}, content=data).json()
            second = client.post("/files", params={"name": "s3/b.bin"}, content=data).json()
            whole = client.get("/files/s3/a.bin").content
            part = client.get("/files/s3/b.bin", headers={"Range": "bytes=5000-70000"})
            removed = client.delete("/files/s3/a.bin")
            names = [entry["name"] for entry in client.get("/files").json()["files"]]
            stats = client.get("/stats").json()
    finally:
        server.stop()
    assert first["outcome"] == "stored" and second["outcome"] == "duplicate" and second["duplicate_of"] == "s3/a.bin"
    assert whole == data
    assert part.status_code == 206 and part.content == data[5000:70001]
    assert removed.status_code == 200 and names == ["s3/b.bin"]
    assert stats["files"] == 1 and stats["logical_bytes"] == len(data)

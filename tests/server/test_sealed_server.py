"""The API over an encrypted store that seals its metadata (in this process): uploads, duplicates,
listing by prefix, downloads, ranges and removal answer as over a plain store, and the catalog
file names none of the files."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.apps.server import ServerSettings, create_app
from chunkstore.backends.registry import LOCAL_CATALOG_FILE
from chunkstore.core import crypto

PASSPHRASE = b"server passphrase"


@pytest.fixture
def sealed_store(tmp_path, monkeypatch):
    # The key derivation's cost changes no code path.
    monkeypatch.setattr(crypto, "DEFAULT_KDF", {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1})
    with Store.init(
        str(tmp_path / "store"),
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        passphrase=PASSPHRASE,
    ) as store:
        assert store.metadata_cipher is not None
        yield store


def test_the_api_answers_as_over_a_plain_store(sealed_store, tmp_path):
    client = TestClient(create_app(sealed_store, ServerSettings()), base_url="http://127.0.0.1:8080")
    data = random.Random(1).randbytes(300_000)
    first = client.post("/files", params={"name": "contracts/acme-renewal.pdf"}, content=data)
    assert first.status_code == 200 and first.json()["outcome"] == "stored", first.text
    again = client.post("/files", params={"name": "contracts/acme-signed.pdf"}, content=data)
    assert again.json()["outcome"] == "duplicate"
    client.post("/files", params={"name": "notes.txt"}, content=b"short")
    listed = client.get("/files", params={"prefix": "contracts"}).json()["files"]
    assert [entry["name"] for entry in listed] == ["contracts/acme-renewal.pdf", "contracts/acme-signed.pdf"]
    assert client.get("/files/contracts/acme-signed.pdf").content == data
    ranged = client.get("/files/contracts/acme-renewal.pdf", headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206 and ranged.content == data[1000:2000]
    assert client.get("/files/contracts/missing.pdf").status_code == 404
    assert client.delete("/files/notes.txt").status_code == 200
    assert [entry["name"] for entry in client.get("/files").json()["files"]] == [
        "contracts/acme-renewal.pdf",
        "contracts/acme-signed.pdf",
    ]
    catalog = b"".join(path.read_bytes() for path in (tmp_path / "store").glob(f"{LOCAL_CATALOG_FILE}*"))
    for secret in (b"contracts", b"acme", b"notes.txt"):
        assert secret not in catalog

"""The API against a real `chunkstore serve` process over HTTP (no tokens: loopback, full access)."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from chunkstore import Store
from chunkstore.core.config import chunk_key
from chunkstore.operations.read import iter_recipe

from .serverprocess import ServerProcess, init_store, run_chunkstore


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/files", params={"name": name}, content=data)


def test_upload_reports_stored_then_duplicate(server):
    data = payload(300_000, 1)
    with server.client() as client:
        first = upload(client, "docs/report.bin", data)
        again = upload(client, "copies/report.bin", data)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "name": "docs/report.bin",
        "version": 1,
        "outcome": "stored",
        "message": "File processed successfully",
        "duplicate_of": None,
        "size": len(data),
        "new_bytes": len(data),
    }
    assert again.json() == {
        "name": "copies/report.bin",
        "version": 1,
        "outcome": "duplicate",
        "message": "Duplicate file detected",
        "duplicate_of": "docs/report.bin",
        "size": len(data),
        "new_bytes": 0,
    }


def test_upload_streams_a_body_of_unknown_length(server):
    pieces = [payload(70_000, seed) for seed in range(5)]
    with server.client() as client:
        # A generator body is sent with chunked transfer encoding: no Content-Length.
        response = client.post("/files", params={"name": "stream.bin"}, content=iter(pieces))
        assert response.json()["size"] == sum(map(len, pieces))
        assert client.get("/files/stream.bin").content == b"".join(pieces)


def test_names_are_normalised_and_invalid_ones_refused(server):
    with server.client() as client:
        assert upload(client, "/abs//./x.txt", b"x").json()["name"] == "abs/x.txt"
        for bad in ("../escape", "a/../../b", "", "a\x00b"):
            response = upload(client, bad, b"data")
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["code"] == "invalid_argument"
        names = [entry["name"] for entry in client.get("/files").json()["files"]]
    assert names == ["abs/x.txt"]


def test_list_with_prefix_and_versions(server):
    with server.client() as client:
        upload(client, "data/a", b"one")
        upload(client, "data/a", b"two")
        upload(client, "data/b", b"bee")
        upload(client, "database", b"not under data")
        latest = client.get("/files", params={"prefix": "data"}).json()["files"]
        every = client.get("/files", params={"prefix": "data", "versions": "true"}).json()["files"]
    assert [(entry["name"], entry["version"], entry["size"]) for entry in latest] == [
        ("data/a", 2, 3),
        ("data/b", 1, 3),
    ]
    assert [(entry["name"], entry["version"]) for entry in every] == [("data/a", 1), ("data/a", 2), ("data/b", 1)]
    assert every[0]["digest"] != every[1]["digest"]


def test_download_latest_and_older_versions(server):
    old, new = payload(50_000, 2), payload(60_000, 3)
    with server.client() as client:
        upload(client, "f.bin", old)
        upload(client, "f.bin", new)
        latest = client.get("/files/f.bin")
        first = client.get("/files/f.bin", params={"version": 1})
        missing_version = client.get("/files/f.bin", params={"version": 9})
    assert latest.content == new and first.content == old
    assert latest.headers["content-length"] == str(len(new))
    assert latest.headers["accept-ranges"] == "bytes"
    assert "filename*=UTF-8''f.bin" in latest.headers["content-disposition"]
    assert missing_version.status_code == 404 and missing_version.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "header, expected_slice",
    [
        ("bytes=0-0", slice(0, 1)),
        ("bytes=1000-99999", slice(1000, 100000)),  # starts and ends inside chunks, spans many
        ("bytes=150000-", slice(150000, None)),
        ("bytes=-777", slice(-777, None)),
        ("bytes=199990-500000", slice(199990, None)),  # an end past the file is cut to the file
    ],
)
def test_range_requests(server, header, expected_slice):
    data = payload(200_000, 4)
    with server.client() as client:
        upload(client, "r.bin", data)
        response = client.get("/files/r.bin", headers={"Range": header})
    expected = data[expected_slice]
    assert response.status_code == 206
    assert response.content == expected
    start = expected_slice.start if expected_slice.start >= 0 else len(data) + expected_slice.start
    assert response.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"


def test_unsatisfiable_and_ignored_ranges(server):
    data = payload(10_000, 5)
    with server.client() as client:
        upload(client, "r.bin", data)
        beyond = client.get("/files/r.bin", headers={"Range": "bytes=10000-"})
        several = client.get("/files/r.bin", headers={"Range": "bytes=0-1,5-6"})
        malformed = client.get("/files/r.bin", headers={"Range": "bytes=abc"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */10000"
    assert beyond.json()["code"] == "range_not_satisfiable"
    assert several.status_code == 200 and several.content == data
    assert malformed.status_code == 200 and malformed.content == data


def test_empty_file(server):
    with server.client() as client:
        result = upload(client, "empty", b"").json()
        response = client.get("/files/empty")
    assert result["outcome"] == "stored" and result["size"] == 0
    assert response.status_code == 200 and response.content == b""


def test_delete_all_versions_or_one(server):
    with server.client() as client:
        upload(client, "d/x", b"1")
        upload(client, "d/x", b"22")
        one = client.delete("/files/d/x", params={"version": 1})
        assert [entry["version"] for entry in one.json()["removed"]] == [1]
        assert client.get("/files/d/x").content == b"22"
        everything = client.delete("/files/d/x")
        assert [entry["version"] for entry in everything.json()["removed"]] == [2]
        gone = client.get("/files/d/x")
        again = client.delete("/files/d/x")
        folder = client.delete("/files/d")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert again.status_code == 404
    assert folder.status_code == 404


def test_stats_and_activity(server):
    data = payload(100_000, 6)
    with server.client() as client:
        upload(client, "a", data)
        upload(client, "b", data)
        client.delete("/files/b")
        stats = client.get("/stats").json()
        activity = client.get("/activity").json()["entries"]
        health = client.get("/healthz").json()
    assert stats["files"] == 1 and stats["versions"] == 1
    assert stats["logical_bytes"] == len(data) and stats["unique_bytes"] == len(data)
    assert stats["stored_bytes"] > 0 and stats["dedup_ratio"] == 1.0
    assert [(entry["action"], entry["name"], entry["outcome"]) for entry in activity] == [
        ("delete", "b", "deleted"),
        ("upload", "b", "duplicate"),
        ("upload", "a", "stored"),
    ]
    assert activity[1]["message"] == "Duplicate file detected" and activity[1]["duplicate_of"] == "a"
    assert health["status"] == "ok"


def test_unknown_routes_and_methods_answer_json(server):
    with server.client() as client:
        route = client.get("/nothing-here")
        method = client.put("/files/x", content=b"x")
        bad_version = client.get("/files/x", params={"version": "abc"})
    assert route.status_code == 404 and route.json()["code"] == "not_found"
    assert method.status_code == 405 and method.json()["code"] == "method_not_allowed"
    assert bad_version.status_code == 400 and bad_version.json()["code"] == "invalid_request"


def test_concurrent_uploads_all_commit(server):
    files = {f"c/{index}.bin": payload(150_000, 100 + index) for index in range(8)}
    with server.client() as client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda item: upload(client, *item).json(), files.items()))
        assert {result["name"] for result in results} == set(files)
        assert all(result["outcome"] == "stored" for result in results)
        for name, data in files.items():
            assert hashlib.sha256(client.get(f"/files/{name}").content).digest() == hashlib.sha256(data).digest()


def test_upload_size_limit(start_server):
    server = start_server("--max-upload-size", "100K")
    with server.client() as client:
        declared = upload(client, "big", payload(200_000, 7))
        streamed = client.post("/files", params={"name": "big2"}, content=iter([payload(60_000, 8)] * 3))
        fits = upload(client, "small", payload(50_000, 9))
        names = [entry["name"] for entry in client.get("/files").json()["files"]]
    assert declared.status_code == 413 and declared.json()["code"] == "too_large"
    assert streamed.status_code == 413 and streamed.json()["code"] == "too_large"
    assert fits.status_code == 200
    assert names == ["small"]


def test_a_streamed_upload_past_its_first_mib_is_stored_and_still_limited(start_server):
    # put hashes all but the first MiB of a stream on its hashing thread.
    server = start_server("--max-upload-size", "2500K")
    pieces = [payload(500_000, 20 + number) for number in range(4)]
    with server.client() as client:
        fits = client.post("/files", params={"name": "two-mb"}, content=iter(pieces))
        too_large = client.post("/files", params={"name": "three-mb"}, content=iter(pieces + pieces[:2]))
        downloaded = client.get("/files/two-mb").content
        names = [entry["name"] for entry in client.get("/files").json()["files"]]
    assert fits.status_code == 200 and downloaded == b"".join(pieces)
    assert too_large.status_code == 413 and too_large.json()["code"] == "too_large"
    assert names == ["two-mb"]
    assert "Traceback" not in server.log


# ---- corruption: never wrong bytes ------------------------------------------------------


def _chunk_files(store_url: str, name: str) -> list[Path]:
    with Store.open(store_url) as store:
        record = store.catalog.get_version(name)
        return [Path(store_url) / chunk_key(entry.chunk_id) for entry in iter_recipe(store, record.digest)]


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture
def format_1_server(start_server, tmp_path) -> ServerProcess:
    """A server over a storage format 1 store of 4 KiB chunks: one file a chunk, for the damage tests."""
    return start_server(store_url=init_store(tmp_path / "format-1", "4K", storage_format="1"))


def test_corrupt_first_chunk_is_a_json_error(format_1_server):
    server = format_1_server
    data = payload(100_000, 10)
    with server.client() as client:
        upload(client, "c.bin", data)
        _flip_byte(_chunk_files(server.store_url, "c.bin")[0])
        response = client.get("/files/c.bin")
        # A range that skips the damaged chunk is still served: chunks before the range are not read.
        tail = client.get("/files/c.bin", headers={"Range": "bytes=-100"})
    assert response.status_code == 500
    assert response.json()["code"] == "integrity_error" and "c.bin" in response.json()["message"]
    assert tail.status_code == 206 and tail.content == data[-100:]


def test_corrupt_later_chunk_aborts_the_response(format_1_server):
    server = format_1_server
    data = payload(600_000, 11)
    with server.client() as client:
        upload(client, "late.bin", data)
        chunks = _chunk_files(server.store_url, "late.bin")
        assert len(chunks) > 40
        _flip_byte(chunks[len(chunks) - 5])
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/files/late.bin") as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
    assert 0 < len(received) < len(data)
    assert bytes(received) == data[: len(received)]


def test_same_content_again_under_the_same_name_is_a_duplicate_of_itself(server):
    data = payload(20_000, 12)
    with server.client() as client:
        upload(client, "same.bin", data)
        again = upload(client, "same.bin", data).json()
        versions = client.get("/files", params={"versions": "true"}).json()["files"]
    assert (again["outcome"], again["message"], again["duplicate_of"]) == (
        "duplicate",
        "Duplicate file detected",
        "same.bin",
    )
    assert again["version"] == 1 and again["new_bytes"] == 0
    assert [(entry["name"], entry["version"]) for entry in versions] == [("same.bin", 1)]


def test_client_going_away_mid_upload_commits_nothing(server):
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port)) as connection:
        connection.sendall(
            f"POST /files?name=partial.bin HTTP/1.1\r\nHost: {address.netloc}\r\n".encode()
            + b"Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
        )
        connection.sendall(payload(300_000, 13))
    with server.client() as client:
        # The server notices the closed connection, abandons the put, and carries on serving.
        assert upload(client, "after.bin", b"still working").json()["outcome"] == "stored"
        names = [entry["name"] for entry in client.get("/files").json()["files"]]
    assert names == ["after.bin"]
    assert "upload of partial.bin abandoned: the client disconnected" in server.log
    assert "Traceback" not in server.log
    verify = run_chunkstore("--store", server.store_url, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

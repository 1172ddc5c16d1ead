"""The API over a storage format 2 store (packs and recipe pages), against a real `chunkstore serve`
process: uploads, duplicates, listing, whole and ranged downloads across segment boundaries, and
damaged packs, which give an error and never wrong bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from chunkstore import Store
from chunkstore.apps.server import ServerSettings, create_app
from chunkstore.apps.server.transfer import PACK_GETS_IN_FLIGHT, PACK_READ_BYTES
from chunkstore.backends.packs import PackReader, pack_key
from chunkstore.backends.registry import LOCAL_CATALOG_FILE
from chunkstore.core.config import CONFIG_KEY
from chunkstore.core.packformat import PackEntry
from chunkstore.core.pages import SegmentSpec, build_root_page, parse_page, parse_root_page
from chunkstore.operations.contentpages import root_entries, stored_pages
from support.gcrounds import gc_round_before_commits
from support.s3helpers import unique_name

from .serverprocess import (
    BLOCK,
    MAX_GROWTH_MIB,
    TRANSFER_MB,
    ServerProcess,
    downloaded_digest,
    generated_blocks,
    memory_kib,
    run_chunkstore,
)

# Segments of ~64 KiB of 4 KiB chunks (16 MiB at the defaults), so a file of a few hundred KB
# spans several recipe pages and ranges can cross their boundaries.
SEGMENT_BYTES = 64 * 1024
FILE_BYTES = 700_000


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/files", params={"name": name}, content=data)


def make_format_2_store(store_url: str, *init_options: str) -> None:
    """A new format 2 store (made by `chunkstore init --format 2`) with small segments."""
    made = run_chunkstore("--store", store_url, "init", "--format", "2", "--avg-size", "4K", *init_options)
    assert made.returncode == 0, made.stderr
    with Store.open(store_url) as store:
        assert store.storage_format == 2
        chunker = store.config.chunker
        segments = SegmentSpec.for_chunks(chunker.avg_size, chunker.max_size, SEGMENT_BYTES)
        store.blobs.put(CONFIG_KEY, dataclasses.replace(store.config, segments=segments).to_bytes())


@pytest.fixture
def format_2_server(start_server, tmp_path):
    """A server over a new format 2 store in a folder."""
    store_url = str(tmp_path / "store2")
    make_format_2_store(store_url)
    return start_server(store_url=store_url)


def segment_starts(store_url: str, name: str) -> list[int]:
    """The offsets in the file at which its segments (recipe pages) start."""
    with Store.open(store_url) as store:
        record = store.catalog.get_version(name)
        entries = root_entries(list(store.catalog.recipe_pages(record.digest)))
    assert entries is not None, "the file has one inline page, not a root"
    starts, offset = [], 0
    for entry in entries:
        starts.append(offset)
        offset += entry.plaintext_bytes
    assert offset == record.size
    return starts


def chunk_records(store_url: str, name: str) -> list[tuple[Path, PackEntry]]:
    """The file's chunks in order: the pack file each lies in, and its entry in that pack's table."""
    records = []
    with Store.open(store_url) as store, PackReader(store.blobs, store.packs) as packs:
        record = store.catalog.get_version(name)
        for stored in stored_pages(store.catalog, record.digest):
            for run in parse_page(stored.page).runs:
                table = packs.read_table(run.pack_id)
                path = Path(store_url) / pack_key(run.pack_id)
                records += [(path, entry) for entry in table[run.first_entry : run.end_entry]]
    return records


def flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_upload_duplicate_list_and_whole_download(format_2_server):
    data = payload(FILE_BYTES, 1)
    with format_2_server.client() as client:
        first = upload(client, "docs/big.bin", data).json()
        again = upload(client, "copies/big.bin", data).json()
        small = upload(client, "docs/small.txt", b"one small file").json()
        listed = client.get("/files").json()["files"]
        whole = client.get("/files/docs/big.bin")
        copy = client.get("/files/copies/big.bin")
        tiny = client.get("/files/docs/small.txt")
    assert (first["outcome"], first["new_bytes"]) == ("stored", FILE_BYTES)
    assert (again["outcome"], again["message"], again["duplicate_of"], again["new_bytes"]) == (
        "duplicate",
        "Duplicate file detected",
        "docs/big.bin",
        0,
    )
    assert small["outcome"] == "stored"
    assert [(entry["name"], entry["size"]) for entry in listed] == [
        ("copies/big.bin", FILE_BYTES),
        ("docs/big.bin", FILE_BYTES),
        ("docs/small.txt", 14),
    ]
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(FILE_BYTES) and whole.headers["accept-ranges"] == "bytes"
    assert copy.content == data
    assert tiny.content == b"one small file"
    store = Path(format_2_server.store_url)
    assert list(store.glob("packs/*/*")) and not list(store.glob("chunks/*/*"))


def test_ranges_within_and_across_segments(format_2_server):
    data = payload(FILE_BYTES, 2)
    with format_2_server.client() as client:
        upload(client, "r.bin", data)
        starts = segment_starts(format_2_server.store_url, "r.bin")
        assert len(starts) >= 4, starts
        boundary, later = starts[2], starts[-1]
        cases = {
            "bytes=0-0": (0, 1),
            "bytes=-1": (FILE_BYTES - 1, FILE_BYTES),
            f"bytes={boundary - 100}-{boundary + 99}": (boundary - 100, boundary + 100),
            f"bytes={boundary}-{boundary}": (boundary, boundary + 1),
            f"bytes={boundary - 1}-{boundary - 1}": (boundary - 1, boundary),
            f"bytes={starts[1] + 10}-{later + 10}": (starts[1] + 10, later + 11),
            f"bytes={later}-": (later, FILE_BYTES),
            "bytes=-5000": (FILE_BYTES - 5000, FILE_BYTES),
            "bytes=-9999999": (0, FILE_BYTES),
            f"bytes={FILE_BYTES - 10}-{FILE_BYTES * 2}": (FILE_BYTES - 10, FILE_BYTES),
        }
        for header, (start, end) in cases.items():
            response = client.get("/files/r.bin", headers={"Range": header})
            assert response.status_code == 206, (header, response.text)
            assert response.content == data[start:end], header
            assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{FILE_BYTES}", header
        beyond = client.get("/files/r.bin", headers={"Range": f"bytes={FILE_BYTES}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{FILE_BYTES}"


def test_a_damaged_first_chunk_is_a_json_error_and_ranges_past_it_are_served(format_2_server):
    data = payload(FILE_BYTES, 3)
    with format_2_server.client() as client:
        upload(client, "c.bin", data)
        path, entry = chunk_records(format_2_server.store_url, "c.bin")[0]
        flip_byte(path, entry.offset + entry.length // 2)
        whole = client.get("/files/c.bin")
        first_byte = client.get("/files/c.bin", headers={"Range": "bytes=0-0"})
        # Chunks before a range are skipped unread, in the damaged chunk's segment too.
        past = client.get("/files/c.bin", headers={"Range": f"bytes={entry.plaintext_length}-"})
    for response in (whole, first_byte):
        assert response.status_code == 500
        assert response.json()["code"] == "integrity_error" and "c.bin" in response.json()["message"]
    assert past.status_code == 206 and past.content == data[entry.plaintext_length :]


def test_a_damaged_later_chunk_cuts_the_download_short_with_only_right_bytes(format_2_server):
    # Larger than the pack reads a download keeps in flight, so the response starts before
    # the damaged chunk is read.
    data = payload((PACK_GETS_IN_FLIGHT + 2) * PACK_READ_BYTES, 4)
    with format_2_server.client() as client:
        upload(client, "late.bin", data)
        records = chunk_records(format_2_server.store_url, "late.bin")
        path, entry = records[-5]
        flip_byte(path, entry.offset + entry.length // 2)
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/files/late.bin") as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
        damaged_range = client.get("/files/late.bin", headers={"Range": "bytes=-1"})
    assert 0 < len(received) < len(data)
    assert bytes(received) == data[: len(received)]
    assert damaged_range.status_code == 206 and damaged_range.content == data[-1:]
    damaged_at = sum(chunk.plaintext_length for _, chunk in records[:-5])
    assert len(received) <= damaged_at


def test_a_damaged_pack_table_or_a_missing_pack_is_an_error(format_2_server):
    data = payload(FILE_BYTES, 5)
    with format_2_server.client() as client:
        upload(client, "t.bin", data)
        upload(client, "gone.bin", payload(FILE_BYTES, 6))
        table_path = chunk_records(format_2_server.store_url, "t.bin")[0][0]
        flip_byte(table_path, table_path.stat().st_size - 100)
        gone_pack = chunk_records(format_2_server.store_url, "gone.bin")[0][0]
        assert gone_pack != table_path
        gone_pack.unlink()
        damaged = client.get("/files/t.bin", headers={"Range": "bytes=100-200"})
        missing = client.get("/files/gone.bin")
    for response, name in ((damaged, "t.bin"), (missing, "gone.bin")):
        assert response.status_code == 500, response.text
        assert response.json()["code"] == "integrity_error" and name in response.json()["message"]


def test_a_format_2_store_on_s3(moto_endpoint, tmp_path):
    name = unique_name("serve2")
    store_url = f"s3://{name}/store"
    make_format_2_store(store_url, "--table", name, "--create")
    server = ServerProcess(store_url, log_path=tmp_path / "serve.log").start()
    data = payload(FILE_BYTES, 7)
    try:
        with server.client() as client:
            first = upload(client, "s3/a.bin", data).json()
            again = upload(client, "s3/b.bin", data).json()
            whole = client.get("/files/s3/a.bin").content
            ranges = {
                header: client.get("/files/s3/b.bin", headers={"Range": header}).content
                for header in ("bytes=0-0", "bytes=-1", "bytes=300000-400000")
            }
            removed = client.delete("/files/s3/a.bin").json()["removed"]
            left = client.get("/files/s3/b.bin").content
    finally:
        server.stop()
    assert (first["outcome"], again["outcome"], again["duplicate_of"]) == ("stored", "duplicate", "s3/a.bin")
    assert whole == data and left == data
    assert ranges == {"bytes=0-0": data[:1], "bytes=-1": data[-1:], "bytes=300000-400000": data[300000:400001]}
    assert [entry["name"] for entry in removed] == ["s3/a.bin"]


def test_a_root_whose_sizes_disagree_with_the_file_is_an_error(format_2_server):
    data = payload(FILE_BYTES, 9)
    with format_2_server.client() as client:
        upload(client, "sizes.bin", data)
        with Store.open(format_2_server.store_url) as store:
            digest = store.catalog.get_version("sizes.bin").digest
        catalog = Path(format_2_server.store_url) / LOCAL_CATALOG_FILE
        with contextlib.closing(sqlite3.connect(catalog)) as db, db:
            (body,) = db.execute("SELECT data FROM recipe_pages WHERE digest = ? AND page = 0", (digest,)).fetchone()
            entries = parse_root_page(body, 0)
            entries[0] = dataclasses.replace(entries[0], plaintext_bytes=entries[0].plaintext_bytes + 1)
            changed = build_root_page(entries, 0)
            db.execute("UPDATE recipe_pages SET data = ? WHERE digest = ? AND page = 0", (changed, digest))
        response = client.get("/files/sizes.bin", headers={"Range": "bytes=-10"})
    assert response.status_code == 500
    assert response.json()["code"] == "integrity_error"
    assert "sizes.bin" in response.json()["message"] and "root" in response.json()["message"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_a_large_download_uses_bounded_memory(format_2_server):
    """As tests/server/test_memory.py for format 1: the pack reads in flight and the pieces queued
    are all a download holds, whatever the file's size."""
    server = format_2_server
    with server.client() as client:
        client.post("/files", params={"name": "warm-up"}, content=payload(4 * BLOCK, 8))
        client.get("/files/warm-up")
        sent = hashlib.sha256()
        result = client.post("/files", params={"name": "large.bin"}, content=generated_blocks(sent)).json()
        assert result["outcome"] == "stored" and result["size"] == TRANSFER_MB * BLOCK
        before = memory_kib(server.pid)
        received = downloaded_digest(client, "/files/large.bin")
        after = memory_kib(server.pid)
    assert received == sent.digest()
    growth = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"server RSS {before['VmRSS'] / 1024:.0f} MiB; peak growth {growth:.0f} MiB in a {TRANSFER_MB} MB download")
    assert growth < MAX_GROWTH_MIB


def test_an_upload_a_concurrent_gc_round_collected_from_under_is_a_conflict_to_retry(tmp_path):
    """The upload's pages are written, then a whole gc round (another process's, here run by a hook
    before the commit) collects them: nothing is committed, and the client gets a 409 it can retry,
    not a server error."""
    store_url = str(tmp_path / "store2")
    make_format_2_store(store_url)
    data = payload(FILE_BYTES, 9)
    with Store.open(store_url) as store:
        client = TestClient(create_app(store, ServerSettings()), base_url="http://127.0.0.1:8080")
        collected = gc_round_before_commits(store)
        refused = client.post("/files", params={"name": "file"}, content=data)
        assert collected[0] > 0
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "conflict"
        assert "nothing was committed" in refused.json()["message"]
        assert client.get("/files").json()["files"] == []
        again = client.post("/files", params={"name": "file"}, content=data)
        assert again.status_code == 200 and again.json()["outcome"] == "stored"
        assert client.get("/files/file").content == data

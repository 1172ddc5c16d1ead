"""Uploads and downloads of any size run in bounded server memory (measured from /proc)."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

from .serverprocess import BLOCK, MAX_GROWTH_MIB, TRANSFER_MB, downloaded_digest, generated_blocks, memory_kib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")


def test_large_upload_and_download_use_bounded_memory(start_server):
    server = start_server()
    with server.client() as client:
        # Warm up: import everything and run one small put and get, so the baseline is the steady state.
        client.post("/files", params={"name": "warm-up"}, content=os.urandom(4 * BLOCK))
        client.get("/files/warm-up")
        before = memory_kib(server.pid)

        sent = hashlib.sha256()
        result = client.post("/files", params={"name": "large.bin"}, content=generated_blocks(sent)).json()
        after_upload = memory_kib(server.pid)
        assert result["outcome"] == "stored" and result["size"] == TRANSFER_MB * BLOCK

        received = downloaded_digest(client, "/files/large.bin")
        after_download = memory_kib(server.pid)

    assert received == sent.digest()
    upload_growth = (after_upload["VmHWM"] - before["VmRSS"]) / 1024
    download_growth = (after_download["VmHWM"] - before["VmRSS"]) / 1024
    print(
        f"server RSS {before['VmRSS'] / 1024:.0f} MiB; peak growth {upload_growth:.0f} MiB in a "
        f"{TRANSFER_MB} MB upload, {download_growth:.0f} MiB after the download too"
    )
    assert upload_growth < MAX_GROWTH_MIB
    assert download_growth < MAX_GROWTH_MIB

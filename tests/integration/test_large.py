"""Files far larger than the memory a command may use are put and got with bounded memory."""

from __future__ import annotations

import json
import os
import subprocess

import blake3
import pytest

from support.peakrss import PEAK_RSS_LIMIT, run_measuring_peak_rss
from support.storechecks import CHUNKSTORE

WRITE_BLOCK = 16 * 1024 * 1024


def file_digest(path) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as handle:
        while block := handle.read(WRITE_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def put_and_get_with_bounded_memory(tmp_path, source) -> None:
    store = ["--store", str(tmp_path / "store")]
    subprocess.run([*CHUNKSTORE, *store, "init"], check=True, capture_output=True)

    put, put_peak = run_measuring_peak_rss(
        [*CHUNKSTORE, *store, "put", source.name],
        tmp_path / "put-rss",
        cwd=source.parent,
        capture_output=True,
        text=True,
    )
    assert put.returncode == 0 and put.stdout == f"{source.name}: stored\n", put.stderr
    assert put_peak < PEAK_RSS_LIMIT, f"put of {source.stat().st_size} bytes peaked at {put_peak} bytes RSS"

    [entry] = json.loads(subprocess.run([*CHUNKSTORE, *store, "ls", "--json"], check=True, capture_output=True).stdout)
    assert entry["size"] == source.stat().st_size
    assert entry["digest"] == file_digest(source)

    # get checks every chunk and the whole-file digest itself, so exit 0 means every byte was right.
    get, get_peak = run_measuring_peak_rss(
        [*CHUNKSTORE, *store, "get", source.name],
        tmp_path / "get-rss",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert get.returncode == 0, get.stderr
    assert get_peak < PEAK_RSS_LIMIT, f"get of {source.stat().st_size} bytes peaked at {get_peak} bytes RSS"


def test_300_mb_of_new_data_with_bounded_memory(tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        handle.writelines(os.urandom(WRITE_BLOCK) for _ in range(300 * 1024 * 1024 // WRITE_BLOCK))
    put_and_get_with_bounded_memory(tmp_path, source)


@pytest.mark.slow
def test_10_gb_sparse_file_with_bounded_memory(tmp_path):
    source = tmp_path / "sparse.img"
    size = 10 * 1024**3
    with open(source, "wb") as handle:
        handle.truncate(size)
        # A few regions of data among the holes, so new chunks are written as well as zeros.
        for offset in range(0, size, size // 8):
            handle.seek(offset)
            handle.write(os.urandom(4 * 1024 * 1024))
    put_and_get_with_bounded_memory(tmp_path, source)

"""The long tier (--runslow): a fault soak over one growing store, and the resource limits
(100k small files, a file of a million chunks) with peak memory measured."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import blake3
import pytest

from chunkstore import Store
from support.clihelpers import run_cli
from support.faultkit import (
    Corpus,
    backend_of,
    check_store_after_faults,
    init_store,
    random_mix,
    report_figures,
    run_operations_under_faults,
)
from support.peakrss import PEAK_RSS_LIMIT, run_measuring_peak_rss

pytestmark = pytest.mark.slow

# An iteration on the moto server is far slower than on a folder: 25 took 13 minutes on a
# 2-core machine.
SOAK_ITERATIONS = {"local": 150, "s3": 25}
SMALL_FILES = 100_000
# fastcdc2020's smallest sizes (64/256/1024) cut about 310 bytes a chunk here: 320 MiB is over a million chunks.
TINY_CHUNKS = ["--avg-size", "256"]
MILLION_CHUNK_BYTES = 320 * 1024 * 1024


@pytest.mark.parametrize("storage_format", [1, 2], ids=lambda storage_format: f"format{storage_format}")
def test_fault_soak_over_a_growing_store(new_backend, tmp_path, storage_format):
    """Each iteration adds and changes files, then runs put, get, restore, rm, gc and verify under
    a fresh random mix of faults; once the faults are gone every committed version must restore
    exactly, verify must be clean and gc must leave no garbage."""
    objects = new_backend(tmp_path)
    url = objects.url
    iterations = SOAK_ITERATIONS[backend_of(url)]
    corpus = Corpus.create(tmp_path / "source", seed="soak", block_count=40)
    rng = random.Random("soak")
    for letter in "abcde":
        corpus.write(f"data/{letter}.bin")
    init_store(objects, storage_format, avg_size=1024)
    with Store.open(url) as store:
        store.put([(corpus.root / "data", "data")])
    injected = Counter()
    versions_checked = 0
    for iteration in range(iterations):
        for letter in rng.sample("abcdefgh", 3):
            corpus.write(f"data/{letter}.bin")
        blob_faults, catalog_faults = random_mix(rng.uniform(0.002, 0.04), storage_format)
        iteration_dir = tmp_path / f"iteration-{iteration}"
        iteration_dir.mkdir()
        with Store.open(url) as store:
            injected["faults"] += run_operations_under_faults(
                store, corpus, iteration_dir, blob_faults, catalog_faults, seed=f"soak {iteration}"
            )
        versions_checked += check_store_after_faults(url, corpus)
    assert injected["faults"] > iterations
    report_figures(
        "fault soak",
        {
            "backend": backend_of(url),
            "storage_format": storage_format,
            "iterations": iterations,
            "faults_injected": injected["faults"],
            "versions_checked": versions_checked,
            "problems": 0,
        },
    )


@pytest.fixture(scope="module")
def many_small_files(tmp_path_factory):
    """SMALL_FILES small files, put once: (folder, store, put's peak RSS)."""
    root = tmp_path_factory.mktemp("many")
    source = root / "many"
    rng = random.Random("many")
    words = [rng.randbytes(6).hex().encode() for _ in range(500)]
    for folder in range(100):
        (source / f"{folder:03d}").mkdir(parents=True)
        for index in range(SMALL_FILES // 100):
            (source / f"{folder:03d}" / f"{index:04d}.txt").write_bytes(b" ".join(rng.sample(words, 8)))
    store = root / "store"
    run_cli(store, "init", cwd=root)
    completed, peak = run_measuring_peak_rss(
        [sys.executable, "-m", "chunkstore_cli", "--store", str(store), "put", source.name, "--json"],
        root / "rss-put",
        cwd=root,
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    summary = json.loads(completed.stdout)
    assert summary["files"] == SMALL_FILES and summary["errors"] == 0
    return root, store, peak


def test_a_hundred_thousand_small_files_restore_exactly_with_bounded_memory(many_small_files):
    root, store, put_peak = many_small_files
    listed = json.loads(run_cli(store, "ls", "--json", cwd=root).stdout)
    assert len(listed) == SMALL_FILES
    completed, restore_peak = run_measuring_peak_rss(
        [
            sys.executable,
            "-m",
            "chunkstore_cli",
            "--store",
            str(store),
            "restore",
            "many",
            "-o",
            str(root / "restored"),
        ],
        root / "rss-restore",
        cwd=root,
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    mismatched = [
        path
        for path in (root / "many").rglob("*.txt")
        if (root / "restored" / path.relative_to(root)).read_bytes() != path.read_bytes()
    ]
    assert not mismatched, mismatched[:5]
    run_cli(store, "verify", "--read-data", cwd=root)
    report_figures(
        "100k small files",
        {
            "files_checked": SMALL_FILES,
            "put_peak_rss_mib": round(put_peak / 2**20),
            "restore_peak_rss_mib": round(restore_peak / 2**20),
        },
    )
    assert restore_peak < PEAK_RSS_LIMIT, f"restore of {SMALL_FILES} files peaked at {restore_peak / 2**20:.0f} MiB"


def test_put_of_a_hundred_thousand_files_has_bounded_memory(many_small_files):
    _, _, put_peak = many_small_files
    assert put_peak < PEAK_RSS_LIMIT, f"put of {SMALL_FILES} files peaked at {put_peak / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def million_chunk_file(tmp_path_factory):
    """A file of over a million chunks, put once: (folder, store, its digest, chunk count, put's peak RSS).

    Content repeats (a pool of blocks), so the recipe has a million entries but the store
    holds few objects: what is measured is the recipe path, not the disk."""
    root = tmp_path_factory.mktemp("million")
    rng = random.Random("million")
    pool = [rng.randbytes(rng.randint(2048, 8192)) for _ in range(400)]
    path = root / "million.bin"
    digest = blake3.blake3()
    with open(path, "wb") as handle:
        written = 0
        while written < MILLION_CHUNK_BYTES:
            block = rng.choice(pool) + rng.randbytes(16)
            handle.write(block)
            digest.update(block)
            written += len(block)
    store = root / "store"
    run_cli(store, "init", *TINY_CHUNKS, cwd=root)
    completed, put_peak = run_measuring_peak_rss(
        [sys.executable, "-m", "chunkstore_cli", "--store", str(store), "put", path.name],
        root / "rss-put",
        cwd=root,
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    with Store.open(str(store)) as opened:
        record = opened.catalog.get_version(path.name)
        chunk_count = opened.catalog.get_content(record.digest).chunk_count
    assert chunk_count >= 1_000_000, f"only {chunk_count} chunks: the test does not reach a million"
    path.unlink()
    return root, store, digest.digest(), chunk_count, put_peak


def test_a_file_of_a_million_chunks_round_trips_with_bounded_memory(million_chunk_file):
    root, store, digest, chunk_count, put_peak = million_chunk_file
    completed, get_peak = run_measuring_peak_rss(
        [
            sys.executable,
            "-m",
            "chunkstore_cli",
            "--store",
            str(store),
            "get",
            "million.bin",
            "-o",
            str(root / "out.bin"),
        ],
        root / "rss-get",
        cwd=root,
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    restored = blake3.blake3()
    with open(root / "out.bin", "rb") as handle:
        while block := handle.read(1 << 20):
            restored.update(block)
    assert restored.digest() == digest
    run_cli(store, "verify", cwd=root)
    report_figures(
        "million-chunk file",
        {
            "chunks": chunk_count,
            "put_peak_rss_mib": round(put_peak / 2**20),
            "get_peak_rss_mib": round(get_peak / 2**20),
        },
    )
    assert get_peak < PEAK_RSS_LIMIT, f"get of {chunk_count} chunks peaked at {get_peak / 2**20:.0f} MiB"


def test_put_of_a_million_chunk_file_has_bounded_memory(million_chunk_file):
    _, _, _, chunk_count, put_peak = million_chunk_file
    assert put_peak < PEAK_RSS_LIMIT, f"put of {chunk_count} chunks peaked at {put_peak / 2**20:.0f} MiB"

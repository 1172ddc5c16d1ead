"""Several processes put overlapping files into one s3:// store while others remove versions
and collect garbage. Afterwards every version that was committed and not removed restores
byte for byte, verify finds nothing wrong, and a last gc leaves no object nothing references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stress_worker import content

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.catalog import ChunkState
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_id_from_key
from chunkstore.operations.read import iter_recipe

WORKER = Path(__file__).with_name("stress_worker.py")
PUTTERS = 3
ROUNDS = 4


def test_puts_removals_and_gcs_in_parallel_processes_lose_nothing(s3_url, table, tmp_path):
    spec, zstd = ChunkerSpec.from_average(avg_size=1024), CompressionSpec.parse("zstd:3")
    Store.init(s3_url, spec, zstd, table=table, create=True, storage_format=1).close()
    stop = tmp_path / "stop"
    background = [
        subprocess.Popen([sys.executable, WORKER, "rm", s3_url, stop, tmp_path / "removed.json", "7"]),
        subprocess.Popen([sys.executable, WORKER, "gc", s3_url, stop, tmp_path / "gc.json"]),
    ]
    putters = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                "put",
                s3_url,
                tmp_path / f"files{index}",
                tmp_path / f"put{index}.json",
                str(index),
                str(ROUNDS),
            ]
        )
        for index in range(PUTTERS)
    ]
    try:
        assert [putter.wait(timeout=600) for putter in putters] == [0] * PUTTERS
    finally:
        stop.touch()
        codes = [process.wait(timeout=600) for process in background]
    assert codes == [0, 0]

    committed: dict[tuple[str, int], bytes] = {}
    for index in range(PUTTERS):
        for record in json.loads((tmp_path / f"put{index}.json").read_text()):
            assert record["outcome"] in ("stored", "duplicate", "unchanged"), record
            data = content(record["seed"])
            # Putters that committed the same version committed the same bytes.
            assert committed.setdefault((record["name"], record["version"]), data) == data
    removed = {tuple(pair) for pair in json.loads((tmp_path / "removed.json").read_text())}
    assert removed <= committed.keys()
    gc_runs = json.loads((tmp_path / "gc.json").read_text())
    assert gc_runs and any(run["chunks_deleted"] for run in gc_runs)
    assert removed, "the remover removed nothing: the test exercised no removal"

    with Store.open(s3_url) as store:
        listed = {(record.name, record.version) for record in store.list(all_versions=True)}
        assert listed == committed.keys() - removed
        for name, number in sorted(listed):
            store.get_to_path(name, tmp_path / "restored", version=number)
            assert (tmp_path / "restored").read_bytes() == committed[name, number], (name, number)
        report = store.verify()
        assert report.ok, [problem.to_json() for problem in report.problems]

        store.gc()
        referenced = {
            entry.chunk_id
            for content_record in store.catalog.iter_contents()
            for entry in iter_recipe(store, content_record.digest)
        }
        objects = {chunk_id_from_key(info.key) for info in store.blobs.list(CHUNK_KEY_PREFIX)}
        assert objects == referenced
        rows = {row.chunk_id: row for row in store.catalog.iter_chunks()}
        assert rows.keys() == referenced
        assert all(row.state == ChunkState.PRESENT and row.refcount > 0 for row in rows.values())

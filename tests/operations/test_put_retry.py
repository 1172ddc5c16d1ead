"""A put whose batch a gc refused stores it again, once: here a format 1 put stalled past its
session's lease while gc ran (the format 2 race, a gc round collecting what a batch deduplicated
against, is in test_packed_put.py)."""

from __future__ import annotations

import io
import random
import time

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store

LEASE_SECONDS = 0.5


@pytest.mark.also_in_memory
def test_a_put_stalled_past_its_lease_while_gc_ran_stores_its_batch_again(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    url = objects.url
    spec, zstd = ChunkerSpec.from_average(avg_size=4096), CompressionSpec.parse("zstd:3")
    Store.init(url, spec, zstd, storage_format=1, **objects.init_arguments()).close()
    data = random.Random(7).randbytes(1_000_000)
    (tmp_path / "file").write_bytes(data)
    with Store.open(url, lease_seconds=LEASE_SECONDS) as store:
        commit, heartbeat = store.catalog.commit, store.catalog.heartbeat
        expired = []

        def commit_after_stalling(*arguments, **options):
            # The writer's heartbeats stop, its lease passes, and a gc expires its session.
            store.catalog.heartbeat = lambda _session: None
            time.sleep(LEASE_SECONDS * 2)
            expired.append(store.gc())
            store.catalog.commit, store.catalog.heartbeat = commit, heartbeat
            return commit(*arguments, **options)

        store.catalog.commit = commit_after_stalling
        [result] = store.put([(tmp_path / "file", "file")]).results
        assert expired and result.outcome == "stored"
        out = io.BytesIO()
        store.get("file", out)
        assert out.getvalue() == data
        assert store.verify(read_data=True).ok

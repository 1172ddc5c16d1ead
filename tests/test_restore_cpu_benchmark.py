"""benchmarks.restore_cpu on small local data: it builds its store once and restores it whole."""

from __future__ import annotations

import random

from benchmarks import restore_cpu
from chunkstore import Store


def test_restore_cpu_builds_the_store_once_and_counts_the_reads_of_a_restore(tmp_path):
    generator = random.Random(7)
    base = generator.randbytes(3 * 1024 * 1024)
    tars = []
    for number in range(1, 4):  # three "releases", each an edit of the one before
        base = base[: number * 100_000] + generator.randbytes(50_000) + base[number * 100_000 :]
        tar = tmp_path / f"Project-1.{number}.tar"
        tar.write_bytes(base)
        tars.append(tar)
    store_path = tmp_path / "store"
    restore_cpu.prepare(store_path, tars)
    config = (store_path / "config").read_bytes()
    restore_cpu.prepare(store_path, tars)  # kept: a second checkout restores the same store
    assert (store_path / "config").read_bytes() == config
    with Store.open(str(store_path), read_only=True) as store:
        names = sorted(record.name for record in store.list("releases"))
        packs = list(store.blobs.list("packs/"))
    assert names == [f"releases/{tar.name}" for tar in tars]

    wall, cpu, main_thread, gets = restore_cpu.restore_once(store_path, tmp_path)
    assert gets >= len(packs) >= 1
    assert wall > 0 and cpu > 0 and 0 < main_thread <= cpu + 0.05
    assert not (tmp_path / "restored").exists()

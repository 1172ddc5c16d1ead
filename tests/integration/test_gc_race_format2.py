"""put racing rm and gc in other processes on a storage format 2 store: no committed version is lost.

Each writer puts version after version of a few names, each an edit of the one before, so every
put deduplicates against the pages and packs of the name's previous version, while a remover
removes old versions and runs gc, and a second process runs gc round after round: a writer keeps
naming pages and packs that a round has just found unnamed, or is repacking. Segments of 8-64
chunks of ~1 KiB give files of several recipe pages. Afterwards every version committed and not removed reads back
byte for byte, verify reads everything, and a last gc leaves nothing that nothing names.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import random
import time
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.config import CONFIG_KEY
from chunkstore.core.pages import SegmentSpec
from chunkstore.errors import ConcurrentModificationError, NotFoundError
from support.storechecks import get_bytes

WRITERS = 2
NAMES_PER_WRITER = 2
VERSIONS = 20
# A put that finds a page or pack it named collected by a round (gc swept meanwhile) fails
# without committing; the writer puts the same bytes again, at most this many times.
TRIES = 4
JOIN_TIMEOUT_SECONDS = 600
SEGMENTS = SegmentSpec(boundary_bits=4, min_chunks=8, max_chunks=64)

_POOL_RNG = random.Random("format 2 gc race block pool")
BLOCK_POOL = [_POOL_RNG.randbytes(_POOL_RNG.randint(512, 4096)) for _ in range(400)]


def versions_of(name: str) -> list[bytes]:
    """The successive contents of name: 60-100 blocks, each version a few blocks changed."""
    rng = random.Random(name)
    blocks = [rng.choice(BLOCK_POOL) for _ in range(rng.randint(60, 100))]
    contents = []
    for _ in range(VERSIONS):
        for _ in range(rng.randint(1, 4)):
            blocks[rng.randrange(len(blocks))] = rng.randbytes(rng.randint(200, 3000))
        contents.append(b"".join(blocks))
    return contents


def names_of(writer: int) -> list[str]:
    return [f"writer-{writer}/file-{number}" for number in range(NAMES_PER_WRITER)]


def writer_main(store_url: str, writer: int, workdir: str, results: str) -> None:
    committed, retries = [], 0
    contents = {name: versions_of(name) for name in names_of(writer)}
    with Store.open(store_url) as store:
        for version in range(VERSIONS):
            for name, versions in contents.items():
                source = Path(workdir) / f"{writer}-{name.rsplit('-', 1)[1]}"
                source.write_bytes(versions[version])
                for attempt in range(TRIES):
                    try:
                        [result] = store.put([(str(source), name)]).results
                        break
                    except ConcurrentModificationError:
                        if attempt == TRIES - 1:
                            raise
                        retries += 1
                assert result.outcome == "stored", f"{name}: {result.outcome} {result.error}"
                committed.append({"name": name, "version": result.version, "content": version})
    Path(results).write_text(json.dumps({"committed": committed, "retries": retries}))


def collect(store: Store) -> tuple[int, int]:
    """A gc round: the packs it deleted and those it repacked."""
    try:
        report = store.gc()
    except ConcurrentModificationError as error:
        if "another gc is running" not in str(error):
            raise
        return 0, 0
    return report.packs_deleted or 0, report.packs_repacked or 0


def remover_main(store_url: str, writers_done, results: str) -> None:
    """While the writers run: remove a random old version (never a name's latest), then gc."""
    rng = random.Random("remover")
    removed: list[list] = []
    packs_deleted = packs_repacked = 0
    with Store.open(store_url) as store:
        while not writers_done.is_set():
            old = [
                record
                for name in (name for writer in range(WRITERS) for name in names_of(writer))
                for record in list(store.catalog.list_versions(name, all_versions=True))[:-1]
            ]
            if old:
                record = rng.choice(old)
                try:
                    store.remove([record.name], version=record.version)
                    removed.append([record.name, record.version])
                except NotFoundError:
                    pass
            deleted, repacked = collect(store)
            packs_deleted, packs_repacked = packs_deleted + deleted, packs_repacked + repacked
            time.sleep(0.01)
    Path(results).write_text(
        json.dumps({"removed": removed, "packs_deleted": packs_deleted, "packs_repacked": packs_repacked})
    )


def collector_main(store_url: str, writers_done, results: str) -> None:
    rounds = packs_deleted = packs_repacked = 0
    with Store.open(store_url) as store:
        while not writers_done.is_set():
            deleted, repacked = collect(store)
            packs_deleted, packs_repacked = packs_deleted + deleted, packs_repacked + repacked
            rounds += 1
    Path(results).write_text(
        json.dumps({"rounds": rounds, "packs_deleted": packs_deleted, "packs_repacked": packs_repacked})
    )


def test_put_racing_rm_and_gc_rounds_loses_no_committed_version(tmp_path):
    store_url = str(tmp_path / "store")
    with Store.init(
        store_url, ChunkerSpec.from_average(avg_size=1024), CompressionSpec.parse("zstd:3"), storage_format=2
    ) as store:
        store.blobs.put(CONFIG_KEY, dataclasses.replace(store.config, segments=SEGMENTS).to_bytes())
    context = multiprocessing.get_context("spawn")
    writers_done = context.Event()
    writer_results = [tmp_path / f"writer-{number}.json" for number in range(WRITERS)]
    processes = [
        context.Process(target=writer_main, args=(store_url, number, str(tmp_path), str(path)))
        for number, path in enumerate(writer_results)
    ]
    background = [
        context.Process(target=remover_main, args=(store_url, writers_done, str(tmp_path / "remover.json"))),
        context.Process(target=collector_main, args=(store_url, writers_done, str(tmp_path / "collector.json"))),
    ]
    try:
        for process in processes + background:
            process.start()
        for process in processes:
            process.join(JOIN_TIMEOUT_SECONDS)
        writers_done.set()
        for process in background:
            process.join(JOIN_TIMEOUT_SECONDS)
    finally:
        for process in processes + background:
            if process.is_alive():
                process.kill()
            process.join()
    assert [process.exitcode for process in processes + background] == [0] * (WRITERS + 2)

    reports = [json.loads(path.read_text()) for path in writer_results]
    removed = {tuple(pair) for pair in json.loads((tmp_path / "remover.json").read_text())["removed"]}
    remover = json.loads((tmp_path / "remover.json").read_text())
    collector = json.loads((tmp_path / "collector.json").read_text())
    # The race happened: rounds ran while writers wrote, and collected what removals freed.
    assert collector["rounds"] > 0 and removed
    assert remover["packs_deleted"] + collector["packs_deleted"] > 0
    assert remover["packs_repacked"] + collector["packs_repacked"] > 0
    with Store.open(store_url) as store:
        for report in reports:
            for entry in report["committed"]:
                if (entry["name"], entry["version"]) in removed:
                    continue
                expected = versions_of(entry["name"])[entry["content"]]
                assert get_bytes(store, entry["name"], entry["version"]) == expected, entry
        assert store.verify(read_data=True).ok
        store.gc()
        dry = store.gc(dry_run=True)
        assert (dry.packs_deleted, dry.pages_deleted, dry.orphans_deleted) == (0, 0, 0)
        assert store.verify(read_data=True).ok

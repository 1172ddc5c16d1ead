"""put racing rm and gc in other processes: no committed file is ever lost.

Writers put files built from one shared pool of blocks, so with 1 KiB chunks most of
their chunks are shared with files that removers are deleting and gc is collecting at
the same moment: a writer keeps meeting chunks whose count has just dropped to 0.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import random
import time
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.errors import ConcurrentModificationError, NameNotFoundError
from support.storechecks import assert_no_garbage, assert_verify_clean

WRITERS = 3
FILES_PER_WRITER = 60
REMOVERS = 2
# Every third file is written to be removed again (by a remover, soon after it is committed).
TEMPORARY_EVERY = 3
# Every fifth file is an exact copy of another writer's file (the whole-file duplicate path).
DUPLICATE_EVERY = 5
# Removers work while the writers run, then at least MIN more rounds; never more than MAX in all.
MIN_ROUNDS_AFTER_WRITERS = 10
MAX_REMOVER_ROUNDS = 5000
IDLE_PAUSE_SECONDS = 0.01
JOIN_TIMEOUT_SECONDS = 600

_POOL_RNG = random.Random("gc race block pool")
BLOCK_POOL = [_POOL_RNG.randbytes(_POOL_RNG.randint(1024, 8192)) for _ in range(48)]


def file_content(writer: int, index: int) -> bytes:
    """The content of a writer's index-th file: 16-64 blocks of the shared pool, or a copy."""
    if index % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
        return file_content((writer + 1) % WRITERS, index - 1)
    rng = random.Random(f"writer {writer} file {index}")
    return b"".join(rng.choice(BLOCK_POOL) for _ in range(rng.randint(16, 64)))


def file_name(writer: int, index: int) -> str:
    kind = "temporary" if index % TEMPORARY_EVERY == 0 else "kept"
    return f"writer-{writer}/{kind}-{index:03d}"


def writer_main(store_url: str, writer: int, workdir: str, results: str) -> None:
    """Put every file under a fresh name, alternating streams and files on disk."""
    committed = []
    with Store.open(store_url) as store:
        for index in range(FILES_PER_WRITER):
            name = file_name(writer, index)
            content = file_content(writer, index)
            if index % 2:
                result = store.put_stream(io.BytesIO(content), name).results[0]
            else:
                source = Path(workdir) / f"{writer}-{index}"
                source.write_bytes(content)
                [result] = store.put([(str(source), name)]).results
            assert result.outcome in ("stored", "duplicate"), f"{name}: {result.outcome} {result.error}"
            committed.append({"name": name, "writer": writer, "index": index})
    Path(results).write_text(json.dumps(committed))


def remover_main(store_url: str, remover: int, writers_done, results: str) -> None:
    """Round after round while the writers run: remove a temporary file if there is one, then gc."""
    rng = random.Random(f"remover {remover}")
    removed: list[str] = []
    chunks_deleted_while_writing = 0
    rounds_after_writers = 0
    with Store.open(store_url) as store:
        for _ in range(MAX_REMOVER_ROUNDS):
            writing = not writers_done.is_set()
            if not writing:
                rounds_after_writers += 1
                if rounds_after_writers > MIN_ROUNDS_AFTER_WRITERS:
                    break
            temporary = sorted(record.name for record in store.list() if "/temporary-" in record.name)
            if temporary:
                name = rng.choice(temporary)
                try:
                    store.remove([name])
                    removed.append(name)
                except NameNotFoundError:
                    pass  # the other remover removed it first
            else:
                time.sleep(IDLE_PAUSE_SECONDS)
            try:
                deleted = store.gc().chunks_deleted
            except ConcurrentModificationError as error:
                # Only one gc runs at a time; the other remover's holds the lock.
                if "another gc is running" not in str(error):
                    raise
            else:
                if writing:
                    chunks_deleted_while_writing += deleted
    Path(results).write_text(
        json.dumps({"removed": removed, "chunks_deleted_while_writing": chunks_deleted_while_writing})
    )


def test_put_racing_rm_and_gc_loses_no_committed_file(tmp_path):
    store_url = str(tmp_path / "store")
    spec = ChunkerSpec.from_average(avg_size=1024)
    # Format 1's race (counted chunk rows); format 2's is test_gc_race_format2.py.
    Store.init(store_url, spec, CompressionSpec.parse("zstd:3"), storage_format=1).close()
    context = multiprocessing.get_context("spawn")
    writers_done = context.Event()
    writer_results = [tmp_path / f"writer-{number}.json" for number in range(WRITERS)]
    remover_results = [tmp_path / f"remover-{number}.json" for number in range(REMOVERS)]
    writers = [
        context.Process(target=writer_main, args=(store_url, number, str(tmp_path), str(path)))
        for number, path in enumerate(writer_results)
    ]
    removers = [
        context.Process(target=remover_main, args=(store_url, number, writers_done, str(path)))
        for number, path in enumerate(remover_results)
    ]
    processes = writers + removers
    try:
        for process in processes:
            process.start()
        for process in writers:
            process.join(JOIN_TIMEOUT_SECONDS)
        writers_done.set()
        for process in removers:
            process.join(JOIN_TIMEOUT_SECONDS)
    finally:
        # Reap every child: a zombie still counts as a live process to the session liveness check.
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()
    assert [process.exitcode for process in processes] == [0] * len(processes)

    committed = [entry for path in writer_results for entry in json.loads(path.read_text())]
    remover_reports = [json.loads(path.read_text()) for path in remover_results]
    removed = {name for report in remover_reports for name in report["removed"]}
    assert len(committed) == WRITERS * FILES_PER_WRITER
    # The race really happened: many files went, and gc deleted chunks while writers were putting.
    assert len(removed) >= WRITERS * FILES_PER_WRITER // TEMPORARY_EVERY // 2
    assert sum(report["chunks_deleted_while_writing"] for report in remover_reports) > 0

    expected = {
        entry["name"]: file_content(entry["writer"], entry["index"])
        for entry in committed
        if entry["name"] not in removed
    }
    with Store.open(store_url) as store:
        assert {record.name for record in store.list()} == expected.keys()
        for name, content in expected.items():
            restored = io.BytesIO()
            store.get(name, restored)
            assert restored.getvalue() == content, f"{name} does not restore byte-exact"
        assert_verify_clean(store)
        store.gc()
        assert_no_garbage(store)
        assert_verify_clean(store)

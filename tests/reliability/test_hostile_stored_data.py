"""Hostile stored data: chunk objects that decompress to far more than they claim, catalog rows
of the wrong type or with names chunkstore would never store, reference counts that disagree
with the recipes, and edits of an encrypted store's config."""

from __future__ import annotations

import io
import random
import sqlite3
import struct
import tracemalloc
from contextlib import closing

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core import compression
from chunkstore.core.config import chunk_key
from chunkstore.core.objectformat import CIPHER_NONE, ObjectHeader
from chunkstore.errors import CorruptObjectError, IntegrityError
from chunkstore.operations.read import iter_recipe
from support.clihelpers import run_cli

ZSTD_MAGIC = 0xFD2FB528
# Frame header descriptor: an 8-byte content size field, single segment (no window byte).
SINGLE_SEGMENT_WITH_8_BYTE_SIZE = 0xE0
RLE_BLOCK = 1
GIB = 1 << 30
MEMORY_BOUND = 32 * 1024 * 1024


def zstd_bomb(declared_size: int) -> bytes:
    """A 16-byte zstd frame that declares declared_size bytes of content and holds one
    last RLE block of 128 KiB: a decoder that trusts the declaration allocates all of it."""
    block_header = 1 | (RLE_BLOCK << 1) | ((128 * 1024) << 3)
    return (
        struct.pack("<IBQ", ZSTD_MAGIC, SINGLE_SEGMENT_WITH_8_BYTE_SIZE, declared_size)
        + block_header.to_bytes(3, "little")
        + b"a"
    )


def peak_memory_of(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_zstd_frame_declaring_a_gibibyte_is_refused_without_allocating_it():
    def decompress():
        with pytest.raises(CorruptObjectError):
            compression.decompress(compression.ZSTD_ID, zstd_bomb(GIB), 65536)

    assert peak_memory_of(decompress) < MEMORY_BOUND


def test_get_and_restore_of_a_chunk_holding_a_zstd_bomb_fail_with_bounded_memory(tmp_path):
    with Store.init(
        str(tmp_path / "store"),
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        storage_format=1,
    ) as store:
        store.put_stream(io.BytesIO(bytes(range(256)) * 100), "bomb/file")
        entry = next(iter_recipe(store, store.catalog.get_version("bomb/file").digest))
        bomb = ObjectHeader(compression.ZSTD_ID, CIPHER_NONE, entry.length).pack() + zstd_bomb(GIB)
        store.blobs.put(chunk_key(entry.chunk_id), bomb)

        def get():
            with pytest.raises(IntegrityError):
                store.get("bomb/file", io.BytesIO())

        def restore():
            (result,) = store.restore("bomb", tmp_path / "target").results
            assert result.exit_code == IntegrityError.exit_code, result.error

        assert peak_memory_of(get) < MEMORY_BOUND
        assert peak_memory_of(restore) < MEMORY_BOUND


@pytest.fixture
def cli_store(tmp_path):
    """A local store holding data/a and data/b, put by the command line; returns (store, workdir)."""
    store, work = tmp_path / "store", tmp_path / "work"
    (work / "data").mkdir(parents=True)
    for name in ("a", "b"):
        (work / "data" / name).write_bytes(name.encode() * 1000)
    run_cli(store, "init", "--format", "1", "--avg-size", "4K", cwd=work)
    run_cli(store, "put", "data", cwd=work)
    return store, work


def edit_catalog(store, *statements: str) -> None:
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


# A hostile editor can rebuild a table without its NOT NULL constraints.
VERSIONS_WITHOUT_CONSTRAINTS = (
    "CREATE TABLE loose AS SELECT * FROM versions",
    "DROP TABLE versions",
    "ALTER TABLE loose RENAME TO versions",
)


@pytest.mark.parametrize(
    "edits, column",
    [
        (["UPDATE versions SET size = 'large' WHERE name = 'data/a'"], "size"),
        (["UPDATE versions SET mode = X'00' WHERE name = 'data/a'"], "mode"),
        (["UPDATE versions SET digest = 42 WHERE name = 'data/a'"], "digest"),
        ([*VERSIONS_WITHOUT_CONSTRAINTS, "UPDATE versions SET mtime_ns = NULL WHERE name = 'data/a'"], "mtime_ns"),
        (["UPDATE versions SET name = '../../etc/passwd' WHERE name = 'data/a'"], "name"),
        (["UPDATE versions SET name = '/data/a' WHERE name = 'data/a'"], "name"),
        (["UPDATE versions SET name = 'data//a' WHERE name = 'data/a'"], "name"),
        (["UPDATE versions SET name = 'data/a' || char(0) WHERE name = 'data/a'"], "name"),
        (["UPDATE contents SET page_count = 'two'"], "page_count"),
        (["UPDATE recipe_pages SET data = 'text'"], "data"),
    ],
)
def test_a_malformed_catalog_row_is_an_integrity_error_naming_it(cli_store, edits, column):
    store, work = cli_store
    edit_catalog(store, *edits)
    failures = [
        run_cli(store, *command, cwd=work, expect=(0, 4))
        for command in (["ls"], ["restore", "data", "-o", work / "out"], ["verify"])
    ]
    failed = [run for run in failures if run.returncode]
    assert failed, "no command noticed the damaged row"
    assert all(run.returncode == IntegrityError.exit_code for run in failed)
    assert any(f"{column} is" in run.stderr.decode() for run in failed), [run.stderr for run in failed]


@pytest.fixture
def stored_on_backend(new_backend, tmp_path):
    """A store holding data/kept and data/removed (then removed, so gc has work), on this
    test's backend; returns its objects (tests/support/storeobjects.py)."""
    objects = new_backend(tmp_path)
    with Store.init(
        objects.url,
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        storage_format=1,
        **objects.init_arguments(),
    ) as store:
        for name in ("data/kept", "data/removed"):
            store.put_stream(io.BytesIO(random.Random(name).randbytes(50_000)), name)
        store.remove(["data/removed"])
    return objects


def test_gc_deletes_nothing_while_a_chunk_a_recipe_uses_is_counted_unreferenced(stored_on_backend, tmp_path):
    objects = stored_on_backend
    with Store.open(objects.url) as store:
        victim = next(iter_recipe(store, store.catalog.get_version("data/kept").digest)).chunk_id
    objects.set_chunk_count(victim, 0)
    before = sorted(map(str, objects.keys()))

    completed = run_cli(objects.url, "gc", cwd=tmp_path, expect=IntegrityError.exit_code)
    assert "verify --repair" in completed.stderr.decode() and victim.hex() in completed.stderr.decode()
    run_cli(objects.url, "gc", "--dry-run", cwd=tmp_path, expect=IntegrityError.exit_code)
    assert sorted(map(str, objects.keys())) == before

    completed = run_cli(objects.url, "verify", "--repair", cwd=tmp_path)
    assert "repaired 1 reference counts" in completed.stdout.decode()
    run_cli(objects.url, "gc", cwd=tmp_path)
    assert objects.exists(chunk_key(victim))
    assert len(list(objects.keys())) < len(before)  # the removed file's chunks went
    expected = random.Random("data/kept").randbytes(50_000)
    assert run_cli(objects.url, "get", "data/kept", cwd=tmp_path).stdout == expected

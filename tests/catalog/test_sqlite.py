"""SQLiteCatalog: the conformance suite, plus what only a file shared by processes has."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from chunkstore.backends.catalog import ChunkState, CommitOutcome, FileStat, SnapshotRecord
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.backends.sqlite import SQLiteCatalog
from chunkstore.errors import CorruptObjectError, NotFoundError, UnsupportedFormatError
from support.catalog_conformance import CatalogConformance, chunk_id, new_version, put, states
from support.sqlite_schema import as_schema_4

TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def catalog_path(tmp_path) -> Path:
    return tmp_path / "catalog.sqlite"


@pytest.fixture
def open_catalog(catalog_path):
    """Open SQLiteCatalog handles on catalog_path (the first creates it); close them all at the end."""
    opened: list[SQLiteCatalog] = []

    def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> SQLiteCatalog:
        catalog = SQLiteCatalog(catalog_path, create=not catalog_path.exists(), lease_seconds=lease_seconds)
        opened.append(catalog)
        return catalog

    yield make
    for catalog in opened:
        catalog.close()


class TestSQLiteCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self, open_catalog):
        return open_catalog


def test_a_duplicate_names_the_version_stored_first_then_the_smallest_name(open_catalog):
    """Within a commit too: a version it stored is a holder for the versions after it, and one
    recorded at an earlier time than the stored ones is the oldest."""
    catalog = open_catalog()
    put(catalog, new_version("b", [1]), at_ns=2_000)
    assert put(catalog, new_version("c", [1]), new_version("a", [1]), at_ns=1_000) == [
        CommitOutcome("c", 1, "duplicate", "b"),
        CommitOutcome("a", 1, "duplicate", "c"),
    ]
    assert put(catalog, new_version("d", [1]), at_ns=3_000) == [CommitOutcome("d", 1, "duplicate", "a")]
    assert catalog.find_name_with_digest(new_version("x", [1]).digest) == "a"


def test_a_missing_catalog_is_not_created_by_opening(catalog_path):
    with pytest.raises(NotFoundError):
        SQLiteCatalog(catalog_path)
    assert not catalog_path.exists()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE meta SET value = '99' WHERE key = 'schema_version'", "DELETE FROM meta WHERE key = 'schema_version'"],
)
def test_an_unknown_schema_version_is_refused(open_catalog, catalog_path, statement):
    open_catalog().close()
    with sqlite3.connect(catalog_path) as db:
        db.execute(statement)
    with pytest.raises(UnsupportedFormatError):
        SQLiteCatalog(catalog_path)


def test_a_schema_2_catalog_gains_the_program_of_snapshots_when_opened(open_catalog, catalog_path):
    catalog = open_catalog()
    catalog.record_snapshot(SnapshotRecord("a" * 32, 1, "host", ("docs",), stored=2))
    catalog.close()
    with closing(sqlite3.connect(catalog_path)) as db, db:
        as_schema_4(db)
        db.execute("ALTER TABLE snapshots DROP COLUMN program")  # the table as schema 2 made it
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    upgraded = SQLiteCatalog(catalog_path)
    try:
        assert upgraded.list_snapshots() == [SnapshotRecord("a" * 32, 1, "host", ("docs",), stored=2, program="")]
        upgraded.record_snapshot(SnapshotRecord("b" * 32, 2, "host", (), program="web upload"))
        assert [snapshot.program for snapshot in upgraded.list_snapshots()] == ["", "web upload"]
    finally:
        upgraded.close()
    with closing(sqlite3.connect(catalog_path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)


def test_a_schema_4_catalog_gains_the_sealed_fields_when_opened(open_catalog, catalog_path):
    catalog = open_catalog()
    put(catalog, new_version("docs/a", [1]))
    catalog.record_snapshot(SnapshotRecord("a" * 32, 1, "host", ("docs",), stored=1))
    catalog.close()
    with closing(sqlite3.connect(catalog_path)) as db, db:
        as_schema_4(db)
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    upgraded = SQLiteCatalog(catalog_path)
    try:
        assert upgraded.get_version("docs/a").stat.sealed == b""
        assert upgraded.list_snapshots()[0].sealed == b""
        put(upgraded, replace(new_version("docs/b", [2]), stat=FileStat(1, 0, 0, sealed=b"sealed stat")))
        assert upgraded.get_version("docs/b").stat.sealed == b"sealed stat"
    finally:
        upgraded.close()
    with closing(sqlite3.connect(catalog_path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)


@pytest.mark.parametrize("damage", [b"this is not a database\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4080])
def test_a_corrupt_catalog_file_is_an_integrity_error(catalog_path, damage):
    catalog_path.write_bytes(damage)
    with pytest.raises(CorruptObjectError) as raised:
        SQLiteCatalog(catalog_path)
    assert raised.value.exit_code == 4


# A put in another process that commits one file, stores one more chunk and dies
# without closing its session.
_OTHER_PROCESS = """
import os, sys
from support.catalog_conformance import new_version, put, upload
from chunkstore.backends.sqlite import SQLiteCatalog

catalog = SQLiteCatalog(sys.argv[1])
put(catalog, new_version("from-other-process", [1]))
upload(catalog, catalog.open_session("put"), [2])
os._exit(0)
"""


def test_another_process_sees_commits_and_its_death_releases_its_pins(open_catalog, catalog_path):
    catalog = open_catalog()
    put(catalog, new_version("from-this-process", [3]))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(catalog_path)], env=environment, check=True)
    assert [record.name for record in catalog.list_versions()] == ["from-other-process", "from-this-process"]
    # The dead process's session still pins chunk 2; with a lease of half an hour, only
    # knowing that its process has exited lets gc take the chunk now.
    gc = catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)
    assert [chunk.chunk_id for chunk in catalog.collect_candidates(gc, 100)] == [chunk_id(2)]
    assert states(catalog, [1, 2, 3]) == [ChunkState.PRESENT, ChunkState.DELETING, ChunkState.PRESENT]

"""The SQLite catalog's pack index: the conformance suite on a real file, the upgrade of a schema 3
file, and rows damaged behind the catalog's back."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from chunkstore.backends.packindex import GcRound, IndexState, Phase
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.backends.sqlite import SCHEMA_VERSION, SQLiteCatalog
from chunkstore.errors import CorruptObjectError
from support.catalog_conformance import new_version, put
from support.packindex_conformance import PackIndexConformance, new_pack_id, new_page
from support.sqlite_schema import as_schema_4

PACK_INDEX_TABLES = {"gc_round", "packs", "pages", "hooks"}


@pytest.fixture
def open_catalog(tmp_path):
    """Open SQLiteCatalog handles on one file (the first creates it); close them all at the end."""
    path = tmp_path / "catalog.sqlite"
    opened: list[SQLiteCatalog] = []

    def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> SQLiteCatalog:
        opened.append(SQLiteCatalog(path, create=not path.exists(), lease_seconds=lease_seconds))
        return opened[-1]

    yield make
    for catalog in opened:
        catalog.close()


class TestSQLitePackIndex(PackIndexConformance):
    @pytest.fixture
    def make_catalog(self, open_catalog):
        return open_catalog


def tables(path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_version(path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


def test_a_schema_3_catalog_gains_the_pack_index_when_opened(open_catalog):
    catalog = open_catalog()
    put(catalog, new_version("docs/a", [1, 2]))
    catalog.close()
    with closing(sqlite3.connect(catalog.path)) as db, db:
        as_schema_4(db)
        for table in PACK_INDEX_TABLES:
            db.execute(f"DROP TABLE {table}")  # the file as schema 3 made it
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    upgraded = SQLiteCatalog(catalog.path)
    try:
        assert schema_version(catalog.path) == str(SCHEMA_VERSION) == "5"
        assert tables(catalog.path) >= PACK_INDEX_TABLES
        assert upgraded.get_version("docs/a").version == 1
        assert upgraded.pack_index.read_round() == GcRound(0, Phase.IDLE)
        upgraded.pack_index.write_pages(upgraded.pack_index.read_round(), [new_page(1)])
        assert upgraded.pack_index.get_page(new_page(1).page_id).state == IndexState.PRESENT
    finally:
        upgraded.close()


def test_a_read_only_handle_upgrades_a_schema_3_catalog_too(open_catalog):
    catalog = open_catalog()
    catalog.close()
    with closing(sqlite3.connect(catalog.path)) as db, db:
        as_schema_4(db)
        for table in PACK_INDEX_TABLES:
            db.execute(f"DROP TABLE {table}")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    reader = SQLiteCatalog(catalog.path, read_only=True)
    try:
        assert reader.pack_index.read_round() == GcRound(0, Phase.IDLE)
        assert list(reader.pack_index.iter_packs()) == []
    finally:
        reader.close()
    assert schema_version(catalog.path) == "5"


def damage(catalog: SQLiteCatalog, statement: str, *values) -> None:
    with closing(sqlite3.connect(catalog.path)) as db, db:
        db.execute(statement, values)


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE packs SET state = 9", r"state is 9, not one of \[0, 1, 2, 3\]"),
        ("UPDATE packs SET gen = 'x'", "gen is 'x', not an integer"),
        ("UPDATE packs SET owner = X'00'", r"owner is b'\\x00', not text"),
        ("UPDATE packs SET id = X'01'", r"id is b'\\x01', not 16 bytes"),
        ("UPDATE packs SET state = 2", "it is DOOMED without a round that doomed it"),
        ("UPDATE packs SET round = 3", "it is PRESENT with a round that doomed it"),
    ],
)
def test_a_damaged_pack_row_is_an_integrity_error_naming_it(open_catalog, statement, problem):
    catalog = open_catalog()
    index = catalog.pack_index
    session = catalog.open_session("put")
    pack = index.pack_stored(index.create_pack(session, new_pack_id(), 10, 1))
    damage(catalog, statement)
    for read in (lambda: index.get_packs([pack.pack_id, b"\x01"]), lambda: list(index.iter_packs())):
        with pytest.raises(CorruptObjectError, match=f"catalog row of packs .* is damaged: .*{problem}"):
            read()


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE pages SET body = 'text'", "body is 'text', not bytes"),
        ("UPDATE pages SET state = 0", "a page is never PENDING"),
        ("UPDATE pages SET origin = X'00'", "origin is b'\\\\x00', not 32 bytes"),
        ("UPDATE pages SET origin_segment = 1.5", "origin_segment is 1.5, not an integer"),
    ],
)
def test_a_damaged_page_row_is_an_integrity_error_naming_it(open_catalog, statement, problem):
    catalog = open_catalog()
    index = catalog.pack_index
    index.write_pages(index.read_round(), [new_page(1)])
    damage(catalog, statement)
    with pytest.raises(CorruptObjectError, match=f"catalog row of pages .* is damaged: .*{problem}"):
        index.get_page(new_page(1).page_id)


def test_a_damaged_round_or_hook_row_is_an_integrity_error(open_catalog):
    catalog = open_catalog()
    index = catalog.pack_index
    index.put_hooks({bytes(32): new_page(1).page_id})
    damage(catalog, "INSERT INTO gc_round VALUES (0, 1, 7, NULL)")
    damage(catalog, "UPDATE hooks SET page = X'0102'")
    with pytest.raises(CorruptObjectError, match=r"gc_round .* phase is 7, not one of \[0, 1, 2\]"):
        index.read_round()
    with pytest.raises(CorruptObjectError, match="hooks .* page is b'\\\\x01\\\\x02', not 32 bytes"):
        index.get_hooks([bytes(32)])


def test_a_damaged_file_is_an_integrity_error_not_a_traceback(open_catalog):
    catalog = open_catalog()
    catalog.close()
    damage(catalog, "DROP TABLE packs")
    reopened = SQLiteCatalog(catalog.path)
    try:
        with pytest.raises(Exception, match="no such table: packs") as raised:
            list(reopened.pack_index.iter_packs())
        assert type(raised.value).__module__ == "chunkstore.errors"
    finally:
        reopened.close()

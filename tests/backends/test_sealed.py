"""Sealed metadata (chunkstore/backends/sealed.py): the catalog contract kept over the memory and
SQLite catalogs (DynamoDB's run is in tests/s3/test_sealed_dynamodb.py), and the cipher's
names, stat data and snapshot records: round trips, what equal and related names share, and
every edited, moved or foreign sealed field refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace

import pytest

from chunkstore.backends.catalog import FileStat, SnapshotRecord
from chunkstore.backends.memory import CatalogState, MemoryCatalog
from chunkstore.backends.sealed import PASSED_THROUGH, MetadataCipher, SealedCatalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS, HOST
from chunkstore.backends.sqlite import SQLiteCatalog
from chunkstore.core.crypto import Keys
from chunkstore.core.names import MAX_NAME_BYTES
from chunkstore.errors import IntegrityError, InvalidArgumentError, NameNotFoundError, VersionNotFoundError
from support.catalog_conformance import CatalogConformance, new_version, put

KEYS = Keys.from_master(bytes(range(32)))
OTHER_KEYS = Keys.from_master(bytes(range(1, 33)))
STAT = FileStat(1234, mtime_ns=1_700_000_000_123_456_789, mode=0o100644, inode=987_654_321, ctime_ns=-5)


def sealed(inner) -> SealedCatalog:
    return SealedCatalog(inner, MetadataCipher(KEYS))


class TestSealedMemoryCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self):
        state = CatalogState()
        return lambda lease_seconds=DEFAULT_LEASE_SECONDS: sealed(MemoryCatalog(state, lease_seconds=lease_seconds))


class TestSealedSQLiteCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self, tmp_path):
        opened: list[SealedCatalog] = []

        def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> SealedCatalog:
            catalog = SQLiteCatalog(tmp_path / "catalog.sqlite", create=not opened, lease_seconds=lease_seconds)
            opened.append(sealed(catalog))
            return opened[-1]

        yield make
        for catalog in opened:
            catalog.close()


@pytest.fixture
def sqlite_catalog(tmp_path):
    with closing(SQLiteCatalog(tmp_path / "catalog.sqlite", create=True)) as inner:
        yield sealed(inner), tmp_path / "catalog.sqlite"


def rows(path, statement: str) -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(statement).fetchall()


def execute(path, statement: str, parameters: tuple = ()) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        assert db.execute(statement, parameters).rowcount >= 1


# ---- the layer -----------------------------------------------------------------------------


def test_only_methods_without_names_stat_or_snapshots_pass_through():
    """A method added to the contract must be looked at here: it passes through unsealed."""
    assert PASSED_THROUGH == [
        "acquire_gc_lock",
        "chunks_stored",
        "claim_chunks",
        "claim_orphans",
        "close_session",
        "collect_candidates",
        "forget_chunks",
        "get_chunks",
        "get_content",
        "heartbeat",
        "iter_chunks",
        "iter_contents",
        "open_session",
        "recipe_pages",
        "release_gc_lock",
        "remove_snapshots",
        "replace_inline_page",
        "set_content_refcounts",
        "set_refcounts",
        "stats",
    ]


def test_rows_hold_sealed_names_and_stat_and_give_back_the_plain_ones(sqlite_catalog):
    catalog, path = sqlite_catalog
    session = catalog.open_session("put")
    for name in ("photos/2026/beach.jpg", "photos/2026/notes.txt", "zeta", "alpha/deep/down/file"):
        catalog.commit(session, [replace(new_version(name, []), stat=STAT)])
    stored = rows(path, "SELECT name, size, mtime_ns, mode, inode, ctime_ns, length(sealed) FROM versions")
    assert all("photos" not in row[0] and "beach" not in row[0] for row in stored)
    assert {row[1:6] for row in stored} == {(1234, 0, 0, 0, 0)}
    assert all(row[6] > 0 for row in stored)
    # Listed by name (not by sealed name), with the stat as committed; prefixes by component.
    assert [record.name for record in catalog.list_versions()] == [
        "alpha/deep/down/file",
        "photos/2026/beach.jpg",
        "photos/2026/notes.txt",
        "zeta",
    ]
    assert {record.stat for record in catalog.list_versions("photos")} == {STAT}
    assert [record.name for record in catalog.list_versions("photos/2026/notes.txt")] == ["photos/2026/notes.txt"]
    assert list(catalog.list_versions("photos/2")) == []
    assert catalog.get_version("zeta").stat == STAT


def test_sessions_record_a_keyed_hash_of_the_host(sqlite_catalog):
    catalog, path = sqlite_catalog
    catalog.open_session("put")
    ((host,),) = rows(path, "SELECT host FROM sessions")
    ours, theirs = (MetadataCipher(keys).label("session host", HOST) for keys in (KEYS, OTHER_KEYS))
    assert host == ours != theirs
    assert HOST not in host


def test_errors_name_the_name_not_its_sealed_form(sqlite_catalog):
    catalog, _ = sqlite_catalog
    put(catalog, new_version("kept/file", []))
    with pytest.raises(NameNotFoundError, match="'kept/other'") as missing:
        catalog.get_version("kept/other")
    with pytest.raises(VersionNotFoundError, match="kept/file") as no_version:
        catalog.get_version("kept/file", 7)
    with pytest.raises(NameNotFoundError, match="'kept/gone'") as not_removed:
        catalog.remove_versions([("kept/gone", None)])
    sealed_name = MetadataCipher(KEYS).seal_name("kept/other")
    assert all(sealed_name not in str(error.value) for error in (missing, no_version, not_removed))


def test_a_duplicate_names_the_version_it_duplicates(sqlite_catalog):
    catalog, _ = sqlite_catalog
    put(catalog, new_version("first/a", [1]))
    [outcome] = put(catalog, new_version("second/b", [1]))
    assert (outcome.name, outcome.outcome, outcome.duplicate_of) == ("second/b", "duplicate", "first/a")
    assert catalog.find_name_with_digest(new_version("x", [1]).digest) == "first/a"


def test_snapshots_are_sealed_in_their_rows(sqlite_catalog):
    catalog, path = sqlite_catalog
    snapshot = SnapshotRecord("id1", 5, "laptop-of-alice", ("home/alice", ""), stored=3, program="chunkstore put")
    catalog.record_snapshot(snapshot)
    [(host, paths, program, length)] = rows(path, "SELECT host, paths, program, length(sealed) FROM snapshots")
    assert (host, paths, program) == ("", "[]", "") and length > 0
    assert catalog.list_snapshots() == [snapshot]


def test_a_row_whose_stat_is_in_clear_or_moved_is_refused(sqlite_catalog):
    catalog, path = sqlite_catalog
    put(catalog, replace(new_version("a", [1]), stat=STAT), replace(new_version("b", [2]), stat=STAT))
    a, b = (MetadataCipher(KEYS).seal_name(name) for name in "ab")
    # b's sealed stat copied onto a: bound to b's name and content, so refused.
    execute(path, "UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE name = ?) WHERE name = ?", (b, a))
    with pytest.raises(IntegrityError, match="stat"):
        catalog.get_version("a")
    execute(path, "UPDATE versions SET sealed = X'' WHERE name = ?", (b,))
    with pytest.raises(IntegrityError, match="in clear"):
        catalog.get_version("b")


def test_a_row_moved_to_another_sealed_name_or_foreign_is_refused(sqlite_catalog):
    catalog, path = sqlite_catalog
    put(catalog, new_version("folder/a", [1]))
    cipher, foreign = MetadataCipher(KEYS), MetadataCipher(OTHER_KEYS)
    execute(path, "UPDATE versions SET name = ?", (foreign.seal_name("folder/a"),))
    with pytest.raises(IntegrityError, match="does not open with this store's key"):
        list(catalog.list_versions())
    # A component sealed under another folder does not open under this one.
    moved = cipher.seal_name("other") + "/" + cipher.seal_name("folder/a").split("/")[1]
    execute(path, "UPDATE versions SET name = ?", (moved,))
    with pytest.raises(IntegrityError, match="does not open"):
        list(catalog.list_versions())


# ---- the cipher ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 255, "données/été/ça.txt", "a/b/c/d/e/f/g/h/i/j", "with space/and\ttab/emoji \U0001f600", "-_/~"],
)
def test_names_round_trip_and_use_only_safe_characters(name):
    cipher = MetadataCipher(KEYS)
    stored = cipher.seal_name(name)
    assert cipher.open_name(stored) == name
    assert set(stored) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_/")
    assert stored.count("/") == name.count("/")


def test_equal_names_seal_equal_and_folders_seal_to_prefixes():
    cipher = MetadataCipher(KEYS)
    assert cipher.seal_name("a/b/c") == MetadataCipher(KEYS).seal_name("a/b/c")
    assert cipher.seal_name("a/b/c").startswith(cipher.seal_name("a/b") + "/")
    # The same component under two folders seals differently: only whole prefixes show.
    assert cipher.seal_name("x/src").split("/")[1] != cipher.seal_name("y/src").split("/")[1]
    assert cipher.seal_name("a/b") != MetadataCipher(OTHER_KEYS).seal_name("a/b")
    assert cipher.seal_prefix("") == ""


def test_lengths_show_only_to_16_bytes():
    cipher = MetadataCipher(KEYS)
    assert len({len(cipher.seal_name("n" * size)) for size in range(1, 16)}) == 1
    assert len(cipher.seal_name("n" * 15)) < len(cipher.seal_name("n" * 16))


def test_a_name_too_long_once_sealed_is_refused():
    cipher = MetadataCipher(KEYS)
    name = "/".join(["abc"] * 200)  # 799 bytes, 200 components of 32 bytes sealed
    assert len(name) < MAX_NAME_BYTES
    with pytest.raises(InvalidArgumentError, match="too long for a store that encrypts its names"):
        cipher.seal_name(name)


@pytest.mark.parametrize("stored", ["", "AAAA", "!!!!", "a/b", "a" * 43, "%2F"])
def test_garbage_names_are_refused(stored):
    with pytest.raises(IntegrityError):
        MetadataCipher(KEYS).open_name(stored)


@pytest.mark.parametrize("refused", ["..", ".", "a/../b"])
def test_a_sealed_name_the_name_rules_refuse_does_not_open(refused):
    cipher = MetadataCipher(KEYS)
    with pytest.raises(IntegrityError):
        cipher.open_name(cipher.seal_name(refused))


def test_a_flipped_bit_in_any_component_is_refused():
    cipher = MetadataCipher(KEYS)
    stored = cipher.seal_name("one/two")
    for position in range(len(stored)):
        if stored[position] == "/":
            continue
        flipped = stored[:position] + ("A" if stored[position] != "A" else "B") + stored[position + 1 :]
        with pytest.raises(IntegrityError):
            cipher.open_name(flipped)


def test_stat_round_trips_and_is_bound_to_its_name_and_content():
    cipher = MetadataCipher(KEYS)
    sealed_stat = cipher.seal_stat("NAME", b"digest", STAT)
    assert (sealed_stat.size, sealed_stat.mtime_ns, sealed_stat.inode) == (1234, 0, 0)
    assert str(STAT.inode).encode() not in sealed_stat.sealed
    assert cipher.open_stat("NAME", b"digest", sealed_stat) == STAT
    for name, digest in (("OTHER", b"digest"), ("NAME", b"other")):
        with pytest.raises(IntegrityError):
            cipher.open_stat(name, digest, sealed_stat)
    with pytest.raises(IntegrityError):
        MetadataCipher(OTHER_KEYS).open_stat("NAME", b"digest", sealed_stat)


def test_sealed_stat_that_holds_no_stat_is_refused():
    cipher = MetadataCipher(KEYS)
    for fields in (b"[1, 2, 3]", b'{"a": 1}', b"[1, -1, 0, 0]", b"[1, 2, -3, 4]", b"[1.5, 2, 3, 4]", b"nonsense"):
        forged = FileStat(1, 0, 0, sealed=KEYS.records.seal(fields, b"chunkstore stat 1\0N\0d"))
        with pytest.raises(IntegrityError):
            cipher.open_stat("N", b"d", forged)


def test_snapshot_records_round_trip_bound_to_their_id():
    cipher = MetadataCipher(KEYS)
    snapshot = SnapshotRecord("abc", 1, "host.example", ("data", ""), program="web upload")
    stored = cipher.seal_snapshot(snapshot)
    assert (stored.host, stored.paths, stored.program) == ("", (), "")
    assert cipher.open_snapshot(stored) == snapshot
    with pytest.raises(IntegrityError):
        cipher.open_snapshot(replace(stored, snapshot_id="abd"))
    forged = replace(stored, sealed=KEYS.records.seal(b'{"host": "h", "paths": ["../x"], "program": ""}', b"x"))
    with pytest.raises(IntegrityError):
        cipher.open_snapshot(forged)


def test_the_folder_caches_do_not_change_answers():
    cipher = MetadataCipher(KEYS)
    names = [f"f{index % 7}/g{index % 3}/file{index}" for index in range(300)]
    sealed_names = [cipher.seal_name(name) for name in names]
    fresh = MetadataCipher(KEYS)
    assert [fresh.seal_name(name) for name in names] == sealed_names
    assert [fresh.open_name(name) for name in sealed_names] == names

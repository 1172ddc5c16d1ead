"""Damage to chunk objects, the config and the catalog: get, restore and verify detect it, name
the affected files and exit 4; nothing wrong is ever handed back. verify --repair rewrites
reference counts from the recipes, deletes nothing a recipe references, and lists what is lost.

Damage to objects and counts is done on a local store and on an s3:// store (objects in S3,
counts on DynamoDB items); damage to the SQLite file and the config is local. (Flipped,
truncated and deleted objects through every command are also covered in
tests/cli/test_cli_integrity.py.) A store of storage format 2 gets the same checks for damage to
its packs (records, table, length, the whole object), recipe page items and content roots; what
verify alone reports of such damage, and gc's refusal, is in tests/operations/test_packed_maintenance.py."""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from chunkstore import Store
from chunkstore.backends.packs import pack_key
from chunkstore.core import packformat, pages
from chunkstore.core.config import CONFIG_KEY, chunk_key
from chunkstore.core.objectformat import HEADER_SIZE
from chunkstore.errors import CorruptObjectError, IntegrityError
from chunkstore.operations.packedcheck import pack_ids_of, read_recipe
from chunkstore.operations.read import iter_recipe
from support.clihelpers import run_cli
from support.faultkit import init_store
from support.storechecks import assert_no_garbage, assert_verify_clean

CONTENTS = {f"data/{name}": random.Random(name).randbytes(60_000) for name in ("good", "bad", "other")}


def store_contents(objects, source: Path, storage_format: int) -> None:
    """Create a store of storage_format where objects says and put CONTENTS, a file at a time."""
    init_store(objects, storage_format, avg_size=4096)
    source.mkdir()
    with Store.open(objects.url) as store:
        for name, data in CONTENTS.items():
            path = source / name.replace("/", "-")
            path.write_bytes(data)
            store.put([(path, name)])


@pytest.fixture
def stored(new_backend, tmp_path):
    """A new store holding CONTENTS, on this test's backend; returns its objects (storeobjects)."""
    objects = new_backend(tmp_path)
    store_contents(objects, tmp_path / "source", storage_format=1)
    return objects


@pytest.fixture
def stored_format_2(new_backend, tmp_path):
    """The same of storage format 2, with segments of a few chunks: each file (random bytes, put on
    its own) has a pack of its own, and a root naming a few recipe page items."""
    objects = new_backend(tmp_path)
    store_contents(objects, tmp_path / "source", storage_format=2)
    return objects


def own_chunks(store: Store, name: str) -> list[bytes]:
    """Chunk IDs only name uses."""

    def ids(of):
        return [entry.chunk_id for entry in iter_recipe(store, store.catalog.get_version(of).digest)]

    others = {chunk for other in CONTENTS if other != name for chunk in ids(other)}
    return [chunk for chunk in ids(name) if chunk not in others]


def own_chunk(objects, name: str, index: int = 0) -> bytes:
    with Store.open(objects.url) as store:
        return own_chunks(store, name)[index]


def chunk_objects(objects) -> list[str]:
    return sorted(map(str, objects.keys()))


def assert_detected_everywhere(objects, tmp_path, damaged_names: set[str]) -> None:
    """get, restore and verify --read-data exit 4 naming each damaged file; the others restore exactly."""
    for name in CONTENTS:
        completed = run_cli(objects.url, "get", name, cwd=tmp_path, expect=(0, 4))
        if name in damaged_names:
            assert completed.returncode == 4 and name in completed.stderr.decode()
            assert CONTENTS[name].startswith(completed.stdout), f"get {name} wrote bytes that are not its own"
        else:
            assert completed.returncode == 0 and completed.stdout == CONTENTS[name]
    destination = tmp_path / "restored"
    completed = run_cli(objects.url, "restore", "data", "-o", destination, cwd=tmp_path, expect=4)
    for name, data in CONTENTS.items():
        target = destination / name
        if name in damaged_names:
            assert name in completed.stderr.decode() and not target.exists()
        else:
            assert target.read_bytes() == data
    completed = run_cli(objects.url, "verify", "--read-data", cwd=tmp_path, expect=4)
    for name in damaged_names:
        assert f"{name}@1" in completed.stderr.decode()


def flip_bit(objects, key: str, position: int, bit: int = 0) -> None:
    data = bytearray(objects.read(key))
    data[position] ^= 1 << bit
    objects.write(key, bytes(data))


def damage_one_object(operation):
    """A damage done to one object of data/bad, by operation(objects, key)."""

    def damage(objects) -> set[str]:
        operation(objects, chunk_key(own_chunk(objects, "data/bad")))
        return {"data/bad"}

    return damage


def swap_objects(objects) -> set[str]:
    first, second = chunk_key(own_chunk(objects, "data/bad")), chunk_key(own_chunk(objects, "data/other"))
    first_bytes = objects.read(first)
    objects.write(first, objects.read(second))
    objects.write(second, first_bytes)
    return {"data/bad", "data/other"}


# Each damages the store's objects and says which files it damaged.
OBJECT_DAMAGE = {
    "bit-flip": damage_one_object(lambda objects, key: flip_bit(objects, key, len(objects.read(key)) // 2, bit=3)),
    "truncated": damage_one_object(lambda objects, key: objects.write(key, objects.read(key)[:-7])),
    "deleted": damage_one_object(lambda objects, key: objects.delete(key)),
    "swapped": swap_objects,
}
# On s3, flipped, truncated and deleted objects are in the default run of test_cli_integrity.py.
QUICK_ON_S3 = {"swapped"}


@pytest.mark.parametrize(
    "damage",
    [pytest.param(damage, marks=[] if damage in QUICK_ON_S3 else [pytest.mark.slow_on_s3]) for damage in OBJECT_DAMAGE],
)
def test_damaged_objects_are_detected_and_the_files_named(stored, tmp_path, damage):
    damaged_names = OBJECT_DAMAGE[damage](stored)
    assert_detected_everywhere(stored, tmp_path, damaged_names)


@pytest.mark.slow_on_s3
def test_an_object_copied_over_another_of_the_same_size_is_detected(stored):
    """Same size, valid header, decodes fine: only the re-hash can tell."""
    with Store.open(stored.url) as store:
        victim = own_chunks(store, "data/bad")[0]
        store.put_stream(io.BytesIO(b"x" * 10), "data/tiny")
        tiny = next(iter_recipe(store, store.catalog.get_version("data/tiny").digest)).chunk_id
        store.remove(["data/tiny"])
    stored.write(chunk_key(victim), stored.read(chunk_key(tiny)))
    with Store.open(stored.url) as store, pytest.raises(IntegrityError, match="does not match its ID"):
        store.get("data/bad", io.BytesIO())


@pytest.mark.slow_on_s3
@pytest.mark.parametrize(
    "position", list(range(HEADER_SIZE)) + [HEADER_SIZE, HEADER_SIZE + 1, -1], ids=lambda position: f"byte-{position}"
)
def test_a_bit_flip_anywhere_in_an_object_is_detected(stored, position):
    with Store.open(stored.url) as store:
        victim = own_chunks(store, "data/bad")[1]
        flip_bit(stored, chunk_key(victim), position, bit=position % 8)
        output = io.BytesIO()
        with pytest.raises(IntegrityError, match="data/bad"):
            store.get("data/bad", output)
        assert CONTENTS["data/bad"].startswith(output.getvalue())
        report = store.verify(read_data=True)
        assert report.damaged_names == ["data/bad@1"]


def own_pack_and_pages(objects, name: str) -> tuple[bytes, list[bytes], bytes]:
    """The pack of a file of a format 2 store, the page IDs of its root, and its content digest."""
    with Store.open(objects.url) as store:
        digest = store.catalog.get_version(name).digest
        page_ids = [segment.page_id for segment in read_recipe(store.catalog, digest).segments]
        (pack_id,) = {
            pack_id
            for page_id in page_ids
            for pack_id in pack_ids_of(pages.parse_page(store.catalog.pack_index.get_page(page_id).body))
        }
    return pack_id, page_ids, digest


def damage_bad_pack(operation):
    """A damage done to the pack of data/bad, by operation(objects, key, trailer of the pack)."""

    def damage(objects) -> set[str]:
        pack_id, _, _ = own_pack_and_pages(objects, "data/bad")
        key = pack_key(pack_id)
        pack = objects.read(key)
        operation(objects, key, packformat.parse_trailer(pack, len(pack), sealed=False))
        return {"data/bad"}

    return damage


def garble_bad_page(objects) -> set[str]:
    _, page_ids, _ = own_pack_and_pages(objects, "data/bad")
    assert len(page_ids) > 1, "data/bad has an inline page: there is no page item to damage"
    objects.garble_page(page_ids[len(page_ids) // 2])
    return {"data/bad"}


def garble_bad_root(objects) -> set[str]:
    _, _, digest = own_pack_and_pages(objects, "data/bad")
    objects.garble_recipe(digest)
    return {"data/bad"}


# Each damages a format 2 store and says which files it damaged: a bit of a chunk record (in the
# middle of the records), of the pack's table (an entry's chunk ID), the last bytes of the pack,
# the whole pack, a recipe page item, a content's root.
FORMAT_2_DAMAGE = {
    "pack-record-bit-flip": damage_bad_pack(
        lambda objects, key, trailer: flip_bit(objects, key, trailer.table_offset // 2, bit=5)
    ),
    "pack-table-bit-flip": damage_bad_pack(
        lambda objects, key, trailer: flip_bit(objects, key, trailer.table_offset + 12, bit=1)
    ),
    "pack-truncated": damage_bad_pack(lambda objects, key, trailer: objects.write(key, objects.read(key)[:-7])),
    "pack-deleted": damage_bad_pack(lambda objects, key, trailer: objects.delete(key)),
    "page-item-garbled": garble_bad_page,
    "root-garbled": garble_bad_root,
}
# On s3, one damage to a pack object and one to a DynamoDB item run by default.
FORMAT_2_QUICK_ON_S3 = {"pack-table-bit-flip", "page-item-garbled"}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(damage, marks=[] if damage in FORMAT_2_QUICK_ON_S3 else [pytest.mark.slow_on_s3])
        for damage in FORMAT_2_DAMAGE
    ],
)
def test_damaged_packs_pages_and_roots_are_detected_and_the_files_named(stored_format_2, tmp_path, damage):
    damaged_names = FORMAT_2_DAMAGE[damage](stored_format_2)
    assert_detected_everywhere(stored_format_2, tmp_path, damaged_names)


CONFIG_DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "not-json": lambda raw: b"\x00\xff" + raw,
    "empty": lambda raw: b"",
    "flipped-brace": lambda raw: raw.replace(b"{", b"[", 1),
    "no-chunker": lambda raw: raw.replace(b'"chunker"', b'"chunkr"'),
    "chunker-size-text": lambda raw: raw.replace(b'"avg_size": 4096', b'"avg_size": "big"'),
    "catalog-path-escape": lambda raw: raw.replace(b'"catalog.sqlite"', b'"../elsewhere"'),
}


@pytest.mark.local_only("the config of a store in a folder")
@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
def test_a_damaged_config_gives_one_clear_line_and_exit_4(stored, tmp_path, damage):
    store_dir = stored.root
    config = store_dir / CONFIG_KEY
    config.write_bytes(CONFIG_DAMAGE[damage](config.read_bytes()))
    for command in (["ls"], ["get", "data/good"], ["verify"], ["put", "-", "--as", "x"], ["gc"], ["stats"]):
        completed = run_cli(store_dir, *command, cwd=tmp_path, expect=(1, 4), input=b"data")
        assert "config" in completed.stderr.decode(), completed.stderr
        assert completed.returncode == 4 or damage == "catalog-path-escape"


def damage_catalog_page(store_dir, fraction: float, seed: int) -> None:
    path = store_dir / "catalog.sqlite"
    assert not (store_dir / "catalog.sqlite-wal").exists() or os.path.getsize(store_dir / "catalog.sqlite-wal") == 0
    with sqlite3.connect(path) as db:
        page_size, page_count = (
            db.execute("PRAGMA page_size").fetchone()[0],
            db.execute("PRAGMA page_count").fetchone()[0],
        )
    db.close()
    # A whole page past the first (the file header), so the damage is in a table or index.
    page = max(1, min(page_count - 1, int(page_count * fraction)))
    with open(path, "r+b") as handle:
        handle.seek(page * page_size)
        handle.write(random.Random(seed).randbytes(page_size))


def sqlite_finds_damage(path) -> bool:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    except sqlite3.DatabaseError:
        return True
    finally:
        db.close()


@pytest.mark.local_only("the SQLite file of the catalog")
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 0.95])
def test_a_damaged_catalog_page_is_an_integrity_error_never_a_traceback(stored, tmp_path, fraction):
    store_dir = stored.root
    damage_catalog_page(store_dir, fraction, seed=int(fraction * 100))
    assert sqlite_finds_damage(store_dir / "catalog.sqlite"), "the damage missed every page in use"
    completed = run_cli(store_dir, "verify", cwd=tmp_path, expect=4)
    assert "catalog" in completed.stderr.decode()
    for name, data in CONTENTS.items():
        completed = run_cli(store_dir, "get", name, cwd=tmp_path, expect=(0, 3, 4))
        assert data.startswith(completed.stdout), f"get {name} from a damaged catalog wrote wrong bytes"
    for command in (
        ["ls", "--versions"],
        ["restore", "data", "-o", tmp_path / "out"],
        ["stats"],
        ["gc"],
        ["rm", "data/good"],
        ["put", "-", "--as", "data/new"],
    ):
        run_cli(store_dir, *command, cwd=tmp_path, expect=(0, 1, 3, 4), input=b"new data")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == CONTENTS[str(path.relative_to(tmp_path / "out"))]


@pytest.mark.local_only("the SQLite file of the catalog")
def test_a_catalog_that_is_not_a_database_is_an_integrity_error(stored, tmp_path):
    store_dir = stored.root
    (store_dir / "catalog.sqlite").write_bytes(b"not a database at all" * 200)
    for command in (["ls"], ["verify"], ["get", "data/good"]):
        completed = run_cli(store_dir, *command, cwd=tmp_path, expect=4)
        assert "catalog" in completed.stderr.decode()


# On s3 the count is the `rc` attribute of the chunk's DynamoDB item; its quick tier has wrong
# counts in the two tests below.
@pytest.mark.slow_on_s3
@pytest.mark.parametrize("wrong", [0, 1, 7], ids=["zero", "too-low", "too-high"])
def test_a_wrong_count_is_found_and_repaired(stored, tmp_path, wrong):
    with Store.open(stored.url) as store:
        victim = own_chunks(store, "data/bad")[0]
        right = store.catalog.get_chunks([victim])[victim].refcount
    assume_wrong = wrong if wrong != right else wrong + 1
    stored.set_chunk_count(victim, assume_wrong)
    completed = run_cli(stored.url, "verify", cwd=tmp_path, expect=4)
    assert "refcount" in completed.stderr.decode() and victim.hex() in completed.stderr.decode()
    completed = run_cli(stored.url, "verify", "--repair", cwd=tmp_path)
    assert "repaired 1 reference counts" in completed.stdout.decode()
    run_cli(stored.url, "verify", "--read-data", cwd=tmp_path)
    with Store.open(stored.url) as store:
        assert store.catalog.get_chunks([victim])[victim].refcount == right
        store.gc()
        assert_no_garbage(store)
        assert_verify_clean(store)


def test_a_zero_count_then_gc_would_lose_data_but_repair_first_keeps_it(stored, tmp_path):
    """The reason repair exists: a count of 0 on a referenced chunk lets gc delete it."""
    victim = own_chunk(stored, "data/bad")
    stored.set_chunk_count(victim, 0)
    run_cli(stored.url, "verify", "--repair", cwd=tmp_path)
    run_cli(stored.url, "gc", cwd=tmp_path)
    assert stored.exists(chunk_key(victim))
    assert run_cli(stored.url, "get", "data/bad", cwd=tmp_path).stdout == CONTENTS["data/bad"]


def test_repair_lists_unrecoverable_files_and_deletes_nothing(stored, tmp_path):
    lost, miscounted = own_chunk(stored, "data/bad"), own_chunk(stored, "data/other")
    stored.delete(chunk_key(lost))
    stored.set_chunk_count(miscounted, 9)
    objects_before = chunk_objects(stored)
    completed = run_cli(stored.url, "verify", "--repair", "--json", cwd=tmp_path, expect=4)
    report = json.loads(completed.stdout)
    assert report["counts_repaired"] == 1
    assert report["damaged_names"] == ["data/bad@1"]
    assert "missing-object" in completed.stderr.decode() and "data/bad@1" in completed.stderr.decode()
    completed = run_cli(stored.url, "verify", "--repair", cwd=tmp_path, expect=4)
    assert "repaired 0 reference counts" in completed.stdout.decode()
    assert "cannot be recovered: data/bad@1" in completed.stderr.decode()
    assert chunk_objects(stored) == objects_before
    with Store.open(stored.url) as store:
        assert store.catalog.get_chunks([miscounted])[miscounted].refcount == 1


def test_repair_never_lowers_counts_while_a_recipe_is_unreadable(stored):
    with Store.open(stored.url) as store:
        shared = own_chunks(store, "data/other")[0]
        digest = store.catalog.get_version("data/other").digest
    stored.garble_recipe(digest)
    with Store.open(stored.url) as store:
        report = store.verify(repair=True)
        assert report.counts_repaired == 0
        assert "data/other@1" in report.damaged_names
        assert store.catalog.get_chunks([shared])[shared].refcount == 1
        store.gc()
    assert stored.exists(chunk_key(shared))


@pytest.mark.slow_on_s3
def test_a_corrupt_object_header_is_reported_as_corrupt(stored):
    with Store.open(stored.url) as store:
        victim = own_chunks(store, "data/good")[0]
        stored.write(chunk_key(victim), b"CSOX" + stored.read(chunk_key(victim))[4:])
        with pytest.raises(CorruptObjectError, match=f"data/good.*{victim.hex()}"):
            store.get("data/good", io.BytesIO())

"""Properties of hostile stored data: whatever is done to a store's config, its catalog rows
or its chunk objects, opening and using the store raises only chunkstore's documented errors
(the command line: a documented exit code, one `chunkstore:` line per problem, no traceback),
damage to the catalog is an integrity error (exit 4), and a damaged chunk never makes a
command allocate beyond the store's chunk size."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import sqlite3
import time
import tracemalloc
from contextlib import closing
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.registry import LOCAL_CATALOG_FILE
from chunkstore.backends.sessions import HOST
from chunkstore.core import crypto
from chunkstore.core.config import chunk_key
from chunkstore.errors import ChunkstoreError, CorruptObjectError, IntegrityError, UnsupportedFormatError, WrongKeyError
from chunkstore.operations.read import iter_recipe
from support.inprocess import RAW_CONTROL, run_cli

PROPERTY = settings(deadline=None, database=None, derandomize=True)
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSPHRASE = b"correct horse"
CONTENT = random.Random(7).randbytes(20_000) + b"text " * 4_000
CONFIG_ERRORS = (CorruptObjectError, UnsupportedFormatError)

# ---- the config ------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            -1,
            0,
            2**63,
            10**30,
            "",
            "..",
            "config",
            "chunks",
            "catalog.sqlite\x00",
            "x" * 300,
            "\udcff",
            "../catalog.sqlite",
            "/etc/passwd",
            "sqlite",
            "dynamodb",
            "fixed",
            "zstd",
            "argon2id",
        ]
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def field_paths(document: dict, above: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in document.items():
        paths.append((*above, key))
        if isinstance(value, dict):
            paths += field_paths(value, (*above, key))
    return sorted(paths)


def mutated(original: dict, data) -> bytes:
    """original with 1-3 fields removed or replaced (at any depth), sometimes a bit flipped too."""
    document = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        *parents, key = data.draw(st.sampled_from(field_paths(original)), label="field")
        target = document
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if data.draw(st.booleans(), label="remove"):
            target.pop(key, None)
        else:
            target[key] = data.draw(JSON_VALUES, label="value")
    raw = bytearray(json.dumps(document, indent=2, sort_keys=True, allow_nan=True).encode())
    if data.draw(st.booleans(), label="flip a bit"):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(raw)


def make_template(root, encrypted: bool, monkeypatch, storage_format: int = 1) -> str:
    """A store holding data/a: storage format 1 unless asked (encrypted in format 2, it seals its
    metadata: a version 4 config)."""
    monkeypatch.setattr(crypto, "DEFAULT_KDF", FAST_KDF)
    template = root / ("encrypted" if encrypted else "plain")
    with Store.init(
        str(template),
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        storage_format=storage_format,
        **({"passphrase": PASSPHRASE} if encrypted else {}),
    ) as store:
        store.put_stream(io.BytesIO(CONTENT), "data/a")
    return template


@pytest.mark.parametrize(
    ("encrypted", "storage_format"),
    [(False, 1), (True, 1), (True, 2)],
    ids=["plain", "encrypted", "encrypted, metadata sealed"],
)
def test_an_edited_config_opens_or_is_refused_with_a_format_error(tmp_path, monkeypatch, encrypted, storage_format):
    template = make_template(tmp_path, encrypted, monkeypatch, storage_format)
    original = json.loads((template / "config").read_bytes())
    assert (original["version"] == 4) == (encrypted and storage_format == 2)  # 4: metadata sealed
    copies = count()
    options = {"passphrase": PASSPHRASE} if encrypted else {}

    @settings(PROPERTY, max_examples=80 if encrypted else 150)
    @given(st.data())
    def check(data):
        copy = tmp_path / f"copy{next(copies)}"
        shutil.copytree(template, copy)
        (copy / "config").write_bytes(mutated(original, data))
        try:
            with Store.open(str(copy), **options) as store:
                output = io.BytesIO()
                store.get("data/a", output)
                assert output.getvalue() == CONTENT
                store.put_stream(io.BytesIO(b"more" * 3000), "data/b")
                store.verify(read_data=True)
        except ChunkstoreError as error:
            # Damage is exit 4, a version or algorithm this chunkstore does not know exit 1, a
            # passphrase for a config that says it is plain exit 5; nothing else.
            assert isinstance(error, (*CONFIG_ERRORS, WrongKeyError)), repr(error)
        finally:
            shutil.rmtree(copy)

    check()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("catalog", "path"), "x" * 300, "invalid catalog path"),
        (("catalog", "path"), "catalog.sqlite\x00", "invalid catalog path"),
        (("chunker", "seed"), 2**70, "seed must be within"),
        (("chunker", "seed"), -1, "seed must be within"),
        (("store_id",), "\udcff", "invalid store ID"),
        (("store_id",), 12, "invalid store ID"),
        (("encryption", "kdf", "memory_kib"), 2**40, "memory_kib must be an integer within"),
        (("encryption", "kdf", "iterations"), 10**9, "iterations must be an integer within"),
        (("encryption", "kdf", "salt"), None, "salt is not text"),
        (("encryption", "wrapped_key"), "", "wrapped key is too short"),
        (("encryption", "config_mac"), "é" * 64, "authentication code does not match"),
    ],
)
def test_config_values_that_once_escaped_as_foreign_exceptions(tmp_path, monkeypatch, field, value, message):
    """Regressions: each of these raised OverflowError, OSError, AttributeError, ValueError or
    TypeError, or (memory_kib, iterations) made Argon2id allocate terabytes or run for hours."""
    encrypted = field[0] in ("encryption", "store_id")
    store = make_template(tmp_path, encrypted, monkeypatch)
    document = json.loads((store / "config").read_bytes())
    *parents, key = field
    target = document
    for parent in parents:
        target = target[parent]
    target[key] = value
    (store / "config").write_text(json.dumps(document))
    with pytest.raises(CONFIG_ERRORS, match=message):
        Store.open(str(store), **({"passphrase": PASSPHRASE} if encrypted else {})).close()
    if not encrypted:
        assert run_cli(store, "ls").code in (CorruptObjectError.exit_code, UnsupportedFormatError.exit_code)


# ---- catalog rows ----------------------------------------------------------------------

ROW_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            0,
            -1,
            1,
            2,
            2**31,
            2**53,
            2**63 - 1,
            -(2**63),
            1e308,
            float("inf"),
            float("nan"),
            -0.5,
            "",
            "x",
            "..",
            "../../etc/passwd",
            "/abs",
            "a//b",
            "a\x00b",
            "data/\x1b[2J",
            "data",
            "data/a/..",
            b"",
            bytes(32),
            b"\xff" * 32,
            "[]",
            '["../x"]',
            "[1]",
            "é" * 3000,
        ]
    ),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=40),
    st.text(max_size=12),
)
# Every command that reads or changes the catalog, as a user would run them.
COMMANDS = [
    ("ls",),
    ("ls", "--versions", "--json"),
    ("get", "data/a"),
    ("get", "data/b", "--version", "1"),
    ("restore", "data", "-o", "{out}"),
    ("verify", "--read-data"),
    ("stats",),
    ("snapshots",),
    ("diff", "--from", "2000-01-01"),
    ("rm", "data/b"),
    ("gc",),
    ("put", "{source}"),
    ("forget", "data", "--keep-last", "1"),
]


@pytest.fixture(scope="module")
def catalog_template(tmp_path_factory):
    """A store with two versions of data/b, a removed data/c, a symlink and two snapshots."""
    root = tmp_path_factory.mktemp("catalog-rows")
    source = root / "data"
    source.mkdir()
    (source / "a").write_bytes(CONTENT)
    (source / "b").write_bytes(b"b" * 20_000)
    (source / "c").write_bytes(b"")
    os.symlink("a", source / "link")
    store = root / "template"
    assert run_cli(store, "init", "--format", "1", "--avg-size", "4K").code == 0
    assert run_cli(store, "put", str(source)).code == 0
    (source / "b").write_bytes(b"b2" * 20_000)
    assert run_cli(store, "put", str(source)).code == 0
    assert run_cli(store, "rm", f"{str(source).lstrip('/')}/c").code == 0
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        db.execute("UPDATE versions SET name = substr(name, ?) WHERE 1", (len(str(source.parent)) + 1,))
        db.execute("UPDATE names SET name = substr(name, ?) WHERE 1", (len(str(source.parent)) + 1,))
        db.commit()
        tables = {
            table: (
                [row[1] for row in db.execute(f"PRAGMA table_info({table})")],
                db.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
            )
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    return store, source, {table: shape for table, shape in tables.items() if shape[1]}


def damage_row(db, table: str, columns: list[str], offset: int, column: str, value) -> None:
    row = db.execute(f"SELECT * FROM {table} LIMIT 1 OFFSET ?", (offset,)).fetchone()
    where = " AND ".join(f"{name} IS ?" for name in columns)
    # A value that would break a key or NOT NULL is not this example.
    with contextlib.suppress(sqlite3.IntegrityError):
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (value, *row))


def test_damaged_catalog_rows_are_integrity_errors_never_tracebacks(catalog_template, tmp_path):
    template, source, tables = catalog_template
    copies = count()

    @settings(PROPERTY, max_examples=100)
    @given(st.data())
    def check(data):
        store = tmp_path / f"copy{next(copies)}"
        shutil.copytree(template, store)
        with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
            for _ in range(data.draw(st.integers(1, 2), label="rows")):
                table = data.draw(st.sampled_from(sorted(tables)), label="table")
                columns, rows = tables[table]
                damage_row(
                    db,
                    table,
                    columns,
                    data.draw(st.integers(0, rows - 1), label="row"),
                    data.draw(st.sampled_from(columns), label="column"),
                    data.draw(ROW_VALUES, label="value"),
                )
            db.commit()
        for command in COMMANDS:
            arguments = [argument.format(out=tmp_path / "out", source=source) for argument in command]
            outcome = run_cli(store, *arguments)
            # restore may also refuse (exit 2) a damaged name that makes a file a folder's parent.
            allowed = (0, 1, 2, 3, 4) if command[0] == "restore" else (0, 1, 3, 4)
            assert outcome.code in allowed, (command, outcome)
        shutil.rmtree(store)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)

    check()


@pytest.mark.parametrize(
    ("table", "column", "value", "expected"),
    [
        ("versions", "mode", -1, "mode is -1, not an integer within 0..4294967295"),
        ("versions", "mode", 2**40, "mode is 1099511627776"),
        ("versions", "name", "data/\x1b[2J/../x", "name is 'data/\\x1b[2J/../x'"),
        ("recipe_pages", "data", 42, "data is 42, not bytes"),
        ("chunks", "state", 9, "state is 9"),
        ("meta", "value", b"\x00", "its schema version is b'\\x00', not a number"),
    ],
)
def test_catalog_values_that_once_escaped_as_foreign_exceptions(
    catalog_template, tmp_path, table, column, value, expected
):
    """Regressions: a mode out of the stat module's range (OverflowError in ls and restore),
    an unreadable page or count met by rm and forget (TypeError), a chunk state met by put
    (ValueError), and a schema version of the wrong type (exit 1 as if it were a newer one)."""
    template, source, tables = catalog_template
    store = tmp_path / "store"
    shutil.copytree(template, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        columns, rows = tables[table]
        for offset in range(rows):
            damage_row(db, table, columns, offset, column, value)
        db.commit()
    commands = [
        ("ls", "--json"),
        ("restore", "data", "-o", str(tmp_path / "o")),
        ("rm", "data/b"),
        ("put", str(source)),
        ("verify",),
    ]
    outcomes = [run_cli(store, *command) for command in commands]
    failed = [outcome for outcome in outcomes if outcome.code]
    assert failed and all(outcome.code == IntegrityError.exit_code for outcome in failed), outcomes
    assert any(expected in outcome.stderr for outcome in failed), [outcome.stderr for outcome in failed]
    assert not any(RAW_CONTROL.search(outcome.stderr) for outcome in outcomes)


def test_orphan_recipe_pages_are_an_integrity_error_when_put_meets_them(catalog_template, tmp_path):
    """Regression: pages left without their content row made put fail on SQLite's UNIQUE
    constraint (sqlite3.IntegrityError, a traceback)."""
    template, source, _ = catalog_template
    store = tmp_path / "store"
    shutil.copytree(template, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        db.execute("DELETE FROM contents")
        db.execute("DELETE FROM versions")
        db.commit()
    outcome = run_cli(store, "put", str(source))
    assert outcome.code == IntegrityError.exit_code and "exists without its content row" in outcome.stderr


@pytest.mark.parametrize(
    ("host", "pid", "code", "message"),
    [
        ("elsewhere", "pid", IntegrityError.exit_code, "pid is 'pid', not an integer"),
        (HOST, 2**40, 0, ""),  # no process has that ID: the session is dead, gc goes on
        (HOST, -1, 0, ""),  # nor a negative one (os.kill would signal a process group)
    ],
)
def test_a_damaged_session_row_met_by_gc(catalog_template, tmp_path, host, pid, code, message):
    """Regression: gc handed a session row's values to the liveness check unchecked (TypeError,
    or OverflowError from os.kill for a process ID beyond pid_t)."""
    template, _, _ = catalog_template
    store = tmp_path / "store"
    shutil.copytree(template, store)
    with closing(sqlite3.connect(store / "catalog.sqlite")) as db:
        db.execute("INSERT INTO sessions VALUES ('crashed', 'gc', ?, ?, 0, ?)", (host, pid, time.time_ns()))
        db.execute("INSERT INTO gc_lock VALUES (0, 'crashed')")
        db.commit()
    outcome = run_cli(store, "gc")
    assert outcome.code == code and message in outcome.stderr, outcome


def test_a_damaged_version_item_mode_is_an_integrity_error_on_every_catalog(new_backend, tmp_path):
    """The same mode rule holds for DynamoDB items (on the moto server) as for SQLite rows."""
    objects = new_backend(tmp_path)
    with Store.init(
        objects.url,
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        storage_format=1,
        **objects.init_arguments(),
    ) as store:
        store.put_stream(io.BytesIO(b"x" * 100), "data/a")
    for mode in (-1, 2**40):
        if hasattr(objects, "clients"):
            dynamodb = objects.clients.dynamodb
            [item] = dynamodb.scan(
                TableName=objects.table,
                FilterExpression="nm = :name AND v = :one",
                ExpressionAttributeValues={":name": {"S": "data/a"}, ":one": {"N": "1"}},
            )["Items"]
            dynamodb.update_item(
                TableName=objects.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET md = :mode",
                ExpressionAttributeValues={":mode": {"N": str(mode)}},
            )
        else:
            with closing(sqlite3.connect(objects.root / LOCAL_CATALOG_FILE)) as db:
                db.execute("UPDATE versions SET mode = ?", (mode,))
                db.commit()
        with Store.open(objects.url) as store, pytest.raises(IntegrityError, match="mode"):
            list(store.list())


# ---- chunk objects ---------------------------------------------------------------------

# A traced peak above this while reading a 36 KB file of chunks of 16 KiB at most means a
# damaged object made something allocate by a length it declares.
MEMORY_BOUND = 4 * 1024 * 1024


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_damaged_chunk_object_is_reported_as_corruption_with_bounded_memory(tmp_path, monkeypatch, encrypted):
    template = make_template(tmp_path, encrypted, monkeypatch)
    with Store.open(str(template), **({"passphrase": PASSPHRASE} if encrypted else {})) as store:
        keys = [chunk_key(entry.chunk_id) for entry in iter_recipe(store, store.catalog.get_version("data/a").digest)]
        originals = {key: store.blobs.get(key) for key in keys}

        @settings(PROPERTY, max_examples=60)
        @given(st.data())
        def check(data):
            key = data.draw(st.sampled_from(keys), label="chunk")
            blob = bytearray(originals[key])
            damage = data.draw(st.sampled_from(["flip", "truncate", "replace", "append", "header byte"]))
            if damage == "flip":
                for _ in range(data.draw(st.integers(1, 4))):
                    blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            elif damage == "truncate":
                del blob[data.draw(st.integers(0, len(blob) - 1)) :]
            elif damage == "replace":
                blob = bytearray(data.draw(st.binary(max_size=300)))
            elif damage == "append":
                blob += data.draw(st.binary(min_size=1, max_size=64))
            else:
                blob[data.draw(st.integers(0, min(31, len(blob) - 1)))] = data.draw(st.integers(0, 255))
            store.blobs.put(key, bytes(blob))
            tracemalloc.start()
            try:
                output = io.BytesIO()
                try:
                    store.get("data/a", output)
                except IntegrityError:
                    pass
                else:
                    assert output.getvalue() == CONTENT
                report = store.verify(read_data=True)
                assert report.problems or bytes(blob) == originals[key]
            finally:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                store.blobs.put(key, originals[key])
            assert peak < MEMORY_BOUND, peak

        check()


def test_a_damaged_chunk_object_through_the_command_line(catalog_template, tmp_path):
    template, _, _ = catalog_template
    store = tmp_path / "store"
    shutil.copytree(template, store)
    keys = sorted((store / "chunks").rglob("*"))
    chunk_files = [path for path in keys if path.is_file()]
    originals = {path: path.read_bytes() for path in chunk_files}

    @settings(PROPERTY, max_examples=40)
    @given(st.sampled_from(chunk_files), st.binary(max_size=200))
    def check(path, garbage):
        path.write_bytes(garbage)
        try:
            assert run_cli(store, "verify", "--read-data").code == IntegrityError.exit_code
            # The chunk may belong only to an older version, which restore does not read.
            assert run_cli(store, "restore", "data", "-o", str(tmp_path / "o")).code in (0, IntegrityError.exit_code)
        finally:
            path.write_bytes(originals[path])
            shutil.rmtree(tmp_path / "o", ignore_errors=True)

    check()

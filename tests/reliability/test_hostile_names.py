"""Hostile names and sources: '..', absolute paths, NUL, very long names, bytes that are not
UTF-8, Unicode normalisation twins, names that are prefixes of each other, files that change
while they are read, empty files and stdin of unknown length."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
import unicodedata

import pytest

from chunkstore.backends.catalog import FileStat
from chunkstore.core.names import MAX_NAME_BYTES
from chunkstore.errors import InvalidArgumentError
from chunkstore.operations.objectput import ObjectWriter
from chunkstore.operations.writer import ChangedWhileReading
from support.clihelpers import run_cli
from support.storechecks import CHUNKSTORE


@pytest.fixture
def cli_store(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "work").mkdir()
    run_cli(store, "init", "--avg-size", "4K", cwd=tmp_path)
    return store, tmp_path / "work"


def put_json(store, work, *args, expect=0):
    return json.loads(run_cli(store, "put", *args, "--json", cwd=work, expect=expect).stdout)


def test_dot_dot_and_absolute_paths(cli_store, tmp_path):
    store, work = cli_store
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    summary = put_json(store, work, "../outside.txt", expect=1)
    assert summary["results"][0]["outcome"] == "error" and ".." in summary["results"][0]["error"]
    summary = put_json(store, work, outside)
    name = summary["results"][0]["name"]
    assert name == str(outside).lstrip("/") and not name.startswith("/")
    run_cli(store, "restore", name, "-o", tmp_path / "r", cwd=work)
    assert (tmp_path / "r" / name).read_bytes() == b"outside"
    run_cli(store, "put", "-", "--as", "../escape", cwd=work, input=b"x", expect=2)
    run_cli(store, "put", "-", "--as", "/etc/../../x", cwd=work, input=b"x", expect=2)


def test_nul_in_a_name_is_refused(store):
    for name in ("a\x00b", "dir/\x00", "\x00"):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            store.put_stream(io.BytesIO(b"data"), name)
    assert list(store.list()) == []


def test_very_long_names(store, tmp_path):
    part = "p" * 255
    longest_ok = "/".join([part] * ((MAX_NAME_BYTES + 1) // 256))
    assert len(longest_ok.encode()) <= MAX_NAME_BYTES
    store.put_stream(io.BytesIO(b"deep"), longest_ok)
    output = io.BytesIO()
    store.get(longest_ok, output)
    assert output.getvalue() == b"deep"
    # Below a folder the path passes PATH_MAX: restore reports it for that file, cleanly.
    (result,) = store.restore(longest_ok, tmp_path / "r").results
    assert result.error is None or "too long" in result.error.lower(), result.error
    with pytest.raises(InvalidArgumentError, match="longer than"):
        store.put_stream(io.BytesIO(b"x"), longest_ok + "/" + part)
    with pytest.raises(InvalidArgumentError, match="longer than"):
        store.put_stream(io.BytesIO(b"x"), "x" * (MAX_NAME_BYTES + 1))


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_skipped_with_an_error_and_the_rest_stored(cli_store):
    store, work = cli_store
    folder = work / "data"
    folder.mkdir()
    (folder / "fine.txt").write_bytes(b"fine")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9-latin1.txt"), "wb") as handle:
        handle.write(b"latin-1 name")
    summary = put_json(store, work, "data", expect=1)
    outcomes = {result["outcome"] for result in summary["results"]}
    assert outcomes == {"stored", "error"}
    error = next(result for result in summary["results"] if result["outcome"] == "error")
    assert "UTF-8" in error["error"]
    assert [entry["name"] for entry in json.loads(run_cli(store, "ls", "--json", cwd=work).stdout)] == ["data/fine.txt"]


def test_unicode_normalisation_twins_are_two_names_and_both_restore(cli_store, tmp_path):
    store, work = cli_store
    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    folder = work / "twins"
    folder.mkdir()
    (folder / nfc).write_bytes(b"composed")
    (folder / nfd).write_bytes(b"decomposed")
    if len(os.listdir(folder)) != 2:
        pytest.skip("this file system folds normalisation twins into one name")
    summary = put_json(store, work, "twins")
    assert summary["stored"] == 2
    names = [entry["name"] for entry in json.loads(run_cli(store, "ls", "--json", cwd=work).stdout)]
    assert sorted(names) == sorted([f"twins/{nfc}", f"twins/{nfd}"])
    run_cli(store, "restore", "twins", "-o", tmp_path / "r", cwd=work)
    assert (tmp_path / "r" / "twins" / nfc).read_bytes() == b"composed"
    assert (tmp_path / "r" / "twins" / nfd).read_bytes() == b"decomposed"
    assert run_cli(store, "get", f"twins/{nfd}", cwd=work).stdout == b"decomposed"


# Names that share prefixes, including LIKE's wildcards: a prefix selects itself and what lies
# below it, never a name it is merely a string prefix of.
PREFIX_NAMES = ["d/a", "d/ab", "d/a b", "d/a.txt", "d/a_x/f", "d/aXx/f", "d/a%/f", "d/a%b/f", "d/a\\/f", "d/a\\b/f"]


def test_names_that_are_prefixes_of_each_other(store, tmp_path):
    for index, name in enumerate(PREFIX_NAMES):
        store.put_stream(io.BytesIO(f"content {index}".encode()), name)
    for index, name in enumerate(PREFIX_NAMES):
        output = io.BytesIO()
        store.get(name, output)
        assert output.getvalue() == f"content {index}".encode()
        folder = name.rsplit("/", 1)[0] + "/" if name.count("/") > 1 else None
        below = sorted(other for other in PREFIX_NAMES if other == name or other.startswith(name + "/"))
        assert [record.name for record in store.list(name)] == below, name
        if folder:
            prefix = folder.rstrip("/")
            expected = sorted(other for other in PREFIX_NAMES if other.startswith(folder))
            assert [record.name for record in store.list(prefix)] == expected, prefix
    summary = store.restore("d/a_x", tmp_path / "r")
    assert [result.name for result in summary.results] == ["d/a_x/f"]
    removed = store.remove(["d/a%"], recursive=True)
    assert [record.name for record in removed] == ["d/a%/f"]


def test_a_file_changing_while_it_is_read_is_reported_not_stored(store, tmp_path):
    path = tmp_path / "busy.bin"
    path.write_bytes(os.urandom(24 * 1024 * 1024))
    stop = threading.Event()

    def keep_changing():
        stamp = 1_000_000_000_000_000_000
        with open(path, "r+b") as handle:
            while not stop.is_set():
                stamp += 1
                os.pwrite(handle.fileno(), os.urandom(64), (stamp * 7919) % (20 * 1024 * 1024))
                os.utime(handle.fileno(), ns=(stamp, stamp))

    changer = threading.Thread(target=keep_changing)
    changer.start()
    try:
        summary = store.put([(path, "busy.bin")])
    finally:
        stop.set()
        changer.join()
    (result,) = summary.results
    assert result.outcome == "error" and "changed" in result.error
    assert list(store.list()) == []


def test_a_file_that_shrinks_while_it_is_read_is_not_stored(store, tmp_path):
    path = tmp_path / "shrinking.bin"
    path.write_bytes(os.urandom(24 * 1024 * 1024))
    started = threading.Event()

    class ShrinkOnFirstRead(io.FileIO):
        def readinto(self, buffer):
            if not started.is_set():
                started.set()
                os.truncate(path, 1024 * 1024)
            return super().readinto(buffer)

    writer_stat = os.stat(path)
    writer = ObjectWriter(store)
    try:
        with ShrinkOnFirstRead(path, "rb") as handle, pytest.raises(ChangedWhileReading, match="size changed"):
            writer.add_stream(handle, "shrinking.bin", FileStat(writer_stat.st_size, writer_stat.st_mtime_ns, 0o100644))
        assert writer.commit() == []
    finally:
        writer.close()
    assert list(store.list()) == []


def test_an_empty_file_and_empty_stdin(cli_store, tmp_path):
    store, work = cli_store
    (work / "empty").write_bytes(b"")
    assert put_json(store, work, "empty")["results"][0]["outcome"] == "stored"
    assert (
        json.loads(run_cli(store, "put", "-", "--as", "empty-stdin", "--json", cwd=work, input=b"").stdout)["outcome"]
        == "duplicate"
    )
    assert run_cli(store, "get", "empty", cwd=work).stdout == b""
    run_cli(store, "restore", "empty", "-o", tmp_path / "r", cwd=work)
    assert (tmp_path / "r" / "empty").read_bytes() == b""
    run_cli(store, "verify", "--read-data", cwd=work)


def test_stdin_of_unknown_length_through_a_pipe(cli_store, tmp_path):
    store, work = cli_store

    producer = [
        sys.executable,
        "-c",
        "import sys, random\nr = random.Random(5)\nfor _ in range(100): sys.stdout.buffer.write(r.randbytes(65_537))",
    ]
    rng = random.Random(5)
    expected = b"".join(rng.randbytes(65_537) for _ in range(100))
    with subprocess.Popen(producer, stdout=subprocess.PIPE) as source:
        completed = subprocess.run(
            [*CHUNKSTORE, "--store", str(store), "put", "-", "--as", "piped", "--json"],
            stdin=source.stdout,
            capture_output=True,
            cwd=work,
            timeout=300,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr.decode()
    assert json.loads(completed.stdout)["size"] == len(expected)
    assert run_cli(store, "get", "piped", cwd=work).stdout == expected

"""`chunkstore migrate SOURCE DEST` end to end through the real command: a format 1 store made by
today's commands (put --time, put --sync, put from stdin, rm --version) copied into a new format 2
store in a folder and on s3:// (moto), its refusals, and encrypted stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chunkstore import Store
from support.clirunner import Chunkstore, assert_one_error, assert_usage_error, random_bytes, text_bytes, write
from support.storechecks import get_bytes

DAY = "2026-11-0{}T03:00Z"


@pytest.fixture
def source(tmp_path) -> Chunkstore:
    """A runner of a format 1 store in a folder, with a short history of every kind."""
    workdir = tmp_path / "source-work"
    workdir.mkdir()
    cli = Chunkstore(tmp_path / "v1", workdir)
    cli("init", "--format", "1", "--avg-size", "4K")
    big = random_bytes(300_000, seed=1)
    write(workdir / "project/notes.txt", text_bytes(20_000, seed=2))
    write(workdir / "project/empty", b"")
    write(workdir / "project/deep/nested/big.bin", big)
    os.symlink("notes.txt", workdir / "project/link")
    cli("put", "project", "--time", DAY.format(1))
    write(workdir / "project/notes.txt", text_bytes(20_000, seed=3))
    write(workdir / "project/deep/nested/big.bin", big[:100_000] + random_bytes(2_000, seed=4) + big[102_000:])
    cli("put", "project", "--time", DAY.format(2))
    (workdir / "project/empty").unlink()
    cli("put", "project", "--sync", "--time", DAY.format(3))
    cli("put", "-", "--as", "db.sql", "--time", DAY.format(4), input=b"one dump")
    cli("put", "-", "--as", "db.sql", "--time", DAY.format(5), input=b"another dump")
    cli("rm", "project/notes.txt", "--version", "1")
    return cli


def history(cli: Chunkstore, store: str | Path) -> list[dict]:
    return cli.json("--store", store, "ls", "--versions", "--json")


def test_a_format_1_store_is_copied_with_its_history(source, uninitialized):
    dest = uninitialized
    dest("init", "--format", "2")
    report = dest.json("migrate", source.store, dest.store, "--json")
    versions = history(source, source.store)
    assert history(dest, dest.store) == versions
    assert [entry["version"] for entry in versions if entry["name"] == "project/notes.txt"] == [2]
    assert [entry["deleted"] for entry in versions if entry["name"] == "project/empty"] == [False, True]
    markers = sum(entry["deleted"] for entry in versions)
    assert (report["versions"], report["markers"], report["skipped"]) == (len(versions) - markers, markers, 0)
    assert report["snapshots"] == 5
    # The requests are counted where they cost: on s3:// (here DEST's only).
    assert set(report.get("requests", {})) == ({"dest"} if str(dest.store).startswith("s3://") else set())
    assert dest.json("snapshots", "--json") == source.json("snapshots", "--json")
    # Every version reads back the same (read in this process: a `get` each costs a process start).
    with Store.open(str(source.store)) as old, Store.open(str(dest.store)) as new:
        assert new.storage_format == 2
        for entry in versions:
            if not entry["deleted"]:
                assert get_bytes(new, entry["name"], entry["version"]) == get_bytes(
                    old, entry["name"], entry["version"]
                )
    dest("restore", "project", "-o", "restored")
    assert (dest.workdir / "restored/project/deep/nested/big.bin").read_bytes() == (
        source.workdir / "project/deep/nested/big.bin"
    ).read_bytes()
    assert os.readlink(dest.workdir / "restored/project/link") == "notes.txt"
    assert dest("verify", "--read-data").out.startswith("ok: ")

    again = dest("migrate", source.store, dest.store).out.splitlines()
    assert again[0] == (
        f"0 versions and 0 deletion markers copied, {len(versions)} already in DEST; 0 snapshots copied (5 names)"
    )


@pytest.mark.local_only("refusals are found before anything is written")
def test_a_destination_that_cannot_take_the_copy_is_refused(source, uninitialized, tmp_path):
    missing = tmp_path / "nothing-here"
    assert_one_error(source("migrate", source.store, missing, expect=3), f"no store at {missing}", "init --format 2")
    assert_one_error(source("migrate", missing, source.store, expect=3), f"no store at {missing}")
    assert_one_error(source("migrate", source.store, source.store, expect=2), "the source store itself")
    uninitialized("init", "--format", "1")
    assert_one_error(source("migrate", source.store, uninitialized.store, expect=2), "format 1 store", "--format 2")
    assert_usage_error(source("migrate", source.store, expect=2), "DEST")


@pytest.mark.local_only("the passphrases are read the same way for every kind of store")
def test_encrypted_stores_take_a_passphrase_each(uninitialized, tmp_path):
    workdir = tmp_path / "source-work"
    workdir.mkdir()
    source = Chunkstore(tmp_path / "v1", workdir)
    source.env["CHUNKSTORE_PASSPHRASE"] = "old secret"
    source("init", "--format", "1", "--avg-size", "4K", "--encrypt")
    data = random_bytes(50_000, seed=5)
    source("put", "-", "--as", "data.bin", input=data)
    dest = uninitialized
    dest.env["CHUNKSTORE_PASSPHRASE"] = "new secret"
    dest("init", "--format", "2", "--encrypt")
    del dest.env["CHUNKSTORE_PASSPHRASE"]

    run = dest("migrate", source.store, dest.store, expect=5)
    assert_one_error(run, "CHUNKSTORE_SOURCE_PASSPHRASE", "--source-passphrase-file")
    key_file = write(tmp_path / "dest-passphrase", b"new secret\n")
    dest.env["CHUNKSTORE_SOURCE_PASSPHRASE"] = "wrong"
    dest("migrate", source.store, dest.store, "--dest-passphrase-file", key_file, expect=5)
    dest.env["CHUNKSTORE_SOURCE_PASSPHRASE"] = "old secret"
    dest("migrate", source.store, dest.store, "--dest-passphrase-file", key_file)
    assert dest("--passphrase-file", key_file, "get", "data.bin").stdout == data

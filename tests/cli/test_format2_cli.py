"""The command line on a storage format 2 store (packs and recipe pages, `init --format 2`), end to
end through the real `chunkstore` command, on a folder and on an s3:// store."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import pytest

from support.clirunner import CHUNKS, CONFIG_KEY, assert_one_error, assert_usage_error, random_bytes, text_bytes, write

PACKS = PurePosixPath("packs")
BIG = 400_000


def make_project(root: Path) -> dict[str, bytes]:
    """A folder of files of every kind put handles; returns each regular file's bytes by name."""
    files = {
        "project/big.bin": random_bytes(BIG, seed=1),
        "project/notes.txt": text_bytes(50_000, seed=2),
        "project/empty.txt": b"",
        "project/deep/nested/file.dat": random_bytes(20_000, seed=3),
    }
    for name, data in files.items():
        write(root / name, data)
    os.symlink("notes.txt", root / "project/link")
    return files


def assert_restored(folder: Path, files: dict[str, bytes]) -> None:
    restored = {str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir()}
    assert restored == {*files, "project/link"}
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, name
    assert os.readlink(folder / "project/link") == "notes.txt"


def test_init_records_format_2(uninitialized):
    run = uninitialized("init", "--format", "2", "--avg-size", "8K")
    assert "storage format 2" in run.out
    config = json.loads(uninitialized.backend.read(CONFIG_KEY))
    assert (config["version"], config["recipe_format"]) == (3, 2)
    # 8 KiB chunks (FastCDC-2020 cuts ~1.3x that): a boundary in 1,024 chunks, 586..4,096 per page.
    assert config["segments"] == {"boundary_bits": 10, "min_chunks": 586, "max_chunks": 4096}


def test_init_format_2_is_the_default(uninitialized):
    run = uninitialized("init")
    assert "storage format 2" in run.out
    config = json.loads(uninitialized.backend.read(CONFIG_KEY))
    assert (config["version"], config["recipe_format"]) == (3, 2) and config["chunker"]["avg_size"] == 8192


def test_init_format_1_makes_a_format_1_store(uninitialized):
    run = uninitialized("init", "--format", "1")
    assert "storage format" not in run.out
    config = json.loads(uninitialized.backend.read(CONFIG_KEY))
    assert config["version"] < 3 and config["recipe_format"] == 1 and "segments" not in config


@pytest.mark.local_only("usage errors are found before any store is reached")
@pytest.mark.parametrize("value", ["3", "0", "two", ""])
def test_an_unknown_format_is_a_usage_error(uninitialized, value):
    run = uninitialized("init", "--format", value, expect=2)
    assert_usage_error(run, "--format")
    assert uninitialized.backend.untouched()


def test_the_main_commands_on_a_format_2_store(uninitialized):
    cli = uninitialized
    cli("init", "--format", "2", "--avg-size", "4K")
    files = make_project(cli.workdir)

    first = cli.json("put", "project", "--json")
    assert (first["stored"], first["unchanged"], first["errors"]) == (5, 0, 0)
    assert cli.backend.keys(PACKS) and not cli.backend.keys(CHUNKS)
    again = cli.json("put", "project", "--json")
    assert (again["stored"], again["unchanged"], again["new_bytes"]) == (0, 5, 0)

    listed = cli.json("ls", "--json")
    assert [(entry["name"], entry["size"]) for entry in listed] == [
        ("project/big.bin", BIG),
        ("project/deep/nested/file.dat", 20_000),
        ("project/empty.txt", 0),
        ("project/link", len("notes.txt")),
        ("project/notes.txt", 50_000),
    ]
    assert cli("get", "project/big.bin").stdout == files["project/big.bin"]
    cli("get", "project/notes.txt", "-o", "notes-copy.txt")
    assert (cli.workdir / "notes-copy.txt").read_bytes() == files["project/notes.txt"]
    cli("restore", "project", "-o", "first")
    assert_restored(cli.workdir / "first", files)

    # A new version with 1,000 bytes changed in the middle: its put stores a few chunks, not the file.
    old_big = files["project/big.bin"]
    files["project/big.bin"] = old_big[: BIG // 2] + random_bytes(1_000, seed=4) + old_big[BIG // 2 + 1_000 :]
    write(cli.workdir / "project/big.bin", files["project/big.bin"])
    edited = cli.json("put", "project", "--json")
    assert (edited["stored"], edited["unchanged"]) == (1, 4)
    assert 0 < edited["new_bytes"] < BIG // 10, edited["new_bytes"]
    versions = cli.json("ls", "project/big.bin", "--versions", "--json")
    assert [entry["version"] for entry in versions] == [1, 2]
    assert cli("get", "project/big.bin", "--version", "1").stdout == old_big
    assert cli("get", "project/big.bin").stdout == files["project/big.bin"]

    snapshots = cli.json("snapshots", "--json")
    assert [snapshot["stored"] for snapshot in snapshots] == [5, 0, 1]
    changes = cli("diff", "project", "--from", snapshots[0]["id"]).out.splitlines()
    assert changes[0] == f"M {f'{BIG:,} -> {BIG:,}':>14}  project/big.bin"
    assert changes[1].startswith("0 added (+0 B), 1 changed (+0 B), 0 deleted (+0 B) from ")

    cli("rm", "project/notes.txt")
    assert_one_error(cli("get", "project/notes.txt", expect=3), "project/notes.txt")
    forgotten = cli("forget", "project", "--keep-last", "1").out
    assert "remove" in forgotten
    assert [entry["version"] for entry in cli.json("ls", "project/big.bin", "--versions", "--json")] == [2]
    assert_one_error(cli("get", "project/big.bin", "--version", "1", expect=3), "project/big.bin")

    del files["project/notes.txt"]
    cli("restore", "project", "-o", "after")
    assert_restored(cli.workdir / "after", files)  # the link is restored, dangling now
    figures = cli.json("stats", "--json")
    assert (figures["storage_format"], figures["files"], figures["versions"]) == (2, 4, 4)
    assert cli("verify", "--read-data").out.startswith("ok: 4 versions, ")


def test_an_encrypted_format_2_store(uninitialized):
    uninitialized.env["CHUNKSTORE_PASSPHRASE"] = "correct horse battery staple"
    uninitialized("init", "--format", "2", "--avg-size", "4K", "--encrypt")
    data = random_bytes(200_000, seed=5)
    write(uninitialized.workdir / "secret.bin", data)
    uninitialized("put", "secret.bin")
    assert uninitialized.backend.keys(PACKS)
    assert uninitialized("get", "secret.bin").stdout == data
    del uninitialized.env["CHUNKSTORE_PASSPHRASE"]
    uninitialized("get", "secret.bin", expect=5)


def test_gc_frees_the_packs_of_a_removed_file_and_keeps_the_others(uninitialized):
    uninitialized("init", "--format", "2", "--avg-size", "4K")
    removed, kept = random_bytes(100_000, seed=6), random_bytes(100_000, seed=8)
    write(uninitialized.workdir / "removed.bin", removed)
    uninitialized("put", "removed.bin")
    before = set(uninitialized.backend.keys(PACKS))
    write(uninitialized.workdir / "kept.bin", kept)
    uninitialized("put", "kept.bin")
    kept_packs = set(uninitialized.backend.keys(PACKS)) - before
    uninitialized("rm", "removed.bin")
    assert json.loads(uninitialized("gc", "--dry-run", "--json").stdout)["packs_deleted"] == len(before)
    assert set(uninitialized.backend.keys(PACKS)) == before | kept_packs
    report = json.loads(uninitialized("gc", "--json").stdout)
    assert (report["packs_deleted"], report["orphans_deleted"]) == (len(before), 0)
    assert set(uninitialized.backend.keys(PACKS)) == kept_packs
    assert uninitialized("get", "kept.bin").stdout == kept
    uninitialized("verify", "--read-data")
    assert_one_error(uninitialized("get", "removed.bin", expect=3), "removed.bin")


@pytest.mark.local_only("the default does not depend on where the store is")
def test_a_format_2_store_cuts_8k_chunks_unless_told_otherwise(uninitialized):
    assert "fastcdc2020 2048/8192/32768" in uninitialized("init", "--format", "2").out
    assert json.loads(uninitialized("stats", "--json").out)["chunker"]["avg_size"] == 8192


def test_gc_repacks_a_pack_whose_other_file_was_removed(uninitialized):
    uninitialized("init", "--format", "2", "--avg-size", "4K")
    removed, kept = random_bytes(300_000, seed=9), random_bytes(100_000, seed=10)
    write(uninitialized.workdir / "both" / "removed.bin", removed)
    write(uninitialized.workdir / "both" / "kept.bin", kept)
    uninitialized("put", "both")
    (shared,) = uninitialized.backend.keys(PACKS)
    uninitialized("rm", "both/removed.bin")
    assert "rewrite" not in uninitialized("gc", "--max-repack", "0").out
    assert uninitialized.backend.keys(PACKS) == {shared}
    assert "would rewrite 1 packs" in uninitialized("gc", "--dry-run").out
    assert "rewrote 1 packs" in uninitialized("gc").out
    (moved,) = uninitialized.backend.keys(PACKS)
    assert moved != shared
    assert uninitialized("get", "both/kept.bin").stdout == kept
    uninitialized("verify", "--read-data")
    assert_usage_error(uninitialized("gc", "--max-repack", "lots", expect=2), "--max-repack")


@pytest.mark.local_only("the error does not depend on where the store is")
def test_a_missing_pack_is_an_integrity_error_for_get_and_restore(uninitialized):
    uninitialized("init", "--format", "2", "--avg-size", "4K")
    write(uninitialized.workdir / "lost.bin", random_bytes(100_000, seed=7))
    uninitialized("put", "lost.bin")
    for key in uninitialized.backend.keys(PACKS):
        uninitialized.backend.delete(key)
    assert_one_error(uninitialized("get", "lost.bin", expect=4), "lost.bin", "missing")
    assert_one_error(uninitialized("restore", "", "-o", "out", expect=4), "lost.bin", "missing")

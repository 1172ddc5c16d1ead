"""`chunkstore get` and `chunkstore restore`."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from support.clirunner import (
    assert_one_error,
    assert_usage_error,
    random_bytes,
    text_bytes,
    write,
)

OLD_MTIME_NS = 981_173_106_123_456_789  # 2001-02-03, with sub-second digits


def test_get_to_stdout_and_to_a_file(chunkstore):
    data = random_bytes(250_000, seed=20)
    source = write(chunkstore.workdir / "data.bin", data)
    os.chmod(source, 0o640)
    os.utime(source, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    chunkstore("put", "data.bin")
    assert chunkstore("get", "data.bin").stdout == data
    (chunkstore.workdir / "out").mkdir()
    assert chunkstore("get", "data.bin", "-o", "out/restored.bin").stdout == b""
    restored = chunkstore.workdir / "out" / "restored.bin"
    assert restored.read_bytes() == data
    assert stat.S_IMODE(restored.stat().st_mode) == 0o640
    assert restored.stat().st_mtime_ns == OLD_MTIME_NS


def test_get_output_replaces_an_existing_file(chunkstore):
    write(chunkstore.workdir / "f", b"new content")
    chunkstore("put", "f")
    target = write(chunkstore.workdir / "target", b"old content that is longer")
    chunkstore("get", "f", "--output", target)
    assert target.read_bytes() == b"new content"


def test_get_into_a_device_writes_into_it_and_leaves_the_device(chunkstore):
    write(chunkstore.workdir / "f", b"data")
    chunkstore("put", "f")
    # A rename over the device would replace its node with a file (for root): /dev/full, whose
    # every write fails, shows both that the bytes went into the device and that the node stays.
    if not stat.S_ISCHR(os.stat("/dev/full").st_mode):
        pytest.skip("this machine's /dev/full is not a character device")
    assert_one_error(chunkstore("get", "f", "-o", "/dev/full", expect=1), "No space left on device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_get_into_a_fifo_streams_into_it(chunkstore, tmp_path):
    data = random_bytes(300_000, seed=21)
    write(chunkstore.workdir / "f", data)
    chunkstore("put", "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    chunkstore("get", "f", "-o", str(fifo))
    reader.join(timeout=60)
    assert received == [data]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_get_through_a_symlink_replaces_the_file_it_leads_to(chunkstore, tmp_path):
    write(chunkstore.workdir / "f", b"new")
    chunkstore("put", "f")
    target = write(tmp_path / "target", b"old")
    link = tmp_path / "link"
    link.symlink_to(target)
    chunkstore("get", "f", "-o", str(link))
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_get_version(chunkstore):
    path = write(chunkstore.workdir / "f", b"first")
    chunkstore("put", "f")
    write(path, b"second")
    chunkstore("put", "f")
    assert chunkstore("get", "f", "--version", "1").stdout == b"first"
    assert chunkstore("get", "f", "--version", "2").stdout == b"second"
    assert chunkstore("get", "f").stdout == b"second"


def test_get_of_a_missing_name_exits_3(chunkstore):
    assert_one_error(chunkstore("get", "nothing/here", expect=3), "nothing/here")


def test_get_of_a_missing_version_exits_3(chunkstore):
    write(chunkstore.workdir / "f", b"only one version")
    chunkstore("put", "f")
    assert_one_error(chunkstore("get", "f", "--version", "7", expect=3), "'f'", "version 7")


def test_get_version_must_be_a_positive_number(chunkstore):
    assert_usage_error(chunkstore("get", "f", "--version", "0", expect=2), "--version")
    assert_usage_error(chunkstore("get", "f", "--version", "latest", expect=2), "--version")


def test_get_into_a_folder_is_refused(chunkstore):
    write(chunkstore.workdir / "f", b"data")
    chunkstore("put", "f")
    (chunkstore.workdir / "folder").mkdir()
    assert_usage_error(chunkstore("get", "f", "-o", "folder", expect=2), "folder", "is a directory")


def test_get_into_a_missing_folder_fails_naming_it(chunkstore):
    write(chunkstore.workdir / "f", b"data")
    chunkstore("put", "f")
    assert_one_error(chunkstore("get", "f", "-o", "missing/f", expect=1), "missing/f", "does not exist")
    assert not (chunkstore.workdir / "missing").exists()


def test_get_without_a_name_is_a_usage_error(chunkstore):
    assert_usage_error(chunkstore("get", expect=2), "Missing argument")


def test_restore_writes_names_below_the_folder_with_mode_and_mtime(chunkstore, tmp_path):
    source = tmp_path / "abs" / "path"
    files = {
        "x": (text_bytes(80_000, seed=21), 0o600),
        "sub/y": (random_bytes(40_000, seed=22), 0o755),
        "sub/deeper/z": (b"", 0o644),
    }
    for relative, (data, mode) in files.items():
        path = write(source / relative, data)
        os.chmod(path, mode)
        os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    chunkstore("put", source)  # an absolute path: stored as tmp/.../abs/path/...
    prefix = str(source).lstrip("/")
    destination = tmp_path / "restored"
    run = chunkstore("restore", prefix, "-o", destination)
    assert run.out == f"restored 3 files (117.2 KiB) to {destination}\n"  # 120,000 bytes
    for relative, (data, mode) in files.items():
        restored = destination / prefix / relative
        assert restored.read_bytes() == data
        assert stat.S_IMODE(restored.stat().st_mode) == mode
        assert restored.stat().st_mtime_ns == OLD_MTIME_NS


def test_restore_of_one_file_by_its_name(chunkstore, tmp_path):
    source = write(tmp_path / "abs" / "path" / "x", b"just x")
    write(tmp_path / "abs" / "path" / "other", b"not restored")
    chunkstore("put", tmp_path / "abs")
    name = str(source).lstrip("/")
    chunkstore("restore", "/" + name, "-o", tmp_path / "out")
    restored = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert restored == [tmp_path / "out" / name]
    assert restored[0].read_bytes() == b"just x"


def test_restore_prefix_matches_whole_path_components(chunkstore, tmp_path):
    write(chunkstore.workdir / "data" / "x", b"in data")
    write(chunkstore.workdir / "database" / "y", b"in database")
    chunkstore("put", "data", "database")
    chunkstore("restore", "data", "-o", tmp_path / "out")
    assert sorted(str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out").rglob("*")) == [
        "data",
        "data/x",
    ]


def test_restore_restores_the_latest_version(chunkstore, tmp_path):
    path = write(chunkstore.workdir / "f", b"old")
    chunkstore("put", "f")
    write(path, b"newest")
    chunkstore("put", "f")
    chunkstore("restore", "f", "-o", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == b"newest"


def test_restore_of_a_missing_prefix_exits_3(chunkstore, tmp_path):
    write(chunkstore.workdir / "f", b"data")
    chunkstore("put", "f")
    assert_one_error(chunkstore("restore", "nothing", "-o", tmp_path / "out", expect=3), "nothing")


def test_restore_into_a_folder_that_cannot_be_made_exits_1(chunkstore):
    write(chunkstore.workdir / "f", b"data")
    chunkstore("put", "f")
    write(chunkstore.workdir / "plain-file", b"not a folder")
    run = chunkstore("restore", "f", "-o", "plain-file/out", expect=1)
    assert_one_error(run, "plain-file/out: Not a directory")


def test_restore_needs_an_output_folder(chunkstore):
    assert_usage_error(chunkstore("restore", "x", expect=2), "-o")


def test_restore_refuses_to_write_through_a_symlinked_folder(chunkstore, tmp_path):
    write(chunkstore.workdir / "dir" / "f", b"data")
    chunkstore("put", "dir")
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "out"
    destination.mkdir()
    os.symlink(outside, destination / "dir")
    run = chunkstore("restore", "dir", "-o", destination, expect=2)
    assert "symlink" in run.err and "dir/f" in run.err
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("storage_format", ["1", "2"])
def test_chunks_larger_than_a_write_batch_come_back_byte_exact(uninitialized, tmp_path, storage_format):
    # 2 MiB chunks are larger than the 1 MiB batches a restore gathers writes in: written as
    # they are, between the batches of the smaller chunks around them.
    uninitialized("init", "--format", storage_format, "--chunker", "fixed", "--avg-size", "2M")
    data = random_bytes(2 * 2 * 1024 * 1024 + 700_000, seed=33)
    write(uninitialized.workdir / "big.bin", data)
    uninitialized("put", "big.bin")
    assert uninitialized("get", "big.bin").stdout == data
    uninitialized("restore", "big.bin", "-o", str(tmp_path / "out"))
    assert (tmp_path / "out" / "big.bin").read_bytes() == data

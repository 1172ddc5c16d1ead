"""`chunkstore put` of files, folders and stdin, and what it prints."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from support.clirunner import (
    assert_one_error,
    assert_usage_error,
    random_bytes,
    run_on_terminal,
    text_bytes,
    write,
)


def make_tree(root):
    """A folder of 2 new files, 1 copy of one of them, and a nested file."""
    write(root / "a.txt", text_bytes(120_000, seed=1))
    write(root / "b.bin", random_bytes(90_000, seed=2))
    write(root / "copy-of-a.txt", text_bytes(120_000, seed=1))
    write(root / "sub" / "c.txt", text_bytes(30_000, seed=3))
    return root


SUMMARY = re.compile(r"^(\d+) files: (\d+) stored, (\d+) duplicate, (\d+) unchanged, (\d+) errors$", re.MULTILINE)


def summary_counts(output: str) -> tuple[int, ...]:
    match = SUMMARY.search(output)
    assert match, f"no summary line in {output!r}"
    return tuple(int(group) for group in match.groups())


# ---- single files --------------------------------------------------------------------


def test_put_of_a_file_prints_stored_then_unchanged_then_duplicate(chunkstore):
    data = text_bytes(200_000, seed=4)
    write(chunkstore.workdir / "report.txt", data)
    assert chunkstore("put", "report.txt").out == "report.txt: stored\n"
    assert chunkstore("put", "report.txt").out == "report.txt: unchanged\n"
    shutil.copyfile(chunkstore.workdir / "report.txt", chunkstore.workdir / "copy.txt")
    assert chunkstore("put", "copy.txt").out == "copy.txt: duplicate of report.txt\n"
    assert chunkstore("get", "copy.txt").stdout == data


def test_duplicate_writes_no_chunk(chunkstore):
    write(chunkstore.workdir / "one", random_bytes(100_000, seed=5))
    chunkstore("put", "one")
    objects = chunkstore.objects()
    shutil.copyfile(chunkstore.workdir / "one", chunkstore.workdir / "two")
    assert chunkstore("put", "two").out == "two: duplicate of one\n"
    assert chunkstore.objects() == objects


def test_changed_file_gets_a_new_version(chunkstore):
    path = write(chunkstore.workdir / "notes", text_bytes(50_000, seed=6))
    chunkstore("put", "notes")
    write(path, text_bytes(50_000, seed=7))
    assert chunkstore("put", "notes").out == "notes: stored\n"
    versions = chunkstore.json("ls", "notes", "--versions", "--json")
    assert [entry["version"] for entry in versions] == [1, 2]
    assert chunkstore("get", "notes").stdout == text_bytes(50_000, seed=7)


def test_force_read_rereads_an_unchanged_file(chunkstore):
    write(chunkstore.workdir / "f", text_bytes(40_000, seed=8))
    chunkstore("put", "f")
    assert chunkstore("put", "f", "--force-read").out == "f: unchanged\n"
    document = chunkstore.json("put", "f", "--force-read", "--json")
    assert document["results"][0]["outcome"] == "unchanged"
    assert len(chunkstore.json("ls", "--versions", "--json")) == 1


def test_names_are_normalised_and_made_relative(chunkstore, tmp_path):
    write(chunkstore.workdir / "dir" / "x", b"relative")
    assert chunkstore("put", "./dir//x").out == "dir/x: stored\n"
    absolute = write(tmp_path / "abs" / "path" / "y", b"absolute")
    expected_name = str(absolute).lstrip("/")
    assert chunkstore("put", absolute).out == f"{expected_name}: stored\n"
    assert [entry["name"] for entry in chunkstore.json("ls", "--json")] == sorted(["dir/x", expected_name])


def test_a_folder_given_as_dot_stores_its_files_under_their_paths_within_it(chunkstore):
    source = chunkstore.workdir / "src"
    write(source / "a.txt", b"a")
    write(source / "sub" / "b.txt", b"b")
    assert chunkstore("put", ".", "--verbose", cwd=source).out.splitlines()[:2] == [
        "a.txt: stored",
        "sub/b.txt: stored",
    ]
    assert [entry["name"] for entry in chunkstore.json("ls", "--json")] == ["a.txt", "sub/b.txt"]
    assert chunkstore("put", "./", cwd=source).out.startswith("2 files: 0 stored, 0 duplicate, 2 unchanged")
    # --sync from the root marks every stored name whose file is gone from the folder.
    (source / "a.txt").unlink()
    assert "1 deleted since the last put" in chunkstore("put", ".", "--sync", cwd=source).out
    assert [entry["name"] for entry in chunkstore.json("ls", "--json")] == ["sub/b.txt"]
    # Its snapshots record the root as "" and show it as ".".
    assert [snapshot["paths"] for snapshot in chunkstore.json("snapshots", "--json")] == [[""]] * 3
    assert chunkstore("snapshots").out.splitlines()[-1].endswith(" .")


def test_put_as_stores_a_file_under_another_name(chunkstore):
    write(chunkstore.workdir / "local.bin", random_bytes(10_000, seed=9))
    assert chunkstore("put", "local.bin", "--as", "remote/name.bin").out == "remote/name.bin: stored\n"
    assert chunkstore("get", "remote/name.bin").stdout == random_bytes(10_000, seed=9)


def test_put_as_with_two_paths_is_a_usage_error(chunkstore):
    write(chunkstore.workdir / "a", b"a")
    write(chunkstore.workdir / "b", b"b")
    assert_usage_error(chunkstore("put", "a", "b", "--as", "x", expect=2), "--as")


def test_put_of_an_empty_file(chunkstore):
    write(chunkstore.workdir / "empty", b"")
    assert chunkstore("put", "empty").out == "empty: stored\n"
    assert chunkstore("get", "empty").stdout == b""


# ---- stdin ---------------------------------------------------------------------------


def test_put_stdin_with_as(chunkstore):
    data = random_bytes(300_000, seed=10)
    assert chunkstore("put", "-", "--as", "streams/one", input=data).out == "streams/one: stored\n"
    assert chunkstore("get", "streams/one").stdout == data
    assert chunkstore("put", "-", "--as", "streams/one", input=data).out == "streams/one: unchanged\n"
    assert chunkstore("put", "-", "--as", "streams/two", input=data).out == "streams/two: duplicate of streams/one\n"


def test_put_stdin_json(chunkstore):
    document = chunkstore.json("put", "-", "--as", "s", "--json", input=b"from stdin")
    assert (document["name"], document["outcome"], document["size"], document["version"]) == ("s", "stored", 10, 1)


def test_put_stdin_without_as_is_a_usage_error(chunkstore):
    run = chunkstore("put", "-", input=b"data", expect=2)
    assert_usage_error(run, "--as")
    assert chunkstore.json("ls", "--json") == []


# ---- folders -------------------------------------------------------------------------


def test_put_of_a_folder_prints_a_summary(chunkstore):
    make_tree(chunkstore.workdir / "tree")
    first = chunkstore("put", "tree")
    assert summary_counts(first.out) == (4, 3, 1, 0, 0)
    assert re.search(r"in, .* new \(.* stored\), dedup [\d.]+x, [\d.]+ MB/s", first.out), first.out
    assert summary_counts(chunkstore("put", "tree").out) == (4, 0, 0, 4, 0)


def test_put_verbose_prints_one_line_per_file(chunkstore):
    make_tree(chunkstore.workdir / "tree")
    *per_file, summary, throughput = chunkstore("put", "tree", "--verbose").out.splitlines()
    assert SUMMARY.match(summary) and " MB/s" in throughput
    assert sorted(per_file) == [
        "tree/a.txt: stored",
        "tree/b.bin: stored",
        "tree/copy-of-a.txt: duplicate of tree/a.txt",
        "tree/sub/c.txt: stored",
    ]
    assert summary_counts(chunkstore("put", "tree", "-v").out) == (4, 0, 0, 4, 0)


def test_put_json_gives_every_files_outcome_and_totals(chunkstore):
    tree = make_tree(chunkstore.workdir / "tree")
    document = chunkstore.json("put", "tree", "--json")
    outcomes = {
        result["name"]: (result["outcome"], result["duplicate_of"], result["size"]) for result in document["results"]
    }
    assert outcomes == {
        "tree/a.txt": ("stored", None, 120_000),
        "tree/b.bin": ("stored", None, 90_000),
        "tree/copy-of-a.txt": ("duplicate", "tree/a.txt", 120_000),
        "tree/sub/c.txt": ("stored", None, 30_000),
    }
    sizes = sum(path.stat().st_size for path in tree.rglob("*") if path.is_file())
    assert (
        document["files"],
        document["stored"],
        document["duplicate"],
        document["unchanged"],
        document["errors"],
    ) == (4, 3, 1, 0, 0)
    assert document["logical_bytes"] == sizes
    # The copy adds nothing; everything else is new.
    assert document["new_bytes"] == sizes - 120_000
    assert 0 < document["stored_new_bytes"] < document["new_bytes"]  # the text compresses

    write(tree / "sub" / "c.txt", text_bytes(30_000, seed=11))
    again = chunkstore.json("put", "tree", "--json")
    assert sorted((result["name"], result["outcome"]) for result in again["results"]) == [
        ("tree/a.txt", "unchanged"),
        ("tree/b.bin", "unchanged"),
        ("tree/copy-of-a.txt", "unchanged"),
        ("tree/sub/c.txt", "stored"),
    ]


def test_quiet_folder_put_prints_nothing(chunkstore):
    make_tree(chunkstore.workdir / "tree")
    run = chunkstore("--quiet", "put", "tree")
    assert run.out == "" and run.err == ""
    assert len(chunkstore.json("ls", "--json")) == 4


def test_several_paths_in_one_put(chunkstore):
    write(chunkstore.workdir / "x", b"x" * 5000)
    make_tree(chunkstore.workdir / "tree")
    assert summary_counts(chunkstore("put", "x", "tree").out) == (5, 4, 1, 0, 0)


def test_special_files_in_a_folder_are_skipped_with_exit_1(chunkstore):
    tree = make_tree(chunkstore.workdir / "tree")
    os.mkfifo(tree / "pipe")
    run = chunkstore("put", "tree", expect=1)
    assert summary_counts(run.out) == (5, 3, 1, 0, 1)
    assert run.err_lines == ["chunkstore: tree/pipe: not a regular file (FIFO); skipped"]
    assert sorted(entry["name"] for entry in chunkstore.json("ls", "--json")) == [
        "tree/a.txt",
        "tree/b.bin",
        "tree/copy-of-a.txt",
        "tree/sub/c.txt",
    ]


def test_symlinks_are_stored_as_links_and_restored_as_links(chunkstore, tmp_path):
    tree = make_tree(chunkstore.workdir / "tree")
    os.symlink("a.txt", tree / "link")
    os.symlink("/nonexistent/elsewhere", tree / "sub" / "dangling")
    os.symlink("sub", tree / "dirlink")
    run = chunkstore("put", "tree")
    assert summary_counts(run.out) == (7, 6, 1, 0, 0)
    listing = {entry["name"]: entry for entry in chunkstore.json("ls", "--json")}
    assert listing["tree/link"]["type"] == "symlink" and listing["tree/a.txt"]["type"] == "file"
    assert chunkstore("put", "tree").out.startswith("7 files: 0 stored, 0 duplicate, 7 unchanged")
    out = tmp_path / "out"
    chunkstore("restore", "tree", "-o", str(out))
    assert os.readlink(out / "tree" / "link") == "a.txt"
    assert os.readlink(out / "tree" / "sub" / "dangling") == "/nonexistent/elsewhere"
    assert os.readlink(out / "tree" / "dirlink") == "sub"
    assert (out / "tree" / "link").read_bytes() == (tree / "a.txt").read_bytes()
    assert os.lstat(out / "tree" / "link").st_mtime_ns == os.lstat(tree / "link").st_mtime_ns


def test_json_reports_the_skipped_files(chunkstore):
    tree = make_tree(chunkstore.workdir / "tree")
    os.mkfifo(tree / "pipe")
    document = chunkstore.json("put", "tree", "--json", expect=1)
    assert document["errors"] == 1
    [error] = [result for result in document["results"] if result["outcome"] == "error"]
    assert error["name"] == "tree/pipe" and "FIFO" in error["error"]


def test_put_of_a_missing_path_fails_naming_it(chunkstore):
    run = chunkstore("put", "no-such-file", expect=1)
    assert_one_error(run, "no-such-file", "No such file")


def test_a_put_in_which_every_file_failed_records_no_snapshot(chunkstore):
    (chunkstore.workdir / "empty").mkdir()
    chunkstore("put", "empty")  # an empty folder is a backup of nothing, and recorded
    assert chunkstore.json("put", "no-such-file", "--json", expect=1)["snapshot"] is None
    chunkstore("put", "no-such-file", "--sync", expect=1)
    assert [snapshot["paths"] for snapshot in chunkstore.json("snapshots", "--json")] == [["empty"]]
    # One file stored among failures is a backup, and recorded.
    write(chunkstore.workdir / "file", b"kept")
    chunkstore("put", "file", "no-such-file", expect=1)
    assert [snapshot["paths"] for snapshot in chunkstore.json("snapshots", "--json")][-1] == ["file", "no-such-file"]


def test_put_of_a_fifo_fails_naming_it(chunkstore):
    os.mkfifo(chunkstore.workdir / "pipe")
    assert_one_error(chunkstore("put", "pipe", expect=1), "pipe", "FIFO")


# ---- progress ------------------------------------------------------------------------


@pytest.mark.slow_on_s3
def test_no_progress_bar_when_stderr_is_not_a_terminal(chunkstore):
    make_tree(chunkstore.workdir / "tree")
    write(chunkstore.workdir / "tree" / "big", random_bytes(3_000_000, seed=12))
    run = chunkstore("put", "tree")
    assert "\r" not in run.err and run.err == ""


def test_progress_bar_on_a_terminal_and_none_with_quiet(chunkstore):
    make_tree(chunkstore.workdir / "tree")
    code, _, shown = run_on_terminal(chunkstore, "put", "tree")
    assert code == 0 and b"\r" in shown and b"files" in shown
    write(chunkstore.workdir / "tree" / "new", text_bytes(20_000, seed=13))
    code, _, shown = run_on_terminal(chunkstore, "--quiet", "put", "tree")
    assert code == 0 and shown == b""

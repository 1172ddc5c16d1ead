"""`chunkstore ls` and `chunkstore rm`."""

from __future__ import annotations

import pytest

from support.clirunner import assert_one_error, assert_usage_error, text_bytes, write


@pytest.fixture
def populated(chunkstore):
    """docs/a (2 versions), docs/b, docs/sub/c, dochub/d, top."""
    write(chunkstore.workdir / "docs" / "a", b"a, version 1")
    chunkstore("put", "docs")
    write(chunkstore.workdir / "docs" / "a", b"a, version two")
    write(chunkstore.workdir / "docs" / "b", text_bytes(10_000, seed=30))
    write(chunkstore.workdir / "docs" / "sub" / "c", b"c")
    write(chunkstore.workdir / "dochub" / "d", b"d")
    write(chunkstore.workdir / "top", b"top")
    chunkstore("put", "docs", "dochub", "top")
    return chunkstore


def listed(chunkstore, *args) -> list[tuple[str, int]]:
    return [(entry["name"], entry["version"]) for entry in chunkstore.json("ls", *args, "--json")]


def test_ls_lists_the_latest_version_of_every_name(populated):
    lines = populated("ls").out.splitlines()
    assert [line.split()[-1] for line in lines] == ["dochub/d", "docs/a", "docs/b", "docs/sub/c", "top"]
    version, size = lines[1].split()[:2]
    assert (version, size) == ("2", "14")
    assert lines[2].split()[1] == "10,000"


def test_ls_prefix_matches_whole_path_components(populated):
    assert listed(populated, "docs") == [("docs/a", 2), ("docs/b", 1), ("docs/sub/c", 1)]
    assert listed(populated, "docs/sub") == [("docs/sub/c", 1)]
    assert listed(populated, "docs/a") == [("docs/a", 2)]
    assert [line.split()[-1] for line in populated("ls", "dochub").out.splitlines()] == ["dochub/d"]


def test_ls_versions(populated):
    assert listed(populated, "docs", "--versions") == [("docs/a", 1), ("docs/a", 2), ("docs/b", 1), ("docs/sub/c", 1)]
    lines = populated("ls", "docs/a", "--versions").out.splitlines()
    assert [(line.split()[0], line.split()[-1]) for line in lines] == [("1", "docs/a"), ("2", "docs/a")]


def test_ls_json_fields(populated):
    [entry] = populated.json("ls", "top", "--json")
    source = populated.workdir / "top"
    assert entry["name"] == "top" and entry["version"] == 1 and entry["size"] == 3
    assert entry["mtime_ns"] == source.stat().st_mtime_ns
    assert entry["mode"] == source.stat().st_mode & 0o7777
    assert len(bytes.fromhex(entry["digest"])) == 32
    assert entry["stored_at_ns"] > 0


def test_ls_of_an_empty_store_prints_nothing(chunkstore):
    assert chunkstore("ls").out == ""
    assert chunkstore.json("ls", "--json") == []


def test_ls_of_a_missing_prefix_exits_3(populated):
    assert_one_error(populated("ls", "doc", expect=3), "'doc'")


def test_rm_removes_every_version_of_a_name(populated):
    run = populated("rm", "docs/a")
    assert run.out == "removed docs/a (version 1)\nremoved docs/a (version 2)\n"
    assert listed(populated, "--versions") == [("dochub/d", 1), ("docs/b", 1), ("docs/sub/c", 1), ("top", 1)]
    assert_one_error(populated("get", "docs/a", expect=3), "docs/a")


def test_rm_version_removes_only_that_version(populated):
    assert populated("rm", "docs/a", "--version", "1").out == "removed docs/a (version 1)\n"
    assert listed(populated, "docs/a", "--versions") == [("docs/a", 2)]
    assert populated("get", "docs/a").stdout == b"a, version two"
    assert_one_error(populated("get", "docs/a", "--version", "1", expect=3), "version 1")


def test_rm_several_names(populated):
    populated("rm", "top", "dochub/d")
    assert [name for name, _ in listed(populated)] == ["docs/a", "docs/b", "docs/sub/c"]


def test_rm_recursive_removes_everything_below_a_folder(populated):
    run = populated("rm", "--recursive", "docs")
    assert sorted(run.out.splitlines()) == [
        "removed docs/a (version 1)",
        "removed docs/a (version 2)",
        "removed docs/b (version 1)",
        "removed docs/sub/c (version 1)",
    ]
    assert listed(populated) == [("dochub/d", 1), ("top", 1)]
    populated("rm", "-r", "dochub")
    assert listed(populated) == [("top", 1)]


def test_rm_of_a_folder_without_recursive_is_a_usage_error(populated):
    assert_one_error(populated("rm", "docs", expect=2), "'docs'", "--recursive")
    assert len(listed(populated)) == 5


def test_rm_of_a_missing_name_exits_3_and_removes_nothing(populated):
    assert_one_error(populated("rm", "top", "nothing", expect=3), "'nothing'")
    assert len(listed(populated)) == 5
    assert_one_error(populated("rm", "-r", "nothing", expect=3), "'nothing'")


def test_rm_of_a_missing_version_exits_3(populated):
    assert_one_error(populated("rm", "top", "--version", "2", expect=3), "'top'", "version 2")
    assert listed(populated, "top") == [("top", 1)]


def test_rm_version_with_recursive_is_a_usage_error(populated):
    assert_one_error(populated("rm", "-r", "docs", "--version", "1", expect=2), "--version", "--recursive")


def test_rm_without_a_name_is_a_usage_error(populated):
    assert_usage_error(populated("rm", expect=2), "Missing argument")

"""What every command has in common: --help, usage errors, a missing store, --version."""

from __future__ import annotations

import platform
import sys
from pathlib import PurePosixPath

import pytest

from chunkstore_cli import main as cli_main
from chunkstore_cli.main import limit_malloc_arenas
from support.clirunner import assert_one_error, assert_usage_error

# Every command with the options its --help must mention.
COMMAND_OPTIONS = {
    "init": ["--chunker", "--avg-size", "--compression"],
    "put": ["--as", "--force-read", "--json", "--verbose"],
    "get": ["--version", "--output"],
    "restore": ["--output"],
    "ls": ["--versions", "--json"],
    "rm": ["--version", "--recursive"],
    "gc": ["--dry-run", "--json"],
    "verify": ["--read-data", "--subset", "--json"],
    "stats": ["--json"],
}

# A valid invocation of every command that needs a store, for the missing-store test.
USES_A_STORE = {
    "put": ["put", "file"],
    "get": ["get", "file"],
    "restore": ["restore", "file", "-o", "out"],
    "ls": ["ls"],
    "rm": ["rm", "file"],
    "gc": ["gc"],
    "verify": ["verify"],
    "stats": ["stats"],
}


def test_every_command_is_covered():
    assert set(USES_A_STORE) | {"init"} == set(COMMAND_OPTIONS)


def test_top_level_help_lists_every_command_and_the_exit_codes(uninitialized):
    out = uninitialized("--help").out
    for command in COMMAND_OPTIONS:
        assert f"  {command} " in out, command
    assert "--store" in out and "--quiet" in out
    assert "4 integrity error" in out


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_help_of_every_command_mentions_its_options(uninitialized, command):
    for flag in ("--help", "-h"):
        out = uninitialized(command, flag).out
        assert out.startswith(f"Usage: chunkstore {command} ")
        for option in COMMAND_OPTIONS[command]:
            assert option in out, f"{command} --help does not mention {option}"


def test_version(uninitialized):
    run = uninitialized("--version")
    assert run.out == "chunkstore, version 0.1.0\n"


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_unknown_option_is_a_usage_error(chunkstore, command):
    assert_usage_error(chunkstore(command, "--no-such-option", expect=2), "No such option", "--no-such-option")


def test_unknown_command_is_a_usage_error(chunkstore):
    assert_usage_error(chunkstore("backup", expect=2), "No such command", "backup")


@pytest.mark.parametrize(
    ("arguments", "missing"),
    [
        (["put"], "PATH"),
        (["get"], "NAME"),
        (["restore", "-o", "out"], "PREFIX"),
        (["rm"], "NAME"),
        (["restore", "x", "-o"], "-o"),
        (["get", "x", "--version"], "--version"),
        (["--store"], "--store"),
    ],
)
def test_missing_argument_is_a_usage_error(chunkstore, arguments, missing):
    assert_usage_error(chunkstore(*arguments, expect=2), missing)


@pytest.mark.parametrize("command", sorted(USES_A_STORE))
def test_missing_store_exits_3_with_one_line(uninitialized, command):
    (uninitialized.workdir / "file").write_bytes(b"data")
    run = uninitialized(*USES_A_STORE[command], expect=3)
    assert_one_error(run, f"no store at {uninitialized.store} ", "chunkstore init")
    assert uninitialized.backend.untouched()


def test_a_place_that_is_not_a_store_exits_3(uninitialized):
    uninitialized.backend.write(PurePosixPath("unrelated"), b"not a store")
    assert_one_error(uninitialized("ls", expect=3), "no store at")
    assert_one_error(uninitialized("--store", uninitialized.workdir, "stats", expect=3), "no store at")


def test_unsupported_store_url_is_a_usage_error(uninitialized):
    assert_one_error(uninitialized("--store", "ftp://host/x", "ls", expect=2), "ftp://host/x")


@pytest.mark.parametrize("url", ["s3://", "s3://Bad_Bucket/x", "s3://b", "s3://a..b"])
def test_an_s3_url_with_a_bad_bucket_name_is_told_before_any_aws_setting(uninitialized, url):
    # No region: the URL's own mistake comes first.
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        uninitialized.env.pop(variable, None)
    run = uninitialized("--store", url, "ls", expect=2)
    assert_one_error(run, "is not a valid S3 bucket name")


# Values no catalog can hold or no calendar reaches: each must be refused as a usage error of its
# option before anything is opened (before, several of them reached SQLite as an OverflowError).
OUT_OF_RANGE = [
    (["get", "file", "--version", "99999999999999999999"], "--version"),
    (["rm", "file", "--version", "99999999999999999999"], "--version"),
    (["get", "file", "--version", "0"], "--version"),
    (["get", "file", "--as-of", "0001-01-01"], "--as-of"),
    (["ls", "--as-of", "9999-12-31T23:59:59+14:00"], "--as-of"),
    (["restore", "file", "-o", "out", "--as-of", "1677-01-01"], "--as-of"),
    (["diff", "--from", "0001-01-01"], "--from"),
    (["diff", "--from", "2026-01-01", "--to", "9999-12-31"], "--to"),
    (["put", "file", "--time", "9999-12-31"], "--time"),
    (["put", "file", "--time", "1969-12-31T23:59Z"], "--time"),
    (["forget", "file", "--keep-within", "99999999y"], "--keep-within"),
    (["forget", "file", "--keep-within", "400000d"], "--keep-within"),
    (["forget", "file", "--keep-last", "99999999999999999999"], "--keep-last"),
    (["forget", "file", "--keep-daily", "-1"], "--keep-daily"),
    (["--concurrency", "99999999999999999999", "ls"], "--concurrency"),
    (["init", "--avg-size", "-64K"], "--avg-size"),
    (["init", "--avg-size", "99999999999999999999G"], "--avg-size"),
    (["serve", "--max-upload-size", "-1"], "--max-upload-size"),
    (["serve", "--max-concurrent-uploads", "99999999"], "--max-concurrent-uploads"),
    (["serve", "--port", "99999999999999999999"], "--port"),
    (["verify", "--read-data", "--subset", "1e999"], "--subset"),
]


@pytest.mark.local_only("the values are refused before a store is opened, whatever its kind")
@pytest.mark.parametrize(("arguments", "option"), OUT_OF_RANGE, ids=[" ".join(args) for args, _ in OUT_OF_RANGE])
def test_an_argument_out_of_range_is_a_one_line_usage_error(uninitialized, arguments, option):
    (uninitialized.workdir / "file").write_bytes(b"data")
    run = uninitialized(*arguments, expect=2)
    assert_usage_error(run, option)
    assert len(run.err_lines) == 1
    assert uninitialized.backend.untouched()


@pytest.mark.local_only("the values are checked by the command line, whatever the store")
def test_the_ends_of_the_time_range_are_accepted(chunkstore):
    (chunkstore.workdir / "file").write_bytes(b"data")
    chunkstore("put", "file", "--time", "1970-01-01T00:00Z")
    chunkstore("put", "file", "--time", "2262-04-10", "--force-read")
    assert chunkstore("ls", "--as-of", "1970-01-01T00:00:01Z").out.split()[-1] == "file"
    chunkstore("forget", "file", "--keep-within", "999y", "--dry-run")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_command_caps_the_malloc_arenas_unless_the_user_set_their_number(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas()  # glibc took the setting
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_malloc_arenas()  # the user's setting stands


def test_only_the_program_caps_the_malloc_arenas_not_a_call_with_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(cli_main, "limit_malloc_arenas", lambda: calls.append(True))
    assert cli_main.main(["--version"]) == 0
    assert calls == []  # tests and embedding keep their allocator
    monkeypatch.setattr(sys, "argv", ["chunkstore", "--version"])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 0
    assert calls == [True]

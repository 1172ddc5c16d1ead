"""What every command has in common: --help, usage errors, a missing store, --version."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
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


@pytest.mark.parametrize(("arguments", "missing"), [
    (["put"], "PATH"), (["get"], "NAME"), (["restore", "-o", "out"], "PREFIX"), (["rm"], "NAME"),
    (["restore", "x", "-o"], "-o"), (["get", "x", "--version"], "--version"), (["--store"], "--store"),
])
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

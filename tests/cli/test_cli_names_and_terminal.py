"""What the commands print for hostile file names, and what they print on a terminal: rich
tables and a progress bar there, and exactly the plain output everywhere else."""

from __future__ import annotations

import os
import re
import sys

import pytest

from support.clirunner import Run, assert_one_error, random_bytes, run_on_terminal, write

# What a terminal would act on: C0 controls other than the newline ending each line, DEL,
# C1 controls, and the surrogates Python keeps for bytes that are not UTF-8.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

# An escape sequence that would turn the terminal red, a carriage return that would hide
# what comes before it, a newline that would fake a second entry, and a C1 CSI.
HOSTILE = ["esc\x1b[31mred", "cr\rhidden", "lf\nfake  1  entry", "csi\x9b2J"]


def assert_no_raw_control(text: str) -> None:
    found = RAW_CONTROL.findall(text)
    assert not found, f"raw control characters {found!r} in {text!r}"


def output_of(run: Run) -> str:
    return run.stdout.decode(errors="surrogateescape") + run.err


@pytest.fixture
def hostile(chunkstore):
    """A store holding a folder `in` whose files have hostile names."""
    for name in HOSTILE:
        write(chunkstore.workdir / "in" / name, name.encode())
    return chunkstore


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses control characters in file names")
def test_hostile_names_are_printed_escaped(hostile):
    put = hostile("put", "--verbose", "in")
    listings = [hostile("ls"), hostile("ls", "--versions"), hostile("diff", "--from", "1970-01-01")]
    for run in (put, *listings):
        assert_no_raw_control(output_of(run))
    for name in HOSTILE:
        escaped = repr(f"in/{name}")
        assert f"{escaped}: stored" in put.out.splitlines()
        for run in listings:
            assert escaped in run.out
    # One line per file: a newline in a name does not fake another entry.
    assert len(hostile("ls").out.splitlines()) == len(HOSTILE)
    write(hostile.workdir / "copy\x1b]0;title\x07", HOSTILE[0].encode())
    copy = hostile("put", "copy\x1b]0;title\x07")
    assert copy.out == f"{repr('copy' + chr(27) + ']0;title' + chr(7))}: duplicate of {repr('in/' + HOSTILE[0])}\n"
    assert repr("copy\x1b]0;title\x07") in hostile("snapshots").out


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses control characters in file names")
def test_hostile_names_in_error_messages_are_escaped(hostile):
    hostile("put", "in")
    missing = hostile("get", "in/none\x1b[2J", expect=3)
    assert_one_error(missing, "none\\x1b[2J")
    assert_no_raw_control(missing.err)
    os.remove(hostile.workdir / "in" / HOSTILE[0])
    unreadable = hostile("put", "in", "in/gone\x1b[2J", expect=1)
    assert "gone\\x1b[2J" in unreadable.err
    assert_no_raw_control(output_of(unreadable))


@pytest.mark.local_only("a name that is not UTF-8 is refused before anything is stored")
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_name_that_is_not_utf8_is_reported_escaped(chunkstore):
    folder = chunkstore.workdir / "in"
    folder.mkdir()
    (folder / os.fsdecode(b"bad\xff\x1bname")).write_bytes(b"x")
    run = chunkstore("put", "in", expect=1)
    assert "bad\\udcff\\x1bname" in run.err
    assert_no_raw_control(output_of(run))


# ---- on a terminal -------------------------------------------------------------------------


@pytest.mark.local_only("how a listing is drawn does not depend on the store")
def test_ls_snapshots_and_stats_draw_tables_on_a_terminal(hostile):
    hostile("put", "in")
    plain = hostile("ls").out
    code, out, err = run_on_terminal(hostile, "ls", stdout_on_terminal=True, stderr_on_terminal=False)
    assert code == 0 and err == b""
    table = out.decode()
    assert table != plain.replace("\n", "\r\n")
    header = table.splitlines()[0]
    assert "version" in header and "size" in header and "name" in header
    for name in HOSTILE:
        assert repr(f"in/{name}") in table
    code, out, _ = run_on_terminal(hostile, "snapshots", stdout_on_terminal=True, stderr_on_terminal=False)
    assert code == 0 and "unchanged" in out.decode() and "'in'" not in out.decode()
    code, out, _ = run_on_terminal(hostile, "stats", stdout_on_terminal=True, stderr_on_terminal=False)
    assert code == 0 and "dedup" in out.decode() and "logical" in out.decode()


@pytest.mark.local_only("the progress display does not depend on the store")
def test_progress_is_drawn_on_a_terminal_stderr_and_stdout_stays_plain(chunkstore):
    write(chunkstore.workdir / "big", random_bytes(8 << 20, seed=41))
    code, out, err = run_on_terminal(chunkstore, "put", "big")
    assert code == 0
    assert out == b"big: stored\n"
    assert err, "no progress display on a terminal"
    for args in (("get", "big", "-o", "copy"), ("verify", "--read-data"), ("gc",), ("restore", "big", "-o", "r")):
        code, out, err = run_on_terminal(chunkstore, *args)
        assert code == 0, (args, out, err)
    assert (chunkstore.workdir / "copy").read_bytes() == (chunkstore.workdir / "big").read_bytes()
    # On a pipe, the same command prints nothing on stderr (the runner checks it).
    chunkstore("put", "big", "--force-read")

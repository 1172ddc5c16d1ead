"""Properties of names, whatever text they hold (control characters, lone surrogates, '..',
leading '/', NUL, very long, many segments): the name validator, the library and the command
line accept exactly the same names, an accepted name round-trips byte for byte and restores
inside the target, and a refused one is an InvalidArgumentError (exit 2), never another
exception or a traceback."""

from __future__ import annotations

import io
import itertools
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core.names import MAX_NAME_BYTES, normalize_name, normalize_prefix
from chunkstore.errors import InvalidArgumentError
from support.inprocess import RAW_CONTROL, run_cli

PROPERTY = settings(max_examples=150, deadline=None, database=None, derandomize=True)
SENTINEL = "zz-sentinel/file"
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "...",
            "a",
            " ",
            "\x00",
            "\n",
            "\r",
            "\x1b[2J",
            "\x9b",
            "\ud800",
            "\udcff",
            "é",
            "e\u0301",
            "\\",
            "-",
            "--help",
            "%",
            "_",
            "x" * 255,
            "x" * 256,
        ]
    ),
    st.text(max_size=8),
)
NAMES = st.one_of(
    st.builds(
        lambda lead, segments: lead + "/".join(segments),
        st.sampled_from(["", "/", "./", "//", "../"]),
        st.lists(SEGMENTS, min_size=1, max_size=6),
    ),
    st.sampled_from(["a/" * 2100, "p" * (MAX_NAME_BYTES + 1), "é" * 2049, "/".join(["p" * 255] * 16)]),
    st.text(max_size=40),
)


def accepted(check, name: str) -> str | None:
    try:
        return check(name)
    except InvalidArgumentError:
        return None


def test_the_validator_refuses_only_with_its_documented_error():
    @PROPERTY
    @given(NAMES)
    def check(name):
        normal = accepted(normalize_name, name)
        if normal is None:
            return
        assert normalize_name(normal) == normal
        assert normal.encode() == normal.encode("utf-8", "strict") and "\x00" not in normal
        assert not normal.startswith("/") and ".." not in normal.split("/") and "" not in normal.split("/")
        assert len(normal.encode()) <= MAX_NAME_BYTES
        assert normalize_prefix(normal) == normal

    check()


@pytest.fixture(scope="module")
def library_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    with Store.init(
        str(root / "store"), ChunkerSpec.from_average(avg_size=4096), CompressionSpec.parse("zstd:3")
    ) as store:
        store.put_stream(io.BytesIO(b"sentinel"), SENTINEL)
        yield store, root


def read_below(target, name: str) -> bytes:
    """The file at name inside target, reached one segment at a time without following a
    symlink (the whole path may exceed PATH_MAX): proof that it lies inside target."""
    folder = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        *parents, base = name.split("/")
        for part in parents:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        handle = os.open(base, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        os.close(folder)
    with os.fdopen(handle, "rb") as file:
        return file.read()


def expect_refused(action) -> None:
    with pytest.raises(InvalidArgumentError):
        action()


def test_names_through_the_library(library_store):
    store, root = library_store
    targets = itertools.count()

    @PROPERTY
    @given(NAMES)
    def check(name):
        content = name.encode("utf-8", "surrogatepass") + b" content"
        normal = accepted(normalize_name, name)
        if normal is None:
            expect_refused(lambda: store.put_stream(io.BytesIO(content), name))
            expect_refused(lambda: store.get(name, io.BytesIO()))
            expect_refused(lambda: store.remove([name]))
            if accepted(normalize_prefix, name) is None:
                expect_refused(lambda: list(store.list(name)))
                expect_refused(lambda: store.restore(name, root / "never"))
            assert [record.name for record in store.list()] == [SENTINEL]
            return
        (result,) = store.put_stream(io.BytesIO(content), name).results
        assert result.name == normal
        try:
            output = io.BytesIO()
            store.get(name, output)
            assert output.getvalue() == content
            assert [record.name for record in store.list(name)] == [normal]
            target = root / f"target{next(targets)}"
            (restored,) = store.restore(name, target).results
            if restored.error is None:
                assert read_below(target, normal) == content
            else:  # a segment longer than NAME_MAX, or a path beyond PATH_MAX below the target
                assert "too long" in restored.error.lower(), restored.error
        finally:
            store.remove([name])
        assert [record.name for record in store.list()] == [SENTINEL]

    check()


def test_a_prefix_of_dots_names_itself_and_dot_dot_is_refused(library_store):
    """Regression: normalize_prefix once took any run of '/' and '.' for "everything", so
    `ls ...` listed (and `restore ...` restored) the whole store, and `ls ..` was accepted."""
    store, root = library_store
    store.put_stream(io.BytesIO(b"dots"), "...")
    try:
        assert [record.name for record in store.list("...")] == ["..."]
        assert [result.name for result in store.restore("...", root / "dots").results] == ["..."]
        for prefix in ("..", "../", "/.."):
            expect_refused(lambda prefix=prefix: list(store.list(prefix)))
        assert sorted(record.name for record in store.list("./")) == ["...", SENTINEL]
    finally:
        store.remove(["..."])


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-names")
    store = root / "store"
    assert run_cli(store, "init", "--avg-size", "4K").code == 0
    assert run_cli(store, "put", "-", "--as", SENTINEL, input=b"sentinel").code == 0
    return store, root


def stored_names(store) -> list[str]:
    return [entry["name"] for entry in json.loads(run_cli(store, "ls", "--json").stdout)]


def test_names_through_the_command_line(cli_store):
    store, root = cli_store
    targets = itertools.count()

    @settings(PROPERTY, max_examples=100)
    @given(NAMES)
    def check(name):
        content = name.encode("utf-8", "surrogatepass") + b" content"
        normal = accepted(normalize_name, name)
        put = run_cli(store, "put", "-", "--as", name, "--verbose", input=content)
        if normal is None:
            assert put.code == 2
            assert run_cli(store, "get", "--", name).code == 2
            assert run_cli(store, "rm", "--", name).code == 2
            if accepted(normalize_prefix, name) is None:
                assert run_cli(store, "ls", "--", name).code == 2
                assert run_cli(store, "restore", "-o", str(root / "never"), "--", name).code == 2
            assert stored_names(store) == [SENTINEL]
            return
        assert put.code == 0, put.stderr
        assert not RAW_CONTROL.search(put.stdout.decode("utf-8", "surrogateescape") + put.stderr)
        try:
            assert run_cli(store, "get", "--", name).stdout == content
            listing = run_cli(store, "ls", "--", name).stdout.decode("utf-8", "surrogateescape")
            assert len(listing.splitlines()) == 1 and not RAW_CONTROL.search(listing)
            target = root / f"target{next(targets)}"
            restore = run_cli(store, "restore", "-o", str(target), "--", name)
            if restore.code == 0:
                assert read_below(target, normal) == content
            else:
                assert restore.code == 1 and "too long" in restore.stderr.lower(), restore.stderr
        finally:
            assert run_cli(store, "rm", "--", name).code == 0
        assert stored_names(store) == [SENTINEL]

    check()

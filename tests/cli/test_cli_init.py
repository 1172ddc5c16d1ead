"""`chunkstore init` and the options that shape a store."""

from __future__ import annotations

import pytest

from support.clirunner import CONFIG_KEY, assert_one_error, assert_usage_error


def test_init_creates_a_store_with_the_defaults(uninitialized):
    run = uninitialized("init")
    assert run.out.startswith(f"created store at {uninitialized.store} ") and "storage format 2" in run.out
    assert uninitialized.backend.exists(CONFIG_KEY)
    figures = uninitialized.json("stats", "--json")
    assert figures["storage_format"] == 2
    assert figures["chunker"] == {
        "name": "fastcdc2020",
        "min_size": 2048,
        "avg_size": 8192,
        "max_size": 32768,
        "seed": 0,
    }
    assert figures["compression"] == "zstd:3, dictionary 114688 bytes"
    assert figures["files"] == figures["versions"] == figures["chunks"] == 0


def test_init_format_1_takes_its_own_default_chunk_size(uninitialized):
    uninitialized("init", "--format", "1")
    figures = uninitialized.json("stats", "--json")
    assert "storage_format" not in figures
    assert figures["chunker"] == {
        "name": "fastcdc2020",
        "min_size": 16384,
        "avg_size": 65536,
        "max_size": 262144,
        "seed": 0,
    }
    assert figures["compression"] == "zstd:3"


def test_init_honours_the_store_option_over_the_environment(uninitialized, new_backend, tmp_path):
    elsewhere = new_backend(tmp_path / "elsewhere")
    uninitialized("--store", elsewhere.url, "init", *elsewhere.init_options())
    assert elsewhere.exists(CONFIG_KEY)
    assert uninitialized.backend.untouched()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("65536", 65536),
        ("64K", 65536),
        ("64k", 65536),
        ("16KiB", 16384),
        ("1M", 1024 * 1024),
        ("2MiB", 2 * 1024 * 1024),
    ],
)
def test_avg_size_accepts_bytes_and_binary_multiples(uninitialized, text, size):
    uninitialized("init", "--avg-size", text)
    chunker = uninitialized.json("stats", "--json")["chunker"]
    assert (chunker["min_size"], chunker["avg_size"], chunker["max_size"]) == (size // 4, size, size * 4)


@pytest.mark.parametrize("chunker", ["fastcdc2020", "fastcdc-ronomon", "fixed"])
def test_every_chunker_stores_and_returns_files(uninitialized, chunker):
    uninitialized("init", "--chunker", chunker, "--avg-size", "4K")
    recorded = uninitialized.json("stats", "--json")["chunker"]
    assert recorded["name"] == chunker
    if chunker == "fixed":
        assert recorded["min_size"] == recorded["avg_size"] == recorded["max_size"] == 4096
    data = bytes(range(256)) * 1000 + b"tail"
    (uninitialized.workdir / "f").write_bytes(data)
    uninitialized("put", "f")
    assert uninitialized("get", "f").stdout == data


@pytest.mark.parametrize(
    ("option", "recorded"),
    [("none", "none"), ("zstd:9", "zstd:9, dictionary 114688 bytes"), ("zstd", "zstd:3, dictionary 114688 bytes")],
)
def test_compression_option_is_recorded(uninitialized, option, recorded):
    uninitialized("init", "--compression", option)
    assert uninitialized.json("stats", "--json")["compression"] == recorded


@pytest.mark.parametrize("text", ["64Q", "", "abc", "-5", "1.5K", "64 KB B"])
def test_avg_size_that_is_not_a_size_is_a_usage_error(uninitialized, text):
    run = uninitialized("init", "--avg-size", text, expect=2)
    assert_usage_error(run, "--avg-size", "is not a size")
    assert not uninitialized.backend.exists(CONFIG_KEY)


@pytest.mark.parametrize("text", ["1", "100", "1G"])
def test_avg_size_out_of_the_chunkers_range_is_a_usage_error(uninitialized, text):
    run = uninitialized("init", "--avg-size", text, expect=2)
    assert_one_error(run, "fastcdc2020", "must be within")
    assert not uninitialized.backend.exists(CONFIG_KEY)


@pytest.mark.parametrize(
    ("option", "fragment"), [("zstd:99", "1..22"), ("zstd:x", "must be a number"), ("lz4", "unknown compression")]
)
def test_bad_compression_is_a_usage_error(uninitialized, option, fragment):
    run = uninitialized("init", "--compression", option, expect=2)
    assert_one_error(run, fragment)
    assert not uninitialized.backend.exists(CONFIG_KEY)


def test_unknown_chunker_is_a_usage_error(uninitialized):
    run = uninitialized("init", "--chunker", "rabin", expect=2)
    assert_usage_error(run, "--chunker", "rabin")


def test_init_twice_fails_and_keeps_the_store(chunkstore):
    (chunkstore.workdir / "f").write_bytes(b"kept")
    chunkstore("put", "f")
    config_before = chunkstore.backend.read(CONFIG_KEY)
    run = chunkstore("init", "--avg-size", "1M", expect=1)
    assert_one_error(run, "already exists", str(chunkstore.store))
    assert chunkstore.backend.read(CONFIG_KEY) == config_before
    assert chunkstore("get", "f").stdout == b"kept"

"""`chunkstore gc`, `chunkstore verify` and `chunkstore stats`."""

from __future__ import annotations

import re

import pytest

from chunkstore import Store
from support.clirunner import CHUNKS, assert_usage_error, random_bytes, text_bytes, write

GC_LINE = re.compile(r"^(would delete|deleted) (\d+) chunks and (\d+) orphaned objects, freeing .+$")


def gc_counts(output: str) -> tuple[str, int, int]:
    match = GC_LINE.match(output.strip())
    assert match, output
    return match.group(1), int(match.group(2)), int(match.group(3))


@pytest.fixture
def two_files_sharing_chunks(chunkstore):
    """`shared` and `extended` (shared plus a unique tail), put in a store of small chunks."""
    common = random_bytes(200_000, seed=40)
    write(chunkstore.workdir / "shared", common)
    write(chunkstore.workdir / "extended", common + random_bytes(100_000, seed=41))
    chunkstore("put", "shared", "extended")
    return chunkstore


@pytest.mark.slow_on_s3
def test_gc_deletes_only_the_chunks_nothing_references(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    before = chunkstore.objects()
    assert gc_counts(chunkstore("gc").out) == ("deleted", 0, 0)
    chunkstore("rm", "extended")

    verb, would_delete, _ = gc_counts(chunkstore("gc", "--dry-run").out)
    assert verb == "would delete" and would_delete > 0
    assert chunkstore.objects() == before

    verb, deleted, orphans = gc_counts(chunkstore("gc").out)
    assert (verb, deleted, orphans) == ("deleted", would_delete, 0)
    assert len(chunkstore.objects()) == len(before) - deleted
    assert chunkstore("get", "shared").stdout == random_bytes(200_000, seed=40)
    chunkstore("verify", "--read-data")
    assert gc_counts(chunkstore("gc").out) == ("deleted", 0, 0)


def test_gc_json(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    chunkstore("rm", "shared", "extended")
    stored_bytes = chunkstore.json("stats", "--json")["stored_bytes"]
    dry = chunkstore.json("gc", "--dry-run", "--json")
    assert dry["dry_run"] is True and dry["chunks_deleted"] == len(chunkstore.objects())
    report = chunkstore.json("gc", "--json")
    assert report["dry_run"] is False
    assert report["chunks_deleted"] == dry["chunks_deleted"]
    assert report["bytes_freed"] == dry["bytes_freed"] == stored_bytes
    assert chunkstore.objects() == set()


def test_gc_deletes_objects_the_catalog_does_not_know(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    known = min(chunkstore.objects())
    # Where a crashed put would have left the object of a chunk it never recorded.
    orphan = CHUNKS / "ab" / ("ab" * 32)
    chunkstore.backend.write(orphan, chunkstore.backend.read(known))
    assert gc_counts(chunkstore("gc").out) == ("deleted", 0, 1)
    assert not chunkstore.backend.exists(orphan)
    chunkstore("verify", "--read-data")


@pytest.mark.slow_on_s3
def test_verify_of_a_healthy_store(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    run = chunkstore("verify")
    assert re.fullmatch(r"ok: 2 versions, 2 contents, \d+ chunks checked\n", run.out), run.out
    run = chunkstore("verify", "--read-data")
    chunks = len(chunkstore.objects())
    assert re.fullmatch(
        rf"ok: 2 versions, 2 contents, {chunks} chunks checked, read {chunks} chunks \(.+\)\n", run.out
    ), run.out
    assert chunkstore("--quiet", "verify").out == ""


@pytest.mark.slow_on_s3
def test_verify_json_and_subset(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    chunks = len(chunkstore.objects())
    full = chunkstore.json("verify", "--read-data", "--json")
    assert full["ok"] is True and full["problems"] == [] and full["damaged_names"] == []
    assert (full["versions"], full["contents"], full["chunks"], full["chunks_read"]) == (2, 2, chunks, chunks)
    assert full["bytes_read"] == chunkstore.json("stats", "--json")["unique_bytes"]  # shared chunks read once
    part = chunkstore.json("verify", "--read-data", "--subset", "25", "--json")
    assert part["ok"] is True
    assert part["chunks_read"] == round(chunks * 0.25)
    assert chunkstore.json("verify", "--json")["chunks_read"] == 0


@pytest.mark.parametrize(
    "arguments",
    [
        ["--subset", "50"],
        ["--read-data", "--subset", "0"],
        ["--read-data", "--subset", "101"],
        ["--read-data", "--subset", "half"],
    ],
)
def test_verify_bad_subset_is_a_usage_error(chunkstore, arguments):
    assert_usage_error(chunkstore("verify", *arguments, expect=2), "subset")


@pytest.mark.slow_on_s3
def test_stats_json_figures_are_consistent(chunkstore):
    text = text_bytes(300_000, seed=42)
    write(chunkstore.workdir / "a", text)
    write(chunkstore.workdir / "copy-of-a", text)
    write(chunkstore.workdir / "b", random_bytes(100_000, seed=43))
    chunkstore("put", "a", "copy-of-a", "b")
    write(chunkstore.workdir / "b", random_bytes(100_000, seed=43) + b"more")
    chunkstore("put", "b")

    figures = chunkstore.json("stats", "--json")
    versions = chunkstore.json("ls", "--versions", "--json")
    objects = chunkstore.objects()
    assert figures["files"] == 3
    assert figures["versions"] == len(versions) == 4
    assert figures["logical_bytes"] == sum(entry["size"] for entry in versions) == 800_004
    assert figures["chunks"] == len(objects)
    assert figures["stored_bytes"] == sum(len(chunkstore.backend.read(key)) for key in objects)
    # Each distinct byte is counted once: the copy adds nothing and b's second version
    # shares all but its last chunk with the first.
    assert 400_004 <= figures["unique_bytes"] < 500_004
    assert figures["dedup_ratio"] == round(figures["logical_bytes"] / figures["unique_bytes"], 4)
    assert figures["compression_ratio"] == round(figures["unique_bytes"] / figures["stored_bytes"], 4)
    assert figures["store_ratio"] == round(figures["logical_bytes"] / figures["stored_bytes"], 4)
    assert figures["dedup_ratio"] > 1 and figures["compression_ratio"] > 1
    assert figures["store_ratio"] > figures["dedup_ratio"]


def test_stats_of_an_empty_store(chunkstore):
    figures = chunkstore.json("stats", "--json")
    for key in ("logical_bytes", "unique_bytes", "stored_bytes", "files", "versions", "chunks"):
        assert figures[key] == 0, key
    for key in ("dedup_ratio", "compression_ratio", "store_ratio"):
        assert figures[key] is None, key


def test_stats_text(two_files_sharing_chunks):
    chunkstore = two_files_sharing_chunks
    figures = chunkstore.json("stats", "--json")
    out = chunkstore("stats").out
    assert f"files:        2 (2 versions, {figures['chunks']} chunks)" in out
    assert f"(dedup {figures['dedup_ratio']:.2f}x)" in out
    assert "logical:      488.3 KiB" in out  # 500,000 bytes


@pytest.mark.parametrize("storage_format", ["1", "2"])
def test_repair_rewrites_a_content_count_too_low_and_one_too_high(uninitialized, storage_format):
    """A content counted by fewer versions than use it is freed by the rm of one of them, and gc
    then deletes what the others restore; one counted by more is never freed. verify names both,
    --repair rewrites both, and afterwards rm and gc free exactly what they should."""
    chunkstore = uninitialized
    chunkstore("init", "--format", storage_format, "--avg-size", "4K")
    shared, solo = random_bytes(150_000, seed=50), random_bytes(150_000, seed=51)
    write(chunkstore.workdir / "one.bin", shared)
    write(chunkstore.workdir / "two.bin", shared)
    write(chunkstore.workdir / "solo.bin", solo)
    chunkstore("put", "one.bin", "two.bin", "solo.bin")
    with Store.open(chunkstore.store) as store:
        too_low, too_high = (store.catalog.get_version(name).digest for name in ("one.bin", "solo.bin"))
        assert store.catalog.set_content_refcounts({too_low: (2, 1), too_high: (1, 3)}) == set()

    run = chunkstore("verify", expect=4)
    assert f"refcount: content {too_low.hex()} counts 1 versions, 2 reference it (affects: one.bin@1, two.bin@1)" in (
        run.err
    )
    assert f"refcount: content {too_high.hex()} counts 3 versions, 1 reference it (affects: solo.bin@1)" in run.err
    report = chunkstore.json("verify", "--repair", "--json")
    assert (report["ok"], report["content_counts_repaired"], report["problems"]) == (True, 2, [])
    assert "repaired 0 contents' counts of versions\nok: " in chunkstore("verify", "--repair").out
    assert chunkstore("verify").out.startswith("ok: ")
    with Store.open(chunkstore.store) as store:
        assert [store.catalog.get_content(digest).refcount for digest in (too_low, too_high)] == [2, 1]

    chunkstore("rm", "one.bin")
    assert chunkstore.json("gc", "--json")["chunks_deleted"] == 0  # two.bin still holds every chunk
    assert chunkstore("get", "two.bin").stdout == shared
    chunkstore("rm", "solo.bin")
    assert chunkstore.json("gc", "--json")["chunks_deleted"] > 0  # no count of 2 keeps it alive
    assert chunkstore("verify", "--read-data").out.startswith("ok: 1 versions, 1 contents")
    assert chunkstore("get", "two.bin").stdout == shared

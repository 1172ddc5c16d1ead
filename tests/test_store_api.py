"""The library end to end: put, get, restore, rm, gc, verify, stats.

The stores are memory:// stores: what is tested here does not depend on where a store is, and
a folder's part (its blob store and SQLite catalog) has conformance suites of its own."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import blake3
import pytest

from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_key
from chunkstore.core.objectformat import HEADER_SIZE
from chunkstore.errors import ConcurrentModificationError, IntegrityError, UnsafePathError, VersionNotFoundError
from chunkstore.operations.maintenance import REPAIR_ATTEMPTS
from chunkstore.operations.objectput import ObjectWriter
from chunkstore.operations.read import iter_recipe
from support.storechecks import get_bytes


def random_bytes(label: str, size: int) -> bytes:
    return blake3.blake3(label.encode()).digest(length=size)


def text_bytes(label: str, size: int) -> bytes:
    lines = (f"{label} line {number}: the quick brown fox jumps over the lazy dog\n" for number in range(size))
    return "".join(lines).encode()[:size]


TREE = {
    "a.txt": text_bytes("a", 150_000),
    "empty": b"",
    "sub/b.bin": random_bytes("b", 200_000),
    "sub/deeper/c.bin": random_bytes("c", 700_000),
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def store_url(memory_store_url) -> str:
    return memory_store_url


@pytest.fixture
def source(tmp_path) -> Path:
    """A folder tree that tests put under the name 'src'."""
    return write_tree(tmp_path / "source", TREE)


def put_source(store, source: Path, **options) -> dict[str, object]:
    summary = store.put([(source, "src")], **options)
    return {result.name: result for result in summary.results}


def chunk_keys(store) -> set[str]:
    return {info.key for info in store.blobs.list(CHUNK_KEY_PREFIX)}


def recipe_ids(store, name: str, version: int | None = None) -> list[bytes]:
    return [entry.chunk_id for entry in iter_recipe(store, store.catalog.get_version(name, version).digest)]


def files_below(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir()}


# ---- put and restore -----------------------------------------------------------------------


def test_put_a_folder_and_restore_it(store, source, tmp_path):
    os.chmod(source / "sub/b.bin", 0o751)
    past = 1_600_000_000_123_456_789
    os.utime(source / "a.txt", ns=(past, past))
    results = put_source(store, source)
    assert {name: (result.outcome, result.version, result.size) for name, result in results.items()} == {
        f"src/{relative}": ("stored", 1, len(data)) for relative, data in TREE.items()
    }
    assert sorted(record.name for record in store.list("src")) == sorted(f"src/{relative}" for relative in TREE)

    summary = store.restore("src", tmp_path / "out")
    assert summary.errors == []
    restored = tmp_path / "out" / "src"
    assert files_below(restored) == set(TREE)
    for relative, data in TREE.items():
        assert (restored / relative).read_bytes() == data
        original, copy = os.stat(source / relative), os.stat(restored / relative)
        assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(original.st_mode)
        assert copy.st_mtime_ns == original.st_mtime_ns
    assert stat.S_IMODE(os.stat(restored / "sub/b.bin").st_mode) == 0o751
    assert os.stat(restored / "a.txt").st_mtime_ns == past


def test_re_put_of_an_unchanged_tree_reads_and_writes_nothing(store, source):
    put_source(store, source)
    keys, chunks = chunk_keys(store), list(store.catalog.iter_chunks())
    results = put_source(store, source)
    assert {(result.outcome, result.version, result.new_bytes) for result in results.values()} == {("unchanged", 1, 0)}
    assert chunk_keys(store) == keys
    assert list(store.catalog.iter_chunks()) == chunks
    assert [record.version for record in store.list("src", all_versions=True)] == [1] * len(TREE)


def test_touched_file_with_the_same_content_keeps_its_version(store, source, tmp_path):
    put_source(store, source)
    keys = chunk_keys(store)
    later = 1_700_000_000_000_000_000
    os.utime(source / "sub/b.bin", ns=(later, later))
    results = put_source(store, source)
    assert (results["src/sub/b.bin"].outcome, results["src/sub/b.bin"].version) == ("unchanged", 1)
    assert store.catalog.get_version("src/sub/b.bin").stat.mtime_ns == later
    assert chunk_keys(store) == keys
    # The refreshed stat is what the next put compares: it now skips the file without reading it.
    assert put_source(store, source)["src/sub/b.bin"].outcome == "unchanged"
    store.restore("src/sub/b.bin", tmp_path / "out")
    assert os.stat(tmp_path / "out/src/sub/b.bin").st_mtime_ns == later


def test_changed_file_gets_a_new_version_and_old_versions_stay_readable(store, source, tmp_path):
    put_source(store, source)
    changed = TREE["sub/deeper/c.bin"][:300_000] + b"an edit in the middle" + TREE["sub/deeper/c.bin"][300_000:]
    (source / "sub/deeper/c.bin").write_bytes(changed)
    results = put_source(store, source)
    result = results["src/sub/deeper/c.bin"]
    assert (result.outcome, result.version) == ("stored", 2)
    # Content-defined chunks: only the chunks around the edit are new.
    assert 0 < result.new_bytes < len(changed) // 2
    assert {results[name].outcome for name in results if name != "src/sub/deeper/c.bin"} == {"unchanged"}

    assert get_bytes(store, "src/sub/deeper/c.bin") == changed
    assert get_bytes(store, "src/sub/deeper/c.bin", version=1) == TREE["sub/deeper/c.bin"]
    assert get_bytes(store, "/src/sub/deeper/c.bin", version=2) == changed
    with pytest.raises(VersionNotFoundError):
        get_bytes(store, "src/sub/deeper/c.bin", version=3)
    store.get_to_path("src/sub/deeper/c.bin", tmp_path / "v1", version=1)
    assert (tmp_path / "v1").read_bytes() == TREE["sub/deeper/c.bin"]


def test_a_copy_under_another_name_is_a_duplicate(store, source, tmp_path):
    put_source(store, source)
    keys = chunk_keys(store)
    copy = write_tree(tmp_path / "copies", {"b-again.bin": TREE["sub/b.bin"]})
    (result,) = store.put([(copy / "b-again.bin", "copies/b-again.bin")]).results
    assert (result.outcome, result.duplicate_of, result.version) == ("duplicate", "src/sub/b.bin", 1)
    assert result.message == "duplicate of src/sub/b.bin"
    assert (result.new_bytes, result.stored_new_bytes) == (0, 0)
    assert chunk_keys(store) == keys
    assert get_bytes(store, "copies/b-again.bin") == TREE["sub/b.bin"]


def test_a_missing_source_is_an_error_result_and_the_rest_is_stored(store, source, tmp_path):
    summary = store.put([(tmp_path / "missing", "missing"), (source / "a.txt", "a.txt")])
    outcomes = {result.name: result.outcome for result in summary.results}
    assert outcomes == {"missing": "error", "a.txt": "stored"}
    assert get_bytes(store, "a.txt") == TREE["a.txt"]


@pytest.mark.parametrize("planted", ["symlinked parent", "symlinked file"])
def test_restore_refuses_to_write_through_a_symlink(store, source, tmp_path, planted):
    put_source(store, source)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"must not change")
    if planted == "symlinked parent":
        (out / "src").mkdir(parents=True)
        (out / "src" / "sub").symlink_to(elsewhere, target_is_directory=True)
        refused = {"src/sub/b.bin", "src/sub/deeper/c.bin"}
    else:
        (out / "src").mkdir(parents=True)
        (out / "src" / "a.txt").symlink_to(victim)
        refused = {"src/a.txt"}
    summary = store.restore("src", out)
    assert {result.name for result in summary.errors} == refused
    assert {result.exit_code for result in summary.errors} == {UnsafePathError.exit_code}
    assert all("symlink" in result.error for result in summary.errors)
    assert files_below(elsewhere) == {"victim"}
    assert victim.read_bytes() == b"must not change"
    assert (out / "src" / "empty").exists()


def test_restore_does_not_write_through_a_symlink_it_restored_itself(store, tmp_path):
    """A name stored as a symlink, and later as a folder holding a file: restore recreates
    the link, then refuses the file below it rather than follow the link it just made."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside, target_is_directory=True)
    store.put([(tree, "t")])
    (tree / "link").unlink()
    write_tree(tree, {"link/file": b"inside the folder that replaced the link"})
    store.put([(tree, "t")])
    summary = store.restore("t", tmp_path / "out")
    assert [(result.name, result.exit_code) for result in summary.errors] == [
        ("t/link/file", UnsafePathError.exit_code)
    ]
    assert (tmp_path / "out" / "t" / "link").is_symlink()
    assert list(outside.iterdir()) == []


def test_restore_names_every_file_of_a_corrupt_content_it_shares(store, tmp_path):
    """Small files are read ahead and a content met again is read once; its error is still
    reported under each name that holds it, and none of them is written."""
    content = random_bytes("shared", 5_000)
    folder = write_tree(tmp_path / "files", {"a/one": content, "b/two": content, "c/other": b"fine"})
    store.put([(folder, "f")])
    (chunk_id,) = recipe_ids(store, "f/a/one")
    blob = bytearray(store.blobs.get(chunk_key(chunk_id)))
    blob[-1] ^= 0x01
    store.blobs.put(chunk_key(chunk_id), bytes(blob))
    summary = store.restore("f", tmp_path / "out")
    errors = {result.name: result.error for result in summary.errors}
    assert set(errors) == {"f/a/one", "f/b/two"}
    assert all(message.startswith(f"{name} (version 1): ") for name, message in errors.items())
    assert files_below(tmp_path / "out") == {"f/c/other"}


# ---- rm and gc -----------------------------------------------------------------------------


def test_rm_and_gc_free_only_chunks_nothing_else_uses(small_chunk_store, tmp_path):
    store = small_chunk_store
    shared = random_bytes("shared", 150_000)
    files = {"one": shared + random_bytes("one", 60_000), "two": random_bytes("two", 40_000) + shared}
    folder = write_tree(tmp_path / "files", files)
    store.put([(folder, "files")])
    only_one = set(recipe_ids(store, "files/one")) - set(recipe_ids(store, "files/two"))
    common = set(recipe_ids(store, "files/one")) & set(recipe_ids(store, "files/two"))
    assert len(common) > 50 and len(only_one) > 20

    assert store.gc().chunks_deleted == 0
    removed = store.remove(["files/one"])
    assert [(record.name, record.version) for record in removed] == [("files/one", 1)]
    # rm frees nothing by itself; gc deletes what no recipe references any more.
    assert {chunk_key(chunk) for chunk in only_one} <= chunk_keys(store)
    report = store.gc()
    assert report.chunks_deleted == len(only_one)
    keys = chunk_keys(store)
    assert not {chunk_key(chunk) for chunk in only_one} & keys
    assert keys == {chunk_key(chunk) for chunk in recipe_ids(store, "files/two")}
    assert get_bytes(store, "files/two") == files["two"]
    assert store.verify(read_data=True).ok
    assert store.stats()["chunks"] == len(keys)


def test_rm_of_every_version_then_gc_empties_the_store(store, source):
    put_source(store, source)
    (source / "a.txt").write_bytes(b"second version")
    put_source(store, source)
    store.remove(["src"], recursive=True)
    store.gc()
    assert chunk_keys(store) == set()
    assert list(store.catalog.iter_chunks()) == []
    stats = store.stats()
    assert (stats["files"], stats["versions"], stats["chunks"], stats["stored_bytes"]) == (0, 0, 0, 0)


# ---- damage: verify, get and restore -------------------------------------------------------


def damage_target(store, source) -> bytes:
    """Put the tree; return a chunk in the middle of src/sub/deeper/c.bin that no other file uses."""
    put_source(store, source)
    ids = recipe_ids(store, "src/sub/deeper/c.bin")
    others = {chunk for name in TREE if name != "sub/deeper/c.bin" for chunk in recipe_ids(store, f"src/{name}")}
    middle = ids[len(ids) // 2]
    assert middle not in others
    return middle


def flip_a_payload_byte(store, chunk_id: bytes) -> None:
    blob = bytearray(store.blobs.get(chunk_key(chunk_id)))
    blob[HEADER_SIZE + len(blob[HEADER_SIZE:]) // 2] ^= 0x01
    store.blobs.put(chunk_key(chunk_id), bytes(blob))


def problems_by_kind(report) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for problem in report.problems:
        found.setdefault(problem.kind, []).append(problem.names)
    return found


def test_verify_of_a_healthy_store(store, source):
    put_source(store, source)
    report = store.verify(read_data=True)
    assert report.ok
    assert (report.versions, report.contents) == (len(TREE), len(TREE))
    assert report.chunks_read == report.chunks == len(chunk_keys(store))


def test_verify_finds_a_deleted_object_and_names_the_file(store, source):
    store.blobs.delete(chunk_key(damage_target(store, source)))
    report = store.verify()
    assert problems_by_kind(report) == {"missing-object": [["src/sub/deeper/c.bin@1"]]}
    assert report.damaged_names == ["src/sub/deeper/c.bin@1"]


def test_verify_with_read_data_finds_a_flipped_byte_and_names_the_file(store, source):
    flip_a_payload_byte(store, damage_target(store, source))
    report = store.verify(read_data=True)
    assert problems_by_kind(report) == {"corrupt-object": [["src/sub/deeper/c.bin@1"]]}


def test_verify_finds_a_wrong_reference_count(store, source):
    chunk = damage_target(store, source)
    recorded = store.catalog.get_chunks([chunk])[chunk].refcount
    assert store.catalog.set_refcounts({chunk: (recorded, recorded + 5)}) == set()
    assert list(problems_by_kind(store.verify())) == ["refcount"]


def test_repair_racing_puts_never_leaves_a_count_below_the_references(store, source, tmp_path, monkeypatch):
    """A put that commits between repair's recount and its rewrite raises the count the recount
    read; the rewrite must not put the stale, lower recount over it (gc would then free a chunk
    a recipe holds). Here a put lands before every rewrite, so repair gives up, and must leave
    no count below its references."""
    chunk = damage_target(store, source)
    recorded = store.catalog.get_chunks([chunk])[chunk].refcount
    store.catalog.set_refcounts({chunk: (recorded, recorded + 5)})  # an over-count repair lowers
    content = (source / "sub/deeper/c.bin").read_bytes()
    rewrite = store.catalog.set_refcounts
    puts = 0

    def put_then_rewrite(counts):
        nonlocal puts
        puts += 1
        variant = tmp_path / f"variant-{puts}.bin"  # shares the chunk, differs in its last byte
        variant.write_bytes(content + bytes([puts]))
        store.put([(variant, f"variant-{puts}")])
        return rewrite(counts)

    monkeypatch.setattr(store.catalog, "set_refcounts", put_then_rewrite)
    with pytest.raises(ConcurrentModificationError):
        store.verify(repair=True)
    monkeypatch.undo()
    report = store.verify()
    assert puts == REPAIR_ATTEMPTS
    assert report.recorded_counts[chunk] >= report.recount[chunk] == recorded + puts
    assert store.verify(repair=True).problems == []


def test_repair_releases_a_content_no_version_uses_and_gc_deletes_its_chunks(store, source):
    own = damage_target(store, source)
    digest = store.catalog.get_version("src/sub/deeper/c.bin").digest
    assert store.catalog.set_content_refcounts({digest: (1, 2)}) == set()
    store.remove(["src/sub/deeper/c.bin"])  # its content, counted twice, outlives its last version
    assert store.catalog.set_refcounts({own: (1, 4)}) == set()  # and one of its chunks is miscounted
    assert [problem.kind for problem in store.verify().problems] == ["refcount", "refcount"]
    assert store.gc().chunks_deleted == 0  # the content holds every chunk of its recipe
    repaired = store.verify(repair=True)
    assert repaired.ok, repaired.problems
    assert (repaired.counts_repaired, repaired.content_counts_repaired) == (1, 1)
    assert store.catalog.get_content(digest) is None
    assert store.gc().chunks_deleted > 0
    assert chunk_key(own) not in chunk_keys(store)
    assert store.verify(read_data=True).ok
    assert get_bytes(store, "src/sub/b.bin") == TREE["sub/b.bin"]


@pytest.mark.parametrize("damage", ["deleted", "flipped"])
def test_get_of_a_damaged_file_fails_and_leaves_no_file(store, source, tmp_path, damage):
    chunk = damage_target(store, source)
    if damage == "deleted":
        store.blobs.delete(chunk_key(chunk))
    else:
        flip_a_payload_byte(store, chunk)
    original = TREE["sub/deeper/c.bin"]

    output = io.BytesIO()
    with pytest.raises(IntegrityError) as raised:
        store.get("src/sub/deeper/c.bin", output)
    assert raised.value.exit_code == 4
    assert "src/sub/deeper/c.bin" in str(raised.value) and chunk.hex() in str(raised.value)
    # Cut short at the damaged chunk, never a wrong byte.
    assert len(output.getvalue()) < len(original)
    assert output.getvalue() == original[: len(output.getvalue())]

    target = tmp_path / "got" / "c.bin"
    target.parent.mkdir()
    with pytest.raises(IntegrityError):
        store.get_to_path("src/sub/deeper/c.bin", target)
    assert files_below(target.parent) == set()

    summary = store.restore("src", tmp_path / "out")
    assert [(result.name, result.exit_code) for result in summary.errors] == [("src/sub/deeper/c.bin", 4)]
    assert files_below(tmp_path / "out" / "src") == set(TREE) - {"sub/deeper/c.bin"}


# ---- many chunks, many recipe pages --------------------------------------------------------


def test_a_file_of_thousands_of_chunks_spans_many_recipe_pages(small_chunk_store, tmp_path, monkeypatch):
    store = small_chunk_store
    monkeypatch.setattr(ObjectWriter, "page_entries", 7)
    data = random_bytes("many chunks", 4000 * 1024)
    (tmp_path / "big").write_bytes(data)
    (result,) = store.put([(tmp_path / "big", "big")]).results
    assert result.outcome == "stored"
    content = store.catalog.get_content(store.catalog.get_version("big").digest)
    assert content.chunk_count >= 3000
    assert content.page_count == -(-content.chunk_count // 7)
    assert get_bytes(store, "big") == data
    assert store.verify().ok
    distinct = set(recipe_ids(store, "big"))
    store.remove(["big"])
    assert store.gc().chunks_deleted == len(distinct)
    assert chunk_keys(store) == set()


def test_concurrency_sets_the_threads_of_chunk_io_and_is_bounded(store, store_url, source):
    from chunkstore import Store
    from chunkstore.errors import InvalidArgumentError

    assert store.workers == max(2, os.cpu_count() or 2)
    with Store.open(store_url, concurrency=3) as opened:
        assert opened.workers == 3
        writer = ObjectWriter(opened)
        try:
            assert writer.pool._max_workers == 3
        finally:
            writer.close()
        put_source(opened, source)
        assert opened.verify(read_data=True).ok
    for wrong in (0, 1025):
        with pytest.raises(InvalidArgumentError):
            Store.open(store_url, concurrency=wrong)


def test_a_format_1_store_whose_config_claims_format_2_reads_as_damaged_not_as_data(tmp_path):
    """A config edited to say format 2 makes format 2 code read format 1 recipes: each is refused
    as damage (exit 4, one line), never read as something else."""
    from chunkstore import ChunkerSpec, CompressionSpec, Store
    from chunkstore.core.config import CONFIG_KEY, StoreConfig
    from chunkstore.errors import IntegrityError
    from support.storechecks import CHUNKSTORE

    store_url = str(tmp_path / "store")
    with Store.init(store_url, ChunkerSpec.from_average(), CompressionSpec.parse("zstd:3"), storage_format=1) as store:
        store.put_stream(io.BytesIO(b"kept"), "kept.txt")
        format_2 = StoreConfig.from_bytes(store.blobs.get(CONFIG_KEY)).as_format_2()
        store.blobs.put(CONFIG_KEY, format_2.to_bytes())
    with Store.open(store_url) as reopened, pytest.raises(IntegrityError, match="unknown version 1"):
        reopened.get("kept.txt", io.BytesIO())
    completed = subprocess.run(
        [*CHUNKSTORE, "--store", store_url, "get", "kept.txt"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 4 and completed.stdout == ""
    assert completed.stderr.startswith("chunkstore: ") and "kept.txt" in completed.stderr
    assert completed.stderr.count("\n") == 1

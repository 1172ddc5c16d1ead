"""The BlobStore contract (chunkstore/backends/blobstore.py), checked for any implementation.

A test module subclasses BlobStoreConformance and provides one fixture:

    @pytest.fixture
    def make_blobstore(self, ...):
        return lambda: SomeBlobStore(...)

make_blobstore returns a callable that opens a blob store on one fresh, empty
location; calling it again opens a second handle on the same location (as a second
process would). Every test here then runs against that implementation.

Keys of the form `a` and `a/b` are never used together: a folder cannot hold a
file and a subfolder of the same name, and the library never needs both.
"""

from __future__ import annotations

import functools
import threading

import pytest

from chunkstore.backends.blobstore import MAX_KEY_LENGTH, BlobInfo, BlobStore
from chunkstore.errors import BlobNotFoundError, InvalidArgumentError, NotFoundError
from support.threads import in_background, run_in_threads

LONGEST_PART = "k" * 255
LONGEST_KEY = "/".join([LONGEST_PART] * 3 + [LONGEST_PART[:-1], "k"])
TOO_LONG_KEY = "/".join([LONGEST_PART] * 4 + ["k"])
assert len(LONGEST_KEY) == MAX_KEY_LENGTH == len(TOO_LONG_KEY) - 1
VALID_KEYS = [
    "config",
    "chunks/ab/ab01",
    "a.b-c_d",
    "_x",
    "0",
    "deep/er/and/deeper/key",
    "tmp/x",
    "x.tmp",
    LONGEST_PART,
    LONGEST_KEY,
]
INVALID_KEYS = [
    None,
    "",
    ".",
    "..",
    "a/../b",
    "a/./b",
    "./a",
    "A",
    "a/B",
    "/a",
    "a/",
    "a//b",
    "a b",
    "a\\b",
    "-a",
    ".hidden",
    "a/.b",
    "ä",
    "a\x00b",
    LONGEST_PART + "k",
    TOO_LONG_KEY,
]

# Sorted by byte value: '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' (0x30) < '_' (0x5f) < 'a'.
# Keys below a folder-like part ('a/b', 'a/c/d') sort by their '/' as S3 sorts them,
# between 'a.d' and 'a0', not before or after every key beginning with 'a' as a naive
# walk of folders would give.
ORDERED_KEYS = ["a-c", "a.d", "a/b", "a/c-e", "a/c.f", "a/c/d", "a/c0", "a/c_", "a0", "a_", "ab", "b"]


def payload(tag: str, size: int) -> bytes:
    """size bytes that differ between tags and between offsets (so a ranged get cannot pass by luck)."""
    pattern = f"{tag}:".encode() + bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


class BlobStoreConformance:
    @pytest.fixture
    def make_blobstore(self):
        raise NotImplementedError("a conformance subclass provides make_blobstore")

    @pytest.fixture
    def blobs(self, make_blobstore) -> BlobStore:
        store = make_blobstore()
        store.create()
        return store

    # ---- put / get / stat --------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 1000, 4 * 1024 * 1024 + 3])
    def test_put_then_get_returns_the_same_bytes(self, blobs, size):
        data = payload("round-trip", size)
        blobs.put("objects/one", data)
        assert blobs.get("objects/one") == data
        assert blobs.stat("objects/one") == BlobInfo("objects/one", size)

    @pytest.mark.parametrize("key", VALID_KEYS)
    def test_every_valid_key_shape_is_stored_and_listed(self, blobs, key):
        blobs.put(key, key.encode())
        assert blobs.get(key) == key.encode()
        assert [info.key for info in blobs.list(key)] == [key]
        assert key in [info.key for info in blobs.list()]

    def test_a_second_handle_sees_the_objects_of_the_first(self, blobs, make_blobstore):
        blobs.put("shared/key", b"visible elsewhere")
        blobs.sync()
        other = make_blobstore()
        assert other.get("shared/key") == b"visible elsewhere"
        assert [info.key for info in other.list("shared/")] == ["shared/key"]

    @pytest.mark.parametrize(
        ("offset", "length", "expected"),
        [
            (0, None, slice(0, 1000)),
            (10, None, slice(10, 1000)),
            (0, 10, slice(0, 10)),
            (500, 100, slice(500, 600)),
            (990, 100, slice(990, 1000)),  # fewer bytes at the end
            (999, 1, slice(999, 1000)),
            (1000, 10, slice(1000, 1000)),  # at the end: nothing
            (5000, 10, slice(1000, 1000)),  # past the end: nothing
            (5000, None, slice(1000, 1000)),
        ],
    )
    def test_ranged_get(self, blobs, offset, length, expected):
        data = payload("ranged", 1000)
        blobs.put("ranged", data)
        assert blobs.get("ranged", offset, length) == data[expected]

    def test_ranged_gets_of_the_tail_and_of_runs_of_a_large_object(self, blobs):
        # What a pack reader does: its last 400 KiB (from an offset, to the end), then runs of
        # records in parallel, the last of which ends exactly at the object's end.
        size = 5 * 1024 * 1024 + 7
        data = payload("pack", size)
        blobs.put("packs/ab/ab01", data)
        tail = 400 * 1024
        assert blobs.get("packs/ab/ab01", size - tail) == data[size - tail :]
        assert blobs.get("packs/ab/ab01", size - tail, tail) == data[size - tail :]
        runs = [(32, 70_000), (1_048_576, 8 * 1024 * 1024), (size - 40, 40), (size - 1, 1)]
        results = run_in_threads(
            *(functools.partial(blobs.get, "packs/ab/ab01", start, length) for start, length in runs)
        )
        assert results == [data[start : start + length] for start, length in runs]

    def test_missing_key_raises_blob_not_found(self, blobs):
        blobs.put("present", b"x")
        for call in (
            lambda: blobs.get("absent"),
            lambda: blobs.get("absent", 0, 10),
            lambda: blobs.stat("absent"),
            lambda: blobs.get("present/below"),
            lambda: blobs.stat("present/below"),
            lambda: blobs.stat("folder/absent"),
        ):
            with pytest.raises(BlobNotFoundError) as raised:
                call()
            assert isinstance(raised.value, NotFoundError)
            assert raised.value.exit_code == 3

    # ---- delete ------------------------------------------------------------------------

    def test_delete_removes_the_object_and_is_idempotent(self, blobs):
        blobs.put("doomed", b"data")
        blobs.put("kept", b"data")
        blobs.delete("doomed")
        with pytest.raises(BlobNotFoundError):
            blobs.get("doomed")
        blobs.delete("doomed")
        blobs.delete("never/existed")
        blobs.delete("kept/below")
        assert [info.key for info in blobs.list()] == ["kept"]

    # ---- list --------------------------------------------------------------------------

    def test_list_of_an_empty_store_is_empty(self, blobs):
        assert list(blobs.list()) == []
        assert list(blobs.list("chunks/")) == []

    def test_list_yields_every_key_in_ascending_order_with_sizes(self, blobs):
        # Written in reverse so that no implementation passes by keeping insertion order.
        for index, key in enumerate(reversed(ORDERED_KEYS)):
            blobs.put(key, b"x" * index)
        listed = list(blobs.list())
        assert [info.key for info in listed] == ORDERED_KEYS
        assert {info.key: info.size for info in listed} == {
            key: index for index, key in enumerate(reversed(ORDERED_KEYS))
        }

    @pytest.mark.parametrize(
        "prefix",
        [
            "",
            "a",
            "a/",
            "a/b",
            "a/b/",
            "a/c",
            "a/c/",
            "a/c/d",
            "a-",
            "a.",
            "a0",
            "a_",
            "b",
            "c",
            "a/d",
            "a/c0/",
            "zzz/",
        ],
    )
    def test_list_by_prefix_is_a_plain_string_prefix(self, blobs, prefix):
        for key in ORDERED_KEYS:
            blobs.put(key, key.encode())
        expected = [key for key in ORDERED_KEYS if key.startswith(prefix)]
        assert [info.key for info in blobs.list(prefix)] == expected

    def test_list_over_sharded_keys(self, blobs):
        keys = sorted(f"chunks/{index:02x}/{index:02x}{tail:062x}" for index in (0, 1, 0xAB, 0xFF) for tail in (7, 3))
        for key in reversed(keys):
            blobs.put(key, b"c")
        blobs.put("config", b"{}")
        assert [info.key for info in blobs.list("chunks/")] == keys
        assert [info.key for info in blobs.list("chunks/ab")] == [key for key in keys if key.startswith("chunks/ab")]
        assert [info.key for info in blobs.list("chunks/ab/ab0")] == [
            key for key in keys if key.startswith("chunks/ab/ab0")
        ]
        assert [info.key for info in blobs.list()] == keys + ["config"]

    @pytest.mark.parametrize("prefix", ["../", "/", "A", "./"])
    def test_a_prefix_no_valid_key_has_lists_nothing(self, blobs, prefix):
        blobs.put("a", b"x")
        assert list(blobs.list(prefix)) == []

    # ---- overwrite and concurrency -----------------------------------------------------

    def test_overwrite_replaces_the_object(self, blobs):
        blobs.put("key", b"first version, longer")
        blobs.put("key", b"second")
        assert blobs.get("key") == b"second"
        assert blobs.stat("key").size == len(b"second")
        assert [info.key for info in blobs.list()] == ["key"]

    def test_a_reader_never_sees_part_of_an_overwrite(self, blobs):
        versions = [payload(f"v{index}", 256 * 1024 + index * 4099) for index in range(4)]
        blobs.put("hot", versions[0])
        stop = threading.Event()
        seen: list[bytes] = []

        def read_until_stopped():
            while not stop.is_set():
                seen.append(blobs.get("hot"))

        with in_background(read_until_stopped):
            try:
                for round_number in range(40):
                    blobs.put("hot", versions[round_number % len(versions)])
            finally:
                stop.set()
        assert seen
        assert all(data in versions for data in seen)

    def test_concurrent_puts_of_one_key_leave_one_whole_object(self, blobs):
        versions = [payload(f"writer{index}", 300 * 1024 + index) for index in range(8)]
        start = threading.Barrier(len(versions))

        def write(data: bytes):
            start.wait()
            for _ in range(5):
                blobs.put("contended", data)

        run_in_threads(*(functools.partial(write, data) for data in versions))
        final = blobs.get("contended")
        assert final in versions
        assert blobs.stat("contended").size == len(final)
        assert [info.key for info in blobs.list()] == ["contended"]

    def test_concurrent_puts_of_identical_bytes(self, blobs):
        # What two writers storing the same new chunk at once do.
        data = payload("same chunk", 100_000)
        run_in_threads(*[functools.partial(blobs.put, "chunks/00/same", data)] * 8)
        assert blobs.get("chunks/00/same") == data
        assert [info.key for info in blobs.list()] == ["chunks/00/same"]

    # ---- keys, sync, create ------------------------------------------------------------

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused_by_every_method(self, blobs, key):
        for call in (
            lambda: blobs.put(key, b"x"),
            lambda: blobs.get(key),
            lambda: blobs.stat(key),
            lambda: blobs.delete(key),
        ):
            with pytest.raises(InvalidArgumentError):
                call()
        assert list(blobs.list()) == []

    def test_sync_after_puts_and_with_nothing_to_sync(self, blobs):
        blobs.sync()
        blobs.put("a", b"1")
        blobs.put("b/c", b"2")
        blobs.sync()
        blobs.sync()
        assert [blobs.get(key) for key in ("a", "b/c")] == [b"1", b"2"]

    def test_create_is_idempotent_and_keeps_objects(self, blobs):
        blobs.put("kept", b"data")
        blobs.create()
        assert blobs.exists()
        assert blobs.get("kept") == b"data"

"""The store dictionary of storage format 2 (docs/design/format-v2.md, The dictionary object): the
first put that stores enough new chunks trains one, stores it under `dicts/` and compresses its
later chunks with it; other writers reuse it; readers load it by the ID a record names."""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path, PurePosixPath

import blake3
import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.dictionaries import DICTIONARY_KEY_PREFIX, MAX_OBJECT_BYTES
from chunkstore.backends.packs import PACK_KEY_PREFIX, PackReader
from chunkstore.core import compression
from chunkstore.core.config import CONFIG_KEY, StoreConfig
from chunkstore.errors import CorruptObjectError, InvalidArgumentError, UnsupportedFormatError
from support.clihelpers import run_cli
from support.storeobjects import LocalObjects

CHUNKER = ChunkerSpec.from_average(avg_size=4096)
DICTIONARY_SIZE = 16 * 1024
TRAINING_BYTES = 256 * 1024
DICTS = PurePosixPath("dicts")
# Text every file repeats: what a dictionary learns, and what must not be seen in the clear.
MARKER = b"chunkstore-dictionary-test-marker"


def source_files(folder: Path, count: int, seed: int) -> dict[str, bytes]:
    """Files like source code: lines from a shared vocabulary, each file its own sequence, so chunks
    share words (which a dictionary learns) but hardly any whole chunk."""
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(3, 12))) for _ in range(2000)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for number in range(count):
        lines = [
            f"    {' '.join(rng.choice(vocabulary) for _ in range(rng.randint(2, 8)))}  # {MARKER.decode()}"
            for _ in range(600)
        ]
        data = "\n".join(lines).encode()
        (folder / f"f{seed}-{number}.py").write_bytes(data)
        files[f"f{seed}-{number}.py"] = data
    return files


def init(url: str, dictionary_size: int | None = DICTIONARY_SIZE, **arguments) -> Store:
    return Store.init(
        url,
        CHUNKER,
        CompressionSpec.parse("zstd:3"),
        storage_format=2,
        dictionary_size=dictionary_size,
        training_bytes=TRAINING_BYTES,
        **arguments,
    )


def dictionary_keys(store: Store) -> list[str]:
    return sorted(info.key for info in store.blobs.list(DICTIONARY_KEY_PREFIX))


def records(store: Store) -> list[bytes]:
    """Every chunk record in the store's packs."""
    reader = PackReader(store.blobs, store.packs)
    found = []
    try:
        for info in store.blobs.list(PACK_KEY_PREFIX):
            pack = store.blobs.get(info.key)
            for entry in reader.read_table(bytes.fromhex(info.key.rsplit("/", 1)[1]), info.size):
                found.append(pack[entry.offset : entry.end])
    finally:
        reader.close()
    return found


def compression_ids(store: Store) -> Counter[int]:
    return Counter(record[5] for record in records(store))


def assert_reads_back(store: Store, files: dict[str, bytes], folder: str) -> None:
    for name, data in files.items():
        out = io.BytesIO()
        store.get(f"{folder}/{name}", out)
        assert out.getvalue() == data, name


def test_the_first_put_trains_a_dictionary_and_later_chunks_use_it(new_backend, tmp_path):
    objects = new_backend(tmp_path)
    files = source_files(tmp_path / "src", 40, seed=1)
    with init(objects.url, **objects.init_arguments()) as store:
        summary = store.put([(tmp_path / "src", "src")])
        (key,) = dictionary_keys(store)
        ids = compression_ids(store)
    # Chunks before the training bytes were reached are plain zstd, every later one uses it.
    assert ids[compression.ZSTD_DICT_ID] > ids[compression.ZSTD_ID] > 0
    assert sum(result.stored_new_bytes for result in summary.results) > 0
    with Store.open(objects.url, read_only=True) as reader:
        assert_reads_back(reader, files, "src")
        assert not reader.verify(read_data=True).problems
        # The record names the dictionary by the ID its key holds.
        named = {record[16:24] for record in records(reader) if record[5] == compression.ZSTD_DICT_ID}
        assert named == {bytes.fromhex(key.removeprefix(DICTIONARY_KEY_PREFIX))}


def test_stats_counts_the_dictionary_in_the_stored_bytes(tmp_path):
    url = str(tmp_path / "store")
    source_files(tmp_path / "src", 40, seed=1)
    with init(url) as store:
        empty = store.stats()
        store.put([(tmp_path / "src", "src")])
        figures = store.stats()
        (dictionary,) = store.blobs.list(DICTIONARY_KEY_PREFIX)
        packs = sum(info.size for info in store.blobs.list(PACK_KEY_PREFIX))
    assert (empty["dictionaries"], empty["dictionary_bytes"], empty["stored_bytes"]) == (0, 0, 0)
    assert (figures["dictionaries"], figures["dictionary_bytes"]) == (1, dictionary.size)
    assert figures["stored_bytes"] == packs + dictionary.size
    assert figures["store_ratio"] == round(figures["logical_bytes"] / (packs + dictionary.size), 4)
    text = run_cli(url, "stats", cwd=tmp_path).stdout.decode()
    assert f"dictionaries: 1 ({dictionary.size / 1024:.1f} KiB)" in " ".join(text.split())


def test_a_dictionary_stores_less_than_plain_zstd(tmp_path):
    source_files(tmp_path / "src", 40, seed=1)
    stored = {}
    for size in (0, DICTIONARY_SIZE):
        with init(str(tmp_path / f"store-{size}"), dictionary_size=size) as store:
            store.put([(tmp_path / "src", "src")])
            stored[size] = sum(len(record) for record in records(store))
            assert bool(dictionary_keys(store)) == bool(size)
    # 1.23x here (the 16 KiB dictionary object not counted), though the chunks before training are the same.
    assert stored[DICTIONARY_SIZE] * 1.1 < stored[0]


def test_a_later_writer_uses_the_stored_dictionary(tmp_path):
    url = str(tmp_path / "store")
    source_files(tmp_path / "first", 40, seed=1)
    files = source_files(tmp_path / "second", 40, seed=2)
    with init(url) as store:
        store.put([(tmp_path / "first", "first")])
        keys = dictionary_keys(store)
    with Store.open(url) as store:
        before = compression_ids(store)
        store.put([(tmp_path / "second", "second")])
        assert dictionary_keys(store) == keys
        after = compression_ids(store)
    # Every new chunk of the second put uses the dictionary, from its first one on.
    assert after[compression.ZSTD_ID] == before[compression.ZSTD_ID]
    assert after[compression.ZSTD_DICT_ID] > before[compression.ZSTD_DICT_ID]
    with Store.open(url) as store:
        assert_reads_back(store, files, "second")


def test_two_writers_that_both_train_leave_two_dictionaries_that_both_read(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    first = source_files(tmp_path / "first", 40, seed=1)
    second = source_files(tmp_path / "second", 40, seed=2)
    init(url).close()
    # Two first puts that race: the second listed `dicts/` before the first stored its dictionary.
    with Store.open(url) as one, Store.open(url) as other:
        monkeypatch.setattr(other.dictionaries, "stored_ids", lambda: [])
        one.put([(tmp_path / "first", "first")])
        other.put([(tmp_path / "second", "second")])
    with Store.open(url) as store:
        keys = dictionary_keys(store)
        assert len(keys) == 2
        assert_reads_back(store, first, "first")
        assert_reads_back(store, second, "second")
        assert not store.verify(read_data=True).problems
        # A third writer compresses with the lowest.
        assert not store.use_stored_dictionary()
        assert store.codec.compressor.dictionary_id == bytes.fromhex(keys[0].removeprefix(DICTIONARY_KEY_PREFIX))


@pytest.mark.parametrize("damage", ["delete", "alter", "oversize"])
def test_a_missing_or_altered_dictionary_is_a_clear_integrity_error(tmp_path, damage):
    objects = LocalObjects(tmp_path / "store")
    source_files(tmp_path / "src", 40, seed=1)
    with init(objects.url) as store:
        store.put([(tmp_path / "src", "src")])
        (key,) = dictionary_keys(store)
    if damage == "delete":
        objects.delete(PurePosixPath(key))
    elif damage == "alter":
        blob = bytearray(objects.read(PurePosixPath(key)))
        blob[-100] ^= 1
        objects.write(PurePosixPath(key), bytes(blob))
    else:  # read no further than the largest dictionary could take
        objects.write(PurePosixPath(key), objects.read(PurePosixPath(key)) + bytes(MAX_OBJECT_BYTES))
    with Store.open(objects.url) as store:
        with pytest.raises(CorruptObjectError, match=key) as raised:
            store.get("src/f1-39.py", io.BytesIO())
        if damage == "oversize":
            assert "larger than any dictionary" in str(raised.value)
        errors = store.restore("", tmp_path / "out").errors
        assert errors and all(key in result.error for result in errors)
        # Only reading the records finds that a dictionary is missing; one that is there is checked.
        for read_data in (True, False) if damage != "delete" else (True,):
            problems = store.verify(read_data=read_data).problems
            assert any(key in problem.message for problem in problems), problems
        # A writer will not compress with a dictionary it cannot read; finding none, it trains one.
        if damage != "delete":
            with pytest.raises(CorruptObjectError, match=key):
                store.use_stored_dictionary()
        else:
            assert store.use_stored_dictionary()
    completed = run_cli(objects.url, "restore", "", "-o", tmp_path / "cli-out", cwd=tmp_path, expect=4)
    assert key in completed.stderr.decode()
    completed = run_cli(objects.url, "verify", "--read-data", cwd=tmp_path, expect=4)
    assert key in completed.stdout.decode() + completed.stderr.decode()


def test_an_encrypted_stores_dictionary_shows_no_plaintext(tmp_path):
    objects = LocalObjects(tmp_path / "store")
    files = source_files(tmp_path / "src", 40, seed=1)
    with init(objects.url, passphrase=b"secret") as store:
        store.put([(tmp_path / "src", "src")])
        (key,) = dictionary_keys(store)
        dictionary_id = bytes.fromhex(key.removeprefix(DICTIONARY_KEY_PREFIX))
        plaintext = store.dictionaries(dictionary_id)
    # The dictionary learned the text, and its stored object shows none of it; its name is a keyed hash.
    fragment = MARKER[-12:]
    assert fragment in plaintext
    assert fragment not in objects.read(PurePosixPath(key))
    assert blake3.blake3(plaintext).digest()[:8] != dictionary_id
    with Store.open(objects.url, passphrase=b"secret") as store:
        assert_reads_back(store, files, "src")


def test_gc_leaves_dictionaries_alone(tmp_path):
    url = str(tmp_path / "store")
    source_files(tmp_path / "src", 40, seed=1)
    with init(url) as store:
        store.put([(tmp_path / "src", "src")])
        keys = dictionary_keys(store)
        store.remove(["src"], recursive=True)
        store.gc()
        # Everything else went: the packs.
        assert not list(store.blobs.list(PACK_KEY_PREFIX))
        assert dictionary_keys(store) == keys


def test_a_store_whose_config_has_no_dictionary_never_trains(tmp_path):
    url = str(tmp_path / "store")
    source_files(tmp_path / "src", 40, seed=1)
    with init(url, dictionary_size=0) as store:
        assert "dictionary_size" not in store.blobs.get(CONFIG_KEY).decode()
        store.put([(tmp_path / "src", "src")])
        assert dictionary_keys(store) == []
        assert set(compression_ids(store)) <= {compression.NONE_ID, compression.ZSTD_ID}


def test_format_1_and_compression_none_take_no_dictionary(tmp_path):
    with pytest.raises(InvalidArgumentError, match="format 2"):
        Store.init(
            str(tmp_path / "one"),
            CHUNKER,
            CompressionSpec.parse("zstd:3"),
            storage_format=1,
            dictionary_size=DICTIONARY_SIZE,
        )
    with pytest.raises(InvalidArgumentError, match="zstd"):
        Store.init(
            str(tmp_path / "none"), CHUNKER, CompressionSpec("none"), storage_format=2, dictionary_size=DICTIONARY_SIZE
        )
    with Store.init(str(tmp_path / "default"), CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=2) as store:
        assert store.config.compression.dictionary_size == compression.DEFAULT_DICTIONARY_SIZE
        assert store.config.compression.training_bytes == compression.DEFAULT_TRAINING_BYTES
    with Store.init(str(tmp_path / "format1"), CHUNKER, CompressionSpec.parse("zstd:3"), storage_format=1) as store:
        assert store.config.compression.dictionary_size == 0


@pytest.mark.parametrize("size", [100, 2 * 1024 * 1024])
def test_a_config_with_a_bad_dictionary_size_is_refused(tmp_path, size):
    url = str(tmp_path / "store")
    with pytest.raises(InvalidArgumentError, match="dictionary"):
        init(url, dictionary_size=size)
    init(url).close()
    raw = (tmp_path / "store" / CONFIG_KEY).read_text()
    edited = raw.replace(f'"dictionary_size": {DICTIONARY_SIZE}', f'"dictionary_size": {size}')
    assert edited != raw
    (tmp_path / "store" / CONFIG_KEY).write_text(edited)
    with pytest.raises(UnsupportedFormatError, match="dictionary"):
        StoreConfig.from_bytes(edited.encode())
    completed = run_cli(url, "ls", cwd=tmp_path, expect=1)
    assert "dictionary" in completed.stderr.decode()


def test_init_sizes_the_dictionary_or_turns_it_off(tmp_path):
    run_cli(tmp_path / "off", "init", "--format", "2", "--dictionary-size", "0", cwd=tmp_path)
    assert "dictionary_size" not in (tmp_path / "off" / CONFIG_KEY).read_text()
    run_cli(tmp_path / "sized", "init", "--format", "2", "--dictionary-size", "64K", cwd=tmp_path)
    assert StoreConfig.from_bytes((tmp_path / "sized" / CONFIG_KEY).read_bytes()).compression == CompressionSpec(
        "zstd", 3, 64 * 1024, compression.DEFAULT_TRAINING_BYTES
    )
    for options in (["--format", "2", "--dictionary-size", "100"], ["--format", "1", "--dictionary-size", "64K"]):
        completed = run_cli(tmp_path / "refused", "init", *options, cwd=tmp_path, expect=2)
        assert "dictionary" in completed.stderr.decode()
        assert not (tmp_path / "refused" / CONFIG_KEY).exists()


def test_repack_compresses_the_records_it_copies_with_the_stored_dictionary(tmp_path):
    url = str(tmp_path / "store")
    first = source_files(tmp_path / "first", 40, seed=1)
    source_files(tmp_path / "second", 40, seed=2)
    with init(url) as store:
        store.put([(tmp_path / "first", "first"), (tmp_path / "second", "second")])
        (pack_before,) = (info.key for info in store.blobs.list(PACK_KEY_PREFIX))
        assert compression_ids(store)[compression.ZSTD_ID] > 0
        store.remove(["second"], recursive=True)
    # A new process: gc's repack finds the dictionary in the store, it did not train it.
    with Store.open(url) as store:
        store.gc()
        assert [info.key for info in store.blobs.list(PACK_KEY_PREFIX)] != [pack_before]
        ids = compression_ids(store)
        # Every record compressed again with it (a chunk that does not shrink, such as a file's
        # short last one, is stored raw as ever).
        assert ids[compression.ZSTD_ID] == 0 and ids[compression.ZSTD_DICT_ID] > ids[compression.NONE_ID]
        assert_reads_back(store, first, "first")

"""put reads, cuts and hashes the rest of a large regular file on a second thread, a few batches
ahead of the thread that stores its chunks (operations/writer.py, _ReadAhead): errors on either
side reach the caller, and the file is never read once add_stream has returned. Other streams,
whose reads may wait on their writer, are read on the caller's thread."""

from __future__ import annotations

import io
import random
import threading
import time

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.operations import writer as writer_module
from chunkstore.operations.packedput import PackedWriter

FILE_BYTES = 40 * 1024 * 1024
DATA = random.Random(7).randbytes(FILE_BYTES)


class CountingFile(io.FileIO):
    """A regular file that counts what was read and by which threads, and fails after fail_after bytes."""

    def __init__(self, path, fail_after: int | None = None):
        super().__init__(path, "rb")
        self._fail_after = fail_after
        self.read_bytes = 0
        self.readers: set[str] = set()

    def readinto(self, buffer) -> int:
        self.readers.add(threading.current_thread().name)
        if self._fail_after is not None and self.read_bytes >= self._fail_after:
            raise OSError("the disk went away")
        count = super().readinto(buffer) or 0
        self.read_bytes += count
        return count


class CountingStream(io.RawIOBase):
    """The same bytes from a stream with no file descriptor (as a pipe or a request body reads)."""

    def __init__(self):
        self._data = io.BytesIO(DATA)
        self.readers: set[str] = set()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.readers.add(threading.current_thread().name)
        return self._data.readinto(buffer)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def store(tmp_path):
    chunker = ChunkerSpec.from_average(avg_size=8192)
    with Store.init(str(tmp_path / "store"), chunker, CompressionSpec.parse("zstd:1"), storage_format=2) as opened:
        yield opened


def put_one(store: Store, stream) -> None:
    writer = PackedWriter(store)
    try:
        writer.queue(writer.add_stream(stream, "big.bin", None))
        (result,) = writer.commit()
    finally:
        writer.close()
    assert result.outcome == "stored" and result.size == FILE_BYTES
    out = io.BytesIO()
    store.get("big.bin", out)
    assert out.getvalue() == DATA


def test_a_large_regular_file_is_read_ahead_on_the_hashing_thread_and_stored_whole(store, big_file):
    with CountingFile(big_file) as handle:
        put_one(store, handle)
    assert threading.current_thread().name in handle.readers  # the first MiB
    assert any(name.startswith("chunkstore-hash") for name in handle.readers)


def test_a_stream_without_a_file_descriptor_is_read_on_the_caller_s_thread_only(store):
    stream = CountingStream()
    put_one(store, stream)
    assert stream.readers == {threading.current_thread().name}


def test_a_read_error_ahead_reaches_the_caller_and_stores_nothing(store, big_file):
    writer = PackedWriter(store)
    try:
        with CountingFile(big_file, fail_after=5 * 1024 * 1024) as handle, pytest.raises(OSError, match="went away"):
            writer.add_stream(handle, "big.bin", None)
        assert writer.commit() == []
    finally:
        writer.close()
    assert list(store.list()) == []


def test_an_error_storing_chunks_stops_the_reading_before_add_stream_returns(store, big_file, monkeypatch):
    writer = PackedWriter(store)
    stored = 0

    def failing_store_chunk(chunk_id, chunk, result):
        nonlocal stored
        stored += 1
        if stored == 200:
            raise OSError("no space left for the pack")

    monkeypatch.setattr(writer, "store_chunk", failing_store_chunk)
    try:
        with CountingFile(big_file) as handle:
            with pytest.raises(OSError, match="no space left"):
                writer.add_stream(handle, "big.bin", None)
            read_when_returned = handle.read_bytes
            time.sleep(0.2)
            # Nothing reads the file any more, and the reading stopped a few batches after the failure.
            assert handle.read_bytes == read_when_returned
        limit = (writer_module.MAX_HASH_BATCHES_IN_FLIGHT + 4) * writer_module.HASH_BATCH_BYTES
        assert read_when_returned < limit < FILE_BYTES
    finally:
        writer.close()

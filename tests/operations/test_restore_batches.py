"""A restore's batched writes: every chunk reaches the output and the whole-file digest once,
in order, whatever the mix of chunks smaller and larger than a batch."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chunkstore.operations import read
from chunkstore.operations.read import _BatchWriter

BATCH = 16


class SlowDigest:
    """Records what it was given, in order; an update from the digest thread takes a while, so
    that an update made out of turn on the calling thread would land before it."""

    def __init__(self) -> None:
        self.taken = bytearray()
        self._calling_thread = threading.get_ident()

    def update(self, data) -> None:
        if threading.get_ident() != self._calling_thread:
            time.sleep(0.01)
        self.taken += data


@pytest.mark.parametrize(
    "sizes",
    [
        [3, 5, 7, 2],  # one batch, written at the end
        [40],  # one chunk larger than a batch, alone
        [5, 40, 3],  # larger chunk after a partial batch, then a small one
        [16, 16, 40, 40, 1, 15, 17, 9],  # full batches, two large in a row, a batch filled exactly
        [9, 9, 9, 9, 9, 40, 9],  # handed-off batches in flight when the large chunk comes
    ],
)
def test_every_byte_is_written_and_digested_once_in_order(monkeypatch, sizes):
    monkeypatch.setattr(read, "WRITE_BATCH_BYTES", BATCH)
    chunks = [bytes([number]) * size for number, size in enumerate(sizes, 1)]
    output, digest = io.BytesIO(), SlowDigest()
    reported = []
    with ThreadPoolExecutor(1) as digester, _BatchWriter(output, digest, digester) as batches:
        for chunk in chunks:
            reported.append(batches.add(chunk))
            assert sum(reported) == len(output.getvalue())
        reported.append(batches.finish())
    expected = b"".join(chunks)
    assert output.getvalue() == expected
    assert bytes(digest.taken) == expected
    assert sum(reported) == len(expected)


def test_a_failed_restore_leaves_no_digest_running_on_a_buffer(monkeypatch):
    monkeypatch.setattr(read, "WRITE_BATCH_BYTES", BATCH)
    digest = SlowDigest()
    with ThreadPoolExecutor(1) as digester:
        with pytest.raises(RuntimeError), _BatchWriter(io.BytesIO(), digest, digester) as batches:
            batches.add(b"a" * 10)
            batches.add(b"b" * 10)  # hands the first batch to the slow digest thread
            raise RuntimeError("the read failed")
        assert bytes(digest.taken) == b"a" * 10  # done by the time the writer was left

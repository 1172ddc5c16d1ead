"""The tests' counting blob store keeps the blob store contract over a real folder, and records
each get with its range."""

from __future__ import annotations

import pytest

from chunkstore.backends.local import LocalBlobStore
from support.blobstore_conformance import BlobStoreConformance
from support.countingblobs import CountingBlobStore


class TestCountingBlobStore(BlobStoreConformance):
    @pytest.fixture
    def make_blobstore(self, tmp_path):
        return lambda: CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))


def test_every_get_is_recorded_with_its_range(tmp_path):
    blobs = CountingBlobStore(LocalBlobStore(tmp_path / "blobs"))
    blobs.put("objects/one", b"0123456789")
    assert blobs.get("objects/one") == b"0123456789"
    assert blobs.get("objects/one", 2, 3) == b"234"
    assert blobs.get("objects/one", 7) == b"789"
    assert blobs.gets == [("objects/one", 0, None), ("objects/one", 2, 3), ("objects/one", 7, None)]

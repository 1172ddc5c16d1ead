"""LocalBlobStore: the conformance suite, plus what only a folder has (temporary files, syncfs)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chunkstore.backends import local
from chunkstore.backends.local import LocalBlobStore
from chunkstore.errors import BlobNotFoundError, StoreWriteError
from support.blobstore_conformance import BlobStoreConformance


class TestLocalBlobStore(BlobStoreConformance):
    @pytest.fixture
    def make_blobstore(self, tmp_path):
        return lambda: LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def blobs(tmp_path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    store.create()
    return store


# A put in a child process that dies between writing its temporary file and renaming it.
_CRASHING_PUT = """
import os, sys
from chunkstore.backends.local import LocalBlobStore
os.replace = lambda *arguments: os._exit(9)
LocalBlobStore(sys.argv[1]).put(sys.argv[2], b"partial object")
"""


def files_under(root: Path) -> set[Path]:
    return {Path(directory) / name for directory, _, names in os.walk(root) for name in names}


def crashed_put(blobs: LocalBlobStore, key: str, age_seconds: float = 0) -> Path:
    """Return the temporary file a put of key killed before its rename leaves, made age_seconds old."""
    before = files_under(blobs.root)
    child = subprocess.run([sys.executable, "-c", _CRASHING_PUT, str(blobs.root), key], check=False)
    assert child.returncode == 9
    (temporary,) = files_under(blobs.root) - before
    stamp = time.time() - age_seconds
    os.utime(temporary, (stamp, stamp))
    return temporary


def test_temporaries_of_a_crashed_put_are_not_objects(blobs):
    blobs.put("chunks/00/kept", b"object")
    crashed_put(blobs, "chunks/00/lost")
    crashed_put(blobs, "lost")
    assert [info.key for info in blobs.list()] == ["chunks/00/kept"]
    assert [info.key for info in blobs.list("chunks/00/")] == ["chunks/00/kept"]
    with pytest.raises(BlobNotFoundError):
        blobs.get("chunks/00/lost")


def test_remove_stale_temporaries_removes_only_old_temporaries(blobs):
    old_objects = {"chunks/00/kept": b"object", "notes.tmp": b"an object whose name ends in .tmp"}
    for key, data in old_objects.items():
        blobs.put(key, data)
        stamp = time.time() - 3600
        os.utime(blobs.root / key, (stamp, stamp))
    old = crashed_put(blobs, "chunks/00/old", age_seconds=3600)
    young = crashed_put(blobs, "chunks/00/young", age_seconds=10)
    assert blobs.remove_stale_temporaries(older_than_seconds=600) == 1
    assert not old.exists()
    assert young.exists()
    assert {key: blobs.get(key) for key in old_objects} == old_objects
    assert blobs.remove_stale_temporaries(older_than_seconds=600) == 0


def test_put_leaves_only_its_object_behind(blobs):
    for index in range(20):
        blobs.put(f"chunks/{index:02x}/object", b"data" * index)
        blobs.put(f"chunks/{index:02x}/object", b"data" * index)
    assert files_under(blobs.root) == {blobs.root / f"chunks/{index:02x}/object" for index in range(20)}


def test_create_makes_the_store_folder(tmp_path):
    blobs = LocalBlobStore(tmp_path / "new" / "store")
    assert not blobs.exists()
    blobs.create()
    assert blobs.exists()
    blobs.put("chunks/ab/cdef", b"data")
    assert (tmp_path / "new" / "store" / "chunks" / "ab" / "cdef").read_bytes() == b"data"


def test_stray_files_in_the_store_folder_are_not_objects(blobs):
    blobs.put("chunks/00/kept", b"object")
    (blobs.root / "chunks" / "00" / ".editor-swap").write_bytes(b"not an object")
    (blobs.root / "README.TXT").write_bytes(b"not an object")
    assert [info.key for info in blobs.list()] == ["chunks/00/kept"]


def failing_syncfs(error_number: int):
    """A stand-in for libc's syncfs that fails as the kernel does: -1, with errno set."""
    calls = []

    def syncfs(descriptor: int) -> int:
        calls.append(descriptor)
        ctypes.set_errno(error_number)
        return -1

    return syncfs, calls


def test_a_failed_syncfs_is_a_write_error_naming_it(blobs, monkeypatch):
    syncfs, calls = failing_syncfs(errno.EIO)
    monkeypatch.setattr(local, "_syncfs", syncfs)
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("a failed syncfs must not be hidden behind os.sync"))
    blobs.put("chunks/00/object", b"data")
    with pytest.raises(StoreWriteError, match=r"syncfs failed with EIO \(Input/output error\)") as raised:
        blobs.sync()
    assert raised.value.exit_code == StoreWriteError.exit_code
    # Nothing was made durable: the next sync tries again.
    with pytest.raises(StoreWriteError):
        blobs.sync()
    assert len(calls) == 2


def test_without_syncfs_sync_flushes_every_file_system(blobs, monkeypatch):
    synced = []
    monkeypatch.setattr(local, "_syncfs", None)
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    blobs.sync()
    assert synced == []  # nothing was put: nothing to flush
    blobs.put("chunks/00/object", b"data")
    blobs.sync()
    blobs.sync()
    assert synced == [True]

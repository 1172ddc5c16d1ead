"""put in storage format 1: each new chunk its own object, each chunk a counted catalog row.

Write order (a crash anywhere leaves garbage at worst, never a committed file that
cannot be restored):
  1. claim chunks in the catalog (pinned for this session; new ones get PENDING rows);
  2. write the objects of new chunks, then make them durable (one file-system sync per commit batch);
  3. mark them PRESENT;
  4. commit the versions: reference counts and recipes in the same atomic step.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future

from chunkstore.backends.catalog import VersionRecord
from chunkstore.core import recipes
from chunkstore.core.config import chunk_key
from chunkstore.errors import ChunkMismatchError, IntegrityError, StoreWriteError
from chunkstore.operations.context import StoreContext
from chunkstore.operations.results import FileResult
from chunkstore.operations.writer import (
    BATCH_BYTES,
    MARK_STORED_EVERY_CHUNKS,
    MAX_UPLOAD_BYTES_IN_FLIGHT,
    Recipe,
    Writer,
)


class ObjectWriter(Writer):
    """Storage format 1: each new chunk its own object, each chunk a counted catalog row.

    Chunks go to a claim buffer shared by consecutive files, so a folder of small files costs
    one catalog transaction per BATCH_BYTES, not one per file."""

    # Entries per recipe page; tests lower it to exercise paging with small files.
    page_entries = recipes.DEFAULT_PAGE_ENTRIES

    def __init__(self, store: StoreContext, *, workers: int | None = None, at_ns: int | None = None):
        super().__init__(store, workers=workers, at_ns=at_ns)
        self._unclaimed: list[tuple[bytes, bytes, FileResult]] = []
        self._unclaimed_bytes = 0
        self._uploaded_unmarked: list[tuple[bytes, int]] = []
        self._uploading: set[bytes] = set()
        self._uploads: deque[tuple[Future, int, FileResult]] = deque()
        self._upload_bytes = 0

    def _new_recipe(self, result: FileResult, parent: VersionRecord | None) -> Recipe:
        return _ObjectRecipe(self, result)

    def _abandon(self) -> None:
        for future, _, _ in self._uploads:
            future.exception()
        self._uploads.clear()

    def buffer_claim(self, chunk_id: bytes, chunk: bytes, result: FileResult) -> None:
        self._unclaimed.append((chunk_id, chunk, result))
        self._unclaimed_bytes += len(chunk)
        if self._unclaimed_bytes >= BATCH_BYTES:
            self._claim()

    def discard(self, result: FileResult) -> None:
        self._unclaimed = [item for item in self._unclaimed if item[2] is not result]
        self._unclaimed_bytes = sum(len(item[1]) for item in self._unclaimed)

    def _claim(self) -> None:
        """Claim the buffered chunks in one catalog transaction and upload the new ones."""
        if not self._unclaimed:
            return
        batch, self._unclaimed, self._unclaimed_bytes = self._unclaimed, [], 0
        to_upload = self.catalog.claim_chunks(self.session, [(chunk_id, len(data)) for chunk_id, data, _ in batch])
        for chunk_id, data, result in batch:
            if chunk_id in to_upload and chunk_id not in self._uploading:
                self._uploading.add(chunk_id)
                result.new_bytes += len(data)
                self._schedule_upload(chunk_id, data, result)

    def _schedule_upload(self, chunk_id: bytes, data: bytes, result: FileResult) -> None:
        self._wait_uploads(MAX_UPLOAD_BYTES_IN_FLIGHT - len(data), self._max_uploads_in_flight - 1)
        future = self.pool.submit(self._upload, chunk_id, data)
        self._uploads.append((future, len(data), result))
        self._upload_bytes += len(data)

    def _upload(self, chunk_id: bytes, data: bytes) -> tuple[bytes, int]:
        blob = self.store.codec.encode(chunk_id, data)
        # Verify after encrypting, before the chunk counts as stored (restic does the same): a
        # fault in compression or encryption must not go unnoticed until restore.
        if self.store.encrypted and self.store.hasher.chunk_id(self.store.codec.decode(chunk_id, blob)) != chunk_id:
            raise ChunkMismatchError(f"chunk {chunk_id.hex()} did not survive encoding; nothing was stored")
        self.store.blobs.put(chunk_key(chunk_id), blob)
        return chunk_id, len(blob)

    def _wait_uploads(self, max_bytes: int, max_count: int = 0) -> None:
        while self._uploads and (self._upload_bytes > max_bytes or len(self._uploads) > max_count):
            future, size, result = self._uploads.popleft()
            self._upload_bytes -= size
            try:
                chunk_id, stored_size = future.result()
            except IntegrityError:
                raise
            except Exception as error:
                # Raised as what it is, a failure of the store, not of the file being read
                # when it surfaced (an OSError would be taken for that file's read error).
                raise StoreWriteError(f"storing a chunk of {result.name} failed: {error}") from error
            result.stored_new_bytes += stored_size
            self._uploaded_unmarked.append((chunk_id, stored_size))
        if len(self._uploaded_unmarked) >= MARK_STORED_EVERY_CHUNKS:
            self._mark_stored()

    def _mark_stored(self) -> None:
        """Make the uploaded chunks durable and PRESENT. Done at every commit, and within a file
        of very many new chunks, so the IDs waiting for it stay bounded."""
        if not self._uploaded_unmarked:
            return
        self.store.blobs.sync()
        self.catalog.chunks_stored(self.session, self._uploaded_unmarked)
        # PRESENT now: a later claim pins them instead of asking for an upload.
        self._uploading.difference_update(chunk_id for chunk_id, _ in self._uploaded_unmarked)
        self._uploaded_unmarked = []

    def _make_durable(self) -> None:
        self._claim()
        self._wait_uploads(0)
        self._mark_stored()
        self._uploading.clear()


class _ObjectRecipe:
    """A format 1 recipe: pages of (chunk ID, length) entries, encoded as they fill (a file of a
    million chunks holds 36 MB of recipe); each chunk goes to the writer's claim buffer."""

    def __init__(self, writer: ObjectWriter, result: FileResult):
        self._writer = writer
        self._result = result
        self._pages = recipes.PageBuilder(writer.page_entries)

    def add(self, chunk_id: bytes, chunk: bytes) -> None:
        self._pages.add(recipes.RecipeEntry(chunk_id, len(chunk)))
        self._writer.buffer_claim(chunk_id, chunk, self._result)

    def finish(self, digest: bytes) -> tuple[int, list[bytes]]:
        pages = self._pages.finish()
        return self._pages.count, pages

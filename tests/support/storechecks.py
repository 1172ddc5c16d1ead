"""Checks on a whole store, shared by the tests: what a name reads back, no garbage, a clean verify."""

from __future__ import annotations

import io
import sys

from chunkstore.backends.catalog import ChunkState
from chunkstore.backends.packindex import IndexState, Phase
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_id_from_key
from chunkstore.operations.packedcheck import pack_objects

# The `chunkstore` command, run as its own process (what a user's shell runs).
CHUNKSTORE = [sys.executable, "-m", "chunkstore_cli"]


def get_bytes(store, name: str, version: int | None = None) -> bytes:
    """What `store.get` writes for name (its latest version, or version)."""
    output = io.BytesIO()
    store.get(name, output, version=version)
    return output.getvalue()


def assert_no_garbage(store) -> None:
    """After a gc with no put running: every chunk row is a PRESENT, referenced chunk whose
    object exists with the recorded size, and every chunk object has a row (format 2: see
    assert_no_packed_garbage)."""
    if store.storage_format == 2:
        assert_no_packed_garbage(store)
        return
    rows = {chunk.chunk_id: chunk for chunk in store.catalog.iter_chunks()}
    objects = {chunk_id_from_key(info.key): info.size for info in store.blobs.list(CHUNK_KEY_PREFIX)}
    unreferenced = [chunk_id.hex() for chunk_id, chunk in rows.items() if chunk.refcount <= 0]
    not_present = [
        (chunk_id.hex(), chunk.state.name) for chunk_id, chunk in rows.items() if chunk.state != ChunkState.PRESENT
    ]
    assert not unreferenced, f"{len(unreferenced)} chunk rows with count 0 survived gc: {unreferenced[:5]}"
    assert not not_present, f"{len(not_present)} chunk rows are not PRESENT after gc: {not_present[:5]}"
    without_object = [chunk_id.hex() for chunk_id in rows.keys() - objects.keys()]
    assert not without_object, f"{len(without_object)} chunk rows have no object: {without_object[:5]}"
    without_row = [chunk_id.hex() if chunk_id else "?" for chunk_id in objects.keys() - rows.keys()]
    assert not without_row, f"{len(without_row)} objects have no chunk row: {without_row[:5]}"
    wrong_size = [chunk_id.hex() for chunk_id, size in objects.items() if rows[chunk_id].stored_size != size]
    assert not wrong_size, f"{len(wrong_size)} objects differ in size from their rows: {wrong_size[:5]}"


def assert_no_packed_garbage(store) -> None:
    """A format 2 store after a gc with no put running: gc's dry run finds no page, pack or orphan
    to delete, the round is idle, every page and pack item is PRESENT, and the pack objects are
    exactly the pack items, each of its recorded size."""
    dry = store.gc(dry_run=True)
    assert (dry.pages_deleted, dry.packs_deleted, dry.orphans_deleted) == (0, 0, 0), f"garbage after gc: {dry}"
    index = store.catalog.pack_index
    assert index.read_round().phase == Phase.IDLE, index.read_round()
    packs = {pack.pack_id: pack for pack in index.iter_packs()}
    not_present = [
        (item.item_id.hex(), item.state.name)
        for item in [*packs.values(), *index.iter_pages()]
        if item.state != IndexState.PRESENT
    ]
    assert not not_present, f"{len(not_present)} items are not PRESENT after gc: {not_present[:5]}"
    objects = pack_objects(store.blobs)
    recorded = {pack_id: pack.stored_bytes for pack_id, pack in packs.items()}
    assert objects == recorded, f"pack objects {len(objects)} and items {len(recorded)} differ"


def assert_verify_clean(store) -> None:
    report = store.verify(read_data=True)
    assert report.ok, "verify found problems:\n" + "\n".join(
        f"{problem.kind}: {problem.message} {problem.names}" for problem in report.problems
    )

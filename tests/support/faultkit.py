"""Helpers of the reliability suite: faults installed on an open store, a corpus of files
whose expected bytes are known, and the checks that must hold once the faults are gone."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from chunkstore import ChunkerSpec, ChunkstoreError, CompressionSpec, Store
from chunkstore.backends.faulty import Fault, FaultPlan, FaultyBlobStore, FaultyCatalog
from chunkstore.backends.packs import PACK_KEY_PREFIX
from chunkstore.core.config import CHUNK_KEY_PREFIX, CONFIG_KEY
from chunkstore.core.pages import SegmentSpec

from .storechecks import assert_no_garbage, assert_verify_clean

# A lease this short makes every session left open by a failed close dead at once, as the
# session of a process that exited is; the checks then see what a later gc would see.
CHECK_LEASE_SECONDS = 0.05

# Segments of 4 to 16 chunks: a file of the corpus below (~12 chunks at 4 KiB, ~50 at 1 KiB) is
# cut into one to a dozen recipe pages, so a put of a format 2 store writes page items and root
# pages, not only inline pages, and gc has pages to collect.
SMALL_SEGMENTS = SegmentSpec(boundary_bits=2, min_chunks=4, max_chunks=16)


def use_small_segments(url: str) -> None:
    """Give the format 2 store at url SMALL_SEGMENTS: its later puts cut files into them."""
    with Store.open(url) as store:
        store.blobs.put(CONFIG_KEY, dataclasses.replace(store.config, segments=SMALL_SEGMENTS).to_bytes())
        store.blobs.sync()


def init_store(objects, storage_format: int, avg_size: int) -> None:
    """Create a store where objects (a new_backend) says: FastCDC at avg_size, zstd 3, of
    storage_format; a format 2 store with SMALL_SEGMENTS, so files span several recipe pages."""
    Store.init(
        objects.url,
        ChunkerSpec.from_average(avg_size=avg_size),
        CompressionSpec.parse("zstd:3"),
        storage_format=storage_format,
        **objects.init_arguments(),
    ).close()
    if storage_format == 2:
        use_small_segments(objects.url)


def data_key_prefix(storage_format: int) -> str:
    """Where a store of this storage format keeps its chunks: chunk objects, or packs."""
    return CHUNK_KEY_PREFIX if storage_format == 1 else PACK_KEY_PREFIX


@dataclass
class InstalledFaults:
    blobs: FaultPlan
    catalog: FaultPlan

    @property
    def injected(self) -> int:
        return self.blobs.injected + self.catalog.injected


@contextmanager
def faults_installed(store: Store, blob_faults=(), catalog_faults=(), seed: int | str = 0):
    """Wrap store.blobs and store.catalog in fault injectors for the duration of the block."""
    plans = InstalledFaults(FaultPlan(blob_faults, seed), FaultPlan(catalog_faults, seed))
    original_blobs, original_catalog = store.blobs, store.catalog
    store.blobs = FaultyBlobStore(original_blobs, plans.blobs)
    store.catalog = FaultyCatalog(original_catalog, plans.catalog)
    try:
        yield plans
    finally:
        store.blobs, store.catalog = original_blobs, original_catalog


@dataclass
class Corpus:
    """Files on disk and, for every name ever put, each content it may hold."""

    root: Path
    rng: random.Random
    blocks: list[bytes]
    expected: dict[str, set[bytes]] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, seed: str, block_count: int = 12, block_size: int = 8192) -> Corpus:
        rng = random.Random(seed)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, rng, [rng.randbytes(block_size) for _ in range(block_count)])

    def write(self, relative: str, blocks: int = 6) -> Path:
        """A file of shared blocks (so files share chunks) and some bytes of its own."""
        parts = [self.rng.choice(self.blocks) for _ in range(blocks)] + [self.rng.randbytes(self.rng.randint(0, 3000))]
        data = b"".join(parts)
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.expected.setdefault(relative, set()).add(data)
        return path


def attempt(operation, *args, **kwargs):
    """Run operation; return (result, None) or (None, error) for the errors a command may end with.

    Anything else (a KeyError, a TypeError, an AssertionError from a broken invariant)
    propagates and fails the test: the command line would print a traceback for it."""
    try:
        return operation(*args, **kwargs), None
    except (ChunkstoreError, OSError) as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return None, error


def check_get(store: Store, corpus: Corpus, name: str, version: int | None = None) -> bool:
    """get name into memory: either every byte is right, or it fails having written only a
    correct prefix. True if it succeeded."""
    output = io.BytesIO()
    _, error = attempt(store.get, name, output, version=version)
    written = output.getvalue()
    if error is None:
        assert written in corpus.expected[name], f"get {name} returned wrong bytes"
        return True
    assert any(content.startswith(written) for content in corpus.expected[name]), (
        f"get {name} failed ({error}) after writing bytes that are not a prefix of its content"
    )
    return False


def check_restored_folder(corpus: Corpus, destination: Path, summary) -> None:
    """Every file restore reports as written holds right bytes; failed ones left no file."""
    for result in summary.results:
        path = Path(result.path)
        if result.error:
            assert not path.exists() or path.read_bytes() in corpus.expected[result.name], result.name
        else:
            assert path.read_bytes() in corpus.expected[result.name], f"restore wrote wrong bytes for {result.name}"
    leftovers = [path for path in destination.rglob("*.chunkstore-tmp")]
    assert not leftovers, f"restore left temporary files: {leftovers}"


def check_store_after_faults(url: str, corpus: Corpus) -> int:
    """With no fault left: gc removes every leak, verify is clean, and every committed
    version restores byte-exact. Returns how many versions were checked."""
    with Store.open(url, lease_seconds=CHECK_LEASE_SECONDS) as store:
        time.sleep(CHECK_LEASE_SECONDS * 2)
        store.gc()
        assert_no_garbage(store)
        assert_verify_clean(store)
        checked = 0
        for record in store.list(all_versions=True):
            assert record.name in corpus.expected, f"the store holds {record.name!r}, which was never put"
            assert check_get(store, corpus, record.name, record.version), f"{record.name}@{record.version} failed"
            checked += 1
        return checked


BLOB_METHODS_THAT_WRITE = ("put", "delete", "sync")
BLOB_METHODS_THAT_READ = ("get", "list")
_CALLED_BY_BOTH = (
    "open_session",
    "commit",
    "close_session",
    "get_version",
    "list_versions",
    "recipe_pages",
    "iter_contents",
    "remove_versions",
    "acquire_gc_lock",
    "release_gc_lock",
)
# Catalog methods (and, in format 2, pack index calls: FaultyCatalog faults both) an operation of
# the scenario below calls on a store of each storage format; each is faulted on its own.
CATALOG_METHODS = {
    1: _CALLED_BY_BOTH
    + (
        "claim_chunks",
        "chunks_stored",
        "iter_chunks",
        "get_chunks",
        "collect_candidates",
        "claim_orphans",
        "forget_chunks",
    ),
    2: _CALLED_BY_BOTH
    + ("read_round", "advance_round", "expire_sessions", "create_pack", "pack_stored", "get_packs", "iter_packs")
    + ("write_pages", "get_page", "iter_pages", "doom", "start_deleting", "forget"),
}


def random_mix(probability: float, storage_format: int) -> tuple[list[Fault], list[Fault]]:
    """Every write of the blob store and every catalog call may fail or lose its reply, and
    every read may come back truncated, each with the given probability."""
    blob = [
        Fault(method, kind, times=None, probability=probability)
        for method in BLOB_METHODS_THAT_WRITE
        for kind in ("error", "lost_reply")
    ]
    blob.append(Fault("get", "truncate", times=None, probability=probability))
    catalog = [
        Fault(method, kind, times=None, probability=probability)
        for method in CATALOG_METHODS[storage_format]
        for kind in ("error", "lost_reply")
    ]
    return blob, catalog


def run_operations_under_faults(store: Store, corpus: Corpus, tmp_path, blob_faults, catalog_faults, seed=0) -> int:
    """put (the data folder, whatever changed in it, and a new folder), get, restore, rm (of three
    files), gc and verify with the faults installed; return how many faults fired."""
    corpus.write("data/a.bin")  # a new version of a committed name
    for index in range(3):
        corpus.write(f"new/{index}.bin")
    destination = tmp_path / "restored"
    with faults_installed(store, blob_faults, catalog_faults, seed) as plans:
        attempt(store.put, [(corpus.root / "data", "data")])
        attempt(store.put, [(corpus.root / "new", "new")])
        listed, _ = attempt(lambda: [record.name for record in store.list("data")])
        for name in listed or ["data/b.bin"]:
            check_get(store, corpus, name)
        summary, _ = attempt(store.restore, "data", destination)
        if summary is not None:
            check_restored_folder(corpus, destination, summary)
        # One at a time: an rm that names one missing file removes none. In format 2, files put on
        # their own have packs of their own, which gc deletes once nothing names them.
        for name in ("data/c.bin", "data/d.bin", "data/e.bin"):
            attempt(store.remove, [name])
        attempt(store.gc)
        report, _ = attempt(store.verify, read_data=True)
        if report is not None and plans.injected == 0:
            assert report.ok, [problem.message for problem in report.problems]
    return plans.injected


def backend_of(url: str) -> str:
    return "s3" if url.startswith("s3://") else "local"


def report_figures(name: str, figures: dict) -> None:
    """Print the figures of a long run; with CHUNKSTORE_RELIABILITY_REPORT set, append them there too."""
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(line)
    destination = os.environ.get("CHUNKSTORE_RELIABILITY_REPORT")
    if destination:
        with open(destination, "a") as handle:
            handle.write(line + "\n")

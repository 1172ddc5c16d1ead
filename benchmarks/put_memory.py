"""Put's peak memory on a format 2 store whose pack index holds tens of millions of entries.

    python -m benchmarks.put_memory [--entries 50000000] [--project Django] [--series 4.2.]
                                    [--versions 10] [--cache DIR] [--scratch DIR] [--keep]

A format 2 put does not hold the store's chunk IDs in memory: its chunk-location cache is
bounded and it finds chunks of other names through hooks (chunkstore/operations/packedput.py).
This shows it on a store as big as the catalog of many TB:

1. A format 2 folder store at 8 KiB chunks is made and its SQLite catalog is filled with
   --entries synthetic hooks (chunk IDs in the range real hooks fall in, so the lookups of the
   put walk the same part of the table) and, one per 8 hooks as in a real store (8 hooks a
   segment), a page item and a pack item the hooks lead to. The rows are written straight
   into the catalog file with sqlite3, in one transaction, keys in sorted order so SQLite
   appends to its B-trees. The synthetic pages have a placeholder body and their packs do not
   exist: a real chunk ID is a BLAKE3 hash and never equals a synthetic random one, so the put
   never reads them.
2. In a fresh process, the releases are put one after the other, each under its own name (so
   across names the put finds chunks through hooks alone), and that process's peak RSS is
   taken from the kernel (os.wait4) when it exits. The same put into an empty format 2 store
   and into a format 1 store at 8 KiB (its exact index finds every stored chunk) gives the
   baselines: the peak RSS on an empty store, and the bytes an exact index stores.

Bytes stored are the store's object files (packs, or chunk objects for format 1), without the
catalog: the filled store's catalog is synthetic. The filled store is deleted at the end
unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from chunkstore import Store
from chunkstore.backends.packindex import CHUNK_ID_SIZE, PAGE_ID_SIZE, IndexState
from chunkstore.backends.registry import LOCAL_CATALOG_FILE
from chunkstore.core.batching import batched
from chunkstore.core.chunking import DEFAULT_CHUNKER, ChunkerSpec
from chunkstore.core.compression import CompressionSpec
from chunkstore.core.packformat import PACK_ID_SIZE
from chunkstore.operations.packedput import hook_threshold

from .chunk_size_curve import DEFAULT_CACHE, fetch_releases

AVERAGE_CHUNK = 8 * 1024
COMPRESSION = "zstd:3"
# A real store has about 8 hooks a segment and one page item per segment; a 16 MiB pack per
# segment is the same order.
HOOKS_PER_PAGE = 8
# Rows per executemany call: big enough that the Python loop, not the call, sets the pace.
BATCH_ROWS = 500_000
# Keys are an 8-byte prefix spread evenly over the key range and random bytes after it, so
# they are unique, sorted, and as random as real IDs past the prefix.
PREFIX_BYTES = 8
PLACEHOLDER_PAGE_BODY = b"synthetic page: its chunks are in no pack"
SYNTHETIC_OWNER = "synthetic"

# The put process: puts each file under its own name and prints, as JSON, how long that took
# and its peak RSS. The peak is the process's own VmHWM (Linux): ru_maxrss of a child keeps
# the high-water mark of the process it was forked from across exec, so a parent that has
# just filled an index would be measured instead.
_PUT_FILES = """
import json, sys, time
from pathlib import Path
from chunkstore import Store
started = time.perf_counter()
put = 0
with Store.open(sys.argv[1]) as store:
    for path in map(Path, sys.argv[2:]):
        with open(path, "rb") as stream:
            put += store.put_stream(stream, path.name).results[0].size
seconds = time.perf_counter() - started
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "logical_bytes": put, "peak_rss_bytes": peak_kib * 1024}))
"""


@dataclass(frozen=True)
class Fill:
    """The synthetic pack index written into a catalog."""

    hooks: int
    pages: int
    packs: int
    seconds: float
    catalog_bytes: int

    @property
    def entries(self) -> int:
        return self.hooks + self.pages + self.packs


@dataclass(frozen=True)
class PutRun:
    """One put process: its peak RSS, how long its puts took, and the store's object bytes after."""

    peak_rss_bytes: int
    seconds: float
    logical_bytes: int
    stored_bytes: int

    @property
    def mb_per_second(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds

    @property
    def store_ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes


def init_store(folder: Path, storage_format: int) -> None:
    Store.init(
        str(folder),
        ChunkerSpec.from_average(DEFAULT_CHUNKER, AVERAGE_CHUNK),
        CompressionSpec.parse(COMPRESSION),
        storage_format=storage_format,
    ).close()


def _sorted_keys(count: int, size: int, below: int) -> Iterator[bytes]:
    """count unique keys of size bytes in ascending order, whose first 4 bytes are below `below`."""
    span = below << (8 * (PREFIX_BYTES - 4))
    rest = size - PREFIX_BYTES
    for start in range(0, count, BATCH_ROWS):
        stop = min(count, start + BATCH_ROWS)
        randoms = os.urandom(rest * (stop - start))
        for number in range(start, stop):
            offset = (number - start) * rest
            yield (number * span // count).to_bytes(PREFIX_BYTES, "big") + randoms[offset : offset + rest]


def _evenly_spread_key(number: int, count: int, size: int, tail: bytes) -> bytes:
    """The number-th of count keys in ascending order; tail makes up the rest of the size."""
    return (number * (1 << 8 * PREFIX_BYTES) // count).to_bytes(PREFIX_BYTES, "big") + tail[: size - PREFIX_BYTES]


def fill_index(store_folder: Path, hooks: int) -> Fill:
    """Write hooks synthetic hook items, and one page item and one pack item per HOOKS_PER_PAGE
    of them, into the format 2 folder store's SQLite catalog (no other process may have it open)."""
    with Store.open(str(store_folder), read_only=True) as store:
        segments = store.config.segments
    if segments is None:
        raise ValueError(f"{store_folder} is not a format 2 store")
    page_count = max(1, hooks // HOOKS_PER_PAGE)
    page_tail, pack_tail, origin = os.urandom(PAGE_ID_SIZE), os.urandom(PACK_ID_SIZE), os.urandom(PAGE_ID_SIZE)
    catalog = store_folder / LOCAL_CATALOG_FILE
    started = time.perf_counter()
    with closing(sqlite3.connect(catalog, isolation_level=None)) as db:
        # No journal for a one-off bulk load into a scratch store: a 4 GB transaction would
        # otherwise be written twice, to the WAL and then to the file. WAL is restored after.
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("BEGIN")
        # Hook n leads to page n * 7 mod page_count: spread over the pages, as the hooks of the
        # chunks of one page are spread over the key range.
        hook_rows = (
            (chunk_id, _evenly_spread_key(number * 7 % page_count, page_count, PAGE_ID_SIZE, page_tail))
            for number, chunk_id in enumerate(_sorted_keys(hooks, CHUNK_ID_SIZE, hook_threshold(segments)))
        )
        for hooks_batch in batched(hook_rows, BATCH_ROWS):
            db.executemany("INSERT INTO hooks (chunk, page) VALUES (?, ?)", hooks_batch)
        present = int(IndexState.PRESENT)
        page_rows = (
            (
                _evenly_spread_key(number, page_count, PAGE_ID_SIZE, page_tail),
                PLACEHOLDER_PAGE_BODY,
                present,
                number,
                origin,
                number,
            )
            for number in range(page_count)
        )
        for pages_batch in batched(page_rows, BATCH_ROWS):
            db.executemany(
                "INSERT INTO pages (id, body, state, gen, origin, origin_segment, round)"
                " VALUES (?, ?, ?, ?, ?, ?, NULL)",
                pages_batch,
            )
        pack_rows = (
            (_evenly_spread_key(number, page_count, PACK_ID_SIZE, pack_tail), present, number, SYNTHETIC_OWNER)
            for number in range(page_count)
        )
        for packs_batch in batched(pack_rows, BATCH_ROWS):
            db.executemany(
                "INSERT INTO packs (id, state, gen, owner, stored, entries, live, round, was)"
                " VALUES (?, ?, ?, ?, 16777216, 2048, NULL, NULL, NULL)",
                packs_batch,
            )
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")
    return Fill(hooks, page_count, page_count, time.perf_counter() - started, catalog.stat().st_size)


def object_bytes(store_folder: Path) -> int:
    """Bytes of the store's files other than its catalog."""
    total = 0
    for root, _, names in os.walk(store_folder):
        total += sum(
            os.path.getsize(os.path.join(root, name)) for name in names if not name.startswith(LOCAL_CATALOG_FILE)
        )
    return total


def put_in_new_process(store_folder: Path, files: Sequence[Path]) -> PutRun:
    """Put each file under its own name in a fresh Python process."""
    completed = subprocess.run(
        [sys.executable, "-c", _PUT_FILES, str(store_folder), *map(str, files)],
        stdout=subprocess.PIPE,
        check=True,
    )
    figures = json.loads(completed.stdout)
    return PutRun(figures["peak_rss_bytes"], figures["seconds"], figures["logical_bytes"], object_bytes(store_folder))


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.put_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000_000, help="synthetic hook items in the big store")
    parser.add_argument("--project", default="Django")
    parser.add_argument("--series", default="4.2.")
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the filled store")
    args = parser.parse_args(argv)
    releases = fetch_releases(args.project, args.series, args.versions, args.cache)
    scratch = Path(tempfile.mkdtemp(prefix="chunkstore-put-memory-", dir=args.scratch))
    big, empty, exact = scratch / "filled-format2", scratch / "empty-format2", scratch / "format1"
    try:
        init_store(big, 2)
        fill = fill_index(big, args.entries)
        print(
            f"filled: {fill.hooks:,} hooks, {fill.pages:,} pages, {fill.packs:,} packs in {fill.seconds:.0f} s,"
            f" catalog {fill.catalog_bytes / 1e9:.2f} GB",
            flush=True,
        )
        on_big = put_in_new_process(big, releases)
        init_store(empty, 2)
        on_empty = put_in_new_process(empty, releases)
        init_store(exact, 1)
        on_exact = put_in_new_process(exact, releases)
    finally:
        for folder in (empty, exact) if args.keep else (big, empty, exact):
            shutil.rmtree(folder, ignore_errors=True)
        if not args.keep:
            scratch.rmdir()
    exact_saved = on_exact.logical_bytes - on_exact.stored_bytes
    print(f"{len(releases)} releases of {args.project} {args.series}*, {on_big.logical_bytes / 1e6:.0f} MB,")
    print("each put under its own name in one new process per store:")
    print(
        _table(
            [
                (
                    "entries in the pack index",
                    f"{fill.entries:,} ({fill.hooks:,} hooks, {fill.pages:,} pages, {fill.packs:,} packs)",
                ),
                ("index fill time", f"{fill.seconds:.0f} s ({fill.entries / fill.seconds:,.0f} rows/s)"),
                ("catalog file", f"{fill.catalog_bytes / 1e9:.2f} GB"),
                ("put MB/s, filled / empty store", f"{on_big.mb_per_second:.1f} / {on_empty.mb_per_second:.1f}"),
                ("put peak RSS, filled store", f"{on_big.peak_rss_bytes / 2**20:.1f} MiB"),
                ("put peak RSS, empty store", f"{on_empty.peak_rss_bytes / 2**20:.1f} MiB"),
                ("put peak RSS, format 1 exact index", f"{on_exact.peak_rss_bytes / 2**20:.1f} MiB"),
                ("store ratio, filled store", f"{on_big.store_ratio:.2f}"),
                ("store ratio, empty store", f"{on_empty.store_ratio:.2f}"),
                ("store ratio, format 1 exact index", f"{on_exact.store_ratio:.2f}"),
                ("store ratio, filled store / exact index", f"{on_big.store_ratio / on_exact.store_ratio:.1%}"),
                (
                    "share of exact dedup (bytes saved)",
                    f"{(on_big.logical_bytes - on_big.stored_bytes) / exact_saved:.1%}",
                ),
            ]
        )
    )
    if args.keep:
        print(f"kept the filled store: {big}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

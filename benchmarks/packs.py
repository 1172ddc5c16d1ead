"""Writing chunks as format 1 objects (one file per chunk) against format 2 packs, on a local folder,
then reading part of every pack back.

    python -m benchmarks.packs [--mb N] [--smoke] [--work DIR]

Same 8 KiB chunks (half random, half text), zstd 3, one process; both end with one sync. Prints
objects (files) created, syncs (syncfs calls) and MB/s of plaintext. Then PackReader reads the
packs' chunks back, the first 30%, 60% or 100% of every block of 128 records (where they lie is
known from the writer: no table GET), and prints the GETs, the MB they moved and the median
MB/s of plaintext read over three passes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import blake3

from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.packs import PackFormat, PackReader, PackWriter, StoredPack
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.config import chunk_key
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec

CHUNK = 8 * 1024
MAX_CHUNK = 32 * 1024


# Records read back: the first share of every block of this many (~512 KiB stored), so that a share
# below 1 leaves gaps wider than the reader's 256 KiB coalescing gap.
READ_BLOCK = 128
READ_PASSES = 3


class CountingFolder(LocalBlobStore):
    def __init__(self, root: Path):
        super().__init__(root)
        self.syncs = 0
        self.gets = 0
        self.bytes_read = 0
        self._lock = threading.Lock()  # the reader gets from its threads

    def sync(self) -> None:
        self.syncs += 1
        super().sync()

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        data = super().get(key, offset, length)
        with self._lock:
            self.gets += 1
            self.bytes_read += len(data)
        return data


def chunks(total: int) -> list[bytes]:
    return [
        blake3.blake3(n.to_bytes(8, "big")).digest(length=CHUNK // 2) + f"{n} text ".encode().ljust(CHUNK // 2, b"x")
        for n in range(total // CHUNK)
    ]


def pack_format() -> PackFormat:
    return PackFormat(ObjectCodec(Compressor(CompressionSpec("zstd", 3)), MAX_CHUNK), Hasher(), MAX_CHUNK)


def run(kind: str, data: list[bytes], folder: Path) -> tuple[int, int, float, list[StoredPack]]:
    blobs = CountingFolder(folder)
    blobs.create()
    packs = pack_format()
    stored: list[StoredPack] = []
    started = time.perf_counter()
    if kind == "v1 objects":
        for piece in data:
            chunk_id = packs.hasher.chunk_id(piece)
            blobs.put(chunk_key(chunk_id), packs.codec.encode(chunk_id, piece))
        blobs.sync()
    else:
        writer = PackWriter(blobs, packs)
        try:
            for piece in data:
                chunk_id = packs.hasher.chunk_id(piece)
                writer.add(chunk_id, packs.codec.encode(chunk_id, piece))
            stored = writer.flush()
        finally:
            writer.close()
    seconds = time.perf_counter() - started
    return sum(1 for _ in blobs.list()), blobs.syncs, sum(map(len, data)) / 1e6 / seconds, stored


def read_back(folder: Path, stored: list[StoredPack], share: float) -> tuple[int, float, float]:
    """GETs and MB moved by one pass reading the first share of every READ_BLOCK records, and
    the median plaintext MB/s of READ_PASSES passes."""
    blobs = CountingFolder(folder)
    selected = [
        location
        for pack in stored
        for number, location in enumerate(pack.locations())
        if number % READ_BLOCK < share * READ_BLOCK
    ]
    rates = []
    for _ in range(READ_PASSES):
        blobs.gets = blobs.bytes_read = 0
        with PackReader(blobs, pack_format()) as reader:
            started = time.perf_counter()
            plaintext = sum(len(data) for _, data in reader.read_chunks(selected))
            rates.append(plaintext / 1e6 / (time.perf_counter() - started))
    return blobs.gets, blobs.bytes_read / 1e6, statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.packs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="plaintext MB to write (default 64)")
    parser.add_argument("--smoke", action="store_true", help="4 MB, to check the script runs")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    data = chunks((4 if args.smoke else args.mb) * 1024 * 1024)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        print("| layout | objects | syncs | MB/s |\n|---|---|---|---|")
        for kind in ("v1 objects", "packs"):
            folder = Path(work) / kind.replace(" ", "-")
            objects, syncs, rate, stored = run(kind, data, folder)
            print(f"| {kind} | {objects:,} | {syncs} | {rate:.0f} |")
        print(f"\n{len(stored)} packs read back\n\n| share read | GETs | MB moved | MB/s |\n|---|---|---|---|")
        for share in (0.3, 0.6, 1.0):
            gets, moved, rate = read_back(folder, stored, share)
            print(f"| {share:.0%} | {gets} | {moved:.1f} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

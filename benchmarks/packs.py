"""Writing chunks as format 1 objects (one file per chunk) against format 2 packs, on a local folder.

    python -m benchmarks.packs [--mb N] [--smoke] [--work DIR]

Same 8 KiB chunks (half random, half text), zstd 3, one process; both end with one sync. Prints
objects (files) created, syncs (syncfs calls) and MB/s of plaintext.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import blake3

from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.packs import PackFormat, PackWriter
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.config import chunk_key
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec

CHUNK = 8 * 1024
MAX_CHUNK = 32 * 1024


class CountingSyncs(LocalBlobStore):
    syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        super().sync()


def chunks(total: int) -> list[bytes]:
    return [
        blake3.blake3(n.to_bytes(8, "big")).digest(length=CHUNK // 2) + f"{n} text ".encode().ljust(CHUNK // 2, b"x")
        for n in range(total // CHUNK)
    ]


def run(kind: str, data: list[bytes], folder: Path) -> tuple[int, int, float]:
    blobs = CountingSyncs(folder)
    blobs.create()
    packs = PackFormat(ObjectCodec(Compressor(CompressionSpec("zstd", 3)), MAX_CHUNK), Hasher(), MAX_CHUNK)
    started = time.perf_counter()
    if kind == "v1 objects":
        for piece in data:
            chunk_id = packs.hasher.chunk_id(piece)
            blobs.put(chunk_key(chunk_id), packs.codec.encode(chunk_id, piece))
        blobs.sync()
    else:
        with PackWriter(blobs, packs) as writer:
            for piece in data:
                chunk_id = packs.hasher.chunk_id(piece)
                writer.add(chunk_id, packs.codec.encode(chunk_id, piece))
    seconds = time.perf_counter() - started
    return sum(1 for _ in blobs.list()), blobs.syncs, sum(map(len, data)) / 1e6 / seconds


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
            objects, syncs, rate = run(kind, data, Path(work) / kind.replace(" ", "-"))
            print(f"| {kind} | {objects:,} | {syncs} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

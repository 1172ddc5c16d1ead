"""The store dictionary of storage format 2, measured with chunkstore's own code, in one process.

    python -m benchmarks.dictionary [--releases FOLDER] [--count N]

1. Records: the new chunks of the first release (format 2's chunker, exact dedup in memory),
   compressed with zstd 3 alone and with the dictionary a first put trains on their first 16 MiB
   (compression.train_dictionary); stored bytes, training seconds, and compress and decompress
   MB/s on one thread, the two alternating three times.
2. Put: the first N releases put into a new format 2 folder store with the default dictionary
   and with none, alternating twice; wall time and the bytes of its packs and dictionaries.

Speeds on a shared machine move with its load: compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.dictionaries import DICTIONARY_KEY_PREFIX
from chunkstore.backends.packs import PACK_KEY_PREFIX
from chunkstore.core import compression
from chunkstore.core.chunking import DEFAULT_AVG_SIZE
from chunkstore.core.compression import Compressor

from .pack_compression import collect
from .suite import release_key

MB = 1e6
ROUNDS = 3


def measure_records(chunks: list[bytes]) -> None:
    total = sum(map(len, chunks))
    samples, size = [], 0
    for chunk in chunks:
        if size >= compression.DEFAULT_TRAINING_BYTES:
            break
        samples.append(chunk)
        size += len(chunk)
    started = time.perf_counter()
    dictionary = compression.train_dictionary(compression.DEFAULT_DICTIONARY_SIZE, samples, 3)
    training = time.perf_counter() - started
    if dictionary is None:
        raise SystemExit("zstd trained no dictionary on these chunks")
    print(f"records: {len(chunks)} new chunks, {total / MB:.1f} MB; training {training:.2f} s")
    spec = CompressionSpec("zstd", compression.DEFAULT_ZSTD_LEVEL)
    compressors = {"none": Compressor(spec), "dictionary": Compressor(spec)}
    compressors["dictionary"].use_dictionary(b"\0" * compression.DICTIONARY_ID_SIZE, dictionary)
    seconds = {name: [0.0, 0.0] for name in compressors}
    stored = {}
    for _ in range(ROUNDS):
        for name, compressor in compressors.items():
            started = time.perf_counter()
            payloads = [compressor.compress(chunk) for chunk in chunks]
            seconds[name][0] += time.perf_counter() - started
            started = time.perf_counter()
            for (compression_id, payload), chunk in zip(payloads, chunks, strict=True):
                compression.decompress(compression_id, payload, len(chunk), lambda _: dictionary)
            seconds[name][1] += time.perf_counter() - started
            stored[name] = sum(len(payload) for _, payload in payloads)
    for name, (compressing, decompressing) in seconds.items():
        print(
            f"  {name:10}: payloads {stored[name] / MB:.2f} MB ({total / stored[name]:.2f}x), "
            f"compress {ROUNDS * total / compressing / MB:.0f} MB/s, "
            f"decompress {ROUNDS * total / decompressing / MB:.0f} MB/s"
        )


def measure_put(tars: list[Path], work: Path) -> None:
    total = sum(tar.stat().st_size for tar in tars)
    print(f"put: {len(tars)} releases, {total / MB:.1f} MB, a new folder store each time")
    for round_number in range(2):
        for label, size in (("default", None), ("none", 0)):
            url = str(work / f"{label}-{round_number}")
            chunker = ChunkerSpec.from_average(avg_size=DEFAULT_AVG_SIZE)
            with Store.init(
                url, chunker, CompressionSpec.parse("zstd:3"), storage_format=2, dictionary_size=size
            ) as store:
                started = time.perf_counter()
                for tar in tars:
                    store.put([(tar, tar.name)])
                took = time.perf_counter() - started
                stored = sum(
                    info.size
                    for prefix in (PACK_KEY_PREFIX, DICTIONARY_KEY_PREFIX)
                    for info in store.blobs.list(prefix)
                )
            shutil.rmtree(url)
            print(
                f"  {label:10}: {took:.2f} s ({total / took / MB:.1f} MB/s), "
                f"{stored / MB:.2f} MB stored ({total / stored:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=Path, default=Path.home() / ".cache/chunkstore-bench/Django")
    parser.add_argument("--count", type=int, default=3, help="releases to put (default 3)")
    args = parser.parse_args()
    tars = sorted(args.releases.glob("*.tar"), key=release_key)[: args.count]
    if not tars:
        raise SystemExit(f"no *.tar in {args.releases} (python -m benchmarks.chunk_size_curve fills it)")
    measure_records(collect(tars[0].name, tars[:1]).chunks)
    work = Path(tempfile.mkdtemp(prefix="chunkstore-dictionary-"))
    try:
        measure_put(tars, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The "speed of light" of each put stage, in memory, on the versioned-archive dataset.

    python -m benchmarks.micro [--quick|--smoke] [--chunkers LIST] [--sizes LIST] [--levels LIST] [--out DIR]

For each chunker and average chunk size, every file of the dataset is read into memory
and cut with chunkstore's own chunker (chunking MB/s), every chunk is hashed with the
store's BLAKE3 chunk ID (blake3 MB/s), chunks not seen before are compressed with
chunkstore's compressor at each zstd level (MB/s of the bytes compressed, kept raw when
they do not shrink, plus the object header). Nothing is stored, so the gap between these
figures and `chunkstore put` is the cost of the store itself. All stages run on one
thread here; the last two columns give the one-core pipeline rate at the default zstd
level and the two-core bound of put's layout (chunking on one thread, hashing and
compression spread over both cores).

Dedup ratio = dataset bytes / bytes of distinct chunks; store ratio = dataset bytes /
bytes of the chunk objects. These are what the default chunk size and zstd level are
chosen from.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from chunkstore.core.chunking import CHUNKERS, DEFAULT_AVG_SIZE, DEFAULT_CHUNKER, ChunkerSpec, make_chunker
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL, CompressionSpec, Compressor
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import HEADER_SIZE

from . import datasets
from .foundation import DEFAULT_WORK
from .report import MB, environment, markdown_table, report_preamble, write_reports

DEFAULT_SIZES = (16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, 256 * 1024)
DEFAULT_LEVELS = (1, 3, 6)


def measure(files: list[Path], spec: ChunkerSpec, levels: list[int]) -> dict:
    """Chunk, hash and compress the files in memory; every stage timed on its own."""
    chunker = make_chunker(spec)
    hasher = Hasher()
    compressors = {level: Compressor(CompressionSpec("zstd", level)) for level in levels}
    seen: set[bytes] = set()
    sizes: list[int] = []
    logical = unique = 0
    chunk_seconds = hash_seconds = 0.0
    compress_seconds = dict.fromkeys(levels, 0.0)
    stored = dict.fromkeys(levels, 0)
    for path in files:
        data = path.read_bytes()
        logical += len(data)
        start = time.perf_counter()
        chunks = list(chunker(io.BytesIO(data)))
        chunk_seconds += time.perf_counter() - start
        start = time.perf_counter()
        ids = [hasher.chunk_id(chunk) for chunk in chunks]
        hash_seconds += time.perf_counter() - start
        for chunk, chunk_id in zip(chunks, ids, strict=True):
            sizes.append(len(chunk))
            if chunk_id in seen:
                continue
            seen.add(chunk_id)
            unique += len(chunk)
            for level, compressor in compressors.items():
                start = time.perf_counter()
                _, payload = compressor.compress(chunk)
                compress_seconds[level] += time.perf_counter() - start
                stored[level] += HEADER_SIZE + len(payload)
    sizes.sort()
    result = {
        "chunker": spec.name,
        "avg_size": spec.avg_size,
        "min_size": spec.min_size,
        "max_size": spec.max_size,
        "logical_bytes": logical,
        "unique_bytes": unique,
        "chunks": len(sizes),
        "unique_chunks": len(seen),
        "chunk_size_min": sizes[0],
        "chunk_size_median": statistics.median(sizes),
        "chunk_size_p99": sizes[min(len(sizes) - 1, int(len(sizes) * 0.99))],
        "chunk_size_max": sizes[-1],
        "chunk_mb_s": logical / MB / chunk_seconds,
        "blake3_mb_s": logical / MB / hash_seconds,
        "dedup_ratio": logical / unique,
        "levels": {
            level: {
                "zstd_mb_s": unique / MB / compress_seconds[level],
                "compression_ratio": unique / stored[level],
                "store_ratio": logical / stored[level],
                "stored_bytes": stored[level],
            }
            for level in levels
        },
    }
    pipeline_level = DEFAULT_ZSTD_LEVEL if DEFAULT_ZSTD_LEVEL in levels else levels[0]
    total = chunk_seconds + hash_seconds + compress_seconds[pipeline_level]
    result["pipeline_level"] = pipeline_level
    result["pipeline_one_core_mb_s"] = logical / MB / total
    result["pipeline_two_core_bound_mb_s"] = logical / MB / max(chunk_seconds, total / 2)
    return result


def build_markdown(document: dict) -> str:
    levels = document["levels"]
    headers = ["chunker", "avg", "chunks", "median / p99 size", "chunk MB/s", "blake3 MB/s", "dedup"]
    for level in levels:
        headers += [f"zstd {level} MB/s", f"zstd {level} compr.", f"store ratio z{level}"]
    headers += ["pipeline 1 core MB/s", "2-core bound MB/s"]
    rows = []
    for row in document["results"]:
        cells = [
            row["chunker"],
            f"{row['avg_size'] // 1024}K",
            f"{row['chunks']:,}",
            f"{row['chunk_size_median'] / 1024:.0f}K / {row['chunk_size_p99'] / 1024:.0f}K",
            f"{row['chunk_mb_s']:.0f}",
            f"{row['blake3_mb_s']:.0f}",
            f"{row['dedup_ratio']:.2f}x",
        ]
        for level in levels:
            figures = row["levels"][level]
            cells += [
                f"{figures['zstd_mb_s']:.0f}",
                f"{figures['compression_ratio']:.2f}x",
                f"{figures['store_ratio']:.2f}x",
            ]
        cells += [f"{row['pipeline_one_core_mb_s']:.0f}", f"{row['pipeline_two_core_bound_mb_s']:.0f}"]
        rows.append(cells)
    return "\n".join(
        [
            *report_preamble("chunkstore stage measurements (in memory, one thread)", document),
            "Chunk, blake3: MB/s of all dataset bytes; zstd: MB/s of the distinct chunks' bytes; "
            "pipeline columns at zstd level " + str(document["results"][0]["pipeline_level"]) + ".",
            "",
            markdown_table(headers, rows),
            "",
        ]
    )


def _size_list(text: str) -> list[int]:
    return [int(part[:-1]) * 1024 if part.upper().endswith("K") else int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.split("\n\n")[0])
    datasets.add_arguments(parser)
    parser.add_argument("--chunkers", default=",".join(CHUNKERS), help=f"default {','.join(CHUNKERS)}")
    parser.add_argument(
        "--sizes",
        type=_size_list,
        default=list(DEFAULT_SIZES),
        metavar="LIST",
        help="average chunk sizes, e.g. 16K,64K,256K (default 16K..256K)",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: [int(level) for level in text.split(",")],
        default=list(DEFAULT_LEVELS),
        metavar="LIST",
        help="zstd levels (default 1,3,6)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help=f"dataset cache folder (default {DEFAULT_WORK})"
    )
    args = parser.parse_args(argv)
    started = environment()

    dataset = datasets.materialize(datasets.spec_from_arguments(args), args.work / "datasets")
    files = [path for _, path in datasets.files_in(dataset.root)]
    results = []
    for chunker in args.chunkers.split(","):
        for avg_size in args.sizes:
            spec = ChunkerSpec.from_average(chunker, avg_size)
            result = measure(files, spec, args.levels)
            results.append(result)
            print(
                f"{chunker} {avg_size // 1024}K: chunk {result['chunk_mb_s']:.0f} MB/s, "
                f"dedup {result['dedup_ratio']:.2f}x",
                file=sys.stderr,
            )
    document = {
        "environment": started,
        "dataset": dataset.to_json(),
        "levels": args.levels,
        "defaults": {"chunker": DEFAULT_CHUNKER, "avg_size": DEFAULT_AVG_SIZE, "zstd_level": DEFAULT_ZSTD_LEVEL},
        "results": results,
    }
    markdown = build_markdown(document)
    write_reports(args.out, "micro", markdown, document)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

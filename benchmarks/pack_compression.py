"""How many bytes storage format 2 would store under other compression schemes, on real versioned data.

    python -m benchmarks.pack_compression [--dataset releases,database] [--versions 10,30]
                                          [--levels 1,6,9,19] [--dict-sizes 16K,64K,112K]
                                          [--frames 32K,64K,128K,256K] [--peers borg] [--json FILE]

The inputs are put in order through the real format 2 chunker (FastCDC-2020, 8 KiB average,
as `chunkstore init --format 2` makes it) and deduplicated exactly by chunk ID in memory. The
sequence of new chunks, in put order as a pack writer sees them, is then stored under each
scheme, and each scheme's output is decompressed again and checked against the chunks:

- zstd N: each chunk compressed on its own (format 2 today at level 3);
- dict S: each chunk on its own with one zstd dictionary of S bytes, trained once per store
  on the first --train-bytes of new chunks (the dictionary is counted once);
- pack dict S: a dictionary of S bytes trained on each pack's chunks and stored in the pack;
- frame F: consecutive new chunks compressed together as one zstd frame of at most F bytes
  of plaintext (a chunk larger than F is a frame alone); `ldm` adds zstd's long-distance
  matching with a window of the whole frame.

Stored bytes count what format 2 would write (chunkstore/core/packformat.py, unencrypted):
each record's 16-byte object header, 48 bytes of pack table entry per chunk, and 84 bytes
per pack (header, table header, trailer) for packs closed at 16 MiB or 8,192 entries; a
frame is one record whose chunks keep an entry each (a reader would find a chunk's offset
inside its frame in the entry's 4 reserved bytes). Store ratio = input bytes / stored bytes.

Speeds are single-threaded, measured in this process: compression of all new chunks
(dictionary training included) and decompression of all records, each relative to zstd 3
per chunk. Read amplification is the mean plaintext decompressed to read one new chunk
picked at random, over the mean chunk size: 1 for per-chunk schemes.

--peers borg stores the same inputs with borg (`init -e none`, `create --compression
zstd,3`, one archive of all of them) and reports its store ratio (input bytes / repository
folder, du) in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zstandard

from chunkstore.core.chunking import DEFAULT_AVG_SIZE, ChunkerSpec, make_chunker
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import HEADER_SIZE as RECORD_HEADER_SIZE
from chunkstore.core.packformat import ENTRY, MAX_ENTRIES, TABLE_HEADER, TRAILER_SIZE
from chunkstore.core.packformat import HEADER_SIZE as PACK_HEADER_SIZE

from . import datasets
from .chunk_size_curve import DEFAULT_CACHE, fetch_releases
from .foundation import DEFAULT_WORK
from .report import MB, markdown_table
from .tools import Borg, folder_bytes, run_measured

PACK_TARGET_BYTES = 16 * 1024 * 1024
PACK_FIXED_BYTES = PACK_HEADER_SIZE + TABLE_HEADER.size + TRAILER_SIZE
RELEASES = "releases"
DATABASE = "database"
DATASETS = (RELEASES, DATABASE)


@dataclass
class NewChunks:
    """What a run of puts would write: the new chunks in put order, and what they came from."""

    label: str
    paths: list[Path]
    input_bytes: int
    chunk_count: int
    chunks: list[bytes]

    @property
    def new_bytes(self) -> int:
        return sum(map(len, self.chunks))


def collect(label: str, paths: list[Path], avg_size: int = DEFAULT_AVG_SIZE) -> NewChunks:
    """Cut paths in order with format 2's chunker (at another average size if asked); keep each
    chunk the first time its ID is met."""
    chunker = make_chunker(ChunkerSpec.from_average(avg_size=avg_size))
    hasher = Hasher()
    seen: set[bytes] = set()
    chunks: list[bytes] = []
    input_bytes = count = 0
    for path in paths:
        data = path.read_bytes()
        input_bytes += len(data)
        for chunk in chunker(io.BytesIO(data)):
            count += 1
            chunk_id = hasher.chunk_id(chunk)
            if chunk_id not in seen:
                seen.add(chunk_id)
                chunks.append(chunk)
    return NewChunks(label, paths, input_bytes, count, chunks)


# ---- schemes ---------------------------------------------------------------------------


@dataclass
class Record:
    """One stored record: a compressed unit of one or more consecutive new chunks."""

    payload: bytes
    chunk_count: int
    plaintext: int
    compressed: bool
    dictionary: int = -1  # index into Encoded.dictionaries, -1 for none


@dataclass
class Encoded:
    records: list[Record]
    dictionaries: list[bytes] = field(default_factory=list)
    # Dictionaries stored in packs (one before each pack's records) rather than once per store.
    per_pack_dictionaries: bool = False
    train_seconds: float = 0.0
    # What the writer holds to compress: zstd's context (memory_size, dictionary tables
    # included), and the plaintext it must buffer before it can compress (a frame, a pack).
    writer_memory: int = 0


def _plain_compressor(level: int, **parameters) -> zstandard.ZstdCompressor:
    # As chunkstore's Compressor: no content size or checksum in the frame (the record header
    # carries the length and the chunk ID checks the content). A level alone lets zstd fit its
    # tables to each input's size, as Compressor does; explicit parameters would not.
    if not parameters:
        return zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)
    params = zstandard.ZstdCompressionParameters.from_level(level, write_content_size=0, write_checksum=0, **parameters)
    return zstandard.ZstdCompressor(compression_params=params)


def _record(compressor: zstandard.ZstdCompressor, chunks: list[bytes], dictionary: int = -1) -> Record:
    data = b"".join(chunks)
    packed = compressor.compress(data)
    if len(packed) >= len(data):  # as Compressor.compress: data that does not shrink is kept raw
        return Record(data, len(chunks), len(data), False, dictionary)
    return Record(packed, len(chunks), len(data), True, dictionary)


def per_chunk(level: int) -> Callable[[list[bytes]], Encoded]:
    def encode(chunks: list[bytes]) -> Encoded:
        compressor = _plain_compressor(level)
        records = [_record(compressor, [chunk]) for chunk in chunks]
        return Encoded(records, writer_memory=compressor.memory_size())

    return encode


# A pack dictionary is trained with fastCover's k=1024, d=8 rather than its search over k and d:
# on the first 16 MiB of new chunks of Django 4.2.1 (64 KiB dictionary) the search took 1.02 s
# and found k=1998, d=8, whose output was 0.06% smaller than that of k=1024 (0.21 s). A store
# dictionary is trained once, with the search.
PACK_DICTIONARY_PARAMETERS = {"k": 1024, "d": 8}


def _train(size: int, samples: list[bytes], level: int, **parameters) -> zstandard.ZstdCompressionDict | None:
    """A dictionary of size bytes ready to compress at level, or None where zstd finds too little to train on."""
    try:
        # A copy typed as zstandard's stub asks (list is invariant).
        buffers: list[bytes | bytearray | memoryview] = list(samples)
        dictionary = zstandard.train_dictionary(size, buffers, level=level, **parameters)
    except zstandard.ZstdError:
        return None
    # Without it every compress() call loads the dictionary again: 76 MB/s against 181 per
    # chunk without one on 3 Django releases; with it, about the same speed.
    dictionary.precompute_compress(level=level)
    return dictionary


def _dictionary_compressor(dictionary: zstandard.ZstdCompressionDict, level: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(
        level=level, dict_data=dictionary, write_content_size=False, write_checksum=False, write_dict_id=False
    )


def store_dictionary(size: int, train_bytes: int, level: int = DEFAULT_ZSTD_LEVEL) -> Callable[[list[bytes]], Encoded]:
    def encode(chunks: list[bytes]) -> Encoded:
        started = time.perf_counter()
        samples, total = [], 0
        for chunk in chunks:
            if total >= train_bytes:
                break
            samples.append(chunk)
            total += len(chunk)
        dictionary = _train(size, samples, level)
        if dictionary is None:
            raise ValueError(f"zstd trains no {size}-byte dictionary on {total} bytes of chunks")
        train_seconds = time.perf_counter() - started
        compressor = _dictionary_compressor(dictionary, level)
        records = [_record(compressor, [chunk], 0) for chunk in chunks]
        memory = compressor.memory_size() + len(dictionary)
        return Encoded(records, [dictionary.as_bytes()], train_seconds=train_seconds, writer_memory=memory)

    return encode


def pack_dictionary(
    size: int, pack_plaintext: int, level: int = DEFAULT_ZSTD_LEVEL
) -> Callable[[list[bytes]], Encoded]:
    """A dictionary per group of pack_plaintext bytes of chunks: what a writer would buffer to train."""

    def encode(chunks: list[bytes]) -> Encoded:
        records: list[Record] = []
        dictionaries: list[bytes] = []
        train_seconds = 0.0
        memory = 0
        plain = _plain_compressor(level)
        for group in _groups(chunks, pack_plaintext):
            started = time.perf_counter()
            dictionary = _train(size, group, level, **PACK_DICTIONARY_PARAMETERS)
            train_seconds += time.perf_counter() - started
            if dictionary is None:
                records.extend(_record(plain, [chunk]) for chunk in group)
                continue
            compressor = _dictionary_compressor(dictionary, level)
            dictionaries.append(dictionary.as_bytes())
            records.extend(_record(compressor, [chunk], len(dictionaries) - 1) for chunk in group)
            memory = max(memory, compressor.memory_size() + len(dictionary))
        return Encoded(
            records,
            dictionaries,
            per_pack_dictionaries=True,
            train_seconds=train_seconds,
            writer_memory=memory + pack_plaintext,
        )

    return encode


def frames(max_plaintext: int, level: int = DEFAULT_ZSTD_LEVEL, ldm: bool = False) -> Callable[[list[bytes]], Encoded]:
    def encode(chunks: list[bytes]) -> Encoded:
        # zstd's window at level 3 is 2 MiB (1 MiB at level 1), so a frame of up to 256 KiB is
        # matched whole without it; ldm widens the window to the frame and adds long matches.
        parameters = {}
        if ldm:
            parameters = {"enable_ldm": 1, "window_log": max(max_plaintext - 1, 1).bit_length()}
        compressor = _plain_compressor(level, **parameters)
        records = [_record(compressor, group) for group in _groups(chunks, max_plaintext)]
        return Encoded(records, writer_memory=compressor.memory_size() + max_plaintext)

    return encode


def _groups(chunks: list[bytes], max_plaintext: int) -> Iterator[list[bytes]]:
    """Consecutive chunks in groups of at most max_plaintext bytes (a larger chunk is a group alone)."""
    group: list[bytes] = []
    size = 0
    for chunk in chunks:
        if group and size + len(chunk) > max_plaintext:
            yield group
            group, size = [], 0
        group.append(chunk)
        size += len(chunk)
    if group:
        yield group


@dataclass(frozen=True)
class Scheme:
    name: str
    encode: Callable[[list[bytes]], Encoded]
    family: str  # "chunk", "dict" or "frame"


def schemes(
    levels: Iterable[int],
    dict_sizes: Iterable[int],
    train_bytes: int,
    frame_sizes: Iterable[int],
    ldm_frames: Iterable[int],
) -> list[Scheme]:
    """zstd 3 per chunk first: every other scheme is measured against it."""
    chosen = [Scheme(f"zstd {DEFAULT_ZSTD_LEVEL}", per_chunk(DEFAULT_ZSTD_LEVEL), "chunk")]
    chosen += [Scheme(f"zstd {level}", per_chunk(level), "chunk") for level in levels if level != DEFAULT_ZSTD_LEVEL]
    dict_sizes = list(dict_sizes)
    chosen += [
        Scheme(f"dict {_size(size)} (first {_size(train_bytes)})", store_dictionary(size, train_bytes), "dict")
        for size in dict_sizes
    ]
    chosen += [
        Scheme(f"pack dict {_size(size)}", pack_dictionary(size, PACK_TARGET_BYTES), "dict") for size in dict_sizes
    ]
    chosen += [Scheme(f"frame {_size(size)}", frames(size), "frame") for size in frame_sizes]
    chosen += [Scheme(f"frame {_size(size)} ldm", frames(size, ldm=True), "frame") for size in ldm_frames]
    return chosen


# ---- measuring -------------------------------------------------------------------------


@dataclass
class SchemeResult:
    scheme: str
    family: str
    stored_bytes: int
    payload_bytes: int
    dictionary_bytes: int
    records: int
    packs: int
    store_ratio: float
    compress_seconds: float
    train_seconds: float
    decompress_seconds: float
    read_amplification: float
    writer_memory: int


def stored_layout(encoded: Encoded) -> tuple[int, int]:
    """(bytes format 2 would store for these records, packs): records with their header and table
    entries, in packs closed at 16 MiB or MAX_ENTRIES entries, dictionaries as encoded says."""
    stored = packs = 0
    pack_size = pack_entries = 0
    open_dictionary = -1
    for record in encoded.records:
        if pack_size and (pack_size >= PACK_TARGET_BYTES or pack_entries + record.chunk_count > MAX_ENTRIES):
            stored += pack_size
            packs += 1
            pack_size = pack_entries = 0
            open_dictionary = -1
        if not pack_size:
            pack_size = PACK_FIXED_BYTES
        if encoded.per_pack_dictionaries and record.dictionary >= 0 and record.dictionary != open_dictionary:
            # A pack holds the dictionaries of its records: one where a group starts, or where
            # a group's records run on into the next pack.
            pack_size += len(encoded.dictionaries[record.dictionary])
            open_dictionary = record.dictionary
        pack_size += RECORD_HEADER_SIZE + len(record.payload) + record.chunk_count * ENTRY.size
        pack_entries += record.chunk_count
    if pack_size:
        stored += pack_size
        packs += 1
    if not encoded.per_pack_dictionaries:
        stored += sum(map(len, encoded.dictionaries))
    return stored, packs


def decompress_all(encoded: Encoded, chunks: list[bytes]) -> float:
    """Decompress every record and check it against the chunks it holds; the seconds it took."""
    decompressors = [
        zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(d)) for d in encoded.dictionaries
    ]
    plain = zstandard.ZstdDecompressor()
    outputs = []
    started = time.perf_counter()
    for record in encoded.records:
        if not record.compressed:
            outputs.append(record.payload)
            continue
        decompressor = plain if record.dictionary < 0 else decompressors[record.dictionary]
        outputs.append(decompressor.decompress(record.payload, max_output_size=record.plaintext))
    seconds = time.perf_counter() - started
    position = 0
    for record, output in zip(encoded.records, outputs, strict=True):
        expected = chunks[position : position + record.chunk_count]
        if output != b"".join(expected):
            raise RuntimeError(f"record of chunks {position}.. does not decompress to them")
        position += record.chunk_count
    if position != len(chunks):
        raise RuntimeError(f"records hold {position} chunks of {len(chunks)}")
    return seconds


def measure(new: NewChunks, scheme: Scheme) -> SchemeResult:
    started = time.perf_counter()
    encoded = scheme.encode(new.chunks)
    compress_seconds = time.perf_counter() - started - encoded.train_seconds
    decompress_seconds = decompress_all(encoded, new.chunks)
    stored, packs = stored_layout(encoded)
    # A chunk read at random decompresses its whole record: sum over chunks of their record's plaintext.
    read_bytes = sum(record.plaintext * record.chunk_count for record in encoded.records)
    mean_chunk = new.new_bytes / len(new.chunks)
    return SchemeResult(
        scheme=scheme.name,
        family=scheme.family,
        stored_bytes=stored,
        payload_bytes=sum(len(record.payload) for record in encoded.records),
        dictionary_bytes=sum(map(len, encoded.dictionaries)),
        records=len(encoded.records),
        packs=packs,
        store_ratio=new.input_bytes / stored,
        compress_seconds=compress_seconds,
        train_seconds=encoded.train_seconds,
        decompress_seconds=decompress_seconds,
        read_amplification=read_bytes / len(new.chunks) / mean_chunk,
        writer_memory=encoded.writer_memory,
    )


def run_borg(new: NewChunks, work: Path) -> dict:
    """borg's store ratio on the same inputs: one `borg create` of a folder linking them in order."""
    workspace = work / f"borg-{new.label}"
    if workspace.exists():
        shutil.rmtree(workspace)
    source = workspace / "source" / new.label
    source.mkdir(parents=True)
    for number, path in enumerate(new.paths, 1):
        # Hard links: borg would store a symbolic link as a link, and a copy costs the disk.
        os.link(path, source / f"v{number:03d}-{path.name}")
    borg = Borg()
    run_measured(borg.init(workspace))
    measured = run_measured(borg.backup(workspace, source, "put"))
    apparent, allocated = folder_bytes(borg.repository(workspace))
    return {
        "version": borg.version(),
        "settings": borg.describe_settings(),
        "repository_bytes": allocated,
        "repository_apparent_bytes": apparent,
        "store_ratio": new.input_bytes / allocated,
        "seconds": measured.seconds,
    }


# ---- report ----------------------------------------------------------------------------


def build_markdown(new: NewChunks, results: list[SchemeResult], borg: dict | None) -> str:
    base = results[0]
    new_mb = new.new_bytes / MB
    rows = []
    for r in results:
        compress_speed = new_mb / r.compress_seconds
        with_training = new_mb / (r.compress_seconds + r.train_seconds)
        decompress_speed = new_mb / r.decompress_seconds
        rows.append(
            [
                r.scheme,
                f"{r.stored_bytes / MB:.2f}",
                f"{r.store_ratio:.2f}x",
                f"{r.store_ratio / base.store_ratio:.3f}",
                f"{r.store_ratio / borg['store_ratio']:.2f}" if borg else "",
                f"{compress_speed:.0f} ({compress_speed / (new_mb / base.compress_seconds):.2f})",
                f"{r.train_seconds:.1f}",
                f"{with_training:.0f} ({with_training / (new_mb / base.compress_seconds):.2f})",
                f"{decompress_speed:.0f} ({decompress_speed / (new_mb / base.decompress_seconds):.2f})",
                f"{r.read_amplification:.1f}",
                f"{r.writer_memory / 2**20:.1f}",
                f"{r.dictionary_bytes / MB:.2f}",
                f"{r.records:,}",
                f"{r.packs}",
            ]
        )
    headers = [
        "scheme",
        "stored MB",
        "store ratio",
        "vs zstd 3",
        "vs borg",
        "compress MB/s (vs zstd 3)",
        "training s",
        "with training MB/s (vs zstd 3)",
        "decompress MB/s (vs zstd 3)",
        "read amplification",
        "writer memory MiB",
        "dictionaries MB",
        "records",
        "packs",
    ]
    title = f"{new.paths[0].name} .. {new.paths[-1].name}" if len(new.paths) > 1 else new.paths[0].name
    lines = [
        f"## {new.label}: {len(new.paths)} files, {title}",
        "",
        f"{new.input_bytes / MB:.1f} MB in, {new.chunk_count:,} chunks (mean "
        f"{new.input_bytes / max(new.chunk_count, 1) / 1024:.1f} KiB), {len(new.chunks):,} new "
        f"({new_mb:.1f} MB, dedup {new.input_bytes / new.new_bytes:.2f}x).",
    ]
    if borg:
        lines.append(
            f"borg ({borg['version']}, {borg['settings']}): repository {borg['repository_bytes'] / MB:.2f} MB "
            f"(du), store ratio {borg['store_ratio']:.2f}x; 1.3x borg is {1.3 * borg['store_ratio']:.2f}x."
        )
    lines += ["", markdown_table(headers, rows), ""]
    return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------


def _size(value: int) -> str:
    for unit, factor in (("M", 2**20), ("K", 2**10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _one_size(text: str) -> int:
    (value,) = _sizes(text)
    return value


def _sizes(text: str) -> list[int]:
    """`16K,1M,4096`: binary multiples, as chunk and dictionary sizes go."""
    factors = {"K": 2**10, "M": 2**20}
    values = []
    for part in filter(None, (piece.strip().upper() for piece in text.split(","))):
        values.append(int(part[:-1]) * factors[part[-1]] if part[-1] in factors else int(part))
    return values


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _datasets(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(chosen) - set(DATASETS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown dataset {', '.join(sorted(unknown))} (known: {', '.join(DATASETS)})")
    return chosen


def inputs(args: argparse.Namespace) -> Iterator[tuple[str, list[Path]]]:
    if args.files:
        yield "files", args.files
        return
    if RELEASES in args.dataset:
        releases = fetch_releases(args.project, args.series, max(args.versions), args.cache)
        for count in args.versions:
            yield f"{args.project} {args.series}x, {min(count, len(releases))} releases", releases[:count]
    if DATABASE in args.dataset:
        spec = datasets.DatasetSpec.preset(args.database_preset, datasets.DATABASE_FILE)
        dataset = datasets.materialize(spec, args.work / "datasets")
        yield f"database file ({args.database_preset})", [path for _, path in datasets.files_in(dataset.root)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pack_compression",
        description=__doc__.split("\n\n")[0],
        epilog="Figures go to standard output as markdown; --json keeps them all.",
    )
    parser.add_argument(
        "--dataset", type=_datasets, default=list(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}"
    )
    parser.add_argument("--files", type=Path, nargs="+", help="measure these files, in this order, instead")
    parser.add_argument("--project", default="Django")
    parser.add_argument("--series", default="4.2.", help="version prefix of the releases")
    parser.add_argument("--versions", type=_numbers, default=[10, 30], help="release counts to measure (10,30)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the releases are cached")
    parser.add_argument(
        "--database-preset", choices=sorted(datasets.PRESETS), default="quick", help="size of the database dataset"
    )
    parser.add_argument("--levels", type=_numbers, default=[1, 6, 9, 19], help="zstd levels per chunk, besides 3")
    parser.add_argument("--dict-sizes", type=_sizes, default=_sizes("16K,64K,112K"))
    parser.add_argument(
        "--train-bytes", type=_sizes, default=_sizes("16M"), help="plaintext a store dictionary is trained on"
    )
    parser.add_argument("--frames", type=_sizes, default=_sizes("32K,64K,128K,256K,16M"), help="frame sizes")
    parser.add_argument("--ldm-frames", type=_sizes, default=_sizes("256K,16M"), help="frame sizes with ldm")
    parser.add_argument(
        "--avg-size", type=_one_size, default=DEFAULT_AVG_SIZE, help="average chunk size (default: format 2's, 8K)"
    )
    parser.add_argument("--peers", choices=["borg"], nargs="?", const="borg", help="also run borg on the inputs")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder for datasets and borg")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)

    chosen = [
        scheme
        for train_bytes in args.train_bytes
        for scheme in schemes(args.levels, args.dict_sizes, train_bytes, args.frames, args.ldm_frames)
    ]
    chosen = list({scheme.name: scheme for scheme in chosen}.values())
    document = []
    for label, paths in inputs(args):
        if not paths:
            parser.error(f"no input files for {label}")
        new = collect(label, paths, args.avg_size)
        borg = run_borg(new, args.work / "pack-compression") if args.peers == "borg" else None
        # The first scheme measured runs slower (memory the process has not touched yet): zstd 3,
        # the reference, is run once before it is measured.
        measure(new, chosen[0])
        results = []
        for scheme in chosen:
            results.append(measure(new, scheme))
            print(f"{label}: {scheme.name} done", file=sys.stderr)
        print(build_markdown(new, results, borg), flush=True)
        document.append(
            {
                "label": label,
                "paths": [str(path) for path in paths],
                "input_bytes": new.input_bytes,
                "avg_size": args.avg_size,
                "chunks": new.chunk_count,
                "new_chunks": len(new.chunks),
                "new_bytes": new.new_bytes,
                "borg": borg,
                "schemes": [asdict(result) for result in results],
            }
        )
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

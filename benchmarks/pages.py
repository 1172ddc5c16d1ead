"""How format 2's recipe pages behave on real versioned data: page reuse, segment size, runs.

    python -m benchmarks.pages [--project Django] [--series 4.2.] [--versions 30] [--avg-size 8K]
                               [--cache DIR] [--reproducible | --database SIZE]

The data: successive source releases of one PyPI project, uncompressed, downloaded once and
cached as benchmarks.chunk_size_curve does (the same files). Each release is put in order as
one content: cut with chunkstore's default chunker at --avg-size, hashed, and cut into segments
by chunkstore.core.pages (a boundary per ~16 MiB of chunks). A segment whose page ID an
earlier release already wrote is reused whole; a fresh one gets a recipe page whose runs locate
its chunks: chunks stored before where they are, new ones appended to 16 MiB packs (zstd 3
sizes, 8,192 entries at most), in segment order. Chunks are found with an exact index, so the
runs are those of a put that misses no duplicate.

Per release: the share of its segments (and of its bytes) whose page already existed, the mean
segment size, and the runs and bytes of a fresh page: the figures the cost table of
docs/design/format-v2.md assumes (a reused page costs a lookup, a fresh one a catalog write of
its bytes).

Every member of such a tar carries its mtime, so each release changes a header in front of
every file and no segment survives from one release to the next: the scattered-edits case.
--reproducible repacks each release first as a reproducible tar of its tree (members sorted by
name, no mtime or owner, and without the top folder, whose name holds the version), so a
release differs only where its files do.

--database SIZE puts instead the successive saves of a SQLite database of SIZE bytes
(benchmarks.datasets, database-file kind: rows of the Python standard library's lines), each
after a round of updates of random rows that rewrites ~1% of its 4 KiB pages: scattered edits
in place, as a nightly backup of a database sees them.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from chunkstore.core.chunking import ChunkerSpec, make_chunker
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL, CompressionSpec, Compressor
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import HEADER_SIZE
from chunkstore.core.packformat import MAX_ENTRIES
from chunkstore.core.pages import (
    PAGE_TARGET_BYTES,
    ChunkLocation,
    Segment,
    Segmenter,
    SegmentSpec,
    build_page,
    runs_of,
)

from .chunk_size_curve import DEFAULT_CACHE, PACK_BYTES, fetch_releases
from .datasets import DATABASE_FILE, DEFAULT_SEED, DatasetSpec, EditModel, files_in, materialize, parse_size
from .report import MB, markdown_table

MIB = 1024 * 1024
DATABASE_SAVES = 6
# A row is ~200 bytes (benchmarks.datasets), so updating this share of the rows rewrites 1% of
# the 4 KiB pages: 0.01 × 200 / 4,096.
DATABASE_UPDATED_ROWS = 0.01 * 200 / 4096


@dataclass
class ReleaseFigures:
    name: str
    logical: int
    chunks: int
    segments: int
    reused_segments: int
    reused_bytes: int
    fresh_runs: list[int]
    fresh_page_bytes: list[int]
    new_chunk_bytes: int  # plaintext of chunks no earlier release stored


class _Store:
    """What the put of successive releases leaves behind: page IDs, where each chunk is, packs."""

    def __init__(self, avg_size: int):
        self.spec = ChunkerSpec.from_average(avg_size=avg_size)
        self.segment_spec = SegmentSpec.for_chunks(self.spec.avg_size, self.spec.max_size, PAGE_TARGET_BYTES)
        self.chunker = make_chunker(self.spec)
        self.hasher = Hasher()
        self.compressor = Compressor(CompressionSpec("zstd", DEFAULT_ZSTD_LEVEL))
        self.pages: set[bytes] = set()
        self.where: dict[bytes, ChunkLocation] = {}
        self.packs = 0
        self._open_pack: bytes | None = None
        self._open_entries = self._open_bytes = 0

    def put(self, name: str, data: bytes) -> ReleaseFigures:
        figures = ReleaseFigures(name, len(data), 0, 0, 0, 0, [], [], 0)
        chunks: dict[bytes, bytes] = {}  # the open segment's chunks, to store the new ones
        segmenter = Segmenter(self.segment_spec)
        for chunk in self.chunker(io.BytesIO(data)):
            chunk_id = self.hasher.chunk_id(chunk)
            chunks[chunk_id] = chunk
            segment = segmenter.add(chunk_id, len(chunk))
            if segment is not None:
                self._store_segment(segment, chunks, figures)
                chunks = {}
        last = segmenter.finish()
        if last is not None:
            self._store_segment(last, chunks, figures)
        return figures

    def _store_segment(self, segment: Segment, chunks: dict[bytes, bytes], figures: ReleaseFigures) -> None:
        figures.segments += 1
        figures.chunks += len(segment.chunk_ids)
        if segment.page_id in self.pages:
            figures.reused_segments += 1
            figures.reused_bytes += segment.plaintext_bytes
            return
        for chunk_id in segment.chunk_ids:
            if chunk_id not in self.where:
                figures.new_chunk_bytes += len(chunks[chunk_id])
                self.where[chunk_id] = self._append(chunks[chunk_id])
        runs = runs_of(self.where[chunk_id] for chunk_id in segment.chunk_ids)
        figures.fresh_runs.append(len(runs))
        figures.fresh_page_bytes.append(len(build_page(runs)))
        self.pages.add(segment.page_id)

    def _append(self, chunk: bytes) -> ChunkLocation:
        stored = HEADER_SIZE + len(self.compressor.compress(chunk)[1])
        if self._open_pack is None or self._open_entries == MAX_ENTRIES or self._open_bytes + stored > PACK_BYTES:
            self.packs += 1
            self._open_pack = self.packs.to_bytes(16, "big")
            self._open_entries = self._open_bytes = 0
        location = ChunkLocation(self._open_pack, self._open_entries, len(chunk))
        self._open_entries += 1
        self._open_bytes += stored
        return location


def reproducible_tar(path: Path) -> bytes:
    """The release's tree as a reproducible tar: same files and contents, sorted by name, with no
    mtime, owner or group, and without the top folder (Django-4.2.1/...)."""
    out = io.BytesIO()
    with tarfile.open(path) as source, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target:
        for member in sorted(source.getmembers(), key=lambda m: m.name):
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
            member.pax_headers = {}
            member.name = member.name.partition("/")[2] or "."
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def database_saves(size: int, cache: Path) -> list[Path]:
    edits = EditModel(
        database_rounds=DATABASE_SAVES,
        database_update_fraction=DATABASE_UPDATED_ROWS,
        database_insert_fraction=0.0,
        database_delete_fraction=0.0,
    )
    spec = DatasetSpec(DATABASE_FILE, DEFAULT_SEED, size * DATABASE_SAVES, None, edits)
    return [path for _, path in files_in(materialize(spec, cache / "datasets").root)]


def measure(paths: list[Path], avg_size: int, reproducible: bool) -> tuple[list[ReleaseFigures], _Store, float]:
    store = _Store(avg_size)
    started = time.perf_counter()
    figures = [store.put(path.stem, reproducible_tar(path) if reproducible else path.read_bytes()) for path in paths]
    return figures, store, time.perf_counter() - started


def _mean(values: list[int]) -> float:
    return statistics.fmean(values) if values else 0.0


def build_markdown(title: str, figures: list[ReleaseFigures], store: _Store, seconds: float) -> str:
    rows = []
    for release in figures:
        rows.append(
            [
                release.name,
                f"{release.logical / MB:.1f}",
                f"{release.segments}",
                f"{100 * release.reused_segments / release.segments:.0f}%",
                f"{100 * release.reused_bytes / release.logical:.0f}%",
                f"{release.logical / release.segments / MIB:.1f}",
                f"{_mean(release.fresh_runs):.0f}",
                f"{max(release.fresh_runs, default=0)}",
                f"{_mean(release.fresh_page_bytes) / 1000:.1f}",
                f"{100 * release.new_chunk_bytes / release.logical:.1f}%",
            ]
        )
    headers = [
        "release",
        "MB",
        "segments",
        "pages reused",
        "bytes in reused pages",
        "mean segment MiB",
        "runs / fresh page",
        "max runs",
        "fresh page KB",
        "new chunk bytes",
    ]
    later = figures[1:]
    segments = sum(r.segments for r in later)
    fresh_runs = [runs for r in later for runs in r.fresh_runs]
    fresh_bytes = [size for r in later for size in r.fresh_page_bytes]
    first = figures[0]
    summary = [
        f"Releases after the first: {sum(r.reused_segments for r in later)} of {segments} segments reused "
        f"({100 * sum(r.reused_segments for r in later) / max(1, segments):.1f}%, "
        f"{100 * sum(r.reused_bytes for r in later) / max(1, sum(r.logical for r in later)):.1f}% of the bytes); "
        f"a fresh page has {_mean(fresh_runs):.0f} runs on average (median "
        f"{statistics.median(fresh_runs) if fresh_runs else 0:.0f}), {_mean(fresh_bytes) / 1000:.1f} KB; "
        f"the first release's pages: "
        f"{_mean(first.fresh_runs):.1f} runs. Mean segment over all releases: "
        f"{sum(r.logical for r in figures) / sum(r.segments for r in figures) / MIB:.1f} MiB "
        f"({sum(r.chunks for r in figures) / sum(r.segments for r in figures):,.0f} chunks of "
        f"{sum(r.logical for r in figures) / sum(r.chunks for r in figures) / 1024:.1f} KiB on average). "
        f"{store.packs} packs of 16 MiB; {seconds:.0f} s.",
    ]
    spec = store.segment_spec
    return "\n".join(
        [
            f"# Recipe pages on {title}",
            "",
            f"{store.spec.avg_size // 1024} KiB chunks (FastCDC-2020 {store.spec.min_size // 1024}/"
            f"{store.spec.avg_size // 1024}/{store.spec.max_size // 1024} KiB); a segment ends after a chunk whose ID "
            f"ends in {spec.boundary_bits} zero bits, {spec.min_chunks}..{spec.max_chunks} chunks; exact chunk index; "
            f"new chunks appended to 16 MiB packs (zstd {DEFAULT_ZSTD_LEVEL}).",
            "",
            markdown_table(headers, rows),
            "",
            *summary,
            "",
        ]
    )


def _size(text: str) -> int:
    return int(text[:-1]) * 1024 if text.upper().endswith("K") else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="Django")
    parser.add_argument("--series", default="4.2.", help="version prefix of the releases to take")
    parser.add_argument("--versions", type=int, default=30)
    parser.add_argument("--avg-size", type=_size, default=8 * 1024, help="average chunk size (e.g. 8K)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--reproducible", action="store_true", help="repack each release with no mtimes, sorted")
    data.add_argument("--database", type=parse_size, metavar="SIZE", help="saves of a SQLite database instead")
    args = parser.parse_args(argv)
    if args.database:
        paths = database_saves(args.database, args.cache)
        title = f"{len(paths)} saves of a {args.database / MB:,.0f} MB SQLite database, ~1% of its pages rewritten"
    else:
        paths = fetch_releases(args.project, args.series, args.versions, args.cache)
        if len(paths) < 2:
            parser.error(f"need two sdists of {args.project} {args.series}* at least, found {len(paths)}")
        title = f"{len(paths)} releases of {args.project}, {paths[0].stem} .. {paths[-1].stem}" + (
            ", repacked as reproducible tars" if args.reproducible else ""
        )
    figures, store, seconds = measure(paths, args.avg_size, args.reproducible)
    print(build_markdown(title, figures, store, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

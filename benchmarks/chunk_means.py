"""The mean chunk FastCDC-2020 cuts on real data, against its nominal average, and the segments it makes.

    python -m benchmarks.chunk_means [--sizes 4K,8K,16K] [--datasets django,deb-trees,...] [--cache DIR]

chunkstore.core.pages sizes format 2's segments from the mean chunk it expects
(pages.FASTCDC2020_MEAN_FACTOR × the nominal average); this measures that factor. Each size is
the store's own chunker (chunkstore.core.chunking, FastCDC-2020, min/avg/max = avg/4, avg, avg*4
as ChunkerSpec.from_average sets them) over each dataset's files, one content per file:

- django: 30 Django 4.2.x sdists as uncompressed tars (source text; the files of
  benchmarks.chunk_size_curve);
- npm: 4 successive releases of the typescript package, as uncompressed tars (JavaScript text);
- deb-trees: the file trees of 22 Debian packages (dpkg-deb --fsys-tarfile): ELF programs and
  libraries, Python's standard library, text;
- deb-files: the same .deb files as downloaded (xz- or zstd-compressed: no structure left);
- sqlite: a SQLite database of the Python standard library's lines saved after 6 rounds of
  scattered edits (benchmarks.datasets database-file, quick preset: 4 KiB pages, free space);
- random: seeded pseudo-random bytes, the baseline where nothing but the cut rule decides.

Per dataset and size: chunks, mean chunk and its ratio to the nominal size, the share of
chunks cut at the maximum size (runs of equal bytes, zero padding), and the segments of
chunkstore.core.pages: the mean its spec gives (SegmentSpec.expected_chunks() times the mean
chunk), and what it cuts when the dataset's chunk IDs follow one another as one long content (so
no content's short last segment weighs in; few segments, and the Django releases repeat theirs,
so these means are rough).
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import statistics
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chunkstore.core.chunking import ChunkerSpec, make_chunker
from chunkstore.core.hashing import Hasher
from chunkstore.core.pages import FASTCDC2020_MEAN_FACTOR, PAGE_TARGET_BYTES, Segmenter, SegmentSpec

from .chunk_size_curve import DEFAULT_CACHE, fetch_releases
from .datasets import DATABASE_FILE, DatasetSpec, files_in, materialize
from .report import MB, MIB, markdown_table

# Packages of Debian 12 with programs, libraries and a language runtime in them: 62 MB of .deb.
DEBIAN_PACKAGES = [
    "bash",
    "busybox",
    "coreutils",
    "curl",
    "git",
    "gdb",
    "openssh-client",
    "perl-base",
    "sqlite3",
    "vim",
    "zstd",
    "binutils-x86-64-linux-gnu",
    "cpp-12",
    "gcc-12",
    "libc6",
    "libgcc-s1",
    "libglib2.0-0",
    "libssl3",
    "libstdc++6",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11-minimal",
]
# Four successive releases of one large JavaScript package: 4 × 6 MB of .tgz, ~32 MB of text each.
NPM_PACKAGES = tuple(f"typescript@5.4.{patch}" for patch in range(2, 6))
RANDOM_BYTES = 512 * MIB
RANDOM_SEED = 20261205

Content = tuple[str, Callable[[], bytes]]  # a name, and how to read its bytes


def django_contents(cache: Path) -> list[Content]:
    return [(path.name, path.read_bytes) for path in fetch_releases("Django", "4.2.", 30, cache)]


def debian_files(cache: Path) -> list[Path]:
    """The .deb files of DEBIAN_PACKAGES, fetched once with apt-get download into cache/deb."""
    folder = cache / "deb"
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.deb"))) < len(DEBIAN_PACKAGES):
        subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=folder, check=True, capture_output=True)
    return sorted(folder.glob("*.deb"))


def npm_contents(cache: Path) -> list[Content]:
    """NPM_PACKAGES, fetched once with npm pack into cache/npm, each read as its uncompressed tar."""
    folder = cache / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.tgz"))) < len(NPM_PACKAGES):
        subprocess.run(["npm", "pack", "--silent", *NPM_PACKAGES], cwd=folder, check=True, capture_output=True)

    def tar(path: Path) -> Callable[[], bytes]:
        return lambda: gzip.decompress(path.read_bytes())

    return [(path.name, tar(path)) for path in sorted(folder.glob("*.tgz"))]


def deb_tree_contents(cache: Path) -> list[Content]:
    def tree(path: Path) -> Callable[[], bytes]:
        return lambda: subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True).stdout

    return [(path.name, tree(path)) for path in debian_files(cache)]


def deb_file_contents(cache: Path) -> list[Content]:
    return [(path.name, path.read_bytes) for path in debian_files(cache)]


def sqlite_contents(cache: Path) -> list[Content]:
    dataset = materialize(DatasetSpec.preset("quick", DATABASE_FILE), cache / "datasets")
    return [(name, path.read_bytes) for name, path in files_in(dataset.root)]


def random_contents(cache: Path) -> list[Content]:
    def read() -> bytes:
        rng = random.Random(RANDOM_SEED)
        return b"".join(rng.randbytes(MIB) for _ in range(RANDOM_BYTES // MIB))

    return [("random", read)]


DATASETS: dict[str, Callable[[Path], list[Content]]] = {
    "django": django_contents,
    "npm": npm_contents,
    "deb-trees": deb_tree_contents,
    "deb-files": deb_file_contents,
    "sqlite": sqlite_contents,
    "random": random_contents,
}


@dataclass
class Figures:
    dataset: str
    nominal: int
    contents: int = 0
    logical: int = 0
    chunks: int = 0
    at_max: int = 0
    expected_segment: float = 0.0  # bytes: the spec's expected chunks times the mean chunk
    segment_bytes: list[int] = field(default_factory=list)
    segment_chunks: list[int] = field(default_factory=list)

    @property
    def mean_chunk(self) -> float:
        return self.logical / self.chunks

    @property
    def factor(self) -> float:
        return self.mean_chunk / self.nominal


def chunks_of(contents: list[Content], spec: ChunkerSpec) -> Iterator[tuple[int, bytes]]:
    """(content number, chunk) of every content in order."""
    chunker = make_chunker(spec)
    for number, (_, read) in enumerate(contents):
        for chunk in chunker(io.BytesIO(read())):
            yield number, chunk


def measure(name: str, contents: list[Content], nominal: int) -> Figures:
    spec = ChunkerSpec.from_average(avg_size=nominal)
    segment_spec = SegmentSpec.for_chunks(spec.avg_size, spec.max_size)
    segmenter = Segmenter(segment_spec)
    hasher = Hasher()
    figures = Figures(name, nominal, contents=len(contents))
    for _, chunk in chunks_of(contents, spec):
        figures.chunks += 1
        figures.logical += len(chunk)
        figures.at_max += len(chunk) == spec.max_size
        segment = segmenter.add(hasher.chunk_id(chunk), len(chunk))
        if segment is not None:
            figures.segment_bytes.append(segment.plaintext_bytes)
            figures.segment_chunks.append(len(segment.chunk_ids))
    figures.expected_segment = segment_spec.expected_chunks() * figures.mean_chunk
    return figures


def build_markdown(results: list[Figures]) -> str:
    rows = [
        [
            f.dataset,
            f"{f.nominal // 1024} KiB",
            f"{f.contents}",
            f"{f.logical / MB:,.0f}",
            f"{f.chunks:,}",
            f"{f.mean_chunk / 1024:.2f}",
            f"{f.factor:.2f}",
            f"{100 * f.at_max / f.chunks:.1f}%",
            f"{f.expected_segment / MIB:.1f}",
            f"{len(f.segment_bytes)}",
            f"{statistics.fmean(f.segment_bytes) / MIB:.1f}" if f.segment_bytes else "-",
            f"{statistics.fmean(f.segment_chunks):,.0f}" if f.segment_chunks else "-",
        ]
        for f in results
    ]
    headers = [
        "dataset",
        "nominal",
        "files",
        "MB",
        "chunks",
        "mean chunk KiB",
        "mean / nominal",
        "cut at max",
        "expected segment MiB",
        "segments",
        "mean segment MiB",
        "chunks / segment",
    ]
    return "\n".join(
        [
            "# Mean FastCDC-2020 chunk against its nominal size",
            "",
            f"pages.FASTCDC2020_MEAN_FACTOR = {FASTCDC2020_MEAN_FACTOR}; segments aim at "
            f"{PAGE_TARGET_BYTES // MIB} MiB; a dataset's chunks are segmented as one content "
            "(segments that fill up to the end only).",
            "",
            markdown_table(headers, rows),
            "",
        ]
    )


def _size(text: str) -> int:
    return int(text[:-1]) * 1024 if text.upper().endswith("K") else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chunk_means", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4K,8K,16K", help="nominal average chunk sizes, comma-separated")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"any of {', '.join(DATASETS)}")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        parser.error(f"unknown datasets: {', '.join(unknown)}")
    sizes = [_size(text) for text in args.sizes.split(",")]
    results: list[Figures] = []
    for name in names:
        contents = DATASETS[name](args.cache)
        results.extend(measure(name, contents, nominal) for nominal in sizes)
    print(build_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

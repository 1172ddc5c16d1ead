"""Store ratio and object counts against the average chunk size, on real versioned data.

    python -m benchmarks.chunk_size_curve [--project Django] [--series 4.2.] [--versions 30]
                                          [--sizes 4K,8K,16K,32K,64K] [--cache DIR]

The data: successive source releases of one PyPI project (Django 4.2.1, 4.2.2, ... by
default), downloaded once through PyPI's JSON API into ~/.cache/chunkstore-bench and
kept there uncompressed (a .tar.gz of a release hides its similarity to the one before:
gzip output changes from the first changed byte on).

For each average size, every release is cut with chunkstore's default chunker
(FastCDC-2020, min = avg/4, max = avg*4) and hashed, and every distinct chunk is
compressed once with zstd level 3 and counted with the 16-byte object header, as put
stores it: store ratio = bytes of all releases / stored bytes. Then the objects a TB of
such data needs: one object per distinct chunk (format 1) against 16 MiB packs (format
2), and what their PUTs cost at S3's list price.

Last, the dedup a put keeps without holding every chunk ID in memory (format 2's sampled
hooks): the releases are put in order, one put each, into 16 MiB packs; a chunk whose ID starts
with a zero byte (1 in 256) is a hook, indexed globally; a put starts knowing nothing and
learns only the chunk tables of the packs a hook led it to, of their successors, and of
the packs it wrote itself, at most --cache-entries IDs at once. A chunk it does not know
is stored again. The figure is
the share of the exact dedup (bytes not stored again) that this keeps.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import time
import urllib.parse
import urllib.request
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from chunkstore.core.chunking import ChunkerSpec, make_chunker
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL, CompressionSpec, Compressor
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import HEADER_SIZE

from .report import MB, markdown_table

PYPI_JSON = "https://pypi.org/pypi/{project}/json"
DEFAULT_CACHE = Path.home() / ".cache" / "chunkstore-bench"
TB = 10**12
PACK_BYTES = 16 * 1024 * 1024
S3_PUT_DOLLARS = 0.005 / 1000
# One hook per ~2 MiB and one segment (recipe page) per ~16 MiB of plaintext, as format 2 plans.
HOOK_EVERY_BYTES = 2 * 1024 * 1024
SEGMENT_BYTES = 16 * 1024 * 1024
# IDs a put may hold in its cache: 300,000 at 139 bytes each in a dict of 32-byte IDs
# (tracemalloc, Python 3.11) is the 42 MB share of format 2's 256 MB put budget
# (docs/design/format-v2.md).
DEFAULT_CACHE_ENTRIES = 300_000


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def fetch_releases(project: str, series: str, count: int, cache: Path) -> list[Path]:
    """The first count releases of project whose version starts with series, as .tar files."""
    folder = cache / project
    folder.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(PYPI_JSON.format(project=project), timeout=60) as response:
        document = json.load(response)
    versions = sorted(
        (v for v in document["releases"] if v.startswith(series) and v.replace(".", "").isdigit()), key=_version_key
    )
    paths = []
    for version in versions:
        sdists = [
            f
            for f in document["releases"][version]
            if f["packagetype"] == "sdist" and f["filename"].endswith(".tar.gz")
        ]
        if not sdists:
            continue
        target = folder / f"{project}-{version}.tar"
        if not target.exists():
            url = urllib.parse.urljoin(response.url, sdists[0]["url"])
            with urllib.request.urlopen(url, timeout=120) as download, open(target.with_suffix(".part"), "wb") as out:
                shutil.copyfileobj(gzip.GzipFile(fileobj=io.BytesIO(download.read())), out)
            target.with_suffix(".part").rename(target)
        paths.append(target)
        if len(paths) == count:
            break
    return paths


@dataclass
class SizeResult:
    avg_size: int
    logical: int
    chunks: int
    unique_chunks: int
    unique_bytes: int
    stored_bytes: int
    seconds: float
    sampled_stored_bytes: int  # what the sampled-hook put stores (plaintext bytes written again included)
    sampled_unique_plain: int


def _bits(one_in: int) -> int:
    """The zero bits that select one chunk in one_in (rounded down to a power of two)."""
    return max(0, one_in.bit_length() - 1)


def measure(
    paths: list[Path],
    avg_size: int,
    cache_entries: int,
    hook_every: int = HOOK_EVERY_BYTES,
    segment_bytes: int = SEGMENT_BYTES,
) -> SizeResult:
    chunker = make_chunker(ChunkerSpec.from_average(avg_size=avg_size))
    hasher = Hasher()
    compressor = Compressor(CompressionSpec("zstd", DEFAULT_ZSTD_LEVEL))
    stored_size: dict[bytes, int] = {}
    logical = chunks = unique_bytes = 0
    sampler = _SparsePut(cache_entries, _bits(hook_every // avg_size), _bits(segment_bytes // avg_size))
    start = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        logical += len(data)
        sampler.start_put()
        sampler.start_content()
        for chunk in chunker(io.BytesIO(data)):
            chunks += 1
            chunk_id = hasher.chunk_id(chunk)
            size = stored_size.get(chunk_id)
            if size is None:
                size = HEADER_SIZE + len(compressor.compress(chunk)[1])
                stored_size[chunk_id] = size
                unique_bytes += len(chunk)
            sampler.put(chunk_id, len(chunk), size)
        sampler.end_segment()
    return SizeResult(
        avg_size,
        logical,
        chunks,
        len(stored_size),
        unique_bytes,
        sum(stored_size.values()),
        time.perf_counter() - start,
        sampler.stored_bytes,
        sampler.plain_bytes,
    )


class _SparsePut:
    """Format 2's put dedup without a full index (sparse indexing): segments, hooks, champion pages.

    The chunk stream is cut into segments (the recipe pages of format 2) where a chunk ID's
    low bits are zero. A hook is a chunk whose ID's first bits are zero; the catalog maps it
    to the latest page that holds it, and a page knows the content it was first written for.
    For each segment the put looks its hooks up and, for the CHAMPIONS pages most of its
    hooks point to, loads the chunk lists of the pages of their contents around them (all of
    a content's pages up to NEIGHBOURS either side), keeps those of earlier segments while
    they fit the cache, and stores again every chunk none of them lists.
    """

    CHAMPIONS = 4
    NEIGHBOURS = 4
    MIN_SEGMENT_CHUNKS = 64
    MAX_SEGMENT_CHUNKS = 4096

    def __init__(self, cache_entries: int, hook_bits: int, segment_bits: int):
        self.cache_entries = cache_entries
        self.hook_shift = 256 - hook_bits
        self.segment_mask = (1 << segment_bits) - 1
        self.hooks: dict[bytes, int] = {}
        self.pages: list[tuple[bytes, ...]] = []
        self.origin: list[tuple[int, int]] = []  # page -> (content, its segment number there)
        self.contents: list[list[int]] = []  # content -> its pages
        self.latest: dict[int, int] = {}  # content -> the latest content that met its pages
        self.champions: set[int] = set()
        self.cache: OrderedDict[int, tuple[bytes, ...]] = OrderedDict()
        self.known: Counter[bytes] = Counter()
        self.cached_entries = 0
        self.segment: list[tuple[bytes, int, int]] = []
        self.stored_bytes = self.plain_bytes = 0

    def start_put(self) -> None:
        """A new put is a new process: its cache starts empty; hooks and pages (the catalog) remain."""
        self.cache.clear()
        self.known.clear()
        self.cached_entries = 0

    def start_content(self) -> None:
        """A new file: the contents whose pages it met become its predecessors (a link each)."""
        if self.contents:
            for champion in self.champions:
                self.latest[champion] = len(self.contents) - 1
        self.champions = set()
        self.contents.append([])

    def put(self, chunk_id: bytes, plain: int, stored: int) -> None:
        self.segment.append((chunk_id, plain, stored))
        at_boundary = int.from_bytes(chunk_id[-4:], "big") & self.segment_mask == 0
        length = len(self.segment)
        if (at_boundary and length >= self.MIN_SEGMENT_CHUNKS) or length == self.MAX_SEGMENT_CHUNKS:
            self.end_segment()

    def _is_hook(self, chunk_id: bytes) -> bool:
        return int.from_bytes(chunk_id, "big") >> self.hook_shift == 0

    def end_segment(self) -> None:
        if not self.segment:
            return
        hooks = [chunk_id for chunk_id, _, _ in self.segment if self._is_hook(chunk_id)]
        votes = Counter(self.hooks[h] for h in hooks if h in self.hooks)
        for champion, _ in votes.most_common(self.CHAMPIONS):
            content, position = self.origin[champion]
            self.champions.add(content)
            for lineage in {content, self.latest.get(content, content)}:
                pages = self.contents[lineage]
                for page in pages[max(0, position - self.NEIGHBOURS) : position + self.NEIGHBOURS + 1]:
                    self._load(page)
        for chunk_id, plain, stored in self.segment:
            if chunk_id not in self.known:
                self.stored_bytes += stored
                self.plain_bytes += plain
                self.known[chunk_id] += 1  # a chunk met twice in one segment is stored once
        page = len(self.pages)
        self.pages.append(tuple(chunk_id for chunk_id, _, _ in self.segment))
        self.origin.append((len(self.contents) - 1, len(self.contents[-1])))
        self.contents[-1].append(page)
        for hook in hooks:
            self.hooks.setdefault(hook, page)
        self._load(page)
        self.segment = []

    def _load(self, page: int) -> None:
        if page in self.cache:
            self.cache.move_to_end(page)
            return
        ids = self.pages[page]
        self.cache[page] = ids
        self.known.update(ids)
        self.cached_entries += len(ids)
        while self.cached_entries > self.cache_entries and len(self.cache) > 1:
            _, evicted = self.cache.popitem(last=False)
            self.cached_entries -= len(evicted)
            self.known.subtract(evicted)
            for chunk_id in evicted:
                if self.known[chunk_id] <= 0:
                    del self.known[chunk_id]


def build_markdown(project: str, paths: list[Path], results: list[SizeResult], cache_entries: int) -> str:
    rows = []
    for r in results:
        objects_per_tb = r.unique_chunks * TB / r.logical
        packs_per_tb = r.stored_bytes / PACK_BYTES * TB / r.logical
        exact_saved = r.logical - r.unique_bytes
        sampled_saved = r.logical - r.sampled_unique_plain
        rows.append(
            [
                f"{r.avg_size // 1024}K",
                f"{r.chunks:,}",
                f"{r.unique_chunks:,}",
                f"{r.logical / r.unique_bytes:.2f}x",
                f"{r.logical / r.stored_bytes:.2f}x",
                f"{r.logical / r.sampled_stored_bytes:.2f}x",
                f"{100 * sampled_saved / exact_saved:.1f}%",
                f"{objects_per_tb / 1e6:.1f}M",
                f"${objects_per_tb * S3_PUT_DOLLARS:,.0f}",
                f"{packs_per_tb:,.0f}",
                f"${packs_per_tb * S3_PUT_DOLLARS:.2f}",
                f"{r.logical / MB / r.seconds:.0f}",
            ]
        )
    headers = [
        "avg",
        "chunks",
        "distinct",
        "dedup",
        "store ratio",
        "sampled store ratio",
        "of exact dedup",
        "objects/TB (v1)",
        "PUT $/TB (v1)",
        "16 MiB packs/TB",
        "PUT $/TB (packs)",
        "MB/s (1 thread)",
    ]
    total = sum(r.logical for r in results[:1])
    return "\n".join(
        [
            f"# Store ratio against average chunk size: {len(paths)} releases of {project}, "
            f"{paths[0].stem} .. {paths[-1].stem}, {total / MB:.0f} MB uncompressed",
            "",
            f"zstd level {DEFAULT_ZSTD_LEVEL}, 16-byte object header per chunk; sampled: a hook per "
            f"{HOOK_EVERY_BYTES // 2**20} MiB, a segment per {SEGMENT_BYTES // 2**20} MiB, "
            f"{_SparsePut.CHAMPIONS} champions, "
            f"cache {cache_entries:,} IDs; per TB = per TB of data like this put.",
            "",
            markdown_table(headers, rows),
            "",
        ]
    )


def _size_list(text: str) -> list[int]:
    return [int(part[:-1]) * 1024 if part.upper().endswith("K") else int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chunk_size_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="Django")
    parser.add_argument("--series", default="4.2.", help="version prefix of the releases to take")
    parser.add_argument("--versions", type=int, default=30)
    parser.add_argument("--sizes", type=_size_list, default=_size_list("4K,8K,16K,32K,64K"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--cache-entries", type=int, default=DEFAULT_CACHE_ENTRIES)
    parser.add_argument(
        "--hook-every",
        type=_size_list,
        default=[HOOK_EVERY_BYTES],
        help="plaintext bytes per hook, on average (e.g. 4096K)",
    )
    parser.add_argument(
        "--segment",
        type=_size_list,
        default=[SEGMENT_BYTES],
        help="plaintext bytes per segment (recipe page), on average",
    )
    args = parser.parse_args(argv)
    paths = fetch_releases(args.project, args.series, args.versions, args.cache)
    if not paths:
        parser.error(f"no sdist of {args.project} {args.series}*")
    results = [measure(paths, size, args.cache_entries, args.hook_every[0], args.segment[0]) for size in args.sizes]
    print(build_markdown(args.project, paths, results, args.cache_entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

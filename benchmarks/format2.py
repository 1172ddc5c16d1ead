"""Storage format 2 beside format 1 on real versioned data: store size, objects, put and restore
speed, and on an s3:// store (moto) the requests and their cost per TB.

    python -m benchmarks.format2 [--project Django] [--series 4.2.] [--versions 30]
                                 [--s3-versions 5] [--names one|each] [--cache DIR]

The data: successive source releases of one PyPI project, uncompressed (the files
benchmarks.chunk_size_curve and benchmarks.pages use). Every release is put in order under one
name, as a nightly backup of a changing file would be, into a folder store of each layout:

- format 1 at its default chunk size (64 KiB) and at 8 KiB;
- format 2 at 8 KiB (the design's default), whose put deduplicates against the name's previous
  version (pages of unchanged segments reused, chunks of the previous version's segments near
  the position read found in the cache) and, through hooks, against the pages of any name.

--names each puts every release under its own file name instead, as releases or dated dumps
are kept: format 1 finds every stored chunk in its exact index, format 2 only what its hooks
lead to.

Figures per layout, all stores filled in this one process one after the other: bytes on disk
(objects and catalog), object files, put and restore seconds (every version restored and
compared byte for byte), and their ratios to format 1 at 64 KiB. Then the first --s3-versions
releases are put into an s3:// store of each layout on a local moto server, counting the S3 and
DynamoDB requests chunkstore makes and what they cost at AWS list prices per TB put, and each
version is restored from the store opened again: the S3 GETs each restore makes, and their seconds.

--changed-mb N (0: skipped) measures the nightly-backup case on an s3:// store: a file of N MB
made of the releases one after the other (real bytes) is put, then a version of it in which 1%
of the bytes changed (ten regions spread over the file, each overwritten with bytes of the last
release), and the cost of the second put is given as a share of the first's.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from chunkstore import Store
from chunkstore.core.chunking import DEFAULT_CHUNKER, ChunkerSpec
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL, CompressionSpec

from .chunk_size_curve import DEFAULT_CACHE, fetch_releases
from .suite import moto_server, requests_since

KIB = 1024
TB = 1e12
NAME = "release.tar"


@dataclass(frozen=True)
class Layout:
    label: str
    storage_format: int
    avg_size: int

    def init(self, url: str, **arguments) -> Store:
        return Store.init(
            url,
            ChunkerSpec.from_average(DEFAULT_CHUNKER, self.avg_size),
            CompressionSpec("zstd", DEFAULT_ZSTD_LEVEL),
            storage_format=self.storage_format,
            **arguments,
        )


LAYOUTS = (
    Layout("format 1, 64 KiB", 1, 64 * KIB),
    Layout("format 1, 8 KiB", 1, 8 * KIB),
    Layout("format 2, 8 KiB", 2, 8 * KIB),
)


def _folder_bytes_and_files(folder: Path) -> tuple[int, int]:
    total = files = 0
    for root, _, names in os.walk(folder):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def measure_folder(layout: Layout, releases: list[Path], scratch: Path, names: str) -> dict:
    """names: "one" puts every release under one name, "each" under its own file name."""
    url = scratch / layout.label.replace(" ", "").replace(",", "-")

    def stored_as(version: int, release: Path) -> tuple[str, int]:
        return (NAME, version) if names == "one" else (release.name, 1)

    put_seconds = 0.0
    with layout.init(str(url)) as store:
        for release in releases:
            with open(release, "rb") as stream:
                started = time.perf_counter()
                store.put_stream(stream, stored_as(0, release)[0])
                put_seconds += time.perf_counter() - started
    stored, files = _folder_bytes_and_files(url)
    restore_seconds = 0.0
    with Store.open(str(url), read_only=True) as store:
        for version, release in enumerate(releases, 1):
            out = io.BytesIO()
            started = time.perf_counter()
            name, stored_version = stored_as(version, release)
            store.get(name, out, version=stored_version)
            restore_seconds += time.perf_counter() - started
            if out.getvalue() != release.read_bytes():
                raise RuntimeError(f"{layout.label}: version {version} restored different bytes")
    shutil.rmtree(url)
    logical = sum(release.stat().st_size for release in releases)
    return {
        "layout": layout.label,
        "logical_bytes": logical,
        "stored_bytes": stored,
        "files": files,
        "store_ratio": logical / stored,
        "put_seconds": put_seconds,
        "restore_seconds": restore_seconds,
    }


def _put(store: Store, path: Path, name: str) -> tuple[dict, int]:
    """The requests and their cost (benchmarks.suite.requests_since) of putting path under name,
    and the new bytes it stored."""
    before = store.request_counts()
    with open(path, "rb") as stream:
        result = store.put_stream(stream, name).results[0]
    return requests_since(before, store.request_counts()), result.new_bytes


def _restore_gets(store: Store, version: int, release: Path) -> tuple[int, float]:
    """The S3 GETs and the seconds that restoring one version takes, its bytes checked."""
    before = store.request_counts() or {}
    out = io.BytesIO()
    started = time.perf_counter()
    store.get(NAME, out, version=version)
    seconds = time.perf_counter() - started
    after = store.request_counts() or {}
    if out.getvalue() != release.read_bytes():
        raise RuntimeError(f"version {version} restored different bytes")
    gets = after.get("s3", {}).get("GetObject", 0) - before.get("s3", {}).get("GetObject", 0)
    return gets, seconds


def measure_s3(layout: Layout, releases: list[Path]) -> dict:
    name = f"f2-{layout.storage_format}-{layout.avg_size // KIB}k"
    url = f"s3://{name}/store"
    with layout.init(url, table=name, create=True) as store:
        costs = [_put(store, release, NAME)[0] for release in releases]
    with Store.open(url, read_only=True) as store:
        restores = [_restore_gets(store, version, release) for version, release in enumerate(releases, 1)]
    logical = sum(release.stat().st_size for release in releases)
    first = releases[0].stat().st_size
    later_usd = sum(cost["usd"] for cost in costs[1:])
    return {
        "layout": layout.label,
        "s3_requests": sum(cost["s3"] for cost in costs),
        "dynamodb_requests": sum(cost["dynamodb"] for cost in costs),
        "usd_per_tb_put": (costs[0]["usd"] + later_usd) / logical * TB,
        "first_release_usd_per_tb": costs[0]["usd"] / first * TB,
        "later_releases_usd_per_tb": later_usd / (logical - first) * TB if logical > first else 0.0,
        "restore_gets": ", ".join(f"{gets:,}" for gets, _ in restores),
        "restore_seconds": sum(seconds for _, seconds in restores),
    }


def _changed_file(releases: list[Path], size: int, folder: Path) -> tuple[Path, Path]:
    """A file of size bytes from the releases in turn, and a copy with 1% of it overwritten."""
    original = folder / "original.bin"
    with open(original, "wb") as out:
        written = 0
        while written < size:
            for release in releases:
                data = release.read_bytes()[: size - written]
                out.write(data)
                written += len(data)
                if written >= size:
                    break
    edited = folder / "edited.bin"
    shutil.copyfile(original, edited)
    donor = releases[-1].read_bytes()
    region = size // 1000  # ten regions of 0.1% each
    with open(edited, "r+b") as out:
        for number in range(10):
            out.seek(size * number // 10 + size // 20)
            out.write(donor[number * region : (number + 1) * region])
    return original, edited


def measure_changed_file(layout: Layout, original: Path, edited: Path) -> dict:
    name = f"f2-changed-{layout.storage_format}-{layout.avg_size // KIB}k"
    with layout.init(f"s3://{name}/store", table=name, create=True) as store:
        first, _ = _put(store, original, "database.bin")
        second, second_new_bytes = _put(store, edited, "database.bin")
    return {
        "layout": layout.label,
        "first_requests": f"{first['s3']:,} S3, {first['dynamodb']:,} DynamoDB",
        "second_requests": f"{second['s3']:,} S3, {second['dynamodb']:,} DynamoDB",
        "second_new_mb": second_new_bytes / 1e6,
        "second_share": second["usd"] / first["usd"],
    }


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.format2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="Django")
    parser.add_argument("--series", default="4.2.")
    parser.add_argument("--versions", type=int, default=30)
    parser.add_argument("--s3-versions", type=int, default=5, help="releases put into the s3:// stores (0: none)")
    parser.add_argument("--changed-mb", type=int, default=0, help="size of the 1%%-changed file case (0: skipped)")
    parser.add_argument(
        "--names",
        choices=("one", "each"),
        default="one",
        help="put the releases under one name (a nightly backup), or each under its own file name",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    releases = fetch_releases(args.project, args.series, args.versions, args.cache)
    logical = sum(release.stat().st_size for release in releases)
    under = "one name" if args.names == "one" else "each its own name"
    print(f"{len(releases)} releases of {args.project} {args.series}*, {logical / 1e6:.0f} MB, put under {under}")
    if args.changed_mb:
        with tempfile.TemporaryDirectory(prefix="chunkstore-format2-") as scratch, moto_server():
            original, edited = _changed_file(releases, args.changed_mb * 1_000_000, Path(scratch))
            changed_rows = [measure_changed_file(layout, original, edited) for layout in (LAYOUTS[0], LAYOUTS[2])]
        print(f"a {args.changed_mb} MB file, then a version with 1% of its bytes changed, on an s3:// store (moto):")
        print(
            _table(
                changed_rows,
                [
                    ("layout", "layout", "s"),
                    ("first_requests", "first put", "s"),
                    ("second_requests", "1%-changed put", "s"),
                    ("second_new_mb", "new MB", ".1f"),
                    ("second_share", "cost of the second / the first", ".3f"),
                ],
            )
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="chunkstore-format2-") as scratch:
        rows = [measure_folder(layout, releases, Path(scratch), args.names) for layout in LAYOUTS]
    base = rows[0]
    for row in rows:
        row["put_speed_vs_format_1"] = base["put_seconds"] / row["put_seconds"]
        row["restore_speed_vs_format_1"] = base["restore_seconds"] / row["restore_seconds"]
        row["put_mb_s"] = row["logical_bytes"] / 1e6 / row["put_seconds"]
        row["restore_mb_s"] = row["logical_bytes"] / 1e6 / row["restore_seconds"]
    print(
        _table(
            rows,
            [
                ("layout", "layout", "s"),
                ("store_ratio", "store ratio", ".2f"),
                ("stored_bytes", "bytes on disk", ","),
                ("files", "files", ","),
                ("put_mb_s", "put MB/s", ".0f"),
                ("put_speed_vs_format_1", "put vs format 1 64 KiB", ".2f"),
                ("restore_mb_s", "restore MB/s", ".0f"),
                ("restore_speed_vs_format_1", "restore vs format 1 64 KiB", ".2f"),
            ],
        )
    )
    if args.s3_versions:
        with moto_server():
            s3_rows = [measure_s3(layout, releases[: args.s3_versions]) for layout in LAYOUTS]
        print(f"\ns3:// store on moto, first {args.s3_versions} releases:")
        print(
            _table(
                s3_rows,
                [
                    ("layout", "layout", "s"),
                    ("s3_requests", "S3 requests", ","),
                    ("dynamodb_requests", "DynamoDB requests", ","),
                    ("usd_per_tb_put", "$ per TB put", ".2f"),
                    ("first_release_usd_per_tb", "$ per TB, first release", ".2f"),
                    ("later_releases_usd_per_tb", "$ per TB, later releases", ".2f"),
                    ("restore_gets", "restore GETs per version", "s"),
                    ("restore_seconds", "restore s", ".1f"),
                ],
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What sealing an encrypted store's metadata costs (docs/design/encrypted-metadata.md): put, `ls`
and `ls PREFIX` of a real tree of many small files, on an encrypted storage format 2 store that
seals its names, stat data and snapshot records and on one that does not, alternating, in one
process; then the requests of a put and a listing of part of the tree on s3:// stores of both
kinds on the local moto server, and the sizes of the version items (and so the capacity units)
they write.

The tree is /usr/include (a real tree of thousands of headers in folders of every depth: 7,911
files, 129 MB on the Debian machine of docs/design/encrypted-metadata.md), unless --tree names
another folder.

    python -m benchmarks.sealed_metadata --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import chdir, contextmanager
from functools import partial
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core import crypto

from .suite import moto_server, requests_since

PASSPHRASE = b"benchmark passphrase"
KINDS = {"not sealed": False, "sealed": True}


def new_store(url: str, sealed: bool, **options) -> Store:
    return Store.init(
        url,
        ChunkerSpec.from_average(avg_size=8192),
        CompressionSpec.parse("zstd:3"),
        passphrase=PASSPHRASE,
        seal_metadata=sealed,
        **options,
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def listing_prefix(tree: Path) -> str:
    """The stored name of the tree's largest folder (by files below it): `ls PREFIX`'s prefix."""
    counts = {entry: sum(1 for _ in entry.rglob("*")) for entry in tree.iterdir() if entry.is_dir()}
    largest = max(counts, key=counts.__getitem__)
    return f"{tree.name}/{largest.name}"


def measure_local(tree: Path, runs: int, scratch: Path) -> dict[str, dict[str, list[float]]]:
    prefix = listing_prefix(tree)
    times: dict[str, dict[str, list[float]]] = {
        kind: {"put": [], "ls": [], "ls PREFIX": [], "catalog bytes": []} for kind in KINDS
    }
    for run in range(runs):
        for kind, sealed in KINDS.items():
            with new_store(str(scratch / f"{run}-{kind}"), sealed) as store, chdir(tree.parent):
                times[kind]["put"].append(timed(partial(store.put, [tree.name])))
                times[kind]["ls"].append(timed(partial(_listed, store, "")))
                times[kind]["ls PREFIX"].append(timed(partial(_listed, store, prefix)))
                times[kind]["catalog bytes"].append(float(store.catalog.storage_bytes() or 0))
    return times


def _listed(store: Store, prefix: str) -> int:
    return sum(1 for _ in store.list(prefix))


def measure_s3(tree: Path, files: int) -> dict[str, dict]:
    """The requests of putting the tree's first files and listing them, and the sizes of the
    version items written. moto reports capacity units without weighing item sizes, so the
    units are worked out from the sizes, as DynamoDB bills them (report_s3)."""
    paths = sorted(path for path in tree.rglob("*") if path.is_file())[:files]
    names = [str(path.relative_to(tree.parent)) for path in paths]
    figures: dict[str, dict] = {}
    with moto_server():
        for kind, sealed in KINDS.items():
            label = "sealed" if sealed else "plain"
            with (
                new_store(f"s3://bench-{label}/store", sealed, table=f"bench-{label}", create=True) as store,
                chdir(tree.parent),
            ):
                before = store.request_counts()
                store.put(names)
                after_put = store.request_counts()
                listed = list(store.list())
                after_ls = store.request_counts()
                assert after_put is not None and after_ls is not None
                figures[kind] = {
                    "put": requests_since(before, after_put),
                    "ls": requests_since(after_put, after_ls),
                    "files": len(listed),
                    "version items": _version_item_sizes(store, f"bench-{label}"),
                }
    return figures


def _version_item_sizes(store: Store, table: str) -> list[int]:
    """The size DynamoDB bills each version item at (a write unit per started 1 KB)."""
    clients = store.backend.aws_clients
    assert clients is not None
    pages = clients.dynamodb.get_paginator("scan").paginate(TableName=table)
    return [_item_size(item) for page in pages for item in page["Items"] if item["pk"]["S"].startswith("n#")]


def _item_size(item: dict) -> int:
    """DynamoDB's item size: attribute names and values (strings and binaries by their bytes,
    numbers by about one byte per two digits and one more)."""
    size = 0
    for name, value in item.items():
        ((kind, inner),) = value.items()
        size += len(name.encode())
        if kind == "S":
            size += len(inner.encode())
        elif kind == "B":
            size += len(inner)
        elif kind == "N":
            size += (len(inner.lstrip("-").replace(".", "")) + 1) // 2 + 1
        else:
            size += 1
    return size


def report_local(tree: Path, times: dict[str, dict[str, list[float]]]) -> None:
    files = sum(1 for path in tree.rglob("*") if path.is_file())
    print(f"{tree} ({files} files), encrypted storage format 2 stores in a folder, median seconds:")
    for step in ("put", "ls", "ls PREFIX"):
        plain, sealed = (statistics.median(times[kind][step]) for kind in KINDS)
        runs = ", ".join(f"{value:.3f}" for value in times["sealed"][step])
        print(f"  {step:<10} not sealed {plain:7.3f}  sealed {sealed:7.3f} ({runs})  sealed/not {sealed / plain:.2f}x")
    plain, sealed = (statistics.median(times[kind]["catalog bytes"]) for kind in KINDS)
    print(f"  SQLite catalog: not sealed {plain / 1e6:.2f} MB, sealed {sealed / 1e6:.2f} MB ({sealed / plain:.2f}x)")


def report_s3(figures: dict[str, dict]) -> None:
    """Requests as counted; units from the version items' sizes: a write unit per started 1 KB of
    an item written, a (strongly consistent) read unit per started 4 KB a listing reads."""
    print(f"s3:// on moto, {figures['sealed']['files']} files:")
    for kind in KINDS:
        sizes = figures[kind]["version items"]
        print(
            f"  version items {kind:<10} mean {statistics.mean(sizes):6.0f} bytes, largest {max(sizes):5}: "
            f"{sum(-(-size // 1024) for size in sizes)} write units for {len(sizes)} items, "
            f"{-(-sum(sizes) // 4096)} read units to list them all"
        )
    for step in ("put", "ls"):
        for kind in KINDS:
            counts = figures[kind][step]
            print(f"  {step:<3} {kind:<10} S3 {counts['s3']:5} requests, DynamoDB {counts['dynamodb']:5} requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sealed_metadata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path("/usr/include"), help="folder to put (default /usr/include)")
    parser.add_argument("--runs", type=int, default=3, help="puts of each kind, alternating (default 3)")
    parser.add_argument("--s3-files", type=int, default=500, help="files put on moto (0: skip; default 500)")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if not tree.is_dir():
        parser.error(f"{tree} is not a folder")
    with cheap_key_derivation(), tempfile.TemporaryDirectory(prefix="chunkstore-sealed-") as scratch:
        report_local(tree, measure_local(tree, args.runs, Path(scratch)))
        if args.s3_files:
            report_s3(measure_s3(tree, args.s3_files))
    return 0


@contextmanager
def cheap_key_derivation() -> Iterator[None]:
    """Stores made within use a cheap Argon2id: it runs once per store and changes nothing measured."""
    default = crypto.DEFAULT_KDF
    crypto.DEFAULT_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
    try:
        yield
    finally:
        crypto.DEFAULT_KDF = default


if __name__ == "__main__":
    sys.exit(main())

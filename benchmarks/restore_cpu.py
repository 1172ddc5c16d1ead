"""What a format 2 restore costs in CPU, in one process: the figure that moves when the per-chunk
work of the pack reader changes, and that the machine's load moves less than wall time.

    python -m benchmarks.restore_cpu [--releases FOLDER] [--count N] [--rounds R] [--store DIR]

The first N releases (release order) are put once into a format 2 folder store (kept in --store
if given, so that two checkouts can restore the same store), then restored R times into a new
folder each; each restore prints its wall time, the process's CPU time (all threads), the main
thread's CPU time (the reader's planning, the chunk cache and the writes run there) and the
blob store GETs it made. To compare two versions of the code, run each checkout's copy of this
script on the same --store, alternating.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.local import LocalBlobStore
from chunkstore.core.chunking import DEFAULT_AVG_SIZE

from .suite import release_key


def prepare(store_path: Path, tars: list[Path]) -> None:
    """A format 2 store holding the releases under releases/, unless store_path holds one."""
    if (store_path / "config").exists():
        return
    source = store_path.parent / f"{store_path.name}-releases"
    source.mkdir(parents=True, exist_ok=True)
    for tar in tars:
        shutil.copyfile(tar, source / tar.name)
    chunker = ChunkerSpec.from_average(avg_size=DEFAULT_AVG_SIZE)
    with Store.init(str(store_path), chunker, CompressionSpec.parse("zstd:3"), storage_format=2) as store:
        store.put([(source, "releases")])
    shutil.rmtree(source)


class CountingGets:
    """Counts LocalBlobStore.get calls while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._original = LocalBlobStore.get

    def __enter__(self) -> CountingGets:
        original = self._original

        def get(blobs, *args, **kwargs):
            self.count += 1
            return original(blobs, *args, **kwargs)

        LocalBlobStore.get = get  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *_) -> None:
        LocalBlobStore.get = self._original  # type: ignore[method-assign]


def restore_once(store_path: Path, work: Path) -> tuple[float, float, float, int]:
    target = work / "restored"
    shutil.rmtree(target, ignore_errors=True)
    with Store.open(str(store_path), read_only=True) as store, CountingGets() as gets:
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        store.restore("releases", target)
        wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
    shutil.rmtree(target)
    return wall, cpu, main, gets.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=Path, default=Path.home() / ".cache/chunkstore-bench/Django")
    parser.add_argument("--count", type=int, default=10, help="releases to put and restore (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="restores to measure (default 3)")
    parser.add_argument("--store", type=Path, help="the store to keep (made on first use)")
    args = parser.parse_args()
    tars = sorted(args.releases.glob("*.tar"), key=release_key)[: args.count]
    if not tars:
        raise SystemExit(f"no *.tar in {args.releases} (python -m benchmarks.chunk_size_curve fills it)")
    with tempfile.TemporaryDirectory(prefix="chunkstore-restore-cpu-") as temporary:
        work = Path(temporary)
        store_path = args.store or work / "store"
        prepare(store_path, tars)
        print(f"restore of {len(tars)} releases ({sum(tar.stat().st_size for tar in tars) / 1e6:.1f} MB)")
        for _ in range(args.rounds):
            wall, cpu, main_thread, gets = restore_once(store_path, work)
            print(f"wall {wall:.2f} s  process CPU {cpu:.2f} s  main thread CPU {main_thread:.2f} s  GETs {gets}")


if __name__ == "__main__":
    main()

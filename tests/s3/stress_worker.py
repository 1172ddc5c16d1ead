"""One process of the s3:// concurrency test (test_s3_concurrency.py): a putter, a remover or a gc.

    python stress_worker.py put URL FOLDER OUT INDEX ROUNDS
    python stress_worker.py rm URL STOPFILE OUT SEED
    python stress_worker.py gc URL STOPFILE OUT

Each writes what it did as JSON to OUT when it ends: putters every file's (name,
version, seed, outcome), the remover every version it removed, gc its reports.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from chunkstore import Store

# Contents are a few blocks from a small pool, so files share chunks with each other.
BLOCKS = 24
BLOCK_BYTES = 3000
# Names every putter writes (racing for their versions), with contents from a small pool
# of seeds (so putters store identical new chunks and files at the same time).
SHARED_NAMES = 3
SHARED_SEEDS = 6
OWN_NAMES = 2


def content(seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(random.Random(rng.randrange(BLOCKS)).randbytes(BLOCK_BYTES) for _ in range(rng.randint(2, 6)))


def put(url: str, folder: Path, out: Path, index: int, rounds: int) -> None:
    rng = random.Random(index)
    records = []
    with Store.open(url) as store:
        for round_number in range(rounds):
            seeds = {f"shared/f{slot}": rng.randrange(SHARED_SEEDS) for slot in range(SHARED_NAMES)}
            seeds.update({f"own{index}/f{slot}": rng.randrange(100, 10_000) for slot in range(OWN_NAMES)})
            # Written once and never again: the remover may remove all its versions.
            seeds[f"scratch{index}/r{round_number}"] = rng.randrange(100, 10_000)
            sources = []
            for name, seed in seeds.items():
                path = folder / f"round{round_number}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content(seed))
                sources.append((path, name))
            for result in store.put(sources).results:
                records.append(
                    {
                        "name": result.name,
                        "version": result.version,
                        "seed": seeds[result.name],
                        "outcome": result.outcome,
                        "error": result.error,
                    }
                )
    out.write_text(json.dumps(records))


def remove(url: str, stop: Path, out: Path, seed: int) -> None:
    """Remove, until told to stop, single versions and whole scratch names."""
    rng = random.Random(seed)
    removed = []
    with Store.open(url) as store:
        while not stop.exists():
            versions = [(record.name, record.version) for record in store.list(all_versions=True)]
            scratch = sorted({(name, None) for name, _ in versions if name.startswith("scratch")})
            choices = [choice for choice in (versions, scratch) if choice]
            if choices:
                name, number = rng.choice(rng.choice(choices))
                removed += [[record.name, record.version] for record in store.remove([name], version=number)]
            time.sleep(0.05)
    out.write_text(json.dumps(removed))


def collect(url: str, stop: Path, out: Path) -> None:
    reports = []
    with Store.open(url) as store:
        while not stop.exists():
            reports.append(store.gc().to_json())
    out.write_text(json.dumps(reports))


if __name__ == "__main__":
    role, url = sys.argv[1], sys.argv[2]
    if role == "put":
        put(url, Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif role == "rm":
        remove(url, Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    else:
        collect(url, Path(sys.argv[3]), Path(sys.argv[4]))

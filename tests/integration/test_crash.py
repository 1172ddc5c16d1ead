"""A `chunkstore put` killed with SIGKILL at random moments leaves garbage at worst.

Each round adds a folder of new, partly duplicate files to the source and starts a
put of the whole source (which redoes what earlier killed puts did not commit). A
round has more small files than a put commits at once, so its put commits part-way
through. Every other put is killed after a seeded random delay; the others a random
moment after their first commit lands, so kills also hit puts that have committed
part of their files. After every kill, verify must pass and every file ls shows must
restore byte for byte as it is in the source; every few rounds a gc runs too,
collecting what the dead puts left.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time

import pytest

from chunkstore import Store
from support.storechecks import CHUNKSTORE, assert_no_garbage, assert_verify_clean

POOL_BLOCK_SIZE = 256 * 1024
_POOL_RNG = random.Random("crash test block pool")
BLOCK_POOL = [_POOL_RNG.randbytes(POOL_BLOCK_SIZE) for _ in range(24)]
# A put commits every 2000 files; a round's small files come first (folders are walked
# in name order), so its put commits after them and then goes on with the large files.
SMALL_FILES_PER_ROUND = 2050
LARGE_FILES_PER_ROUND = 4
# Kill delays: from the start of the put, or from its first commit.
FROM_START_MAX_DELAY_SECONDS = 1.5
AFTER_COMMIT_MAX_DELAY_SECONDS = 0.3
GC_EVERY_ROUNDS = 3
POLL_SECONDS = 0.005
COMMAND_TIMEOUT_SECONDS = 300


def write_round(source, round_number: int) -> None:
    """About 12 MB: small compressible files, then large files of shared pool blocks plus
    fresh bytes (about 2.2 MB each) and an exact copy of the previous round's first one."""
    rng = random.Random(f"round {round_number}")
    small = source / f"round-{round_number:02d}" / "1-small"
    large = small.parent / "2-large"
    small.mkdir(parents=True)
    large.mkdir()
    words = [rng.randbytes(4).hex().encode() for _ in range(200)]
    for index in range(SMALL_FILES_PER_ROUND):
        text = b" ".join(rng.choice(words) for _ in range(rng.randint(50, 400)))
        (small / f"{index:04d}.txt").write_bytes(text)
    for index in range(LARGE_FILES_PER_ROUND):
        blocks = [rng.choice(BLOCK_POOL) for _ in range(8)] + [rng.randbytes(128 * 1024)]
        rng.shuffle(blocks)
        (large / f"{index}.bin").write_bytes(b"".join(blocks))
    if round_number:
        previous = source / f"round-{round_number - 1:02d}" / "2-large" / "0.bin"
        (large / "copy-of-previous.bin").write_bytes(previous.read_bytes())


def chunkstore(store, *args, cwd, expect: int = 0) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [*CHUNKSTORE, "--store", str(store), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    assert completed.returncode == expect, (
        f"chunkstore {' '.join(map(str, args))} exited {completed.returncode}, expected {expect}:\n"
        f"{completed.stdout}\n{completed.stderr}"
    )
    return completed


def put_and_kill(store, source, delay: float, after_first_commit: bool) -> bool:
    """Start `put SOURCE` and SIGKILL it delay seconds after it started (or after its first
    commit is visible). True if it was killed, False if it finished first."""
    with Store.open(str(store)) as watched:
        committed_before = watched.catalog.stats().versions
        process = subprocess.Popen(
            [*CHUNKSTORE, "--store", str(store), "put", source.name],
            cwd=source.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if after_first_commit:
            deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
            while process.poll() is None and watched.catalog.stats().versions == committed_before:
                assert time.monotonic() < deadline, "put neither committed nor finished"
                time.sleep(POLL_SECONDS)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    # communicate() also reaps the child: a zombie would still count as a live put to gc.
    _, errors = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    if process.returncode == -signal.SIGKILL:
        return True
    assert process.returncode == 0 and "Traceback" not in errors, errors
    return False


def assert_listed_files_restore_exactly(store, source, destination) -> int:
    """Every file ls shows restores byte for byte as in the source; return how many there are."""
    listed = json.loads(chunkstore(store, "ls", "--versions", "--json", cwd=source.parent).stdout)
    assert all(entry["version"] == 1 for entry in listed), "a source file never changes, so has one version"
    names = {entry["name"] for entry in listed}
    if not names:
        return 0
    chunkstore(store, "restore", source.name, "-o", destination, cwd=source.parent)
    restored = {str(path.relative_to(destination)) for path in destination.rglob("*") if path.is_file()}
    assert restored == names
    for name in names:
        assert (destination / name).read_bytes() == (source.parent / name).read_bytes(), name
    shutil.rmtree(destination)
    return len(names)


@pytest.mark.parametrize(
    "rounds", [pytest.param(3, id="3-rounds"), pytest.param(12, id="12-rounds", marks=pytest.mark.slow)]
)
def test_put_killed_at_random_moments_loses_nothing_committed(tmp_path, rounds):
    source = tmp_path / "source"
    store = tmp_path / "store"
    chunkstore(store, "init", cwd=tmp_path)
    rng = random.Random(f"kill delays for {rounds} rounds")
    killed = 0
    for round_number in range(rounds):
        write_round(source, round_number)
        after_first_commit = round_number % 2 == 1
        delay = rng.uniform(0, AFTER_COMMIT_MAX_DELAY_SECONDS if after_first_commit else FROM_START_MAX_DELAY_SECONDS)
        killed += put_and_kill(store, source, delay, after_first_commit)
        chunkstore(store, "verify", "--read-data", cwd=tmp_path)
        assert_listed_files_restore_exactly(store, source, tmp_path / "restored")
        if round_number % GC_EVERY_ROUNDS == GC_EVERY_ROUNDS - 1:
            chunkstore(store, "gc", cwd=tmp_path)
            chunkstore(store, "verify", "--read-data", cwd=tmp_path)
    assert killed > 0, "every put finished before its kill: the test did not crash anything"

    summary = json.loads(chunkstore(store, "put", source.name, "--json", cwd=tmp_path).stdout)
    source_file_count = sum(1 for path in source.rglob("*") if path.is_file())
    assert summary["files"] == source_file_count and summary["errors"] == 0
    assert assert_listed_files_restore_exactly(store, source, tmp_path / "restored") == source_file_count
    chunkstore(store, "gc", cwd=tmp_path)
    chunkstore(store, "verify", "--read-data", cwd=tmp_path)
    with Store.open(str(store)) as opened:
        assert_no_garbage(opened)
        assert_verify_clean(opened)

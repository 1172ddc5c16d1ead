"""put, rm and gc killed with SIGKILL at random moments, one after another on one store (a folder,
or s3:// with its catalog in DynamoDB; of storage format 1, or of format 2 with its packs, pages
and gc rounds): after each, verify --read-data passes, every listed file restores exactly as one
of the contents it may hold (a put or rm cut short may or may not have landed), and no file that
nobody removed is ever missing. At the end, once a put and a gc ran to their end, gc has left no
garbage: a killed command's session is dead as soon as its process is gone (same host), so its
pending packs are collected then.

Each command is killed after a seeded random delay of up to 1.2 times what the same command
took the last time it ran to its end, so kills land anywhere from start-up to the last commit;
about one run in four is let finish, which keeps the estimates current.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tiers import scale

from chunkstore import Store
from support.clihelpers import COMMAND_TIMEOUT_SECONDS, run_cli
from support.faultkit import Corpus, backend_of, report_figures, use_small_segments
from support.storechecks import assert_no_garbage, assert_verify_clean

ITERATIONS = scale(4, 40)
FIRST_ESTIMATE_SECONDS = 1.5
LET_FINISH = 0.25
COMMAND_WEIGHTS = {"put": 3, "rm": 2, "gc": 2}


class ExpectedStore:
    """What the store may hold: each name's possible contents, and the names it must hold."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.possible: dict[str, set[bytes]] = {}
        self.must_exist: set[str] = set()

    def source_names(self) -> list[str]:
        return sorted(
            path.relative_to(self.corpus.root).as_posix() for path in self.corpus.root.rglob("*") if path.is_file()
        )

    def put(self, finished: bool) -> None:
        for name in self.source_names():
            content = (self.corpus.root / name).read_bytes()
            if finished:
                self.possible[name] = {content}
                self.must_exist.add(name)
            else:
                self.possible.setdefault(name, set()).add(content)

    def rm(self, names: list[str], finished: bool) -> None:
        for name in names:
            (self.corpus.root / name).unlink()
            self.must_exist.discard(name)
            if finished:
                self.possible.pop(name, None)


def run_and_maybe_kill(store: str, args: list[str], cwd, delay: float | None) -> tuple[bool, float]:
    """Run `chunkstore --store STORE ARGS`; SIGKILL it after delay seconds (None: let it finish).
    Returns whether it was killed, and how long it ran."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "chunkstore_cli", "--store", store, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.wait(timeout=delay if delay is not None else COMMAND_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    # communicate() also reaps the child: a zombie would still count as a live session to gc.
    _, errors = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    elapsed = time.monotonic() - started
    if process.returncode == -signal.SIGKILL:
        return True, elapsed
    assert process.returncode == 0 and "Traceback" not in errors, (args, process.returncode, errors)
    return False, elapsed


def check_restores(store: str, expected: ExpectedStore, work, destination) -> int:
    """verify --read-data passes; every listed file restores as one of its possible contents; every
    file that must exist is listed. Returns how many files were checked."""
    run_cli(store, "verify", "--read-data", cwd=work)
    listed = {entry["name"] for entry in json.loads(run_cli(store, "ls", "--json", cwd=work).stdout)}
    assert expected.must_exist <= listed, f"lost: {sorted(expected.must_exist - listed)}"
    assert listed <= expected.possible.keys(), f"never put: {sorted(listed - expected.possible.keys())}"
    if not listed:
        return 0
    run_cli(store, "restore", "data", "-o", destination, cwd=work)
    restored = {path.relative_to(destination).as_posix() for path in destination.rglob("*") if path.is_file()}
    assert restored == listed
    for name in listed:
        assert (destination / name).read_bytes() in expected.possible[name], f"{name} restored wrong bytes"
    shutil.rmtree(destination)
    return len(listed)


def change_source(corpus: Corpus, rng: random.Random, iteration: int) -> None:
    """Two new files and, when there are some, one changed."""
    existing = sorted(path.relative_to(corpus.root).as_posix() for path in corpus.root.rglob("*") if path.is_file())
    for index in range(2):
        corpus.write(f"data/{iteration:03d}-{index}.bin")
    if existing:
        corpus.write(rng.choice(existing))


@pytest.mark.parametrize("storage_format", [1, 2], ids=lambda storage_format: f"format{storage_format}")
def test_put_rm_and_gc_killed_at_random_moments_lose_nothing(new_backend, tmp_path, storage_format):
    objects = new_backend(tmp_path)
    store = objects.url
    work = tmp_path / "work"
    corpus = Corpus.create(work, seed="crash loop", block_count=16)
    expected = ExpectedStore(corpus)
    rng = random.Random("crash loop")
    run_cli(store, "init", "--avg-size", "4K", "--format", str(storage_format), *objects.init_options(), cwd=tmp_path)
    if storage_format == 2:
        use_small_segments(store)  # files of several pages: puts write page items, gc deletes some
    estimates = dict.fromkeys(COMMAND_WEIGHTS, FIRST_ESTIMATE_SECONDS)
    kills, files_checked = 0, 0
    for iteration in range(ITERATIONS):
        command = rng.choices(list(COMMAND_WEIGHTS), weights=list(COMMAND_WEIGHTS.values()))[0]
        # rm names only files surely stored: one whose put was killed may not be (rm would exit 3).
        if command == "rm" and not expected.must_exist:
            command = "put"
        delay = None if rng.random() < LET_FINISH else rng.uniform(0, 1.2 * estimates[command])
        if command == "put":
            change_source(corpus, rng, iteration)
            killed, elapsed = run_and_maybe_kill(store, ["put", "data"], work, delay)
            expected.put(finished=not killed)
        elif command == "rm":
            names = rng.sample(sorted(expected.must_exist), min(2, len(expected.must_exist)))
            killed, elapsed = run_and_maybe_kill(store, ["rm", *names], work, delay)
            expected.rm(names, finished=not killed)
        else:
            killed, elapsed = run_and_maybe_kill(store, ["gc"], work, delay)
        if not killed:
            estimates[command] = elapsed
        kills += killed
        files_checked += check_restores(store, expected, work, tmp_path / "restored")
    assert kills > 0, "every command finished before its kill: the test crashed nothing"

    run_cli(store, "put", "data", cwd=work)
    expected.put(finished=True)
    run_cli(store, "gc", cwd=work)
    files_checked += check_restores(store, expected, work, tmp_path / "restored")
    with Store.open(store) as opened:
        assert_no_garbage(opened)
        assert_verify_clean(opened)
    report_figures(
        "crash loop",
        {
            "backend": backend_of(store),
            "storage_format": storage_format,
            "iterations": ITERATIONS,
            "kills": kills,
            "files_checked": files_checked,
            "problems": 0,
        },
    )

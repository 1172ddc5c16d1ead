"""Run the real `chunkstore` command in a subprocess against a store in a temporary folder.

Every run is checked for what must hold whatever the command: no Python traceback
ever reaches the user, the exit code is the one the test expects, a failing command
explains itself on stderr in lines that start with `chunkstore:` (or with click's
usage message), and a command that succeeds writes nothing to stderr (no progress
bar when stderr is not a terminal).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Small chunks, so files of a few hundred KiB are cut into dozens of chunks.
TEST_AVG_SIZE = "4K"


def chunkstore_command() -> list[str]:
    """The console script installed with the project, or the same entry point through -m."""
    script = Path(sys.executable).with_name("chunkstore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    err: str

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def is_click_usage_error(err: str) -> bool:
    """Click's message for a bad command line: the usage and an `Error: ` line, or (for an
    option missing its value) the `Error: ` line alone."""
    lines = err.splitlines()
    return bool(lines) and (lines[0].startswith("Usage: chunkstore") or lines[0].startswith("Error: ")) and any(
        line.startswith("Error: ") for line in lines)


def check_error_output(run: Run) -> None:
    """A failing command prints click's usage message or lines that start with `chunkstore: `."""
    lines = run.err_lines
    assert lines, f"chunkstore {' '.join(run.args)} exited {run.returncode} without a message on stderr"
    if not lines[0].startswith("chunkstore: "):
        assert is_click_usage_error(run.err), run.err
    else:
        unprefixed = [line for line in lines if not line.startswith("chunkstore: ")]
        assert not unprefixed, f"stderr lines without the `chunkstore: ` prefix: {unprefixed}"


class Chunkstore:
    """Runs `chunkstore` with CHUNKSTORE_STORE set to store and the working folder set to workdir."""

    def __init__(self, store: Path, workdir: Path):
        self.store = store
        self.workdir = workdir
        self.env = {**os.environ, "CHUNKSTORE_STORE": str(store)}

    def __call__(self, *args, expect: int = 0, input: bytes | None = None, cwd: Path | None = None) -> Run:
        arguments = tuple(str(arg) for arg in args)
        completed = subprocess.run([*chunkstore_command(), *arguments], input=input, capture_output=True,
                                   cwd=cwd or self.workdir, env=self.env, timeout=300, check=False)
        run = Run(arguments, completed.returncode, completed.stdout, completed.stderr.decode(errors="replace"))
        assert "Traceback" not in run.err, f"chunkstore {' '.join(arguments)} printed a traceback:\n{run.err}"
        assert run.returncode == expect, (
            f"chunkstore {' '.join(arguments)} exited {run.returncode}, expected {expect}\n"
            f"stdout:\n{run.out}\nstderr:\n{run.err}"
        )
        if run.returncode != 0:
            check_error_output(run)
        else:
            assert run.err == "", f"chunkstore {' '.join(arguments)} succeeded but wrote to stderr:\n{run.err}"
        return run

    def objects(self) -> set[Path]:
        """The chunk object files of the store."""
        return {path for path in (self.store / "chunks").rglob("*") if path.is_file()}

    def json(self, *args, **options):
        """Run a command that prints JSON and return the parsed document."""
        return json.loads(self(*args, **options).stdout)


def assert_one_error(run: Run, *fragments: str) -> None:
    """The command failed with exactly one `chunkstore: ` line on stderr, which says what went wrong."""
    assert len(run.err_lines) == 1 and run.err.startswith("chunkstore: "), run.err
    for fragment in fragments:
        assert fragment in run.err, f"{fragment!r} not in {run.err!r}"


def assert_usage_error(run: Run, *fragments: str) -> None:
    """The command failed with click's usage message (exit 2), which says what went wrong."""
    assert run.returncode == 2 and is_click_usage_error(run.err), run.err
    for fragment in fragments:
        assert fragment in run.err, f"{fragment!r} not in {run.err!r}"


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def text_bytes(size: int, seed: int) -> bytes:
    """Compressible bytes (words from a small vocabulary), the same for the same seed."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
    return bytes(out[:size])


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

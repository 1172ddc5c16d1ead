"""Run the real `chunkstore` command in a subprocess against a store in a temporary folder,
or under a prefix of a bucket on the moto server (an s3:// store, its catalog in DynamoDB).

Every run is checked for what must hold whatever the command: no Python traceback
ever reaches the user, the exit code is the one the test expects, a failing command
explains itself on stderr in lines that start with `chunkstore:` (one line for a
usage error), and a command that succeeds writes nothing to stderr (no progress
bar when stderr is not a terminal).
"""

from __future__ import annotations

import json
import os
import pty
import random
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# CHUNKS and CONFIG_KEY are imported from here by the command-line tests.
from .storeobjects import CHUNKS, CONFIG_KEY, LocalObjects, S3Objects  # noqa: F401

# Small chunks, so files of a few hundred KiB are cut into dozens of chunks.
TEST_AVG_SIZE = "4K"

# The options given before the command that take a value (cli/main.py).
GLOBAL_OPTIONS_WITH_A_VALUE = {"--store", "--passphrase-file", "--concurrency"}


def chunkstore_command() -> list[str]:
    """The console script installed with the project, or the same entry point through -m."""
    script = Path(sys.executable).with_name("chunkstore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chunkstore_cli"]


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
    """The message for a bad command line: one line, `chunkstore: usage: WHAT (see 'COMMAND --help')`."""
    lines = err.splitlines()
    return len(lines) == 1 and lines[0].startswith("chunkstore: usage: ") and lines[0].endswith(" --help')")


def check_error_output(run: Run) -> None:
    """A failing command prints lines that start with `chunkstore: ` (one line for a usage error)."""
    lines = run.err_lines
    assert lines, f"chunkstore {' '.join(run.args)} exited {run.returncode} without a message on stderr"
    if lines[0].startswith("chunkstore: usage: "):
        assert is_click_usage_error(run.err), run.err
    else:
        unprefixed = [line for line in lines if not line.startswith("chunkstore: ")]
        assert not unprefixed, f"stderr lines without the `chunkstore: ` prefix: {unprefixed}"


class UndoableObjects:
    """A store's objects, changed through this and put back by undo(): the tests of a module
    can share one store that each damages in its own way."""

    def __init__(self, objects: LocalObjects | S3Objects):
        self._objects = objects
        self._originals: dict[PurePosixPath, bytes | None] = {}

    def __getattr__(self, name):
        # Everything that leaves the objects as they are.
        return getattr(self._objects, name)

    def write(self, key: PurePosixPath, data: bytes) -> None:
        self._remember(key)
        self._objects.write(key, data)

    def delete(self, key: PurePosixPath) -> None:
        self._remember(key)
        self._objects.delete(key)

    def _remember(self, key: PurePosixPath) -> None:
        if key not in self._originals:
            self._originals[key] = self._objects.read(key) if self._objects.exists(key) else None

    def undo(self) -> None:
        for key, original in self._originals.items():
            if original is not None:
                self._objects.write(key, original)
            elif self._objects.exists(key):
                self._objects.delete(key)
        self._originals.clear()


def objects_of(store: Path | str) -> LocalObjects | None:
    """The objects of the store at a folder; None for an s3:// URL, which says nothing of its table."""
    return None if str(store).startswith("s3://") else LocalObjects(Path(store))


def command_of(arguments: tuple[str, ...]) -> str | None:
    """The command in a command line: the first argument that is not a global option or its value."""
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        if not argument.startswith("-"):
            return argument
        position += 2 if argument in GLOBAL_OPTIONS_WITH_A_VALUE else 1
    return None


class Chunkstore:
    """Runs `chunkstore` with CHUNKSTORE_STORE set to store and the working folder set to workdir.

    store is a folder or an s3:// URL, or the objects of a store (LocalObjects, S3Objects): then
    `init` run without --table is given the options that store needs (for s3://, its table and
    --create), so a test's `init` and its own options work on either kind of store. An s3://
    store is reached with the AWS_* variables of the test process (see tests/support/moto_fixtures.py)."""

    def __init__(self, store: Path | str | LocalObjects | S3Objects | UndoableObjects, workdir: Path):
        self.backend = objects_of(store) if isinstance(store, (Path, str)) else store
        self.store = store if isinstance(store, (Path, str)) else store.url
        self.workdir = workdir
        self.env = {**os.environ, "CHUNKSTORE_STORE": str(self.store)}

    def command_line(self, *args) -> list[str]:
        """The command line that runs chunkstore with args, with the options `init` needs on this store."""
        arguments = [str(arg) for arg in args]
        if (
            self.backend is not None
            and command_of(tuple(arguments)) == "init"
            and "--table" not in arguments
            and not {"--help", "-h"} & set(arguments)
        ):
            arguments += self.backend.init_options()
        return [*chunkstore_command(), *arguments]

    def __call__(self, *args, expect: int = 0, input: bytes | None = None, cwd: Path | None = None) -> Run:
        command = self.command_line(*args)
        arguments = tuple(command[len(chunkstore_command()) :])
        completed = subprocess.run(
            command, input=input, capture_output=True, cwd=cwd or self.workdir, env=self.env, timeout=300, check=False
        )
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

    def objects(self) -> set[PurePosixPath]:
        """The keys of the store's chunk objects (read and damage them through self.backend)."""
        return self.backend.keys()

    def json(self, *args, **options):
        """Run a command that prints JSON and return the parsed document."""
        return json.loads(self(*args, **options).stdout)


def run_on_terminal(
    runner: Chunkstore, *args, stdout_on_terminal: bool = False, stderr_on_terminal: bool = True
) -> tuple[int, bytes, bytes]:
    """Run chunkstore with stderr and/or stdout on pseudo-terminals (100 columns wide), the
    other in a file; return its exit code and what stdout and stderr received."""
    streams, controllers = {}, {}
    for name, on_terminal in (("stdout", stdout_on_terminal), ("stderr", stderr_on_terminal)):
        if on_terminal:
            controller, streams[name] = pty.openpty()
            controllers[controller] = name
        else:
            # A file, not a pipe: nothing reads it while the terminals are read.
            streams[name] = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed once the command exits
    process = subprocess.Popen(
        runner.command_line(*args),
        cwd=runner.workdir,
        stdin=subprocess.DEVNULL,
        env={**runner.env, "COLUMNS": "100", "TERM": "xterm-256color"},
        **streams,
    )
    received = {name: bytearray() for name in streams}
    for name in controllers.values():
        os.close(streams[name])
    while controllers:
        ready, _, _ = select.select(list(controllers), [], [], 60)
        assert ready, "chunkstore stopped writing to the terminal without exiting"
        for controller in ready:
            try:
                block = os.read(controller, 65536)
            except OSError:  # EIO: the command closed its end of the terminal
                block = b""
            if block:
                received[controllers[controller]] += block
            else:
                os.close(controller)
                del controllers[controller]
    code = process.wait(timeout=60)
    for name, stream in streams.items():
        if not isinstance(stream, int):
            stream.seek(0)
            received[name] += stream.read()
            stream.close()
    return code, bytes(received["stdout"]), bytes(received["stderr"])


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


def run_command(*args: str, expect: int = 0, cwd=None) -> subprocess.CompletedProcess:
    """Run `chunkstore ARGS` in the environment as it is (no store of its own), with the checks above."""
    done = subprocess.run(
        [*chunkstore_command(), *args], capture_output=True, cwd=cwd, env=os.environ.copy(), timeout=300
    )
    err = done.stderr.decode()
    assert done.returncode == expect, f"exit {done.returncode}: {err}"
    assert "Traceback" not in err
    if expect:
        check_error_output(Run(args, done.returncode, done.stdout, err))
    return done

"""The tools a benchmark runs, driven through their command lines exactly as a user would.

Each tool says how to init a repository, back up a folder, and restore it; `run_measured`
runs one command and measures its wall time and its own peak RSS (Linux).

Peak RSS cannot come from wait4(2) or RUSAGE_CHILDREN here: Linux carries a process's
RSS high-water mark across exec, so every child of this (large) Python process would
report at least the parent's size. GNU time forks the command from a small process and
prints its true maximum (%M); without GNU time, the command's VmHWM in /proc is polled.
"""

from __future__ import annotations

import compileall
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

GNU_TIME = "/usr/bin/time"
# How often the fallback reads /proc/PID/status; VmHWM only grows, so a late read loses little.
POLL_SECONDS = 0.002

# Labels of the two backups of a run (borg needs a name per archive).
FIRST_BACKUP = "put"
UNCHANGED_BACKUP = "reput"


class ToolError(RuntimeError):
    """A benchmarked command failed: the benchmark stops rather than report a figure of a failed run."""


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_bytes: int
    stdout: str


def run_measured(command: Command) -> Measurement:
    """Run a command to completion; its wall time (perf_counter around the process) and peak RSS.

    Dirty pages are flushed first, so that no command pays for the writeback of the one before."""
    environment = {**os.environ, **command.env}
    os.sync()
    with tempfile.TemporaryDirectory(prefix="chunkstore-bench-") as scratch:
        rss_path = Path(scratch) / "peak-rss-kib"
        use_gnu_time = gnu_time_works()
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *command.argv] if use_gnu_time else command.argv
        with open(Path(scratch) / "stdout", "w+b") as stdout, open(Path(scratch) / "stderr", "w+b") as stderr:
            start = time.perf_counter()
            process = subprocess.Popen(
                argv, cwd=command.cwd, env=environment, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )
            if use_gnu_time:
                process.wait()
            else:
                polled_peak = _wait_polling_peak_rss(process)
            seconds = time.perf_counter() - start
            stdout.seek(0)
            stderr.seek(0)
            output = stdout.read().decode(errors="replace")
            if process.returncode != 0:
                message = stderr.read().decode(errors="replace").strip()[-2000:]
                raise ToolError(f"{' '.join(command.argv)} exited {process.returncode} (in {command.cwd}): {message}")
        peak = _read_gnu_time(rss_path) if use_gnu_time else polled_peak
    return Measurement(seconds, peak, output)


@functools.cache
def gnu_time_works() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "peak"
        completed = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(path), "true"], capture_output=True)
        return completed.returncode == 0 and _read_gnu_time(path) > 0


def _read_gnu_time(path: Path) -> int:
    """GNU time's %M (KiB) is the file's last line (a failed command adds a line before it)."""
    try:
        return int(path.read_text().split()[-1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0


def _wait_polling_peak_rss(process: subprocess.Popen) -> int:
    status_path = Path(f"/proc/{process.pid}/status")
    peak = 0
    while process.poll() is None:
        try:
            match = re.search(rb"^VmHWM:\s*(\d+) kB", status_path.read_bytes(), re.MULTILINE)
        except OSError:
            match = None
        if match:
            peak = max(peak, int(match.group(1)) * 1024)
        time.sleep(POLL_SECONDS)
    return peak


def run_text(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


class Tool(ABC):
    """One backup tool. Its repository, restore target and private state (caches) live in
    the workspace a run gives it, so runs start from nothing and never share a cache."""

    name: str

    @abstractmethod
    def available(self) -> bool:
        """Whether the tool is installed."""

    @abstractmethod
    def version(self) -> str:
        """The tool's own version line, for the report."""

    @abstractmethod
    def describe_settings(self) -> str:
        """The data-shaping settings this benchmark uses, for the report."""

    @abstractmethod
    def init(self, workspace: Path) -> Command:
        """Create an empty repository at repository(workspace)."""

    @abstractmethod
    def backup(self, workspace: Path, source: Path, label: str) -> Command:
        """Back up source (a folder) under the name source.name, run from source's parent."""

    @abstractmethod
    def restore(self, workspace: Path, source: Path, target: Path) -> Command:
        """Restore the backup into target (an existing empty folder) as target/source.name."""

    @staticmethod
    def repository(workspace: Path) -> Path:
        return workspace / "repository"


class Chunkstore(Tool):
    name = "chunkstore"

    def __init__(self, storage_format: int | None = None) -> None:
        """storage_format: the `init --format` to measure; None leaves init's default."""
        self.init_options = [] if storage_format is None else ["--format", str(storage_format)]
        _compile_bytecode(("chunkstore", "chunkstore_cli"))
        # The console script installed next to this interpreter, as `pip install` makes it.
        script = Path(sys.executable).with_name("chunkstore")
        on_path = shutil.which("chunkstore")
        if script.exists():
            self.argv = [str(script)]
            _check_command_library()
        elif on_path:
            self.argv = [on_path]
        else:
            self.argv = [sys.executable, "-m", "chunkstore_cli"]
            _check_command_library()

    def available(self) -> bool:
        return True

    def version(self) -> str:
        return run_text([*self.argv, "--version"])

    def describe_settings(self) -> str:
        return f"defaults of `{' '.join(['chunkstore init', *self.init_options])}`"

    def _store(self, workspace: Path) -> list[str]:
        return [*self.argv, "--store", str(self.repository(workspace))]

    def init(self, workspace: Path) -> Command:
        return Command([*self._store(workspace), "init", *self.init_options])

    def backup(self, workspace: Path, source: Path, label: str) -> Command:
        return Command([*self._store(workspace), "put", source.name], cwd=source.parent)

    def restore(self, workspace: Path, source: Path, target: Path) -> Command:
        return Command([*self._store(workspace), "restore", source.name, "-o", str(target)])

    def stats(self, workspace: Path) -> Command:
        return Command([*self._store(workspace), "stats", "--json"])


def _check_command_library() -> None:
    """Stop unless the chunkstore command runs the library this process imports.

    The console script imports whatever the interpreter's installation provides (an editable
    install of one checkout), while `python -m benchmarks` run from another checkout imports
    that checkout's: a comparison of two checkouts would then measure the installed one twice."""
    spec = importlib.util.find_spec("chunkstore")
    here = os.path.realpath(spec.origin) if spec and spec.origin else None
    # A new interpreter started outside any checkout finds what the console script finds.
    with tempfile.TemporaryDirectory() as elsewhere:
        command = subprocess.run(
            [sys.executable, "-c", "import chunkstore; print(chunkstore.__file__)"],
            cwd=elsewhere,
            capture_output=True,
            text=True,
        )
    there = os.path.realpath(command.stdout.strip()) if command.returncode == 0 else None
    if there != here:
        raise SystemExit(
            f"the chunkstore command would run the library at {there or '(none found)'}, "
            f"this benchmark imports the one at {here}: install this checkout "
            "(pip install -e .) or run the benchmark from the installed one"
        )


def _compile_bytecode(packages: tuple[str, ...]) -> None:
    """Compile the packages the console script runs, as `pip install .` does when it installs them.

    An editable install under PYTHONDONTWRITEBYTECODE (set on this machine) would otherwise
    compile every module again in every command: 0.17 s against 0.14 s for `chunkstore
    --version`, a cost no installed copy pays. compileall writes the caches whatever that
    variable says, and Python reads them whatever it says."""
    for package in packages:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


class EncryptedChunkstore(Chunkstore):
    """chunkstore with `init --encrypt`: keyed IDs and chunker, per-object AEAD, verify after write."""

    name = "chunkstore-encrypted"
    PASSPHRASE = "benchmark passphrase"

    def describe_settings(self) -> str:
        return "defaults of `chunkstore init --encrypt` (Argon2id unlock on every command)"

    def _command(self, argv: list[str], cwd: Path | None = None) -> Command:
        return Command(argv, cwd=cwd, env={"CHUNKSTORE_PASSPHRASE": self.PASSPHRASE})

    def init(self, workspace: Path) -> Command:
        return self._command([*self._store(workspace), "init", "--encrypt"])

    def backup(self, workspace: Path, source: Path, label: str) -> Command:
        command = super().backup(workspace, source, label)
        return self._command(command.argv, command.cwd)

    def restore(self, workspace: Path, source: Path, target: Path) -> Command:
        return self._command(super().restore(workspace, source, target).argv)

    def stats(self, workspace: Path) -> Command:
        return self._command(super().stats(workspace).argv)


class Restic(Tool):
    name = "restic"

    def available(self) -> bool:
        return shutil.which("restic") is not None

    def version(self) -> str:
        return run_text(["restic", "version"])

    def describe_settings(self) -> str:
        return "repository version 2 (the default of `restic init`), compression auto (zstd); always encrypted"

    def _environment(self, workspace: Path) -> dict[str, str]:
        return {
            "RESTIC_PASSWORD": "x",
            "RESTIC_REPOSITORY": str(self.repository(workspace)),
            "RESTIC_CACHE_DIR": str(workspace / "cache"),
        }

    def init(self, workspace: Path) -> Command:
        return Command(["restic", "init"], env=self._environment(workspace))

    def backup(self, workspace: Path, source: Path, label: str) -> Command:
        return Command(["restic", "backup", source.name], cwd=source.parent, env=self._environment(workspace))

    def restore(self, workspace: Path, source: Path, target: Path) -> Command:
        return Command(["restic", "restore", "latest", "--target", str(target)], env=self._environment(workspace))


class Borg(Tool):
    name = "borg"
    COMPRESSION = "zstd,3"

    def available(self) -> bool:
        return shutil.which("borg") is not None

    def version(self) -> str:
        return run_text(["borg", "--version"])

    def describe_settings(self) -> str:
        return f"init -e none, create --compression {self.COMPRESSION}"

    def _environment(self, workspace: Path) -> dict[str, str]:
        # BORG_BASE_DIR keeps borg's caches and security records inside the workspace.
        return {
            "BORG_PASSPHRASE": "",
            "BORG_BASE_DIR": str(workspace / "home"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, workspace: Path) -> Command:
        return Command(
            ["borg", "init", "-e", "none", str(self.repository(workspace))], env=self._environment(workspace)
        )

    def backup(self, workspace: Path, source: Path, label: str) -> Command:
        return Command(
            [
                "borg",
                "create",
                "--compression",
                self.COMPRESSION,
                f"{self.repository(workspace)}::{label}",
                source.name,
            ],
            cwd=source.parent,
            env=self._environment(workspace),
        )

    def restore(self, workspace: Path, source: Path, target: Path) -> Command:
        # borg extracts into the working folder; the first backup and the re-backup hold the same files.
        return Command(
            ["borg", "extract", f"{self.repository(workspace)}::{FIRST_BACKUP}"],
            cwd=target,
            env=self._environment(workspace),
        )


TOOLS = {tool.name: tool for tool in (Chunkstore, Restic, Borg)}
PEERS = ("restic", "borg")


def folder_bytes(root: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under root, as `du -b` and `du -B1` count them."""
    apparent = allocated = 0
    for folder, _, filenames in os.walk(root):
        for filename in filenames:
            status = os.lstat(os.path.join(folder, filename))
            apparent += status.st_size
            allocated += status.st_blocks * 512
    return apparent, allocated


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"

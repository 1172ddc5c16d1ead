"""Run `chunkstore serve` as a real process and talk to it over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT_SECONDS = 30
# The large-transfer memory tests move this many MB each way (300 by default; set
# CHUNKSTORE_TEST_SERVE_MB=2048 to check a 2 GB upload) and allow the server this much growth.
TRANSFER_MB = int(os.environ.get("CHUNKSTORE_TEST_SERVE_MB", "300"))
MAX_GROWTH_MIB = 100
BLOCK = 1024 * 1024
_ADDRESS = re.compile(r"on (https?://\S+?)/ ")


def chunkstore_command() -> list[str]:
    script = Path(sys.executable).with_name("chunkstore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chunkstore_cli"]


def environment(changes: dict | None, *, without: tuple[str, ...] = ()) -> dict:
    """os.environ with changes applied; a change to None removes the variable."""
    merged = {key: value for key, value in os.environ.items() if key not in without}
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def run_chunkstore(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*chunkstore_command(), *args], capture_output=True, text=True, timeout=timeout, env=environment(env)
    )


def init_store(path: Path, avg_size: str = "64K", storage_format: str | None = None) -> str:
    """A new store at path, of init's default storage format unless storage_format is given."""
    format_options = ("--format", storage_format) if storage_format else ()
    result = run_chunkstore("--store", str(path), "init", *format_options, "--avg-size", avg_size)
    assert result.returncode == 0, result.stderr
    return str(path)


@dataclass
class ServerProcess:
    store_url: str
    args: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    log_path: Path | None = None
    base_url: str = ""
    process: subprocess.Popen | None = None
    # Set: run tests/server/run_server.py with these ServerSettings fields instead of the command line.
    library_settings: dict | None = None

    def start(self) -> ServerProcess:
        """Start on a free port; wait for the line that names the address."""
        self.log_path = self.log_path or Path(self.store_url).with_name(Path(self.store_url).name + "-serve.log")
        if self.library_settings is None:
            command = [*chunkstore_command(), "--store", self.store_url, "serve", "--port", "0", *self.args]
        else:
            command = [
                sys.executable,
                str(Path(__file__).with_name("run_server.py")),
                self.store_url,
                json.dumps(self.library_settings),
            ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment(self.env, without=("CHUNKSTORE_TOKENS",))
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            match = _ADDRESS.search(self.log_path.read_text(errors="replace"))
            if match:
                self.base_url = match.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.log}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"serve did not start: {self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, token: str | None = None, **options) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, **{"timeout": 120, **options})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB, from /proc."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0])
    return figures


def generated_blocks(digest):
    """TRANSFER_MB of incompressible, non-repeating data, made on the fly (never held whole)."""
    for counter in range(TRANSFER_MB):
        block = hashlib.shake_256(counter.to_bytes(8, "big")).digest(BLOCK)
        digest.update(block)
        yield block


def downloaded_digest(client: httpx.Client, path: str) -> bytes:
    """The SHA-256 of a download, streamed piece by piece (never held whole)."""
    received = hashlib.sha256()
    with client.stream("GET", path) as response:
        for piece in response.iter_bytes():
            received.update(piece)
    return received.digest()

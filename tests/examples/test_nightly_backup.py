"""examples/nightly-backup.sh run for real: the installed `chunkstore` console script, a store
in a temporary folder and real source folders, with the script's settings in its environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "nightly-backup.sh"
# pip installs the `chunkstore` console script next to the Python running the tests.
CONSOLE_SCRIPTS = Path(sys.executable).parent
EXIT_LOCKED = 75
EXIT_SETTINGS = 78


def source_tree(root: Path, seed: int) -> None:
    """Files worth backing up: several chunks of random bytes, a duplicate, an empty file,
    a symlink, a name with spaces and accents, an executable mode."""
    noise = os.urandom(300_000)
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "noise.bin").write_bytes(noise)
    (root / "data" / "deep" / "noise copy.bin").write_bytes(noise)
    (root / "data" / "empty").write_bytes(b"")
    (root / "notes été.txt").write_text(f"seed {seed}\n" * 1000)
    tool = root / "tool.sh"
    tool.write_text("#!/bin/sh\necho hello\n")
    tool.chmod(0o755)
    (root / "latest").symlink_to("data/noise.bin")


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under root: its kind, permission bits and content (a symlink's target)."""
    entries = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries[relative] = ("symlink", 0, os.readlink(path).encode())
        elif path.is_dir():
            entries[relative] = ("folder", 0, b"")
        else:
            entries[relative] = ("file", stat.S_IMODE(path.stat().st_mode), path.read_bytes())
    return entries


def stored_name(folder: Path) -> str:
    """The name `put` stores a folder under: its path made relative."""
    return folder.as_posix().lstrip("/")


class Backup:
    """The script's settings for one store and two source folders, and ways to run it."""

    def __init__(self, workdir: Path):
        self.store = workdir / "store"
        # A space in a folder's name: BACKUP_PATHS is split on ':' only.
        self.folders = [workdir / "source one", workdir / "source-two"]
        self.log = workdir / "backup.log"
        self.lock = workdir / "backup.lock"
        self.env = {
            name: value for name, value in os.environ.items() if not name.startswith(("BACKUP_", "CHUNKSTORE_"))
        }
        self.env.update(
            PATH=f"{CONSOLE_SCRIPTS}{os.pathsep}{os.environ['PATH']}",
            BACKUP_STORE=str(self.store),
            BACKUP_PATHS=":".join(map(str, self.folders)),
            BACKUP_LOG=str(self.log),
            BACKUP_LOCK=str(self.lock),
            # The whole store is a few chunks: read them all, so damage is always found.
            BACKUP_VERIFY_SUBSET="100",
        )

    def run(self, **settings: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT)],
            env={**self.env, **settings},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def chunkstore(self, *arguments: str) -> subprocess.CompletedProcess:
        """Run the chunkstore command on the store (it must succeed)."""
        return subprocess.run(
            ["chunkstore", "--store", str(self.store), *arguments],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def snapshots(self) -> list[dict]:
        return json.loads(self.chunkstore("snapshots", "--json").stdout)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def backup(tmp_path) -> Backup:
    assert (CONSOLE_SCRIPTS / "chunkstore").exists(), (
        f"no chunkstore console script in {CONSOLE_SCRIPTS}: pip install -e ."
    )
    backup = Backup(tmp_path)
    for seed, folder in enumerate(backup.folders):
        source_tree(folder, seed)
    backup.chunkstore("init")
    return backup


def assert_logged(lines: list[str], pattern: str) -> None:
    """One of the lines is a timestamped script line matching pattern."""
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} chunkstore-backup\[\d+\]: " + pattern)
    assert any(line.match(text) for text in lines), f"no log line matches {pattern!r} in:\n" + "\n".join(lines)


def test_two_nights_store_everything_then_find_it_unchanged_and_restore_byte_exact(backup, tmp_path):
    files = sum(entry[0] != "folder" for folder in backup.folders for entry in tree(folder).values())

    for _night in range(2):
        result = backup.run()
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    lines = backup.log_lines()
    for step in ["put", *(f"forget {folder}" for folder in backup.folders), "gc", "verify"]:
        assert sum(f"]: {step} ok in " in line for line in lines) == 2, step
    assert_logged(lines, "backup finished: every step succeeded$")

    first, second = backup.snapshots()
    assert first["paths"] == second["paths"] == [stored_name(folder) for folder in backup.folders]
    assert (first["stored"] + first["duplicate"], first["unchanged"], first["errors"]) == (files, 0, 0)
    assert (second["stored"], second["duplicate"], second["unchanged"], second["deleted"]) == (0, 0, files, 0)
    assert f"{files} files: 0 stored, 0 duplicate, {files} unchanged, 0 errors" in "\n".join(lines)

    for as_of in ([], ["--as-of", first["id"][:8]]):
        restored = tmp_path / f"restored{len(as_of)}"
        for folder in backup.folders:
            backup.chunkstore("restore", str(folder), "-o", str(restored), *as_of)
            assert tree(restored / stored_name(folder)) == tree(folder)


def test_a_deleted_file_leaves_the_latest_restore_and_stays_in_the_past(backup, tmp_path):
    # An empty keep policy skips forget, so every past state stays reachable.
    keep_everything = {"BACKUP_FORGET": ""}
    assert backup.run(**keep_everything).returncode == 0
    before = tree(backup.folders[0])
    (backup.folders[0] / "notes été.txt").unlink()
    assert backup.run(**keep_everything).returncode == 0

    assert not any("]: forget" in line for line in backup.log_lines())
    first, second = backup.snapshots()
    assert second["deleted"] == 1
    latest, past = tmp_path / "latest", tmp_path / "past"
    backup.chunkstore("restore", str(backup.folders[0]), "-o", str(latest))
    backup.chunkstore("restore", str(backup.folders[0]), "-o", str(past), "--as-of", first["id"])
    assert tree(latest / stored_name(backup.folders[0])) == tree(backup.folders[0])
    assert tree(past / stored_name(backup.folders[0])) == before


def test_a_run_that_finds_the_lock_taken_does_nothing_and_exits_75(backup):
    with open(backup.lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = backup.run()
    assert result.returncode == EXIT_LOCKED
    assert f"another backup holds the lock {backup.lock}" in result.stderr
    assert_logged(
        backup.log_lines(),
        f"another backup holds the lock {re.escape(str(backup.lock))}; this run does nothing and exits 75$",
    )
    assert len(backup.log_lines()) == 1
    assert backup.snapshots() == []

    assert backup.run().returncode == 0


def test_a_missing_store_fails_put_skips_forget_and_gc_and_still_verifies(backup, tmp_path):
    missing = tmp_path / "no store here"
    result = backup.run(BACKUP_STORE=str(missing))

    assert result.returncode == 3
    lines = backup.log_lines()
    no_store = re.escape(f"chunkstore: no store at {missing}")
    assert_logged(lines, rf"put failed in \d+ s: exit 3, not found: {no_store}")
    assert_logged(lines, "forget and gc skipped: nothing is removed from the store after a failed put$")
    assert_logged(lines, rf"verify failed in \d+ s: exit 3, not found: {no_store}")
    assert_logged(lines, "backup finished with exit status 3")
    assert not any(" ok in " in line for line in lines)
    assert "put failed" in result.stderr and "verify failed" in result.stderr
    assert not missing.exists()


def test_a_put_that_skips_a_file_holds_back_forget_and_gc_but_verify_runs(backup):
    os.mkfifo(backup.folders[0] / "a fifo")
    result = backup.run()

    assert result.returncode == 1
    lines = backup.log_lines()
    assert_logged(
        lines, r"put failed in \d+ s: exit 1, error: chunkstore: .*a fifo: not a regular file \(FIFO\); skipped$"
    )
    assert_logged(lines, "forget and gc skipped")
    assert_logged(lines, r"verify ok in \d+ s$")
    assert not any("]: forget /" in line or "]: gc " in line for line in lines)
    # The readable files were stored all the same.
    assert len(backup.snapshots()) == 1


def test_a_damaged_pack_fails_verify_and_its_integrity_status_outranks_a_failed_put(backup):
    assert backup.run().returncode == 0
    pack = max(
        (path for path in (backup.store / "packs").rglob("*") if path.is_file()), key=lambda path: path.stat().st_size
    )
    damaged = bytearray(pack.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # a chunk's record, not the pack's table at its end
    pack.write_bytes(bytes(damaged))
    os.mkfifo(backup.folders[1] / "a fifo")

    result = backup.run()

    assert result.returncode == 4
    lines = backup.log_lines()
    assert_logged(lines, r"put failed in \d+ s: exit 1, error: ")
    assert_logged(lines, r"verify failed in \d+ s: exit 4, integrity error \(corrupt, missing or mismatched data\)")
    assert_logged(lines, "backup finished with exit status 4")


def test_the_passphrase_file_opens_an_encrypted_store_and_a_wrong_one_exits_5(backup, tmp_path):
    shutil.rmtree(backup.store)
    key, wrong_key = tmp_path / "key", tmp_path / "wrong key"
    key.write_bytes(os.urandom(32))
    wrong_key.write_bytes(os.urandom(32))
    backup.chunkstore("init", "--encrypt", "--key-file", str(key))

    assert backup.run(BACKUP_PASSPHRASE_FILE=str(key), BACKUP_VERIFY_SUBSET="0").returncode == 0
    result = backup.run(BACKUP_PASSPHRASE_FILE=str(wrong_key), BACKUP_VERIFY_SUBSET="0")

    assert result.returncode == 5
    assert_logged(backup.log_lines(), r"put failed in \d+ s: exit 5, wrong key or passphrase")
    assert_logged(backup.log_lines(), r"verify failed in \d+ s: exit 5, wrong key or passphrase")


def test_a_relative_folder_is_refused_before_anything_runs(backup):
    result = backup.run(BACKUP_PATHS=f"{backup.folders[0]}:relative/folder")

    assert result.returncode == EXIT_SETTINGS
    assert_logged(backup.log_lines(), "settings: BACKUP_PATHS: relative/folder is not an absolute path$")
    assert backup.snapshots() == []


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_service_and_the_timer(tmp_path):
    # systemd checks that ExecStart= exists, so the copy starts the script where it is.
    units = SCRIPT.parent / "systemd"
    service = (units / "chunkstore-backup.service").read_text()
    (tmp_path / "chunkstore-backup.service").write_text(re.sub(r"(?m)^ExecStart=.*$", f"ExecStart={SCRIPT}", service))
    shutil.copy(units / "chunkstore-backup.timer", tmp_path)

    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "chunkstore-backup.service"),
            str(tmp_path / "chunkstore-backup.timer"),
        ],
        capture_output=True,
        text=True,
    )
    # An unknown or misspelt setting is only a warning, so any output fails the test.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

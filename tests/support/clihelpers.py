"""Running the real `chunkstore` command against a store, checking it never prints a traceback."""

from __future__ import annotations

import subprocess

from .storechecks import CHUNKSTORE

COMMAND_TIMEOUT_SECONDS = 300


def run_cli(
    store, *args, cwd, expect: int | tuple[int, ...] = 0, input: bytes | None = None
) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [*CHUNKSTORE, "--store", str(store), *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    errors = completed.stderr.decode(errors="replace")
    assert "Traceback" not in errors, f"chunkstore {' '.join(map(str, args))} printed a traceback:\n{errors}"
    expected = expect if isinstance(expect, tuple) else (expect,)
    assert completed.returncode in expected, (
        f"chunkstore {' '.join(map(str, args))} exited {completed.returncode}, expected {expect}:\n{errors}"
    )
    if completed.returncode:
        assert errors.startswith("chunkstore: "), f"a failure without a clear message: {errors!r}"
    return completed

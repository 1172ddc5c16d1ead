"""The real command under faults: it succeeds, or exits 1 (an I/O or catalog error) or 4 (data
that fails its checks; 3 for a file an earlier failed put did not store) with one clear
`chunkstore:` line, never a traceback; afterwards the
store is whole. On stores of storage format 1 and 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chunkstore import Store
from support import faulty_cli
from support.clihelpers import run_cli
from support.faultkit import data_key_prefix, use_small_segments
from support.storechecks import assert_no_garbage, assert_verify_clean

FAULTY_CLI = [sys.executable, faulty_cli.__file__]

FAULT_NAMES = (
    "blob-put-error",
    "blob-get-error",
    "blob-get-truncated",
    "blob-delete-lost-reply",
    "blob-sync-error",
    "catalog-commit-lost-reply",
    "catalog-remove-error",
    "catalog-collect-error",
)


def faults_of(name: str, storage_format: int) -> dict:
    """The faults of name on a store of storage_format: reads and writes of its chunk objects or
    packs; gc's first collecting call is collect_candidates in format 1, and in format 2 the
    pack index's advance_round (the start of a round: the files here may leave nothing to doom)."""
    data = data_key_prefix(storage_format)
    collecting = "collect_candidates" if storage_format == 1 else "advance_round"
    return {
        "blob-put-error": {"blobs": [{"method": "put", "key_prefix": data}]},
        "blob-get-error": {"blobs": [{"method": "get", "key_prefix": data, "times": None}]},
        "blob-get-truncated": {"blobs": [{"method": "get", "kind": "truncate", "key_prefix": data, "times": None}]},
        "blob-delete-lost-reply": {"blobs": [{"method": "delete", "kind": "lost_reply"}]},
        "blob-sync-error": {"blobs": [{"method": "sync"}]},
        "catalog-commit-lost-reply": {"catalog": [{"method": "commit", "kind": "lost_reply"}]},
        "catalog-remove-error": {"catalog": [{"method": "remove_versions"}]},
        "catalog-collect-error": {"catalog": [{"method": collecting}]},
    }[name]


def run_faulty(store, faults, *args, cwd, input=None):
    completed = subprocess.run(
        [*FAULTY_CLI, "--store", str(store), *map(str, args)],
        input=input,
        cwd=cwd,
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "CHUNKSTORE_TEST_FAULTS": json.dumps(faults)},
    )
    errors = completed.stderr.decode(errors="replace")
    assert "Traceback" not in errors, errors
    # 3: a file a failed put did not store is not found by the commands after it.
    assert completed.returncode in (0, 1, 3, 4), (args, completed.returncode, errors)
    if completed.returncode:
        assert errors.startswith("chunkstore: ") and len(errors.strip()) > len("chunkstore: "), errors
    return completed


# The quick tier runs one fault of each sort on a local store; the long tier all of them, on
# s3:// too (where the library suite, test_faults.py, has its quick tier).
QUICK = {"blob-put-error", "blob-get-truncated", "catalog-commit-lost-reply", "catalog-collect-error"}


@pytest.mark.slow_on_s3
@pytest.mark.parametrize(
    "fault", [fault if fault in QUICK else pytest.param(fault, marks=pytest.mark.slow) for fault in sorted(FAULT_NAMES)]
)
@pytest.mark.parametrize("storage_format", [1, 2], ids=lambda storage_format: f"format{storage_format}")
def test_every_command_under_a_fault_exits_cleanly(new_backend, tmp_path, fault, storage_format):
    objects = new_backend(tmp_path)
    store, work = objects.url, tmp_path / "work"
    (work / "data").mkdir(parents=True)
    contents = {f"data/{index}": os.urandom(30_000) + bytes(20_000) for index in range(3)}
    for name, data in contents.items():
        (work / name).write_bytes(data)
    run_cli(store, "init", "--avg-size", "4K", "--format", str(storage_format), *objects.init_options(), cwd=work)
    if storage_format == 2:
        use_small_segments(store)  # files of a few pages: put writes page items
    run_cli(store, "put", "data/0", cwd=work)
    injected = faults_of(fault, storage_format)
    exit_codes = set()
    for command in (
        ["put", "data"],
        ["get", "data/0"],
        ["restore", "data", "-o", tmp_path / "r"],
        ["rm", "data/0"],  # put on its own: in format 2 too, gc then has objects to delete (its pack)
        ["gc"],
        ["verify", "--read-data"],
    ):
        completed = run_faulty(store, injected, *command, cwd=work)
        exit_codes.add(completed.returncode)
        if command[0] == "get" and completed.returncode == 0:
            assert completed.stdout == contents["data/0"]
    assert exit_codes != {0}, "no command noticed the fault"
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == contents[str(path.relative_to(tmp_path / "r"))]
    run_cli(store, "gc", cwd=work)
    with Store.open(store) as opened:
        assert_no_garbage(opened)
        assert_verify_clean(opened)
        for record in opened.list():
            assert run_cli(store, "get", record.name, cwd=work).stdout == contents[record.name]

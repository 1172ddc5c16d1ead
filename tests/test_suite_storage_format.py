"""The benchmark suite measures a store of the storage format it is given, at that format's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chunkstore.core.chunking import FORMAT_2_AVG_SIZE

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def test_the_suite_measures_a_format_2_store_at_its_default_chunk_size(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    argv = [sys.executable, "-m", "benchmarks", "--smoke", "--format", "2", "--dataset", "database-file"]
    argv += ["--peers", "none", "--no-s3", "--out", str(out), "--work", str(work)]
    completed = subprocess.run(argv, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

    document = json.loads((out / "report.json").read_text())
    assert document["defaults"]["storage_format"] == 2
    assert document["defaults"]["avg_size"] == FORMAT_2_AVG_SIZE
    assert document["tools"]["chunkstore"]["settings"] == "defaults of `chunkstore init --format 2`"
    result = document["datasets"]["database-file"]
    # The store measured is a format 2 one, and its distinct chunks average near 8 KiB, not format 1's 64 KiB.
    stats = result["chunkstore_stats"]
    assert stats["storage_format"] == 2
    assert stats["unique_bytes"] / stats["chunks"] < 2 * FORMAT_2_AVG_SIZE
    assert result["results"]["chunkstore"]["runs"][0]["restore_verified"] is True
    assert "format 2, fastcdc2020, 8K" in (out / "report.md").read_text()

"""The benchmark suite measures a store of the storage format it is given, at that format's defaults."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from chunkstore.core.chunking import DEFAULT_AVG_SIZE

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def test_the_suite_measures_a_format_2_store_at_its_default_chunk_size(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    argv = [sys.executable, "-m", "benchmarks", "--smoke", "--format", "2", "--dataset", "database-file"]
    argv += ["--peers", "none", "--no-s3", "--out", str(out), "--work", str(work)]
    completed = subprocess.run(argv, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

    document = json.loads((out / "report.json").read_text())
    assert document["defaults"]["storage_format"] == 2
    assert document["defaults"]["avg_size"] == DEFAULT_AVG_SIZE
    assert document["tools"]["chunkstore"]["settings"] == "defaults of `chunkstore init --format 2`"
    result = document["datasets"]["database-file"]
    # The store measured is a format 2 one, and its distinct chunks average near 8 KiB, not format 1's 64 KiB.
    stats = result["chunkstore_stats"]
    assert stats["storage_format"] == 2
    assert stats["unique_bytes"] / stats["chunks"] < 2 * DEFAULT_AVG_SIZE
    assert result["results"]["chunkstore"]["runs"][0]["restore_verified"] is True
    assert "format 2, fastcdc2020, 8K" in (out / "report.md").read_text()


def _release_tar(path: Path, text: bytes) -> None:
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("project/module.py")
        member.size = len(text)
        tar.addfile(member, io.BytesIO(text))


def test_the_suite_measures_release_tars_in_release_order_with_the_store_ratio_target(tmp_path):
    releases = tmp_path / "releases"
    releases.mkdir()
    text = b"".join(b"line %d of the module\n" % number for number in range(20_000))
    for patch in (1, 2, 10, 9):
        _release_tar(releases / f"Project-1.0.{patch}.tar", text + b"# release %d\n" % patch)
    out, work = tmp_path / "report", tmp_path / "work"
    argv = [sys.executable, "-m", "benchmarks", "--smoke", "--releases", str(releases), "--releases-count", "3"]
    argv += ["--dataset", "database-file", "--peers", "none", "--no-s3", "--out", str(out), "--work", str(work)]
    completed = subprocess.run(argv, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

    result = json.loads((out / "report.json").read_text())["datasets"]["releases"]
    assert result["dataset"]["versions"] == 3
    assert sorted(path.name for path in (work / "datasets" / "releases" / "releases").iterdir()) == [
        "v001-Project-1.0.1.tar",
        "v002-Project-1.0.2.tar",
        "v003-Project-1.0.9.tar",
    ]
    assert result["results"]["chunkstore"]["runs"][0]["restore_verified"] is True
    # The three releases differ in one line: chunk dedup stores about one of them.
    assert result["chunkstore_stats"]["dedup_ratio"] > 2
    assert "store_ratio" in [target["figure"] for target in result["targets"]]


def test_the_suite_refuses_a_releases_folder_without_tars(tmp_path):
    argv = [sys.executable, "-m", "benchmarks", "--smoke", "--releases", str(tmp_path), "--no-s3"]
    argv += ["--dataset", "database-file", "--peers", "none", "--work", str(tmp_path / "work")]
    completed = subprocess.run(argv, cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert completed.returncode != 0
    assert f"no release tars (*.tar) in {tmp_path}" in completed.stderr

"""The benchmark suite in its smoke mode: datasets are deterministic, every figure comes
from a real run whose restore matched the input, and the report files are written.

restic and borg are optional: their part is skipped where they are not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import datasets
from benchmarks.foundation import run_tool
from benchmarks.tools import PEERS, Chunkstore, ToolError

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", datasets.KINDS)
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path, kind):
    spec = datasets.DatasetSpec.preset("smoke", kind)
    first = datasets.generate(spec, tmp_path / "first")
    second = datasets.generate(spec, tmp_path / "second")
    other = datasets.generate(replace(spec, seed=spec.seed + 1), tmp_path / "other")

    assert first.digest == second.digest == datasets.dataset_digest(tmp_path / "second")
    assert other.digest != first.digest
    assert first.versions >= 2
    assert first.logical_bytes >= spec.total_bytes


def test_each_version_edits_the_one_before(tmp_path):
    dataset = datasets.generate(datasets.DatasetSpec.preset("smoke"), tmp_path / "archives")
    archives = sorted(dataset.root.iterdir())

    contents = [path.read_bytes() for path in archives]
    assert all(before != after for before, after in zip(contents, contents[1:]))


def test_digest_changes_with_one_byte(tmp_path):
    dataset = datasets.generate(datasets.DatasetSpec.preset("smoke"), tmp_path / "archives")
    victim = sorted(dataset.root.iterdir())[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))

    assert datasets.dataset_digest(dataset.root) != dataset.digest


def test_a_run_restores_the_dataset_byte_for_byte_and_refuses_a_mismatch(tmp_path):
    dataset = datasets.materialize(datasets.DatasetSpec.preset("smoke"), tmp_path / "datasets")

    run = run_tool(Chunkstore(), dataset, tmp_path / "workspace")
    assert run["stats"]["logical_bytes"] == dataset.logical_bytes
    assert run["repository_allocated_bytes"] > 0

    with pytest.raises(ToolError, match="restored different bytes"):
        run_tool(Chunkstore(), replace(dataset, digest="0" * 64), tmp_path / "workspace")


def _run_module(module: str, *args: str | Path) -> None:
    completed = subprocess.run([sys.executable, "-m", module, "--smoke", *map(str, args)],
                               cwd=REPOSITORY_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def _foundation_report(tmp_path: Path, peers: str) -> tuple[dict, str]:
    out = tmp_path / "report"
    _run_module("benchmarks.foundation", "--runs", "1", "--peers", peers, "--out", out, "--work", tmp_path / "work")
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_foundation_smoke_measures_chunkstore_and_writes_the_reports(tmp_path):
    document, markdown = _foundation_report(tmp_path, "none")

    logical = document["dataset"]["logical_bytes"]
    run = document["results"]["chunkstore"]["runs"][0]
    assert document["chunkstore_stats"]["logical_bytes"] == logical
    assert document["figures"]["put_mb_s"]["chunkstore"] == pytest.approx(logical / 1e6 / run["put_seconds"])
    assert document["figures"]["restore_mb_s"]["chunkstore"] == pytest.approx(logical / 1e6 / run["restore_seconds"])
    assert document["figures"]["store_ratio"]["chunkstore"] == pytest.approx(logical / run["repository_allocated_bytes"])
    assert run["put_peak_rss_bytes"] > 0
    assert [target["met"] for target in document["targets"]] == [None] * len(document["targets"])
    assert "| put of new data" in markdown
    assert "not measured" in markdown


@pytest.mark.parametrize("peer", PEERS)
def test_foundation_smoke_measures_a_peer_beside_chunkstore(tmp_path, peer):
    if shutil.which(peer) is None:
        pytest.skip(f"{peer} is not installed")
    document, markdown = _foundation_report(tmp_path, peer)

    logical = document["dataset"]["logical_bytes"]
    run = document["results"][peer]["runs"][0]
    assert document["figures"]["put_mb_s"][peer] == pytest.approx(logical / 1e6 / run["put_seconds"])
    assert document["figures"]["restore_mb_s"][peer] == pytest.approx(logical / 1e6 / run["restore_seconds"])
    assert all(isinstance(target["met"], bool) for target in document["targets"] if peer in target["compared_with"])
    assert peer in markdown


def test_micro_smoke_writes_one_row_per_chunker_and_size(tmp_path):
    out = tmp_path / "report"
    _run_module("benchmarks.micro", "--sizes", "16K,64K", "--levels", "1,3", "--out", out, "--work", tmp_path / "work")

    document = json.loads((out / "micro.json").read_text())
    rows = {(row["chunker"], row["avg_size"]): row for row in document["results"]}
    assert set(rows) == {(chunker, size) for chunker in ("fastcdc2020", "fastcdc-ronomon", "fixed")
                         for size in (16384, 65536)}
    assert rows[("fixed", 16384)]["chunk_size_median"] == 16384
    for row in rows.values():
        assert row["logical_bytes"] == document["dataset"]["logical_bytes"]
        assert row["unique_bytes"] <= row["logical_bytes"]
        assert row["levels"]["3"]["stored_bytes"] > 0
    assert (out / "micro.md").read_text().startswith("# chunkstore stage measurements")

"""The benchmark suite in its smoke mode: every dataset generator is deterministic, every
figure comes from a real run whose restore matched the input, and the report files are written.

restic and borg are optional: their part is skipped where they are not installed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import datasets, micro, report, suite
from benchmarks.foundation import run_tool
from benchmarks.tools import PEERS, Chunkstore, ToolError
from chunkstore.core.chunking import ChunkerSpec

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
    assert all(before != after for before, after in itertools.pairwise(contents))


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
        run_tool(Chunkstore(), replace(dataset, digest="0" * 64), tmp_path / "workspace-2")


def test_the_suite_refuses_to_measure_a_command_that_runs_another_library(tmp_path, monkeypatch):
    """The chunkstore command imports what the environment provides; a benchmark run from a checkout
    that is not the installed one would report the installed code's figures as its own."""
    other = tmp_path / "other" / "chunkstore"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(other.parent))
    with pytest.raises(SystemExit, match=f"library at {other / '__init__.py'}.*pip install -e"):
        Chunkstore()
    monkeypatch.delenv("PYTHONPATH")
    assert Chunkstore().argv  # the command and this process import the same library


def _run_module(module: str, *args: str | Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", module, "--smoke", *map(str, args)], cwd=REPOSITORY_ROOT, capture_output=True, text=True
    )
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
    assert document["figures"]["store_ratio"]["chunkstore"] == pytest.approx(
        logical / run["repository_allocated_bytes"]
    )
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


def test_encryption_smoke_compares_the_stores_and_separates_the_fixed_cost(tmp_path):
    out = tmp_path / "report"
    _run_module("benchmarks.encryption", "--runs", "1", "--out", out, "--work", tmp_path / "work")

    document = json.loads((out / "encryption.json").read_text())
    plain, encrypted = document["medians"]["plain"], document["medians"]["encrypted"]
    assert document["ratios"]["put"] == pytest.approx(plain["put_seconds"] / encrypted["put_seconds"])
    assert document["ratios"]["put_data_path"] == pytest.approx(
        (plain["put_seconds"] - plain["stats_seconds"]) / (encrypted["put_seconds"] - encrypted["stats_seconds"])
    )
    assert plain["stats_seconds"] > 0 and encrypted["stats_seconds"] > 0
    assert "less the fixed cost" in (out / "encryption.md").read_text()


def test_micro_smoke_writes_one_row_per_chunker_and_size(tmp_path):
    out = tmp_path / "report"
    _run_module("benchmarks.micro", "--sizes", "16K,64K", "--levels", "1,3", "--out", out, "--work", tmp_path / "work")

    document = json.loads((out / "micro.json").read_text())
    rows = {(row["chunker"], row["avg_size"]): row for row in document["results"]}
    assert set(rows) == {
        (chunker, size) for chunker in ("fastcdc2020", "fastcdc-ronomon", "fixed") for size in (16384, 65536)
    }
    assert rows[("fixed", 16384)]["chunk_size_median"] == 16384
    for row in rows.values():
        assert row["logical_bytes"] == document["dataset"]["logical_bytes"]
        assert row["unique_bytes"] <= row["logical_bytes"]
        assert row["levels"]["3"]["stored_bytes"] > 0
    assert (out / "micro.md").read_text().startswith("# chunkstore stage measurements")


def test_the_suite_smoke_measures_every_dataset_from_real_runs_and_writes_the_reports(tmp_path):
    out, work = tmp_path / "report", tmp_path / "work"
    _run_module("benchmarks", "--peers", "none", "--out", out, "--work", work)

    document = json.loads((out / "report.json").read_text())
    assert set(document["datasets"]) == set(datasets.KINDS)
    for kind, result in document["datasets"].items():
        # The dataset measured is the one the generator gives for this seed, byte for byte.
        fresh = datasets.generate(datasets.DatasetSpec.preset("smoke", kind), tmp_path / "fresh" / kind)
        assert result["dataset"]["digest"] == fresh.digest
        logical = fresh.logical_bytes
        run = result["results"]["chunkstore"]["runs"][0]
        assert run["restore_verified"] is True
        assert result["chunkstore_stats"]["logical_bytes"] == logical
        assert result["figures"]["put_mb_s"]["chunkstore"] == pytest.approx(logical / 1e6 / run["put_seconds"])
        assert result["figures"]["reput_mb_s"]["chunkstore"] == pytest.approx(logical / 1e6 / run["reput_seconds"])
        assert result["figures"]["peak_rss_mib"]["chunkstore"] == pytest.approx(
            max(run["put_peak_rss_bytes"], run["reput_peak_rss_bytes"], run["restore_peak_rss_bytes"]) / 2**20
        )
        grid = {(row["chunker"], row["avg_size"]): row for row in result["grid"]}
        assert set(grid) == {
            (chunker, size)
            for chunker in ("fastcdc2020", "fastcdc-ronomon", "fixed")
            for size in (4096, 65536, 1048576)
        }
        for row in grid.values():
            assert row["logical_bytes"] == logical
            assert row["chunk_size_min"] <= row["chunk_size_median"] <= row["chunk_size_p99"] <= row["chunk_size_max"]
        assert result["speed_of_light"]["two_core_bound_mb_s"] > 0
        assert all(target["met"] is None for target in result["targets"])
    # Every copy of a file after the first is a whole-file duplicate: nothing new is stored for it.
    duplicates = document["datasets"][datasets.EXACT_DUPLICATES]
    copies = datasets.EditModel().duplicate_copies
    assert duplicates["chunkstore_stats"]["dedup_ratio"] >= copies * 0.99

    s3 = document["s3"]
    if "skipped" not in s3:
        assert [row["avg_size"] for row in s3["rows"]] == [65536, 1048576]
        for row in s3["rows"]:
            assert row["restore_verified"] is True
            assert row["put_requests"]["s3"] >= row["chunks"]
            assert row["s3_requests_per_gb_put"] == pytest.approx(
                row["put_requests"]["s3"] / row["logical_bytes"] * 1e9
            )

    markdown = (out / "report.md").read_text()
    assert "## Headline: versioned-archives" in markdown
    assert all(f"## {kind}" in markdown for kind in datasets.KINDS)
    charts = sorted(path.name for path in out.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert charts == [] and "Charts skipped" in markdown
    else:
        expected = ["cost-vs-store-ratio.png", "store-ratio-vs-chunk-size.png", "throughput-vs-chunk-size.png"]
        assert charts == (expected if "skipped" not in s3 else expected[1:])
        assert all((out / chart).read_bytes().startswith(b"\x89PNG") for chart in charts)


def test_the_suite_says_charts_were_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    charts = report.write_charts(tmp_path, {"defaults": {}, "datasets": {}, "s3": {}})
    assert charts["files"] == [] and "matplotlib is not installed" in charts["skipped"]
    assert list(tmp_path.iterdir()) == []


def test_the_suite_skips_the_s3_store_without_moto(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moto.server", None)
    dataset = datasets.materialize(datasets.DatasetSpec.preset("smoke"), tmp_path / "datasets")

    assert "is not installed" in suite.measure_s3(dataset, "smoke", tmp_path)["skipped"]


def test_the_store_ratio_target_is_set_for_archives_and_databases_only():
    kinds_with_it = [
        kind for kind in datasets.KINDS if any(target.figure == "store_ratio" for target in suite.targets_for(kind))
    ]
    assert kinds_with_it == [datasets.VERSIONED_ARCHIVES, datasets.DATABASE_FILE]
    assert suite.chosen_kinds("all") == list(datasets.KINDS)
    with pytest.raises(Exception, match="unknown dataset"):
        suite.chosen_kinds("versioned-archives,nope")


def test_database_rounds_are_sqlite_files_that_share_most_pages(tmp_path):
    dataset = datasets.generate(datasets.DatasetSpec.preset("smoke", datasets.DATABASE_FILE), tmp_path / "db")
    rounds = sorted(dataset.root.iterdir())
    assert len(rounds) == datasets.EditModel().database_rounds

    counts = []
    for path in rounds:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            counts.append(database.execute("SELECT count(*) FROM records").fetchone()[0])
    assert len(set(counts)) > 1

    first, second = rounds[0].read_bytes(), rounds[1].read_bytes()
    page = 4096
    shared = sum(first[at : at + page] == second[at : at + page] for at in range(0, len(first), page))
    assert first != second
    assert shared > len(first) // page // 2


def test_incompressible_data_does_not_compress_but_repeats_regions(tmp_path):
    dataset = datasets.generate(datasets.DatasetSpec.preset("smoke", datasets.INCOMPRESSIBLE), tmp_path / "random")
    files = [path for _, path in datasets.files_in(dataset.root)]

    figures = micro.measure(files, ChunkerSpec.from_average("fastcdc2020", 16384), [3])
    assert figures["levels"][3]["compression_ratio"] < 1.01
    assert figures["dedup_ratio"] > 1.1


def test_packs_benchmark_writes_far_fewer_objects_than_format_1(tmp_path, capsys):
    from benchmarks import packs

    assert packs.main(["--smoke", "--work", str(tmp_path)]) == 0
    written, read_back = capsys.readouterr().out.split("\n\n", 1)
    rows = [line.split("|") for line in written.splitlines()[2:]]
    objects = {row[1].strip(): int(row[2].replace(",", "")) for row in rows}
    assert objects == {"v1 objects": 512, "packs": 1}
    # Read back: a pack needed to 60% or more is one GET of the whole object.
    table = [line.split("|") for line in read_back.splitlines() if line.startswith("| ") and "%" in line]
    gets = {row[1].strip(): int(row[2]) for row in table}
    assert gets["60%"] == gets["100%"] == 1 and gets["30%"] > 1


def test_sealed_metadata_benchmark_compares_both_kinds_of_store(tmp_path, capsys):
    from benchmarks import sealed_metadata

    tree = tmp_path / "tree"
    for name in ("a/one.h", "a/b/two.h", "a/b/c/three.h", "d/four.h"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(name.encode() * 500)
    assert sealed_metadata.main(["--tree", str(tree), "--runs", "1", "--s3-files", "3"]) == 0
    out = capsys.readouterr().out
    assert "(4 files)" in out and "s3:// on moto, 3 files:" in out
    for step in ("put", "ls", "ls PREFIX"):
        assert re.search(rf"  {step} +not sealed +[0-9.]+  sealed +[0-9.]+ .* sealed/not [0-9.]+x", out), step
    assert re.search(r"version items sealed +mean +[0-9]+ bytes, largest +[0-9]+: [0-9]+ write units for 3 items", out)

"""The benchmarks behind the segment sizing of storage format 2 run on small local data:
chunk means (benchmarks.chunk_means), segment locality (benchmarks.segments) and recipe pages
of database saves (benchmarks.pages --database)."""

from __future__ import annotations

import random

from benchmarks import chunk_means, pages, segments
from chunkstore.core.pages import SegmentSpec


def test_chunk_means_measures_the_chunker_and_the_segments():
    data = random.Random(5).randbytes(8 * 1024 * 1024)
    figures = chunk_means.measure("random", [("a", lambda: data), ("b", lambda: data)], 4096)
    assert figures.logical == 2 * len(data) and figures.contents == 2
    assert 1.15 < figures.factor < 1.3  # random bytes: 1.22 in theory
    spec = SegmentSpec.for_chunks(4096, 16384)
    assert figures.expected_segment == spec.expected_chunks() * figures.mean_chunk
    assert figures.segment_chunks and all(spec.min_chunks <= n <= spec.max_chunks for n in figures.segment_chunks)
    table = chunk_means.build_markdown([figures])
    assert "| random" in table and f"{figures.factor:.2f}" in table


def test_segments_benchmark_counts_the_segments_an_edit_changes(capsys):
    assert segments.main(["--specs", "6/8/256", "--trials", "2", "--chunks", "3000"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 6 / 8 / 256")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == f"{SegmentSpec(6, 8, 256).expected_chunks():,.0f}"
    assert all(cell.startswith(("1.", "2.", "3.")) for cell in cells[3:])  # an edit changes a segment or a few


def test_pages_benchmark_runs_on_database_saves(tmp_path, capsys):
    assert pages.main(["--database", "3M", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "saves of a 3 MB SQLite database" in out
    assert out.count("| r00") == pages.DATABASE_SAVES

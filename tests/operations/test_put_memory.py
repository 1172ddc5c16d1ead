"""A format 2 put's memory does not grow with the store's pack index (benchmarks/put_memory.py at
a small scale): files put under their own names into a store whose catalog holds a million
synthetic hooks peak at the RSS of the same put into an empty store, and store as little."""

from __future__ import annotations

import random

from benchmarks.put_memory import fill_index, init_store, put_in_new_process

SYNTHETIC_HOOKS = 1_000_000
MB = 1_000_000
# A few MB of RSS is noise between two runs of the same put (fresh interpreters, allocator
# arenas); a million hooks held in memory would be ~150 MB.
RSS_NOISE = 8 * 2**20


def versions_of_a_file(folder) -> list:
    """Three files of the same incompressible bytes under their own names, so only hooks find the
    others' chunks: the bytes, a copy with 64 KB overwritten, and the last 48 MB followed by 4 MB
    new. Each is bigger than a 16 MiB segment: a smaller content is kept inline, without hooks."""
    generator = random.Random(7)
    base = generator.randbytes(64 * MB)
    edited = bytearray(base)
    edited[30 * MB : 30 * MB + 64_000] = generator.randbytes(64_000)
    moved = base[16 * MB :] + generator.randbytes(4 * MB)
    contents = {"first.bin": base, "edited.bin": bytes(edited), "moved.bin": moved}
    paths = []
    for name, data in contents.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_put_peaks_at_the_same_rss_and_stores_as_little_whatever_the_size_of_the_index(tmp_path):
    files = versions_of_a_file(tmp_path)
    filled, empty = tmp_path / "filled", tmp_path / "empty"
    init_store(filled, 2)
    fill = fill_index(filled, SYNTHETIC_HOOKS)
    assert fill.entries == SYNTHETIC_HOOKS * 10 // 8
    init_store(empty, 2)

    on_filled = put_in_new_process(filled, files)
    on_empty = put_in_new_process(empty, files)

    assert on_filled.logical_bytes == on_empty.logical_bytes == 180 * MB
    assert on_filled.peak_rss_bytes <= on_empty.peak_rss_bytes + RSS_NOISE, (
        f"put peaked at {on_filled.peak_rss_bytes / 2**20:.1f} MiB on a store of {fill.entries:,} index entries,"
        f" {on_empty.peak_rss_bytes / 2**20:.1f} MiB on an empty store"
    )
    # The hooks of the real chunks are found among the synthetic ones: the second and third
    # files add little beyond the 64 MB of the first and the 4 MB new bytes of the third.
    assert on_filled.stored_bytes < 70 * MB
    assert abs(on_filled.stored_bytes - on_empty.stored_bytes) < MB // 10

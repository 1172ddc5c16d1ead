"""How a segment spec cuts: mean segment against SegmentSpec.expected_chunks(), and locality.

    python -m benchmarks.segments [--specs 10/586/4096,11/128/8192] [--trials 200] [--chunks 120000]

Chunk IDs are hashes, so random IDs are their real distribution. Each trial draws a content of
--chunks random IDs and edits it in the middle: an insertion or a deletion of 1-50 chunks, or
the replacement of one; it counts the segments of the edited content whose page ID the original
has not (the pages a put of the new version writes). The specs default to the one
SegmentSpec.for_chunks gives at 8 KiB and the one sized for the nominal chunk before it.
"""

from __future__ import annotations

import argparse
import random
import statistics

from chunkstore.core.pages import Segment, Segmenter, SegmentSpec

from .report import markdown_table

EDIT_KINDS = ("insert", "delete", "replace")
CHUNK_SIZE = 8192  # the sizes play no part in the cut


def segments_of(ids: list[bytes], spec: SegmentSpec) -> list[Segment]:
    segmenter = Segmenter(spec)
    found = [segment for chunk_id in ids if (segment := segmenter.add(chunk_id, CHUNK_SIZE)) is not None]
    last = segmenter.finish()
    return found + ([last] if last is not None else [])


def edited(ids: list[bytes], kind: str, rng: random.Random) -> list[bytes]:
    middle = len(ids) // 2
    count = rng.randint(1, 50)

    def fresh(n: int) -> list[bytes]:
        return [rng.randbytes(32) for _ in range(n)]

    if kind == "insert":
        return ids[:middle] + fresh(count) + ids[middle:]
    if kind == "delete":
        return ids[:middle] + ids[middle + count :]
    return ids[:middle] + fresh(1) + ids[middle + 1 :]


def measure(spec: SegmentSpec, chunks: int, trials: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    changed: dict[str, list[int]] = {kind: [] for kind in EDIT_KINDS}
    sizes: list[int] = []  # chunks of every segment but a content's last
    for _ in range(trials):
        for kind in EDIT_KINDS:
            ids = [rng.randbytes(32) for _ in range(chunks)]
            before = segments_of(ids, spec)
            old_pages = {segment.page_id for segment in before}
            after = segments_of(edited(ids, kind, rng), spec)
            changed[kind].append(sum(1 for segment in after if segment.page_id not in old_pages))
            sizes.extend(len(segment.chunk_ids) for segment in before[:-1])
    mean_chunks = statistics.fmean(sizes)
    return [
        f"{spec.boundary_bits} / {spec.min_chunks} / {spec.max_chunks}",
        f"{spec.expected_chunks():,.0f}",
        f"{mean_chunks:,.0f}",
        *(f"{statistics.fmean(changed[kind]):.2f} (max {max(changed[kind])})" for kind in EDIT_KINDS),
    ]


def _spec(text: str) -> SegmentSpec:
    bits, low, high = (int(part) for part in text.split("/"))
    return SegmentSpec(bits, low, high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", default="10/586/4096,11/128/8192", help="bits/min/max, comma-separated")
    parser.add_argument("--trials", type=int, default=200, help="contents edited per spec and kind of edit")
    parser.add_argument("--chunks", type=int, default=120_000, help="chunks in a content")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = [measure(_spec(text), args.chunks, args.trials, args.seed) for text in args.specs.split(",")]
    headers = [
        "spec (bits / min / max)",
        "expected chunks",
        "mean chunks",
        *(f"segments changed: {k}" for k in EDIT_KINDS),
    ]
    print(f"# Segments of {args.chunks:,} random chunk IDs, {args.trials} trials per kind of edit\n")
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

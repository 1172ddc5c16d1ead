"""Parallel I/O on the s3:// store: put and restore at several concurrencies, on a local moto server.

    python -m benchmarks.s3concurrency [--size 40M] [--concurrency 1,8,32] [--out DIR]

moto's absolute speed means little; the ratio between concurrencies shows whether
requests really overlap. Each concurrency gets a fresh bucket prefix and table, and
runs `chunkstore --concurrency N init/put/restore` as a user would, against a
ThreadedMotoServer on 127.0.0.1 reached over HTTP through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

from . import datasets
from .report import MB, environment, markdown_table, write_reports
from .suite import moto_server
from .tools import Chunkstore, Command, run_measured

# moto serves a few MB/s: 24 MB (two versions of the quick corpus) keeps a run to minutes.
DEFAULT_BYTES = 24_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3concurrency", description=__doc__.split("\n\n")[0])
    datasets.add_arguments(parser)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrencies (default 1,8,32)")
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "chunkstore-bench")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    if args.size is None and args.preset == "full":
        args.preset, args.size = "quick", DEFAULT_BYTES
    dataset = datasets.materialize(datasets.spec_from_arguments(args), args.work / "datasets")
    started = environment()
    chunkstore = Chunkstore().argv
    rows, results = [], {}
    # suite.moto_server points the environment (which the commands inherit) at the server,
    # and lets one DynamoDB request through at a time: moto's tables are not thread-safe.
    with moto_server():
        for level in levels:
            store = f"s3://bench-{uuid.uuid4().hex[:12]}/store"
            base = [*chunkstore, "--concurrency", str(level), "--store", store]
            table = f"bench-{uuid.uuid4().hex[:12]}"
            # A chunk object per chunk: the request-bound case the figures in docs/aws.md measure.
            run_measured(Command([*base, "init", "--format", "1", "--table", table, "--create"]))
            put = run_measured(Command([*base, "put", dataset.root.name], cwd=dataset.root.parent))
            with tempfile.TemporaryDirectory() as target:
                restore = run_measured(Command([*base, "restore", dataset.root.name, "-o", target]))
                restored = datasets.dataset_digest(Path(target) / dataset.root.name)
            if restored != dataset.digest:
                raise SystemExit(f"concurrency {level}: restored bytes differ from the dataset")
            results[level] = {"put_seconds": put.seconds, "restore_seconds": restore.seconds}
    base_put, base_restore = results[levels[0]]["put_seconds"], results[levels[0]]["restore_seconds"]
    for level in levels:
        figures = results[level]
        rows.append(
            [
                str(level),
                f"{figures['put_seconds']:.2f} s",
                f"{base_put / figures['put_seconds']:.2f}x",
                f"{figures['restore_seconds']:.2f} s",
                f"{base_restore / figures['restore_seconds']:.2f}x",
            ]
        )
    markdown = "\n".join(
        [
            "# s3:// store: put and restore by concurrency (moto server on 127.0.0.1)",
            "",
            f"Command: `python -m benchmarks.s3concurrency {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
            f"Dataset: {dataset.versions} versions, {dataset.logical_bytes / MB:.1f} MB; load average at start "
            f"{os.getloadavg()[0]:.2f}; every restore checked byte for byte.",
            "",
            markdown_table(
                ["concurrency", "put", f"speed-up vs {levels[0]}", "restore", f"speed-up vs {levels[0]}"], rows
            ),
        ]
    )
    write_reports(
        args.out,
        "s3-concurrency",
        markdown,
        {"environment": started, "dataset": dataset.to_json(), "results": {str(k): v for k, v in results.items()}},
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

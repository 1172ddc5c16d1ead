"""What encryption costs: the encrypted store against the plain one, in the same script run.

    python -m benchmarks.encryption [--quick|--smoke] [--runs N] [--out DIR]

Both stores are driven through the command line on the same versioned-archive dataset,
run after run in alternation (so load on the machine falls on both alike), through the
same phases as benchmarks.foundation. Reported: put, restore and unchanged re-put of the
encrypted store as a ratio of the plain one's; the target is put at 0.8x or better.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import datasets
from .foundation import DEFAULT_WORK, medians, run_tools
from .report import MB, environment, markdown_table, write_reports
from .tools import Chunkstore, EncryptedChunkstore, Tool

PUT_TARGET = 0.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encryption", description=__doc__.split("\n\n")[0])
    datasets.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=3, help="runs per store; figures are medians (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"scratch folder (default {DEFAULT_WORK})")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    started = environment()
    dataset = datasets.materialize(datasets.spec_from_arguments(args), args.work / "datasets")
    tools: list[Tool] = [Chunkstore(), EncryptedChunkstore()]
    runs = run_tools(tools, dataset, args.work / "runs", args.runs)
    plain, encrypted = (medians(runs[tool.name]) for tool in tools)
    rows = []
    ratios = {}
    for phase, label in (("put", "put of new data"), ("restore", "restore"), ("reput", "unchanged re-put")):
        key = f"{phase}_seconds"
        # Throughput ratio: encrypted MB/s over plain MB/s, i.e. plain time over encrypted time.
        ratios[phase] = plain[key] / encrypted[key]
        rows.append(
            [
                label,
                f"{dataset.logical_bytes / MB / plain[key]:.1f} MB/s",
                f"{dataset.logical_bytes / MB / encrypted[key]:.1f} MB/s",
                f"{ratios[phase]:.2f}x",
            ]
        )
    # Every command first opens the store: on an encrypted one that derives the key from the
    # passphrase (Argon2id), a fixed cost whatever the size of the data. `stats` does little
    # else, so its time is that cost; put minus it is the data path's own speed.
    rows.append(
        [
            "fixed cost of a command (`stats`)",
            f"{plain['stats_seconds']:.2f} s",
            f"{encrypted['stats_seconds']:.2f} s",
            "",
        ]
    )
    data_seconds = {
        name: figures["put_seconds"] - figures["stats_seconds"]
        for name, figures in (("plain", plain), ("encrypted", encrypted))
    }
    ratios["put_data_path"] = data_seconds["plain"] / data_seconds["encrypted"]
    rows.append(
        [
            "put of new data, less the fixed cost",
            f"{dataset.logical_bytes / MB / data_seconds['plain']:.1f} MB/s",
            f"{dataset.logical_bytes / MB / data_seconds['encrypted']:.1f} MB/s",
            f"{ratios['put_data_path']:.2f}x",
        ]
    )
    met = ratios["put"] >= PUT_TARGET
    markdown = "\n".join(
        [
            "# What encryption costs",
            "",
            f"Command: `python -m benchmarks.encryption {' '.join(argv or sys.argv[1:])}`  ",
            f"Dataset: {dataset.versions} versions, {dataset.logical_bytes / MB:.1f} MB; median of {args.runs} runs.",
            "",
            markdown_table(["figure", "plain", "encrypted", "encrypted / plain"], rows),
            "",
            f"- encrypted put at least {PUT_TARGET}x the plain store's, whole command: "
            f"**{'met' if met else 'MISSED'}**",
            f"- the same for the data path alone: **{'met' if ratios['put_data_path'] >= PUT_TARGET else 'MISSED'}**",
        ]
    )
    document = {
        "environment": started,
        "dataset": dataset.to_json(),
        "runs": runs,
        "medians": {"plain": plain, "encrypted": encrypted},
        "ratios": ratios,
        "put_target": PUT_TARGET,
        "put_target_met": met,
    }
    write_reports(args.out, "encryption", markdown, document)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The headline benchmark: chunkstore side by side with restic and borg on versioned archives.

    python -m benchmarks.foundation [--quick|--smoke] [--runs N] [--peers restic,borg] [--format 1|2] [--out DIR]

Every tool is driven through its command line as a subprocess, as a user would run it,
on the same generated dataset (see benchmarks/datasets.py) in the same script run. Each
run gives every tool a fresh repository and goes through the same phases in the same
order: init, backup of new data, size of the repository folder, backup of the unchanged
folder again, restore (checked byte for byte against the dataset). The page cache cannot
be dropped here, so all tools read warm data alike; figures are medians over the runs.

Figures: backup and restore MB/s (MB = 10^6 bytes of the dataset), store ratio (dataset
bytes / allocated bytes of the whole repository folder, counted the same way for every
tool), the unchanged re-backup's wall time, and each command's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chunkstore.store import DEFAULT_STORAGE_FORMAT, STORAGE_FORMATS

from . import datasets
from .report import MB, MIB, environment, markdown_table, report_preamble, write_reports
from .tools import (
    FIRST_BACKUP,
    PEERS,
    TOOLS,
    UNCHANGED_BACKUP,
    Chunkstore,
    Command,
    Measurement,
    Tool,
    ToolError,
    folder_bytes,
    run_measured,
)

SUBJECT = "chunkstore"
REFERENCE_PEER = "restic"
DEFAULT_WORK = Path(tempfile.gettempdir()) / "chunkstore-bench"


def settled(command: Command) -> Measurement:
    """Measure command after flushing what earlier phases left dirty in the page cache.

    Without it one phase pays for another's writeback: the previous tool's 1 GB restore,
    or the inodes of a deleted repository, which ext4 skips while they are not written
    back. A put right after deleting a store of 2,800 objects measured 6-18% slower here
    (1.3-1.9 s of system time against 0.9 s), and the more files a tool writes the more
    it pays."""
    os.sync()
    return run_measured(command)


def run_tool(tool: Tool, dataset: datasets.Dataset, workspace: Path) -> dict:
    """One run of one tool through every phase, in a new workspace. The restored copy is
    removed after it is checked (restored copies kept on disk slowed later runs: a 1 GB
    restore took 2.1 s with five others beside it, 1.2-1.3 s alone); the repository stays
    until run_tools ends."""
    workspace.mkdir(parents=True)
    source = dataset.root
    run_measured(tool.init(workspace))
    put = settled(tool.backup(workspace, source, FIRST_BACKUP))
    apparent, allocated = folder_bytes(tool.repository(workspace))
    stats_run = run_measured(tool.stats(workspace)) if isinstance(tool, Chunkstore) else None
    reput = settled(tool.backup(workspace, source, UNCHANGED_BACKUP))
    target = workspace / "restored"
    target.mkdir()
    restore = settled(tool.restore(workspace, source, target))
    restored_digest = datasets.dataset_digest(target / source.name)
    if restored_digest != dataset.digest:
        raise ToolError(f"{tool.name} restored different bytes: digest {restored_digest}, dataset {dataset.digest}")
    shutil.rmtree(target)
    return {
        "load_average_after": os.getloadavg()[0],
        "put_seconds": put.seconds,
        "put_peak_rss_bytes": put.peak_rss_bytes,
        "reput_seconds": reput.seconds,
        "reput_peak_rss_bytes": reput.peak_rss_bytes,
        "restore_seconds": restore.seconds,
        "restore_peak_rss_bytes": restore.peak_rss_bytes,
        "repository_apparent_bytes": apparent,
        "repository_allocated_bytes": allocated,
        "restore_verified": True,
        "stats": json.loads(stats_run.stdout) if stats_run else None,
        # What any command costs before its work: start-up and opening the store (unlocking its key).
        "stats_seconds": stats_run.seconds if stats_run else None,
    }


def select_tools(peers: list[str], storage_format: int | None = None) -> list[Tool]:
    """chunkstore (with `init --format storage_format`, if given) and those of the named peers that are installed."""
    tools: list[Tool] = [Chunkstore(storage_format)]
    for name in peers:
        tool = TOOLS[name]()
        if tool.available():
            tools.append(tool)
        else:
            print(f"{name} is not installed: skipped", file=sys.stderr)
    return tools


def run_tools(tools: list[Tool], dataset: datasets.Dataset, work: Path, runs: int) -> dict[str, list[dict]]:
    """Every tool's runs, the tools taking turns run after run so that load on the machine falls on all alike.

    Each run starts with the next tool in turn: what the file system still owes for the
    deletions before a run (the previous tool's restored copy, the previous dataset's
    repositories) falls on each tool once in every len(tools) runs, not always on the same one.
    Creating 8,264 files took 2.6 s on a quiet file system here, and 6-7 s right after as
    many had been deleted."""
    results: dict[str, list[dict]] = {tool.name: [] for tool in tools}
    if work.exists():
        shutil.rmtree(work)
    try:
        for number in range(1, runs + 1):
            turn = (number - 1) % len(tools)
            for tool in tools[turn:] + tools[:turn]:
                run = run_tool(tool, dataset, work / f"{tool.name}-{number}")
                results[tool.name].append(run)
                print(
                    f"run {number}/{runs} {tool.name}: put {run['put_seconds']:.2f} s, "
                    f"re-put {run['reput_seconds']:.2f} s, restore {run['restore_seconds']:.2f} s, "
                    f"repository {run['repository_allocated_bytes'] / MB:.1f} MB",
                    file=sys.stderr,
                )
    finally:
        # Repositories are deleted only now: deleting one between runs slowed the next run's writes.
        shutil.rmtree(work, ignore_errors=True)
    return results


def compute_figures(tool_medians: dict[str, dict], logical_bytes: int, figures: list[Figure] | None = None) -> dict:
    """{figure key: {tool: value}} from each tool's medians."""
    return {
        figure.key: {name: figure.value(values, logical_bytes) for name, values in tool_medians.items()}
        for figure in (figures or FIGURES)
    }


def medians(runs: list[dict]) -> dict:
    numeric = [key for key, value in runs[0].items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return {key: statistics.median(run[key] for run in runs) for key in numeric}


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    value: Callable[[dict, int], float]  # (medians of a tool, dataset bytes) -> figure


FIGURES = [
    Figure("put_mb_s", "put of new data", "MB/s", lambda m, size: size / MB / m["put_seconds"]),
    Figure(
        "store_ratio",
        "store ratio (dataset / repository folder, du)",
        "x",
        lambda m, size: size / m["repository_allocated_bytes"],
    ),
    Figure(
        "store_ratio_apparent",
        "store ratio (dataset / repository file sizes)",
        "x",
        lambda m, size: size / m["repository_apparent_bytes"],
    ),
    Figure("restore_mb_s", "restore", "MB/s", lambda m, size: size / MB / m["restore_seconds"]),
    Figure("reput_seconds", "re-put of the unchanged tree", "s", lambda m, size: m["reput_seconds"]),
    Figure("put_peak_rss_mib", "peak RSS, put", "MiB", lambda m, size: m["put_peak_rss_bytes"] / MIB),
    Figure("reput_peak_rss_mib", "peak RSS, unchanged re-put", "MiB", lambda m, size: m["reput_peak_rss_bytes"] / MIB),
    Figure("restore_peak_rss_mib", "peak RSS, restore", "MiB", lambda m, size: m["restore_peak_rss_bytes"] / MIB),
]


@dataclass(frozen=True)
class Target:
    figure: str
    text: str  # the target as the table shows it
    description: str
    peers: tuple[str, ...]  # the target compares with these peers (those that were measured)
    met: Callable[[float, list[float]], bool]  # (chunkstore's figure, the peers' figures) -> met?


TARGETS = [
    Target(
        "put_mb_s",
        ">= 1.5x restic",
        "put of new data at least 1.5x restic's backup MB/s",
        ("restic",),
        lambda ours, theirs: ours >= 1.5 * max(theirs),
    ),
    Target(
        "store_ratio",
        "> restic and borg",
        "store ratio higher than restic's and borg's",
        ("restic", "borg"),
        lambda ours, theirs: ours > max(theirs),
    ),
    Target(
        "restore_mb_s",
        ">= 1.5x restic",
        "restore at least 1.5x restic's restore MB/s",
        ("restic",),
        lambda ours, theirs: ours >= 1.5 * max(theirs),
    ),
    Target(
        "reput_seconds",
        "<= restic",
        "re-put of an unchanged tree no slower than restic's backup",
        ("restic",),
        lambda ours, theirs: ours <= min(theirs),
    ),
]


def evaluate(
    values: dict[str, dict[str, float]], measured_peers: list[str], targets: list[Target] = TARGETS
) -> list[dict]:
    """Each target: met (True/False), or None when none of its peers was measured."""
    results = []
    for target in targets:
        peers = [peer for peer in target.peers if peer in measured_peers]
        ours = values[target.figure][SUBJECT]
        met = target.met(ours, [values[target.figure][peer] for peer in peers]) if peers else None
        results.append(
            {
                "figure": target.figure,
                "target": target.description,
                "compared_with": peers,
                "partial": bool(peers) and len(peers) < len(target.peers),
                "met": met,
            }
        )
    return results


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.1f} {unit}"


def verdict(result: dict | None) -> str:
    if result is None:
        return ""
    if result["met"] is None:
        return "not measured"
    verdict = "met" if result["met"] else "MISSED"
    return f"{verdict} (only vs {', '.join(result['compared_with'])})" if result["partial"] else verdict


def figure_rows(
    values: dict[str, dict[str, float]],
    target_results: list[dict],
    figures: list[Figure] = FIGURES,
    targets: list[Target] = TARGETS,
) -> list[list[str]]:
    """One row per figure: chunkstore and each peer, chunkstore / peer for each peer, the target and its verdict."""
    results = {result["figure"]: result for result in target_results}
    target_texts = {target.figure: target.text for target in targets}
    rows = []
    for figure in figures:
        row_values = values[figure.key]
        ratios = [f"{row_values[SUBJECT] / row_values[peer]:.2f}x" if row_values.get(peer) else "—" for peer in PEERS]
        rows.append(
            [
                figure.title,
                *(format_value(row_values.get(tool), figure.unit) for tool in (SUBJECT, *PEERS)),
                *ratios,
                target_texts.get(figure.key, ""),
                verdict(results.get(figure.key)),
            ]
        )
    return rows


FIGURE_HEADERS = ["figure", SUBJECT, *PEERS, *(f"{SUBJECT} / {peer}" for peer in PEERS), "target", "met?"]


def build_markdown(document: dict) -> str:
    rows = figure_rows(document["figures"], document["targets"])
    stats = document["chunkstore_stats"]
    rows.append(
        [
            "chunkstore `stats --json` store_ratio",
            format_value(stats["store_ratio"], "x"),
            *["—"] * (2 * len(PEERS)),
            "",
            "",
        ]
    )
    table = markdown_table(FIGURE_HEADERS, rows)

    env = document["environment"]
    lines = [
        *report_preamble("chunkstore foundation benchmark", document),
        f"Median of {document['runs']} runs; MB = 10^6 bytes; every restore checked byte for byte.",
        "",
        table,
        "",
        "## Targets",
        "",
    ]
    for result in document["targets"]:
        lines.append(f"- {result['target']}: **{verdict(result)}**")
    lines += ["", "## Tools", ""]
    for name, tool in document["tools"].items():
        lines.append(f"- {name}: {tool['version']} — {tool['settings']}")
    lines += [
        "",
        f"chunkstore stats after the first put: dedup {stats['dedup_ratio']}x, "
        f"compression {stats['compression_ratio']}x, {stats['chunks']} chunks, "
        f"stored {stats['stored_bytes'] / MB:.1f} MB, catalog {stats.get('catalog_bytes', 0) / MB:.1f} MB.",
        "",
        "## Every run",
        "",
    ]
    run_rows = []
    for name, runs in document["results"].items():
        for number, run in enumerate(runs["runs"], 1):
            run_rows.append(
                [
                    name,
                    str(number),
                    f"{run['put_seconds']:.2f}",
                    f"{run['reput_seconds']:.2f}",
                    f"{run['restore_seconds']:.2f}",
                    f"{run['repository_allocated_bytes'] / MB:.1f}",
                    f"{run['put_peak_rss_bytes'] / MIB:.0f}",
                    f"{run['restore_peak_rss_bytes'] / MIB:.0f}",
                    f"{run['load_average_after']:.2f}",
                ]
            )
    lines.append(
        markdown_table(
            [
                "tool",
                "run",
                "put s",
                "re-put s",
                "restore s",
                "repository MB",
                "put RSS MiB",
                "restore RSS MiB",
                "load after",
            ],
            run_rows,
        )
    )
    lines += [
        "",
        f"Load average (1 min) when the benchmark started: {env['load_average_start']:.2f}; "
        f"a load above zero means other processes shared the {env['cpus']} cores.",
    ]
    return "\n".join(lines) + "\n"


def comma_list(text: str, known: tuple[str, ...], what: str, ignored: tuple[str, ...] = ()) -> list[str]:
    """The names in a comma-separated option value, each one of known."""
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() not in ignored]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def add_peers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peers",
        type=lambda text: comma_list(text, PEERS, "peer", ignored=("none",)),
        default=list(PEERS),
        metavar="LIST",
        help="peers to run beside chunkstore: restic,borg (default), restic, borg or none",
    )


def add_format_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument(
        "--format",
        dest="storage_format",
        type=int,
        choices=STORAGE_FORMATS,
        help=f"measure a store made with `chunkstore init --format N` (default: init's default, "
        f"{DEFAULT_STORAGE_FORMAT}){note}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.foundation", description=__doc__.split("\n\n")[0])
    datasets.add_arguments(parser)
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; figures are medians (default 3)")
    add_peers_argument(parser)
    add_format_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help=f"scratch folder for datasets and repositories (default {DEFAULT_WORK})",
    )
    args = parser.parse_args(argv)
    started = environment()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    tools = select_tools(args.peers, args.storage_format)

    dataset = datasets.materialize(datasets.spec_from_arguments(args), args.work / "datasets")
    print(
        f"dataset: {dataset.versions} versions, {dataset.logical_bytes / MB:.1f} MB in {dataset.root}", file=sys.stderr
    )
    results = run_tools(tools, dataset, args.work / "runs", args.runs)
    tool_medians = {name: medians(runs) for name, runs in results.items()}
    figures = compute_figures(tool_medians, dataset.logical_bytes)
    measured_peers = [tool.name for tool in tools if tool.name != SUBJECT]
    document = {
        "environment": started,
        "dataset": dataset.to_json(),
        "runs": args.runs,
        "tools": {tool.name: {"version": tool.version(), "settings": tool.describe_settings()} for tool in tools},
        "results": {name: {"runs": runs, "median": tool_medians[name]} for name, runs in results.items()},
        "chunkstore_stats": results[SUBJECT][-1]["stats"],
        "figures": figures,
        "ratios_vs_restic": {
            key: (row[SUBJECT] / row[REFERENCE_PEER] if row.get(REFERENCE_PEER) else None)
            for key, row in figures.items()
        },
        "targets": evaluate(figures, measured_peers),
    }
    markdown = build_markdown(document)
    write_reports(args.out, "report", markdown, document)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole benchmark suite: every dataset, every chunker and chunk size, peers, the s3:// store, charts.

    python -m benchmarks [--quick|--smoke] [--dataset NAME|all] [--peers restic,borg] [--out DIR]
                         [--format 1|2] [--releases FOLDER [--releases-count N]]

For each dataset (see benchmarks/datasets.py, and with --releases the first release tars of a
project, in release order):

- every chunker at every average chunk size, in memory (benchmarks.micro): dedup,
  compression and store ratio, chunk-size distribution, and the stage speeds;
- the default settings through the command line beside restic and borg
  (benchmarks.foundation): put of new and of unchanged data, restore (checked byte for
  byte), repository size, peak RSS, each as a ratio of every peer's, and the "speed of
  light" row (chunk + hash + compress of the same bytes in memory, nothing stored);
- the targets, each met or missed in a line of its own.

Then the s3:// store on a local moto server, per chunk size: the S3 and DynamoDB requests
per GB put and restored, counted by chunkstore's own request accounting, and what they
cost per TB at AWS list prices. It is skipped, with the reason in the report, where boto3
or moto are missing or the store fails.

Writes OUT/report.md, OUT/report.json and PNG charts (with matplotlib, the `bench` extra)
and prints the headline table.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from chunkstore.core.chunking import CHUNKERS, DEFAULT_AVG_SIZE, DEFAULT_CHUNKER, ChunkerSpec, default_avg_size
from chunkstore.core.compression import DEFAULT_ZSTD_LEVEL, CompressionSpec
from chunkstore.store import DEFAULT_STORAGE_FORMAT

from . import datasets, micro
from .foundation import (
    DEFAULT_WORK,
    FIGURE_HEADERS,
    FIGURES,
    PEERS,
    SUBJECT,
    TARGETS,
    Figure,
    Target,
    add_format_argument,
    add_peers_argument,
    comma_list,
    compute_figures,
    evaluate,
    figure_rows,
    format_value,
    medians,
    run_tools,
    select_tools,
    verdict,
)
from .report import MB, MIB, environment, markdown_table, report_preamble, write_charts, write_reports

KIB = 1024
# The chunk sizes a user picks from, 4 KiB to 1 MiB.
GRID_SIZES = {
    "full": (4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB),
    "quick": (4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB),
    "smoke": (4 * KIB, 64 * KIB, 1024 * KIB),
}
# On the s3:// store every chunk is a request; moto's server keeps everything in memory,
# so these runs use a sample of the headline dataset (its first versions, enough for
# dedup between versions to show) and skip 4 KiB (about 4x the requests of 16 KiB).
S3_SIZES = {
    "full": (16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB),
    "quick": (16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB),
    "smoke": (64 * KIB, 1024 * KIB),
}
S3_SAMPLE_BYTES = {"full": 150_000_000, "quick": 40_000_000, "smoke": 3_000_000}
DEFAULT_RUNS = {"full": 3, "quick": 1, "smoke": 1}
HEADLINE_DATASET = datasets.VERSIONED_ARCHIVES
# Real releases of one project, uncompressed, as `python -m benchmarks.chunk_size_curve` caches them.
RELEASES = "releases"
DEFAULT_RELEASES = 10
# The store-ratio target is set for the data where chunk-level dedup has most to find.
STORE_RATIO_TARGET_DATASETS = (datasets.VERSIONED_ARCHIVES, datasets.DATABASE_FILE, RELEASES)
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
TB = 10**12

SUITE_FIGURES = [
    *FIGURES,
    Figure("reput_mb_s", "re-put of unchanged data", "MB/s", lambda m, size: size / MB / m["reput_seconds"]),
    Figure(
        "peak_rss_mib",
        "peak RSS, any phase",
        "MiB",
        lambda m, size: max(m["put_peak_rss_bytes"], m["reput_peak_rss_bytes"], m["restore_peak_rss_bytes"]) / MIB,
    ),
]
STORE_RATIO_TARGET = Target(
    "store_ratio",
    ">= 1.5x best peer",
    "store ratio at least 1.5x the better of restic and borg",
    ("restic", "borg"),
    lambda ours, theirs: ours >= 1.5 * max(theirs),
)
SPEED_TARGETS = [target for target in TARGETS if target.figure != "store_ratio"]


def _rss_target(figure: str, what: str) -> Target:
    return Target(
        figure,
        "<= 2x restic",
        f"{what} no more than 2x restic's",
        ("restic",),
        lambda ours, theirs: ours <= 2 * max(theirs),
    )


# Restore on its own too: its peak is set by the pack reader's bound and the chunk cache, not
# put's (format 2 restore peaked at 362 MB on the Django sdists while put's 173 MiB met the target).
RSS_TARGETS = [_rss_target("peak_rss_mib", "peak RSS"), _rss_target("restore_peak_rss_mib", "peak RSS of restore")]


def targets_for(kind: str) -> list[Target]:
    return [*([STORE_RATIO_TARGET] if kind in STORE_RATIO_TARGET_DATASETS else []), *SPEED_TARGETS, *RSS_TARGETS]


def measure_grid(files: list[Path], sizes: tuple[int, ...]) -> list[dict]:
    """Every chunker at every size, in memory, at the default zstd level."""
    rows = []
    for chunker in CHUNKERS:
        for size in sizes:
            rows.append(micro.measure(files, ChunkerSpec.from_average(chunker, size), [DEFAULT_ZSTD_LEVEL]))
    return rows


def measure_dataset(
    dataset: datasets.Dataset, tools: list, work: Path, preset: str, runs: int, avg_size: int = DEFAULT_AVG_SIZE
) -> dict:
    kind = dataset.spec.kind
    files = [path for _, path in datasets.files_in(dataset.root)]
    grid = measure_grid(files, GRID_SIZES[preset])
    default = next(
        (row for row in grid if row["chunker"] == DEFAULT_CHUNKER and row["avg_size"] == avg_size), None
    ) or micro.measure(files, ChunkerSpec.from_average(DEFAULT_CHUNKER, avg_size), [DEFAULT_ZSTD_LEVEL])
    results = run_tools(tools, dataset, work / "runs" / kind, runs)
    tool_medians = {name: medians(tool_runs) for name, tool_runs in results.items()}
    figures = compute_figures(tool_medians, dataset.logical_bytes, SUITE_FIGURES)
    measured_peers = [name for name in results if name != SUBJECT]
    speed_of_light = {
        "one_core_mb_s": default["pipeline_one_core_mb_s"],
        "two_core_bound_mb_s": default["pipeline_two_core_bound_mb_s"],
        "store_ratio": default["levels"][DEFAULT_ZSTD_LEVEL]["store_ratio"],
    }
    return {
        "dataset": dataset.to_json(),
        "grid": grid,
        "speed_of_light": speed_of_light,
        "put_share_of_speed_of_light": figures["put_mb_s"][SUBJECT] / speed_of_light["two_core_bound_mb_s"],
        "results": {name: {"runs": tool_runs, "median": tool_medians[name]} for name, tool_runs in results.items()},
        "chunkstore_stats": results[SUBJECT][-1]["stats"],
        "figures": figures,
        "targets": evaluate(figures, measured_peers, targets_for(kind)),
    }


# ---- the s3:// store on a local moto server -------------------------------------------


@contextmanager
def moto_server():
    """The emulator (benchmarks/emulator.py), with boto3 pointed at it through the environment."""
    from .emulator import emulator

    with emulator() as endpoint:
        settings = {**MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        saved = {name: os.environ.get(name) for name in [*settings, "AWS_PROFILE"]}
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(settings)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def requests_since(before: dict | None, after: dict | None) -> dict:
    """The requests and their cost between two snapshots of chunkstore's request counter."""
    if before is None or after is None:
        raise RuntimeError("the s3:// store counted no requests")
    counts = {}
    for service in ("s3", "dynamodb"):
        counts[service] = sum(after.get(service, {}).values()) - sum(before.get(service, {}).values())
    counts["usd"] = after["estimated_usd"] - before["estimated_usd"]
    return counts


def measure_s3_size(sample: Path, avg_size: int, scratch: Path) -> dict:
    from chunkstore import Store
    from chunkstore.backends.aws import cost_estimate

    name = f"bench-{avg_size // KIB}k"
    url = f"s3://{name}/store"
    store = Store.init(
        url,
        ChunkerSpec.from_average(DEFAULT_CHUNKER, avg_size),
        CompressionSpec("zstd", DEFAULT_ZSTD_LEVEL),
        table=name,
        create=True,
        storage_format=1,
    )
    try:
        before = store.request_counts()
        summary = store.put([sample])
        put = requests_since(before, store.request_counts())
        stats = store.stats()
    finally:
        store.close()
    if summary.count("error"):
        raise RuntimeError(f"put on the s3:// store failed for {summary.count('error')} files")
    store = Store.open(url, read_only=True)
    target = scratch / name
    try:
        before = store.request_counts()
        store.restore(str(sample).lstrip("/"), target)
        restore = requests_since(before, store.request_counts())
    finally:
        store.close()
    restored = datasets.dataset_digest(target / str(sample).lstrip("/"))
    if restored != datasets.dataset_digest(sample):
        raise RuntimeError(f"the s3:// store restored different bytes at {avg_size} bytes per chunk")
    shutil.rmtree(target)
    gigabytes = stats["logical_bytes"] / 1e9
    model = cost_estimate(stats)
    return {
        "avg_size": avg_size,
        "logical_bytes": stats["logical_bytes"],
        "stored_bytes": stats["stored_bytes"],
        "chunks": stats["chunks"],
        "store_ratio": stats["store_ratio"],
        "restore_verified": True,
        "put_requests": put,
        "restore_requests": restore,
        "s3_requests_per_gb_put": put["s3"] / gigabytes,
        "dynamodb_requests_per_gb_put": put["dynamodb"] / gigabytes,
        "s3_requests_per_gb_restored": restore["s3"] / gigabytes,
        "dynamodb_requests_per_gb_restored": restore["dynamodb"] / gigabytes,
        # Measured requests at list prices; the DynamoDB part counts the capacity the server reported.
        "request_usd_per_tb_ingested": put["usd"] / stats["logical_bytes"] * TB,
        "request_usd_per_tb_restored": restore["usd"] / stats["logical_bytes"] * TB,
        # chunkstore's own cost model (stats on an s3:// store), for the same store: per TB of
        # new (not yet stored) data, so without the dedup the measured figure includes.
        "model_usd_per_tb_new_data": model["ingest_usd_per_gb_new_data"] * 1000,
        "storage_usd_per_tb_month": model["storage_usd_per_logical_gb_month"] * 1000,
    }


def s3_sample(dataset: datasets.Dataset, budget: int, folder: Path) -> Path:
    """The dataset's first files in name order, up to budget bytes (at least one), linked into folder."""
    if folder.exists():
        shutil.rmtree(folder)
    total = 0
    for name, path in datasets.files_in(dataset.root):
        if total and total + path.stat().st_size > budget:
            break
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, folder / name)
        total += path.stat().st_size
    return folder


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


def measure_s3(dataset: datasets.Dataset, preset: str, work: Path) -> dict:
    """Request counts per chunk size, or {"skipped": why} where the s3:// store cannot run here."""
    missing = [module for module in ("boto3", "moto.server") if not _importable(module)]
    if missing:
        return {"skipped": f"{', '.join(missing)} is not installed (pip install 'chunkstore[s3]' 'moto[server]')"}
    sample = s3_sample(dataset, S3_SAMPLE_BYTES[preset], work / "s3-sample" / "sample")
    rows = []
    try:
        with moto_server(), tempfile.TemporaryDirectory(prefix="chunkstore-bench-s3-") as scratch:
            for size in S3_SIZES[preset]:
                rows.append(measure_s3_size(sample, size, Path(scratch)))
                print(
                    f"s3 {size // KIB}K: {rows[-1]['s3_requests_per_gb_put']:.0f} S3 requests/GB put", file=sys.stderr
                )
    except Exception as error:  # noqa: BLE001  (the s3:// store is optional here: its failure is reported, not fatal)
        return {"skipped": f"the s3:// store failed: {type(error).__name__}: {error}", "rows": rows}
    finally:
        shutil.rmtree(sample.parent, ignore_errors=True)
    return {"dataset": dataset.spec.kind, "sample_bytes": rows[0]["logical_bytes"], "rows": rows}


def measure_s3_in_child(dataset: datasets.Dataset, preset: str, work: Path) -> dict:
    """measure_s3 in a forked child process. moto's server keeps every object and many
    copies of its tables in memory (GBs for a --quick run); a child gives it all back at
    exit at once, where this process would spend minutes freeing it object by object."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        try:
            return pool.submit(measure_s3, dataset, preset, work).result()
        except BrokenProcessPool as error:
            return {"skipped": f"the s3:// measurement process died: {error}"}


# ---- the report --------------------------------------------------------------------------


def _size_text(size: int) -> str:
    return f"{size // (1024 * KIB)}M" if size >= 1024 * KIB else f"{size // KIB}K"


def defaults_table(result: dict) -> str:
    rows = figure_rows(result["figures"], result["targets"], SUITE_FIGURES, targets_for(result["dataset"]["kind"]))
    light, blank = result["speed_of_light"], ["—"] * (2 * len(PEERS))
    rows.append(
        [
            "speed of light: chunk + hash + compress in memory, 2-core bound",
            format_value(light["two_core_bound_mb_s"], "MB/s"),
            *blank,
            "",
            "",
        ]
    )
    rows.append(
        ["put of new data / speed of light", format_value(result["put_share_of_speed_of_light"], "x"), *blank, "", ""]
    )
    rows.append(
        [
            "chunkstore `stats --json` store_ratio",
            format_value(result["chunkstore_stats"]["store_ratio"], "x"),
            *blank,
            "",
            "",
        ]
    )
    return markdown_table(FIGURE_HEADERS, rows)


def grid_table(grid: list[dict]) -> str:
    headers = [
        "chunker",
        "avg",
        "chunks",
        "dedup",
        "compression",
        "store ratio",
        "min",
        "median",
        "p99",
        "max",
        "chunk MB/s",
        "2-core bound MB/s",
    ]
    rows = []
    for row in grid:
        level = row["levels"][DEFAULT_ZSTD_LEVEL]
        rows.append(
            [
                row["chunker"],
                _size_text(row["avg_size"]),
                f"{row['chunks']:,}",
                f"{row['dedup_ratio']:.2f}x",
                f"{level['compression_ratio']:.2f}x",
                f"{level['store_ratio']:.2f}x",
                *(
                    f"{row[key] / KIB:.1f}K"
                    for key in ("chunk_size_min", "chunk_size_median", "chunk_size_p99", "chunk_size_max")
                ),
                f"{row['chunk_mb_s']:.0f}",
                f"{row['pipeline_two_core_bound_mb_s']:.0f}",
            ]
        )
    return markdown_table(headers, rows)


def s3_section(s3: dict) -> list[str]:
    lines = ["## s3:// store on a local moto server", ""]
    if "skipped" in s3:
        return [*lines, f"Skipped: {s3['skipped']}", ""]
    headers = [
        "avg chunk",
        "store ratio",
        "S3 req/GB put",
        "DynamoDB req/GB put",
        "S3 req/GB restored",
        "DynamoDB req/GB restored",
        "$/TB ingested (requests)",
        "$/TB new data (model)",
        "$/TB-month stored",
    ]
    rows = [
        [
            _size_text(row["avg_size"]),
            f"{row['store_ratio']:.2f}x",
            f"{row['s3_requests_per_gb_put']:,.0f}",
            f"{row['dynamodb_requests_per_gb_put']:,.0f}",
            f"{row['s3_requests_per_gb_restored']:,.0f}",
            f"{row['dynamodb_requests_per_gb_restored']:,.0f}",
            f"{row['request_usd_per_tb_ingested']:.2f}",
            f"{row['model_usd_per_tb_new_data']:.2f}",
            f"{row['storage_usd_per_tb_month']:.2f}",
        ]
        for row in s3["rows"]
    ]
    return [
        *lines,
        (
            f"Sample: the first {s3['sample_bytes'] / MB:.1f} MB of {s3['dataset']}, default chunker and zstd level; "
            "requests counted by chunkstore's request accounting, every restore checked byte for byte. "
            '"requests": the measured requests at AWS list prices (DynamoDB by the capacity the server reported); '
            '"model": chunkstore\'s cost model in `stats`, per TB of data not yet in the store. '
            "Storage: after dedup and compression, S3 Standard."
        ),
        "",
        markdown_table(headers, rows),
        "",
    ]


def target_lines(results: dict[str, dict]) -> list[str]:
    lines = []
    for kind, result in results.items():
        for target in result["targets"]:
            lines.append(f"- {kind}: {target['target']}: **{verdict(target)}**")
    return lines


def headline(document: dict) -> str:
    kind = HEADLINE_DATASET if HEADLINE_DATASET in document["datasets"] else next(iter(document["datasets"]))
    result = document["datasets"][kind]
    dataset, env, defaults = result["dataset"], document["environment"], document["defaults"]
    return "\n".join(
        [
            (
                f"## Headline: {kind}, default settings (format {defaults['storage_format']}, "
                f"{defaults['chunker']}, {_size_text(defaults['avg_size'])}, zstd {defaults['zstd_level']})"
            ),
            "",
            (
                f"Dataset: {dataset['versions']} versions, {dataset['logical_bytes'] / MB:.1f} MB "
                f"(seed {dataset['seed']}, digest {dataset['digest'][:16]}); median of {document['runs']} runs; "
                f"load average {env['load_average_start']:.2f} at the start, "
                f"{document['load_average_end']:.2f} at the end on {env['cpus']} cores."
            ),
            "",
            defaults_table(result),
            "",
            "### Targets",
            "",
            *target_lines(document["datasets"]),
            "",
        ]
    )


def build_markdown(document: dict) -> str:
    lines = [
        *report_preamble("chunkstore benchmark suite", document),
        (
            "MB = 10^6 bytes; store ratio = dataset bytes / bytes the repository takes on disk; every restore checked "
            "byte for byte."
        ),
        "",
        headline(document),
    ]
    for kind, result in document["datasets"].items():
        dataset = result["dataset"]
        lines += [
            f"## {kind}",
            "",
            (
                f"{dataset['versions']} versions, {dataset['files']} files, {dataset['logical_bytes'] / MB:.1f} MB "
                f"(seed {dataset['seed']}, digest {dataset['digest'][:16]})."
            ),
            "",
            "### Default settings through the command line",
            "",
            defaults_table(result),
            "",
            f"### Chunkers and chunk sizes (in memory, zstd {DEFAULT_ZSTD_LEVEL})",
            "",
            grid_table(result["grid"]),
            "",
        ]
    lines += s3_section(document["s3"])
    lines += ["## Charts", ""]
    if document["charts"]["skipped"]:
        lines.append(f"Charts skipped: {document['charts']['skipped']}")
    lines += [f"![{Path(chart).stem}]({chart})" for chart in document["charts"]["files"]]
    lines += ["", "## Tools", ""]
    lines += [f"- {name}: {tool['version']} — {tool['settings']}" for name, tool in document["tools"].items()]
    return "\n".join(lines) + "\n"


def release_key(path: Path) -> tuple:
    """Django-4.2.10.tar after Django-4.2.9.tar: release order, not name order."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def releases_dataset(folder: Path, count: int, cache: Path) -> datasets.Dataset:
    """The first count release tars of folder, in release order, linked into cache as one version each
    (named so that name order is release order)."""
    tars = sorted(folder.glob("*.tar"), key=release_key)[:count]
    if not tars:
        raise SystemExit(f"no release tars (*.tar) in {folder}")
    root = cache / RELEASES / RELEASES
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for number, tar in enumerate(tars, 1):
        os.link(tar, root / f"v{number:03d}-{tar.name}")
    return datasets.describe(datasets.DatasetSpec(RELEASES, seed=0, total_bytes=0, corpus_bytes=None), root)


def chosen_kinds(text: str) -> list[str]:
    if text == "all":
        return list(datasets.KINDS)
    return comma_list(text, datasets.KINDS, "dataset")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    datasets.add_arguments(parser)
    parser.add_argument(
        "--dataset",
        type=chosen_kinds,
        default=list(datasets.KINDS),
        metavar="NAME|all",
        help=f"one or more of {', '.join(datasets.KINDS)} (comma-separated), or all (default)",
    )
    add_peers_argument(parser)
    parser.add_argument(
        "--runs", type=int, help="runs per tool and dataset; figures are medians (default 3, 1 with --quick or --smoke)"
    )
    add_format_argument(parser, "; the s3:// rows, one per chunk size, are format 1's")
    parser.add_argument(
        "--releases",
        type=Path,
        metavar="FOLDER",
        help="also measure real releases: the uncompressed *.tar of one project in FOLDER "
        "(e.g. ~/.cache/chunkstore-bench/Django, filled by `python -m benchmarks.chunk_size_curve`)",
    )
    parser.add_argument(
        "--releases-count",
        type=int,
        default=DEFAULT_RELEASES,
        metavar="N",
        help=f"the first N releases of --releases (default {DEFAULT_RELEASES})",
    )
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the s3:// store on a moto server")
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help=f"scratch folder for datasets and repositories (default {DEFAULT_WORK})",
    )
    args = parser.parse_args(argv)
    runs = args.runs or DEFAULT_RUNS[args.preset]
    if runs < 1:
        parser.error("--runs must be at least 1")
    started = environment()

    tools = select_tools(args.peers, args.storage_format)
    storage_format = args.storage_format or DEFAULT_STORAGE_FORMAT
    avg_size = default_avg_size(storage_format)
    results, materialized = {}, {}
    if args.releases:
        materialized[RELEASES] = releases_dataset(args.releases, args.releases_count, args.work / "datasets")
    for kind in args.dataset:
        materialized[kind] = datasets.materialize(datasets.spec_from_arguments(args, kind), args.work / "datasets")
    for kind, dataset in materialized.items():
        print(
            f"{kind}: {dataset.versions} versions, {dataset.logical_bytes / MB:.1f} MB in {dataset.root}",
            file=sys.stderr,
        )
        results[kind] = measure_dataset(dataset, tools, args.work, args.preset, runs, avg_size)
    s3_dataset = materialized.get(HEADLINE_DATASET) or next(iter(materialized.values()))
    s3 = measure_s3_in_child(s3_dataset, args.preset, args.work) if args.s3 else {"skipped": "--no-s3"}
    document = {
        "environment": started,
        "load_average_end": os.getloadavg()[0],
        "preset": args.preset,
        "runs": runs,
        "defaults": {
            "storage_format": storage_format,
            "chunker": DEFAULT_CHUNKER,
            "avg_size": avg_size,
            "zstd_level": DEFAULT_ZSTD_LEVEL,
        },
        "tools": {tool.name: {"version": tool.version(), "settings": tool.describe_settings()} for tool in tools},
        "datasets": results,
        "s3": s3,
    }
    document["charts"] = write_charts(args.out, document)
    write_reports(args.out, "report", build_markdown(document), document)
    print(headline(document))
    if document["charts"]["skipped"]:
        print(f"charts skipped: {document['charts']['skipped']}")
    return 0

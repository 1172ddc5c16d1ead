"""What every benchmark report shares: the machine it ran on, markdown tables, the files it writes."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from .tools import cpu_model

MB = 10**6
MIB = 1024**2


def environment() -> dict:
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]]),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": os.getloadavg()[0],
        "source_revision": source_revision(),
    }


def source_revision() -> str | None:
    """The checkout's commit, marked "+modified" when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+modified" if changes else commit


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    # `python -m benchmarks` runs benchmarks.__main__: show the command as typed.
    return spec.name.removesuffix(".__main__") if spec is not None else Path(sys.argv[0]).stem


def report_preamble(title: str, document: dict) -> list[str]:
    """The lines every report opens with: its title, the command, the machine and, for a
    benchmark on one dataset, the dataset."""
    env = document["environment"]
    lines = [
        f"# {title}",
        "",
        f"Command: `{env['command']}`  ",
        f"Machine: {env['cpu']}, {env['cpus']} cores, Python {env['python']}, {env['date_utc']}, "
        f"source {env['source_revision']}  ",
    ]
    dataset = document.get("dataset")
    if dataset is not None:
        lines.append(
            f"Dataset: {dataset['kind']}, {dataset['versions']} versions, {dataset['logical_bytes'] / MB:.1f} MB "
            f"(seed {dataset['seed']}, digest {dataset['digest'][:16]})  "
        )
    return lines


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(headers), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *(line(row) for row in rows)]
    )


def write_reports(out: Path, stem: str, markdown: str, document: dict) -> tuple[Path, Path]:
    """Write out/STEM.md and out/STEM.json; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    markdown_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    json_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return markdown_path, json_path


def write_charts(out: Path, document: dict) -> dict:
    """The suite's PNG charts in out: {"files": [names], "skipped": None, or why there are none}.

    matplotlib is optional (the `bench` extra): without it the report says the charts were skipped."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return {"files": [], "skipped": "matplotlib is not installed (pip install 'chunkstore[bench]')"}
    out.mkdir(parents=True, exist_ok=True)
    defaults = document["defaults"]
    level = defaults["zstd_level"]
    files = []

    def save(figure, axes, name: str, title: str, xlabel: str, ylabel: str, log_x: bool = True) -> None:
        if log_x:
            axes.set_xscale("log", base=2)
            axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        pyplot.close(figure)
        files.append(name)

    figure, axes = pyplot.subplots(figsize=(8, 5))
    for kind, result in document["datasets"].items():
        rows = [row for row in result["grid"] if row["chunker"] == defaults["chunker"]]
        axes.plot(
            [row["avg_size"] / 1024 for row in rows],
            [row["levels"][level]["store_ratio"] for row in rows],
            marker="o",
            label=kind,
        )
    save(
        figure,
        axes,
        "store-ratio-vs-chunk-size.png",
        f"Store ratio by average chunk size ({defaults['chunker']}, zstd {level})",
        "average chunk size (KiB)",
        "store ratio (x)",
    )

    chunkers = sorted({row["chunker"] for result in document["datasets"].values() for row in result["grid"]})
    figure, panels = pyplot.subplots(1, len(chunkers), figsize=(5 * len(chunkers), 5), sharey=True, squeeze=False)
    for chunker, axes in zip(chunkers, panels[0], strict=True):
        for kind, result in document["datasets"].items():
            rows = [row for row in result["grid"] if row["chunker"] == chunker]
            axes.plot(
                [row["avg_size"] / 1024 for row in rows],
                [row["pipeline_two_core_bound_mb_s"] for row in rows],
                marker="o",
                label=kind,
            )
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set(title=chunker, xlabel="average chunk size (KiB)")
        axes.grid(True, alpha=0.3)
    panels[0][0].set_ylabel("MB/s")
    panels[0][0].legend(fontsize="small")
    figure.suptitle("Chunk + hash + compress in memory (2-core bound) by average chunk size")
    figure.tight_layout()
    figure.savefig(out / "throughput-vs-chunk-size.png", dpi=100)
    pyplot.close(figure)
    files.append("throughput-vs-chunk-size.png")

    s3_rows = document["s3"].get("rows") or []
    if s3_rows:
        figure, axes = pyplot.subplots(figsize=(8, 5))
        axes.plot(
            [row["store_ratio"] for row in s3_rows],
            [row["request_usd_per_tb_ingested"] for row in s3_rows],
            marker="o",
            label="requests to ingest 1 TB",
        )
        axes.plot(
            [row["store_ratio"] for row in s3_rows],
            [row["storage_usd_per_tb_month"] for row in s3_rows],
            marker="s",
            label="storage of 1 TB for a month",
        )
        for row in s3_rows:
            axes.annotate(
                f"{row['avg_size'] // 1024}K",
                (row["store_ratio"], row["request_usd_per_tb_ingested"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
        save(
            figure,
            axes,
            "cost-vs-store-ratio.png",
            "AWS cost per TB against store ratio, by average chunk size",
            "store ratio (x)",
            "US dollars per TB",
            log_x=False,
        )
    return {"files": files, "skipped": None}

"""What every benchmark report shares: the machine it ran on, markdown tables, the files it writes."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from .tools import cpu_model

MB = 10**6
MIB = 1024**2


def environment() -> dict:
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+modified" if changes else commit


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (width + 2) for width in widths) + "|",
                      *(line(row) for row in rows)])


def write_reports(out: Path, stem: str, markdown: str, document: dict) -> tuple[Path, Path]:
    """Write out/STEM.md and out/STEM.json; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    markdown_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    json_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return markdown_path, json_path

"""What commands print: JSON documents, warnings, sizes, times, names made safe for a
terminal, and tables (drawn by rich on a terminal, plain columns for pipes and scripts)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import click

# C0 controls, DEL, C1 controls, and lone surrogates (bytes of a file name that were not
# UTF-8, kept by Python's surrogateescape). Any of them can move the cursor, rewrite
# what is already on the screen or hide a name's real spelling.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """text as it is when it has no control character; otherwise as a Python string literal,
    quotes included (ESC shows as \\x1b, a byte that was not UTF-8 as \\udcNN), so that a
    hostile file name can neither drive the terminal nor pass for another name."""
    return repr(text) if _CONTROL.search(text) else text


def warning_line(message: str) -> str:
    """A message for stderr, prefixed `chunkstore: ` (the prefix scripts and tests look for)."""
    return f"chunkstore: {printable(message)}"


def warn(message: str) -> None:
    click.echo(warning_line(message), err=True)


def echo_json(document) -> None:
    """Print document as JSON, streamed: objects with a to_json method (a put's file results)
    are converted one at a time, so a put of 100,000 files never holds its whole report as
    dicts and one string (that took ~110 MiB of its 297 MiB peak)."""
    stream = sys.stdout
    encoder = json.JSONEncoder(indent=2, sort_keys=True, default=lambda value: value.to_json())
    for piece in encoder.iterencode(document):
        stream.write(piece)
    stream.write("\n")
    stream.flush()


def with_requests(document: dict, store) -> dict:
    """Add the S3 and DynamoDB requests this command made, for a store on AWS."""
    requests = store.request_counts()
    if requests is not None:
        document["requests"] = requests
    return document


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def signed_bytes(count: int) -> str:
    return ("+" if count >= 0 else "-") + human_bytes(abs(count))


def local_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


@dataclass(frozen=True)
class Column:
    """A table column: its header, and how plain output pads it (the last column is not padded)."""

    header: str
    width: int = 0
    align: str = "<"


def print_table(columns: list[Column], rows: list[tuple[str, ...]], *, plain_header: bool = True) -> None:
    """Rows under their headers: a rich table on a terminal; otherwise the fixed-width lines
    scripts parse, separated by two spaces (with the header line when plain_header)."""
    if stdout_is_terminal():
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column.header, justify="right" if column.align == ">" else "left", overflow="fold")
        for row in rows:
            # Text, not str: rich would read `[bold]` in a file name as markup.
            table.add_row(*(Text(cell) for cell in row))
        _stdout_console().print(table)
        return
    lines = ([tuple(column.header for column in columns)] if plain_header else []) + rows
    for cells in lines:
        padded = [f"{cell:{column.align}{column.width}}" for column, cell in zip(columns[:-1], cells[:-1], strict=True)]
        click.echo("  ".join([*padded, cells[-1]]))


def print_fields(fields: list[tuple[str, str]]) -> None:
    """Labelled values, one per line (`files:        3`); a two-column table on a terminal."""
    if stdout_is_terminal():
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, value in fields:
            table.add_row(Text(label), Text(value))
        _stdout_console().print(table)
        return
    for label, value in fields:
        click.echo(f"{label + ':':<14}{value}")


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False)

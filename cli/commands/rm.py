"""`chunkstore rm`: remove files or versions."""

from __future__ import annotations

import click

from ..exits import EXIT_OK
from ..options import count_option
from ..output import printable


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@count_option("--version", "version", help="Remove only this version.")
@click.option("--recursive", "-r", is_flag=True, help="Remove every file under each NAME.")
@click.pass_obj
def rm(context, names: tuple[str, ...], version: int | None, recursive: bool) -> int:
    """Remove files (every version, or one with --version). `gc` then frees their chunks.

    A NAME that is not stored exits 3 and removes nothing.
    """
    store = context.open_store()
    try:
        removed = store.remove(names, version=version, recursive=recursive)
    finally:
        store.close()
    if not context.quiet:
        for record in removed:
            click.echo(f"removed {printable(record.name)} (version {record.version})")
    return EXIT_OK

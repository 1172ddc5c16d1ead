"""`chunkstore get` and `chunkstore restore`: read stored files back, verified."""

from __future__ import annotations

import sys

import click

from chunkstore.operations import history

from ..exits import EXIT_OK
from ..options import as_of_option, count_option, resolve_as_of
from ..output import human_bytes, printable
from ..progress import ProgressDisplay


@click.command()
@click.argument("name")
@count_option("--version", "version", help="A version number (default: the latest).")
@as_of_option("The file")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write to FILE (atomically, after verification; a device or FIFO is written into) instead of stdout.",
)
@click.pass_obj
def get(context, name: str, version: int | None, as_of, output: str | None) -> int:
    """Write a stored file to stdout or to FILE, verifying every byte.

    Each chunk is checked against its hash before it is written and the whole
    file against its recorded digest; a mismatch exits 4 naming the file.
    A file deleted by `put --sync` is not found (exit 3) unless --version or
    --as-of names a time it existed.

    \b
    Examples:
      chunkstore get db.sql --as-of 2026-11-20 > db.sql
      chunkstore get photos/a.jpg --version 2 -o a.jpg
    """
    if version is not None and as_of is not None:
        raise click.UsageError("--version and --as-of both choose the version: give one of them")
    store = context.open_store(read_only=True)
    try:
        if as_of is not None:
            version = history.version_at(store, name, resolve_as_of(store, as_of).at_ns).version
        if output:
            with ProgressDisplay(context.show_progress) as progress:
                store.get_to_path(name, output, version=version, on_progress=progress.advance)
        else:
            store.get(name, sys.stdout.buffer, version=version)
    finally:
        store.close()
    return EXIT_OK


@click.command()
@click.argument("prefix")
@click.option(
    "-o",
    "--output",
    "destination",
    required=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Folder to restore into: NAME is written to DIR/NAME.",
)
@as_of_option("Restore the files")
@click.pass_obj
def restore(context, prefix: str, destination: str, as_of) -> int:
    """Restore the latest version of every file under PREFIX into DIR, with mode and mtime
    (set-user-ID and set-group-ID bits are dropped, since owners are not restored).

    With --as-of, every file is restored as it was then, and files that did not
    exist then (not yet stored, or deleted by a `put --sync`) are left out. DIR
    is not emptied first: restore into a new folder to get exactly that state.

    Every file is verified before it is renamed into place. A file that fails
    verification is reported (and not written) and the exit code is 4; the
    other files are still restored.

    \b
    Example:
      chunkstore restore projects -o /tmp/projects --as-of 2026-11-20T03:00
    """
    store = context.open_store(read_only=True)
    with ProgressDisplay(context.show_progress) as progress:

        def on_result(result) -> None:
            if result.error:
                progress.warn(result.error)

        try:
            as_of_ns = None if as_of is None else resolve_as_of(store, as_of).at_ns
            summary = store.restore(
                prefix, destination, as_of_ns=as_of_ns, on_result=on_result, on_progress=progress.advance
            )
        finally:
            store.close()
    if not context.quiet:
        restored = len(summary.results) - len(summary.errors)
        click.echo(
            f"restored {restored} files ({human_bytes(summary.bytes)}) to {printable(destination)}"
            + (f"; {len(summary.errors)} failed" if summary.errors else "")
        )
    # Each failed file carries the exit code of its error (4 for integrity, 2 for an unsafe name).
    return max((result.exit_code for result in summary.errors), default=EXIT_OK)

"""`chunkstore put`: store files, folders or stdin, recorded as one snapshot."""

from __future__ import annotations

import os
import sys

import click

from chunkstore.operations import history

from ..exits import EXIT_ERROR, EXIT_OK
from ..options import checked_by, parse_time
from ..output import echo_json, human_bytes, printable, with_requests
from ..progress import ProgressDisplay

# What the snapshots of put runs from the command line say ran them.
PUT_PROGRAM = "chunkstore put"


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--as",
    "as_name",
    metavar="NAME",
    help="Store under NAME instead of the path (one PATH only; required for '-', stdin).",
)
@click.option(
    "--force-read",
    is_flag=True,
    help="Read every file, even those whose size, mtime and inode are unchanged since the last put.",
)
@click.option(
    "--sync",
    is_flag=True,
    help="Also record as deleted every stored name under a folder PATH that is no longer there, "
    "so that restores (latest or --as-of) match the folder. Earlier versions stay readable.",
)
@click.option(
    "--time",
    "at_ns",
    metavar="TIME",
    callback=checked_by(parse_time),
    help="Record this put as made at TIME (local unless it ends in Z or +HH:MM) instead of now: "
    "for importing backups taken elsewhere, oldest first. Between 1970-01-01 and 2262-04-11.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print every file's outcome, the totals and the snapshot as JSON."
)
@click.option("--verbose", "-v", is_flag=True, help="Print one line per file (and per deletion, with --sync).")
@click.pass_obj
def put(
    context,
    paths: tuple[str, ...],
    as_name: str | None,
    force_read: bool,
    sync: bool,
    at_ns: int | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Store files and folders (recursively); '-' reads stdin (with --as NAME).

    Names are the paths as given, made relative: `put /data/x` stores `data/x`,
    and a folder given as `.` has its files stored under their paths within it.
    A file prints its outcome: `stored`, `duplicate of NAME` or `unchanged`
    (size, mtime and inode match its latest version, so it was not read).
    A folder prints a summary. Files that cannot be read, symlinks and special
    files are reported and skipped, and the exit code is then 1.

    Every put is recorded as a snapshot (see `chunkstore snapshots`): its time,
    host, paths and counts. All its versions carry the time it started, so
    `--as-of SNAPSHOT` later shows exactly what it stored. With --sync, files
    deleted from a folder since the last put get a deletion marker: they
    disappear from `ls`, `restore` and `get`, and `--as-of` shows them when they
    existed. A PATH that is missing altogether marks nothing deleted.

    \b
    Examples:
      chunkstore put ~/projects --sync
      pg_dump db | chunkstore put - --as db.sql
    """
    if as_name is not None and len(paths) != 1:
        raise click.UsageError("--as takes exactly one PATH")
    if "-" in paths:
        if as_name is None:
            raise click.UsageError("putting stdin ('-') needs --as NAME")
        if sync:
            raise click.UsageError("--sync applies to folders, not to stdin ('-')")
        return _put_stdin(context, as_name, as_json, at_ns)
    store = context.open_store()
    single_file = len(paths) == 1 and not _is_folder(paths[0])
    sources = [(paths[0], as_name)] if as_name else list(paths)
    with ProgressDisplay(context.show_progress and not as_json) as progress:

        def on_result(result) -> None:
            if result.outcome == "error":
                progress.warn(f"{printable(result.path or result.name)}: {result.error}")
            elif verbose and not as_json:
                progress.echo(_outcome_line(result))

        def on_progress(state) -> None:
            progress.update(state.bytes_done, state.bytes_total, f"{state.files_done}/{state.files_total} files")

        try:
            summary = store.put(
                sources,
                program=PUT_PROGRAM,
                sync=sync,
                at_ns=at_ns,
                force_read=force_read,
                on_result=on_result,
                on_progress=on_progress,
            )
        finally:
            store.close()
    if as_json:
        echo_json(with_requests(summary.to_json(results_as_objects=True), store))
    elif single_file and summary.results and not verbose:
        result = summary.results[0]
        if result.outcome != "error":
            click.echo(_outcome_line(result))
    elif not context.quiet:
        totals = summary.to_json()
        ratio = "n/a" if totals["dedup_ratio"] is None else f"{totals['dedup_ratio']:.2f}x"
        click.echo(
            f"{totals['files']} files: {totals['stored']} stored, {totals['duplicate']} duplicate, "
            f"{totals['unchanged']} unchanged, {totals['errors']} errors"
        )
        click.echo(
            f"{human_bytes(totals['logical_bytes'])} in, {human_bytes(totals['new_bytes'])} new "
            f"({human_bytes(totals['stored_new_bytes'])} stored), dedup {ratio}, "
            f"{totals['mb_per_second']:.1f} MB/s"
        )
    if sync and not as_json and not context.quiet:
        for marker in summary.deleted if verbose else ():
            click.echo(f"{printable(marker.name)}: deleted")
        recorded = f"; snapshot {summary.snapshot.snapshot_id[:8]}" if summary.snapshot else ""
        click.echo(f"{len(summary.deleted)} deleted since the last put{recorded}")
    return EXIT_ERROR if summary.count("error") else EXIT_OK


def _outcome_line(result) -> str:
    # The other file a duplicate names is escaped on its own, as every name is.
    message = f"duplicate of {printable(result.duplicate_of)}" if result.outcome == "duplicate" else result.message
    return f"{printable(result.name)}: {printable(message)}"


def _is_folder(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _put_stdin(context, name: str, as_json: bool, at_ns: int | None) -> int:
    store = context.open_store()
    try:
        summary = store.put_stream(sys.stdin.buffer, name, program=PUT_PROGRAM, at_ns=at_ns)
    finally:
        store.close()
    result = summary.results[0]
    if as_json:
        echo_json(with_requests({**result.to_json(), "snapshot": history.snapshot_json(summary.snapshot)}, store))
    else:
        click.echo(_outcome_line(result))
    return EXIT_OK

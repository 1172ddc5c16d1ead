"""`chunkstore ls`: list stored files."""

from __future__ import annotations

import stat

import click

from chunkstore.errors import NameNotFoundError
from chunkstore.operations import history

from ..exits import EXIT_OK
from ..options import as_of_option, resolve_as_of
from ..output import Column, echo_json, local_time, print_table, printable

COLUMNS = [Column("version", 4, ">"), Column("size", 14, ">"), Column("stored at", 19), Column("name")]


@click.command(name="ls")
@click.argument("prefix", required=False, default="")
@click.option(
    "--versions",
    "all_versions",
    is_flag=True,
    help="List every version, not only the latest, deletion markers (`deleted`) included.",
)
@as_of_option("List the files")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def list_command(context, prefix: str, all_versions: bool, as_of, as_json: bool) -> int:
    """List stored files: the latest version of each, or all with --versions.

    Each line gives the version number, the size in bytes, when it was stored
    (local time) and the name. Names with control characters are shown as
    quoted, escaped strings ('a\\x1bb'). Files deleted by `put --sync` are not
    listed (their versions and deletion markers are, with --versions). With
    --as-of, the files as they were then. A PREFIX that matches nothing exits 3.
    """
    store = context.open_store(read_only=True)
    try:
        as_of_ns = None if as_of is None else resolve_as_of(store, as_of).at_ns
        records = history.versions(store, prefix, all_versions=all_versions, as_of_ns=as_of_ns)
    finally:
        store.close()
    if as_json:
        echo_json(
            [
                {
                    "name": r.name,
                    "version": r.version,
                    "size": r.size,
                    "mtime_ns": r.stat.mtime_ns,
                    "mode": stat.S_IMODE(r.stat.mode),
                    "type": _kind(r),
                    "deleted": r.deleted,
                    "stored_at_ns": r.stored_at_ns,
                    "digest": r.digest.hex(),
                }
                for r in records
            ]
        )
        return EXIT_OK
    if prefix and not records:
        raise NameNotFoundError(f"no stored file under {prefix!r}")
    print_table(
        COLUMNS,
        [
            (
                str(record.version),
                "deleted" if record.deleted else f"{record.size:,}",
                local_time(record.stored_at_ns),
                printable(record.name),
            )
            for record in records
        ],
        plain_header=False,
    )
    return EXIT_OK


def _kind(record) -> str:
    if record.deleted:
        return "deletion marker"
    return "symlink" if stat.S_ISLNK(record.stat.mode) else "file"

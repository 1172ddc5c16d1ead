"""`chunkstore verify`: check the store, and repair reference counts and counts of versions."""

from __future__ import annotations

import click

from chunkstore.errors import IntegrityError

from ..exits import EXIT_OK
from ..output import echo_json, human_bytes, warn, with_requests
from ..progress import ProgressDisplay


@click.command()
@click.option("--read-data", is_flag=True, help="Also read, decompress and re-hash every chunk.")
@click.option(
    "--subset",
    type=click.FloatRange(0, 100, min_open=True),
    default=None,
    metavar="PERCENT",
    help="With --read-data: read a random PERCENT of the chunks (bounds the egress on S3).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite chunk reference counts from the recipes and contents' counts of versions from "
    "the versions, then list the files that cannot be recovered. Deletes no object; run it when "
    "no put is running.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def verify(context, read_data: bool, subset: float | None, repair: bool, as_json: bool) -> int:
    """Check the store: every recipe's chunks exist, every reference count matches
    the recipes, and with --read-data that every chunk's bytes match its hash.

    Each problem is reported with the files it affects; any problem exits 4.
    With --repair, wrong reference counts and counts of versions are fixed first and what
    remains is reported.

    \b
    Example (a tenth of the chunks, for a cheap check of an s3:// store):
      chunkstore verify --read-data --subset 10
    """
    if subset is not None and not read_data:
        raise click.UsageError("--subset needs --read-data")
    store = context.open_store(read_only=not repair)
    with ProgressDisplay(context.show_progress and not as_json, counting="chunks") as progress:
        try:
            report = store.verify(
                read_data=read_data,
                subset_percent=subset or 100.0,
                repair=repair,
                on_progress=lambda done, total: progress.update(done, total),
            )
        finally:
            store.close()
    # Problems go to stderr with --json too, so a failing run always says why on stderr.
    for problem in report.problems:
        affected = f" (affects: {', '.join(problem.names)})" if problem.names else ""
        warn(f"{problem.kind}: {problem.message}{affected}")
    if as_json:
        echo_json(with_requests(report.to_json(), store))
    elif not context.quiet or not report.ok:
        read = f", read {report.chunks_read} chunks ({human_bytes(report.bytes_read)})" if read_data else ""
        checked = f"{report.versions} versions, {report.contents} contents, {report.chunks} chunks checked{read}"
        if repair:
            if report.pack_items_rebuilt is not None:
                click.echo(f"rebuilt {report.pack_items_rebuilt} pack index items from their packs")
            else:
                click.echo(f"repaired {report.counts_repaired} reference counts")
            click.echo(f"repaired {report.content_counts_repaired} contents' counts of versions")
            if report.pack_items_rebuilt is None and report.damaged_names:
                warn(f"cannot be recovered: {', '.join(report.damaged_names)}")
        if report.ok:
            click.echo(f"ok: {checked}")
        else:
            warn(f"{len(report.problems)} problems: {checked}")
    return EXIT_OK if report.ok else IntegrityError.exit_code

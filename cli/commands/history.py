"""`chunkstore snapshots`, `diff` and `forget`: the history that puts record."""

from __future__ import annotations

import click

from chunkstore.operations import history

from ..exits import EXIT_OK
from ..options import checked_by, count_option, parse_duration, resolve_as_of, time_point_option
from ..output import Column, echo_json, human_bytes, local_time, print_table, printable, signed_bytes, with_requests

SNAPSHOT_COLUMNS = [
    Column("ID", 8),
    Column("time", 19),
    Column("host", 12),
    Column("by", 16),
    Column("stored", 6, ">"),
    Column("unchanged", 9, ">"),
    Column("deleted", 7, ">"),
    Column("added", 10, ">"),
    Column("paths"),
]


@click.command()
@click.argument("prefix", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, with full IDs and UTC nanoseconds.")
@click.pass_obj
def snapshots(context, prefix: str, as_json: bool) -> int:
    """List the snapshots: one per put, oldest first.

    Each shows its ID (give any unique prefix of it to --as-of), the time it
    was taken (local time), the host, what ran the put (`chunkstore put`, `web
    upload`, `lambda ingest`, ...), what the put did (files stored with new
    content, unchanged, deleted with --sync) and the bytes it added, and the
    paths it was given. With PREFIX, only the snapshots of paths that hold it
    or lie under it.
    """
    store = context.open_store(read_only=True)
    try:
        records = history.snapshots(store, prefix)
    finally:
        store.close()
    if as_json:
        echo_json([history.snapshot_json(snapshot) for snapshot in records])
        return EXIT_OK
    if not records:
        if not context.quiet:
            click.echo("no snapshots")
        return EXIT_OK
    print_table(
        SNAPSHOT_COLUMNS,
        [
            (
                snapshot.snapshot_id[:8],
                local_time(snapshot.at_ns),
                printable(snapshot.host[:12]),
                printable(snapshot.program or "-"),
                str(snapshot.stored + snapshot.duplicate),
                str(snapshot.unchanged),
                str(snapshot.deleted),
                human_bytes(snapshot.added_stored_bytes),
                " ".join(printable(path) or "." for path in snapshot.paths),
            )
            for snapshot in records
        ],
    )
    return EXIT_OK


@click.command()
@click.argument("prefix", required=False, default="")
@time_point_option(
    "--from",
    "start",
    required=True,
    what="The earlier state: a date (the end of that day), a date-time or a snapshot ID.",
)
@time_point_option("--to", "end", what="The later state, the same way. Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print the changes and totals as JSON.")
@click.pass_obj
def diff(context, prefix: str, start, end, as_json: bool) -> int:
    """Show what changed under PREFIX between two times: files added (+),
    changed (M) and deleted (-), with their sizes, then the totals.

    A file is changed when its content (or whether it is a symlink) differs;
    a new mtime alone is not a change.

    \b
    Example:
      chunkstore diff projects --from 2026-11-01 --to 2026-11-20
    """
    store = context.open_store(read_only=True)
    try:
        before = resolve_as_of(store, start)
        after = resolve_as_of(store, end) if end is not None else None
        changes = history.diff(store, prefix, before.at_ns, after.at_ns if after else None)
    finally:
        store.close()
    if as_json:
        echo_json(changes.to_json())
        return EXIT_OK
    for change in changes.changes:
        name = printable(change.name)
        old, new = change.before, change.after
        if old is None and new is not None:
            click.echo(f"+ {new.size:>14,}  {name}")
        elif new is None and old is not None:
            click.echo(f"- {old.size:>14,}  {name}")
        elif old is not None and new is not None:
            sizes = f"{old.size:,} -> {new.size:,}"
            click.echo(f"M {sizes:>14}  {name}")
    if not context.quiet:
        totals = [
            f"{len(changes.of_kind(kind))} {kind} ({signed_bytes(changes.size_change(kind))})"
            for kind in ("added", "changed", "deleted")
        ]
        click.echo(f"{', '.join(totals)} from {before.describe()} to {after.describe() if after else 'now'}")
    return EXIT_OK


def _keep_option(rule: str, period: str):
    return count_option(
        f"--keep-{rule}",
        rule,
        metavar="N",
        help=f"Keep the state at the newest point of each of the N newest {period} that have one.",
    )


@click.command()
@click.argument("prefix")
@count_option("--keep-last", "last", metavar="N", help="Keep the state at the N newest points in time.")
@_keep_option("hourly", "hours")
@_keep_option("daily", "days")
@_keep_option("weekly", "ISO weeks")
@_keep_option("monthly", "months")
@_keep_option("yearly", "years")
@click.option(
    "--keep-within",
    "within",
    metavar="DURATION",
    callback=checked_by(parse_duration),
    help="Keep every point newer than the newest one minus DURATION (30d, 2w, 6m, 1y6m, 12h; at most 1000 years).",
)
@click.option("--dry-run", "-n", is_flag=True, help="Only print what would be kept and removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the points, every version's fate and why, as JSON.")
@click.pass_obj
def forget(
    context, prefix: str, last, hourly, daily, weekly, monthly, yearly, within, dry_run: bool, as_json: bool
) -> int:
    """Remove old versions under PREFIX that a retention policy does not keep.

    The points in time of PREFIX are the times its puts stored versions or
    deletion markers. The keep rules (below; they add up) choose points the
    way restic's choose snapshots: a daily rule of 7 keeps the newest point of
    each of the 7 newest days that have one, in local time. Every version (or
    deletion marker) that is a file's state at a kept point is kept, so a
    restore as of those points gives exactly what it gave before; the others
    are removed. The latest version of a file that exists is always kept; a
    deleted file goes once no kept point sees it. The same policy run again
    removes nothing.

    Prints each point with the rules that keep it, then each version with its
    fate and the rules that keep it. Like rm, forget only drops references:
    the next `chunkstore gc` frees the chunks nothing needs any more. Snapshots
    of PREFIX whose state is no longer kept are forgotten too.

    \b
    Example (see first, then do):
      chunkstore forget projects --keep-daily 7 --keep-monthly 12 --dry-run
    """
    if not any((last, hourly, daily, weekly, monthly, yearly, within)):
        raise click.UsageError(
            "give at least one --keep-* rule (forget without one would keep only the latest "
            "versions; use `rm` to remove files)"
        )
    policy = history.Policy(last or 0, hourly or 0, daily or 0, weekly or 0, monthly or 0, yearly or 0, within)
    store = context.open_store()
    try:
        plan = history.forget(store, prefix, policy, dry_run=dry_run)
    finally:
        store.close()
    if as_json:
        echo_json(with_requests(plan.to_json(), store))
        return EXIT_OK
    if context.quiet:
        return EXIT_OK
    remove = "would remove" if dry_run else "remove"
    click.echo(f"points in time under {printable(plan.prefix) or 'the store'}, newest first:")
    for point in plan.points:
        click.echo(
            f"  {'keep' if point.kept else remove:<12}  {local_time(point.at_ns)}  {', '.join(point.reasons)}".rstrip()
        )
    click.echo("versions:")
    for decision in plan.decisions:
        record = decision.record
        what = f"v{record.version}" + (" (deletion marker)" if record.deleted else "")
        click.echo(
            f"  {'keep' if decision.kept else remove:<12}  {printable(record.name)}  {what}  "
            f"{', '.join(decision.reasons)}".rstrip()
        )
    removed, markers = len(plan.removed), sum(record.deleted for record in plan.removed)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"kept {len(plan.kept)} versions, {verb} {removed} ({markers} deletion markers); "
        f"{'would forget' if dry_run else 'forgot'} {len(plan.forgotten_snapshots)} snapshots"
        + ("" if dry_run or not removed else "; run `chunkstore gc` to free their chunks")
    )
    return EXIT_OK

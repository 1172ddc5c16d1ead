"""`chunkstore scan`: duplicate objects in a bucket, their cost, their import and removal."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..distributed_run import check_distributed_usage, distributed_options, finished_run
from ..exits import EXIT_ERROR, EXIT_OK
from ..ingest_results import ResultPrinter
from ..options import LOG_FORMAT_OPTION, checked_by, s3_source, size_option
from ..output import echo_json, human_bytes, printable, warn
from ..progress import ProgressDisplay


def _report_path(value: str) -> str:
    from chunkstore.apps.scan import report_format

    report_format(value)
    return value


@click.command()
@click.argument("source", metavar="s3://BUCKET[/PREFIX]", required=False, callback=checked_by(s3_source))
@click.option(
    "--report",
    metavar="FILE.{json,csv,html}",
    callback=checked_by(_report_path),
    help="Also write the groups to FILE; its ending picks the format.",
)
@click.option(
    "--chunk-level",
    is_flag=True,
    help="Read every object and cut it into chunks to measure what chunk-level dedup would save "
    "besides whole-file duplicates (reads the whole bucket).",
)
@size_option(
    "--avg-size", default="64K", show_default=True, help="With --chunk-level: the average chunk size to measure with."
)
@click.option(
    "--import-into", metavar="URL", help="Put one copy of each distinct content into the store at URL, under its key."
)
@click.option(
    "--delete-duplicates",
    is_flag=True,
    help="Delete the duplicates from the bucket, keeping the oldest copy of each group. A dry run "
    "unless --yes is given; each duplicate is compared byte for byte with the kept copy first.",
)
@click.option("--yes", is_flag=True, help="With --delete-duplicates: really delete.")
@click.option(
    "--manifest",
    metavar="FILE",
    help="With --delete-duplicates --yes: where to record each removal (JSON Lines). "
    "Default: chunkstore-scan-removed-BUCKET-TIME.jsonl here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@distributed_options
@LOG_FORMAT_OPTION
@click.pass_obj
def scan(
    context,
    source: str | None,
    report: str | None,
    chunk_level: bool,
    avg_size: int,
    import_into: str | None,
    delete_duplicates: bool,
    yes: bool,
    manifest: str | None,
    as_json: bool,
    distributed: bool,
    state_machine: str | None,
    manifest_url: str | None,
    detach: bool,
    execution_arn: str | None,
    log_format: str,
) -> int:
    """Find the groups of identical objects under s3://BUCKET[/PREFIX] and what they waste
    at S3 list prices. Only objects whose size another object shares are read.
    Exits 1 if an import or a deletion failed (each is reported).

    With --distributed every object is hashed by the batch function of the deployed stack
    (not only those sharing a size), and the groups are made here from the run's results.

    \b
    Examples:
      chunkstore scan s3://bucket/photos --report duplicates.html
      chunkstore scan s3://bucket/photos --delete-duplicates --yes
      chunkstore scan s3://archive --distributed --state-machine ARN --report duplicates.csv
    """
    from chunkstore import ChunkerSpec
    from chunkstore.apps.bucket import parse_s3_url
    from chunkstore.apps.scan import scan_bucket, write_report
    from chunkstore.backends.aws import AwsClients

    if yes and not delete_duplicates:
        raise click.UsageError("--yes goes with --delete-duplicates")
    if manifest and not (delete_duplicates and yes):
        raise click.UsageError("--manifest goes with --delete-duplicates --yes")
    check_distributed_usage(source, distributed, state_machine, manifest_url, detach, execution_arn)
    s3 = AwsClients().s3
    failed = 0
    if distributed or execution_arn:
        if chunk_level or import_into:
            raise click.UsageError(
                "--chunk-level and --import-into do not go with a distributed scan "
                "(import with `chunkstore ingest --distributed`)"
            )
        found = _distributed(context, s3, source, state_machine, manifest_url, detach, execution_arn)
        if isinstance(found, int):
            return found
        found, failed = found
        source = found.url
    else:
        assert source is not None  # check_distributed_usage refused a scan without one
        chunker = ChunkerSpec.from_average(avg_size=avg_size)
        with ProgressDisplay(context.show_progress and not as_json) as progress:
            found = scan_bucket(s3, source, chunk_level=chunk_level, chunker=chunker, on_progress=progress.advance)
    if report:
        write_report(found, report)
    if as_json:
        echo_json(found.to_json())
    elif not context.quiet:
        _print_summary(found)
    if import_into:
        failed += _import(context, import_into, found, ResultPrinter(context, log_format))
    if delete_duplicates:
        bucket, _ = parse_s3_url(source)
        manifest = manifest or datetime.now(UTC).strftime(f"chunkstore-scan-removed-{bucket}-%Y%m%dT%H%M%SZ.jsonl")
        failed += _delete(context, s3, found, dry_run=not yes, manifest=manifest)
    return EXIT_ERROR if failed else EXIT_OK


def _distributed(context, s3, source, state_machine, manifest_url, detach, execution_arn):
    """The report of a distributed scan and its count of failures, or an exit code (detached, interrupted)."""
    from chunkstore.apps.distributed import reduce_scan

    run = finished_run(context, "scan", s3, source, state_machine, manifest_url, detach, execution_arn)
    if isinstance(run, int):
        return run
    found = reduce_scan(run.records, run.url)
    for entry in found.not_read:
        warn(f"{printable(str(entry.get('key')))}: not read: {entry.get('error') or entry['outcome']}")
    return found, run.exit_code + len(found.not_read)


def _print_summary(found) -> None:
    figures = found.to_json()
    click.echo(
        f"{printable(found.url)}: {figures['objects']} objects, {human_bytes(figures['total_bytes'])}; read "
        f"{figures['objects_read']} ({human_bytes(figures['bytes_read'])})"
    )
    click.echo(
        f"{figures['duplicate_groups']} groups of identical objects, {figures['duplicate_objects']} duplicates: "
        f"{human_bytes(figures['wasted_bytes'])} wasted, ${figures['wasted_usd_per_month']:.4f}/month "
        f"({figures['price']['source']})"
    )
    for group in found.groups:
        click.echo(
            f"  {len(group.duplicates) + 1} x {human_bytes(group.size)} {group.digest[:16]}: keep "
            f"{printable(group.keep.key)}; duplicates: {', '.join(printable(dup.key) for dup in group.duplicates)}"
        )
    if found.chunk_level:
        chunk = found.chunk_level
        click.echo(
            f"chunk-level dedup ({chunk['chunker']['avg_size'] // 1024} KiB chunks) would save "
            f"{human_bytes(chunk['additional_saving_bytes'])} more, "
            f"${chunk['additional_saving_usd_per_month']:.4f}/month"
        )


def _import(context, url: str, found, printer: ResultPrinter) -> int:
    from chunkstore.apps.ingest.ingestor import Ingestor, IngestSettings

    context.store_url = url
    store = context.open_store()
    try:
        ingestor = Ingestor(store, IngestSettings(url), program="chunkstore scan --import-into")
        for unique in found.unique_objects():
            printer(ingestor.ingest(unique, from_event=False))
    finally:
        store.close()
    if not context.quiet and printer.observer is None:
        click.echo(f"imported into {printable(url)}: {printer.summary()}")
    return printer.failed


def _delete(context, s3, found, *, dry_run: bool, manifest: str) -> int:
    from chunkstore.apps.scan import delete_duplicates

    removals = delete_duplicates(s3, found, dry_run=dry_run, manifest=manifest)
    kept = [removal for removal in removals if removal.outcome.startswith("kept")]
    for removal in kept:
        warn(f"{printable(removal.found.key)}: {removal.outcome}")
    if not context.quiet:
        for removal in removals:
            if removal.outcome in ("would delete", "deleted"):
                click.echo(f"{removal.outcome}: {printable(removal.found.key)} (copy of {printable(removal.kept.key)})")
        size = sum(removal.found.size or 0 for removal in removals if removal.outcome in ("would delete", "deleted"))
        if dry_run:
            click.echo(f"dry run: would delete {len(removals)} objects ({human_bytes(size)}); add --yes to delete")
        else:
            deleted = len(removals) - len(kept)
            click.echo(f"deleted {deleted} objects ({human_bytes(size)}); manifest: {printable(manifest)}")
    return len(kept)

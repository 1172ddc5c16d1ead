"""`chunkstore ingest`: the Lambda function's ingest, run over a bucket that is already full."""

from __future__ import annotations

import click

from ..distributed_run import check_distributed_usage, distributed_options, finished_run, print_ingest_summary
from ..exits import EXIT_ERROR, EXIT_OK
from ..ingest_results import ResultPrinter
from ..options import LOG_FORMAT_OPTION, checked_by, s3_source
from ..output import printable


@click.command()
@click.argument("source", metavar="s3://INBOX[/PREFIX]", required=False, callback=checked_by(s3_source))
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="The store to ingest into (default: the --store given before the command, or $CHUNKSTORE_STORE).",
)
@click.option(
    "--table",
    envvar="CHUNKSTORE_INGEST_TABLE",
    metavar="TABLE",
    help="The ingest ledger (DynamoDB) of the Lambda function, to skip what it processed and take "
    "what it deferred. Default: $CHUNKSTORE_INGEST_TABLE; without it every object is read.",
)
@click.option("--delete-after", is_flag=True, help="Delete each inbox object once the store has committed it.")
@distributed_options
@LOG_FORMAT_OPTION
@click.pass_obj
def ingest(
    context,
    source: str | None,
    store_url: str | None,
    table: str | None,
    delete_after: bool,
    distributed: bool,
    state_machine: str | None,
    manifest_url: str | None,
    detach: bool,
    execution_arn: str | None,
    log_format: str,
) -> int:
    """Put every object under s3://INBOX[/PREFIX] into the store under its key, as the
    Lambda function does for uploads: `stored`, or `duplicate` of the name already
    holding the same content. Empty objects are skipped.

    For backfills of existing buckets, and for the objects the function deferred as
    too large for one invocation. Exits 1 if any object failed (each is reported).

    With --distributed the objects are read by the batch function of the deployed stack,
    into the stack's store, through its ledger: a run started again after a failure
    skips what the ledger records as done.

    \b
    Examples:
      chunkstore ingest s3://inbox/uploads --store s3://bucket/store --delete-after
      chunkstore ingest s3://archive --distributed --state-machine arn:aws:states:...:stateMachine:cs-distributed
    """
    from chunkstore.apps.ingest.ingestor import Ingestor, IngestSettings

    check_distributed_usage(source, distributed, state_machine, manifest_url, detach, execution_arn)
    if distributed or execution_arn:
        if store_url or delete_after:
            raise click.UsageError("--store and --delete-after are the stack's settings in a distributed run")
        return _distributed(context, source, state_machine, manifest_url, detach, execution_arn, table, log_format)

    assert source is not None  # check_distributed_usage refused a run without one
    if store_url:
        context.store_url = store_url
    printer = ResultPrinter(context, log_format)
    store = context.open_store()
    try:
        ingestor = Ingestor(
            store,
            IngestSettings(context.store_url, ledger_table=table, delete_after=delete_after),
            program="chunkstore ingest",
        )
        ingestor.ingest_listing(source, on_result=printer)
    finally:
        store.close()
    if not context.quiet and log_format == "text":
        click.echo(f"{printable(source)}: {printer.summary()}")
    return EXIT_ERROR if printer.failed else EXIT_OK


def _distributed(context, source, state_machine, manifest_url, detach, execution_arn, table, log_format) -> int:
    from chunkstore.apps.distributed import summarize_ingest
    from chunkstore.backends.aws import AwsClients

    from ..output import echo_json

    run = finished_run(context, "ingest", AwsClients().s3, source, state_machine, manifest_url, detach, execution_arn)
    if isinstance(run, int):
        return run
    summary = summarize_ingest(run.records)
    if log_format == "json":
        echo_json({"execution_arn": run.progress.execution_arn, "status": run.progress.status, **summary.to_json()})
    else:
        print_ingest_summary(context, run.url, summary, f" --table {table}" if table else " --table LEDGER-TABLE")
    return run.exit_code or (EXIT_ERROR if summary.failed_count else EXIT_OK)

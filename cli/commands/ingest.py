"""`chunkstore ingest`: the Lambda function's ingest, run over a bucket that is already full."""

from __future__ import annotations

import click

from ..exits import EXIT_ERROR, EXIT_OK
from ..ingest_results import ResultPrinter
from ..options import LOG_FORMAT_OPTION, checked_by, s3_source
from ..output import printable


@click.command()
@click.argument("source", metavar="s3://INBOX[/PREFIX]", callback=checked_by(s3_source))
@click.option("--store", "store_url", metavar="URL", help="The store to ingest into (default: the --store given "
                                                          "before the command, or $CHUNKSTORE_STORE).")
@click.option("--table", envvar="CHUNKSTORE_INGEST_TABLE", metavar="TABLE",
              help="The ingest ledger (DynamoDB) of the Lambda function, to skip what it processed and take "
                   "what it deferred. Default: $CHUNKSTORE_INGEST_TABLE; without it every object is read.")
@click.option("--delete-after", is_flag=True, help="Delete each inbox object once the store has committed it.")
@LOG_FORMAT_OPTION
@click.pass_obj
def ingest(context, source: str, store_url: str | None, table: str | None, delete_after: bool,
           log_format: str) -> int:
    """Put every object under s3://INBOX[/PREFIX] into the store under its key, as the
    Lambda function does for uploads: `stored`, or `duplicate` of the name already
    holding the same content. Empty objects are skipped.

    For backfills of existing buckets, and for the objects the function deferred as
    too large for one invocation. Exits 1 if any object failed (each is reported).

    \b
    Example:
      chunkstore ingest s3://inbox/uploads --store s3://bucket/store --delete-after
    """
    from chunkstore.apps.ingest.ingestor import Ingestor, IngestSettings

    if store_url:
        context.store_url = store_url
    printer = ResultPrinter(context, log_format)
    store = context.open_store()
    try:
        ingestor = Ingestor(store, IngestSettings(context.store_url, ledger_table=table, delete_after=delete_after),
                            program="chunkstore ingest")
        ingestor.ingest_listing(source, on_result=printer)
    finally:
        store.close()
    if not context.quiet and log_format == "text":
        click.echo(f"{printable(source)}: {printer.summary()}")
    return EXIT_ERROR if printer.failed else EXIT_OK


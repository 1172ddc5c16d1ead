"""`chunkstore ingest`: the Lambda function's ingest, run over a bucket that is already full."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_ERROR = 1

LOG_FORMAT_OPTION = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="text: one line per object; json: the Lambda function's structured log lines "
         "(needs aws-lambda-powertools: pip install 'chunkstore[lambda]').")


class ResultPrinter:
    """Prints each ingest result as the chosen log format says; counts what failed."""

    def __init__(self, context, log_format: str):
        from chunkstore.apps.ingest.observe import Observer

        self.quiet = context.quiet
        self.observer = Observer(metrics=False) if log_format == "json" else None
        self.failed = 0
        self.counts: dict[str, int] = {}

    def __call__(self, result) -> None:
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome in ("error", "retry"):
            self.failed += 1
        if self.observer is not None:
            self.observer.result(result)
        elif result.outcome == "error":
            click.echo(f"chunkstore: {result.key}: {result.error}", err=True)
        elif not self.quiet:
            duplicate = f" (duplicate of {result.duplicate_of})" if result.duplicate_of else ""
            click.echo(f"{result.key}: {result.message}{duplicate}")

    def summary(self) -> str:
        return ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.counts.items())) or "no objects"


def source_url(value: str) -> str:
    from chunkstore.apps.bucket import parse_s3_url
    from chunkstore.errors import InvalidArgumentError

    try:
        parse_s3_url(value)
    except InvalidArgumentError as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.command()
@click.argument("source", metavar="s3://INBOX[/PREFIX]", callback=lambda _c, _p, value: source_url(value))
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
    too large for one invocation.
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
        click.echo(f"{source}: {printer.summary()}")
    return EXIT_ERROR if printer.failed else EXIT_OK


def register(group: click.Group) -> None:
    group.add_command(ingest)

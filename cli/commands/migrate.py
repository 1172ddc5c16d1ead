"""`chunkstore migrate`: copy every version of a store into a new storage format 2 store."""

from __future__ import annotations

import os

import click

from ..exits import EXIT_OK
from ..output import echo_json, human_bytes
from ..progress import ProgressDisplay
from ..secrets import PASSPHRASE_VARIABLE, read_secret_file

# Where each store's passphrase comes from when it is encrypted (else --passphrase-file or
# $CHUNKSTORE_PASSPHRASE, which serve both, else a prompt).
SOURCE_PASSPHRASE_VARIABLE = "CHUNKSTORE_SOURCE_PASSPHRASE"
DEST_PASSPHRASE_VARIABLE = "CHUNKSTORE_DEST_PASSPHRASE"


def _passphrase_file_option(role: str, variable: str):
    """--source-passphrase-file or --dest-passphrase-file."""
    return click.option(
        f"--{role.lower()}-passphrase-file",
        type=click.Path(exists=True, dir_okay=False),
        metavar="PATH",
        help=f"{role}'s passphrase (or key file), if it is encrypted. Default: ${variable}, "
        f"else --passphrase-file or ${PASSPHRASE_VARIABLE}, else a prompt.",
    )


@click.command()
@click.argument("source", metavar="SOURCE")
@click.argument("dest", metavar="DEST")
@_passphrase_file_option("SOURCE", SOURCE_PASSPHRASE_VARIABLE)
@_passphrase_file_option("DEST", DEST_PASSPHRASE_VARIABLE)
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
@click.pass_obj
def migrate(context, source: str, dest: str, source_passphrase_file, dest_passphrase_file, as_json: bool) -> int:
    """Copy every version of the store SOURCE into DEST, a new storage format 2 store.

    SOURCE and DEST are store URLs (a folder, or s3://BUCKET/PREFIX); --store is not used.
    Create DEST first with `chunkstore --store DEST init --format 2` and the chunk size,
    compression and encryption it should have: every version is read from SOURCE, checked,
    and put into DEST, which cuts it into its own chunks.

    DEST gets every name with the same version numbers, each version's size, mtime, mode
    and stored-at time, the deletion markers, and the snapshots, so `ls --versions`,
    `--as-of` and `diff` show the same history. SOURCE is only read.

    A migrate that stopped (interrupted, a lost connection) is resumed by running it again:
    versions DEST already holds are skipped. A DEST that holds other versions is refused.

    \b
    Example:
      chunkstore --store ~/store-v2 init --format 2
      chunkstore migrate ~/store ~/store-v2
    """
    from chunkstore.errors import StoreNotFoundError

    source_store = _open(context, source, "source", source_passphrase_file, SOURCE_PASSPHRASE_VARIABLE, True)
    try:
        try:
            dest_store = _open(context, dest, "dest", dest_passphrase_file, DEST_PASSPHRASE_VARIABLE, False)
        except StoreNotFoundError as error:
            if type(error) is not StoreNotFoundError:  # a missing bucket or table says so itself
                raise
            raise StoreNotFoundError(
                f"no store at {dest}: create it first with `chunkstore --store {dest} init --format 2`"
            ) from None
        try:
            with ProgressDisplay(context.show_progress and not as_json) as progress:

                def on_progress(state) -> None:
                    progress.update(
                        state.bytes_done, state.bytes_total, f"{state.versions_done}/{state.versions_total} versions"
                    )

                report = source_store.migrate_to(dest_store, on_progress=on_progress)
        finally:
            dest_store.close()
    finally:
        source_store.close()
    if as_json:
        document = report.to_json()
        requests = {
            role: counts
            for role, counts in (("source", source_store.request_counts()), ("dest", dest_store.request_counts()))
            if counts is not None
        }
        if requests:
            document["requests"] = requests
        echo_json(document)
    elif not context.quiet:
        click.echo(
            f"{report.versions} versions and {report.markers} deletion markers copied, "
            f"{report.skipped} already in DEST; {report.snapshots} snapshots copied ({report.names} names)"
        )
        click.echo(
            f"{human_bytes(report.logical_bytes)} read, {human_bytes(report.new_bytes)} new "
            f"({human_bytes(report.stored_new_bytes)} stored), {report.megabytes_per_second:.1f} MB/s"
        )
    return EXIT_OK


def _open(context, url: str, role: str, passphrase_file: str | None, variable: str, read_only: bool):
    """Open the store at url; a passphrase is looked for only if it is encrypted (one given to a
    store that is not would be refused)."""
    from chunkstore import Store
    from chunkstore.errors import PassphraseRequiredError

    try:
        return Store.open(url, read_only=read_only, concurrency=context.concurrency)
    except PassphraseRequiredError:
        pass
    if passphrase_file:
        passphrase = read_secret_file(passphrase_file)
    elif variable in os.environ:
        passphrase = os.environ[variable].encode()
    else:
        passphrase = context.given_passphrase()
        if passphrase is None:
            passphrase = context.prompt_passphrase(
                f"{role.capitalize()} passphrase", otherwise=f"set {variable} or use --{role}-passphrase-file"
            )
    return Store.open(url, passphrase=passphrase, read_only=read_only, concurrency=context.concurrency)

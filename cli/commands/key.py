"""`chunkstore key`: manage an encrypted store's key."""

from __future__ import annotations

import os
import stat

import click

from ..exits import EXIT_OK
from ..output import printable
from ..secrets import NEW_PASSPHRASE_VARIABLE, read_secret_file


@click.group()
def key() -> None:
    """Manage the key of an encrypted store."""


@key.command()
@click.option(
    "--new-passphrase-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help=f"Read the new passphrase from PATH. Default: ${NEW_PASSPHRASE_VARIABLE}, else a prompt.",
)
@click.pass_obj
def passwd(context, new_passphrase_file: str | None) -> int:
    """Change the passphrase. The data is not re-encrypted: only the wrapped key changes."""
    store = context.open_store()
    try:
        if new_passphrase_file:
            new = read_secret_file(new_passphrase_file)
        elif NEW_PASSPHRASE_VARIABLE in os.environ:
            new = os.environ[NEW_PASSPHRASE_VARIABLE].encode()
        else:
            new = context.prompt_passphrase(
                "New passphrase", confirm=True, otherwise=f"set {NEW_PASSPHRASE_VARIABLE} or use --new-passphrase-file"
            )
        # The passphrase that opened the store is the current one: it is not asked twice.
        store.change_passphrase(context.passphrase, new)
    finally:
        store.close()
    if not context.quiet:
        click.echo("passphrase changed")
    return EXIT_OK


@key.command()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write the key backup to FILE.",
)
@click.pass_obj
def export(context, output: str) -> int:
    """Write a backup of the store's key. It stays protected by the passphrase: keep both."""
    store = context.open_store()
    try:
        backup = store.export_key()
    finally:
        store.close()
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        # The mode given to open applies only to a new file: an existing one is made private first.
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.fchmod(descriptor, 0o600)
        handle.write(backup)
    if not context.quiet:
        click.echo(f"key written to {printable(output)}")
    return EXIT_OK

"""The `chunkstore` command: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success, 1 other error, 2 usage, 3 not found, 4 integrity error,
5 wrong key or passphrase (see chunkstore/errors.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from chunkstore import __version__
from chunkstore.errors import ChunkstoreError

from . import commands, ingest, scan
from .secrets import PASSPHRASE_VARIABLE, read_secret_file

EXIT_OTHER = 1
EXIT_INTERRUPTED = 130


def default_store_url() -> str:
    url = os.environ.get("CHUNKSTORE_STORE")
    if url:
        return url
    import platformdirs

    return str(Path(platformdirs.user_data_dir("chunkstore")) / "store")


class Context:
    """What every command gets: the store URL, the output switches and how to get a passphrase."""

    def __init__(self, store_url: str, quiet: bool, passphrase_file: str | None = None,
                 concurrency: int | None = None):
        self.store_url = store_url
        self.quiet = quiet
        self.concurrency = concurrency
        self.passphrase_file = passphrase_file
        # The passphrase that opened the store, however it was given (set by open_store).
        self.passphrase: bytes | None = None

    @property
    def show_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def given_passphrase(self) -> bytes | None:
        """The passphrase from --passphrase-file or $CHUNKSTORE_PASSPHRASE, if either is set."""
        if self.passphrase_file:
            return read_secret_file(self.passphrase_file)
        value = os.environ.get(PASSPHRASE_VARIABLE)
        return value.encode() if value is not None else None

    def prompt_passphrase(self, label: str = "Passphrase", confirm: bool = False,
                          otherwise: str = f"set {PASSPHRASE_VARIABLE} or use --passphrase-file") -> bytes:
        """Ask on the terminal; without one, say how to give the passphrase instead (otherwise)."""
        from chunkstore.errors import PassphraseRequiredError

        if not sys.stdin.isatty():
            raise PassphraseRequiredError(f"a {label.lower()} is needed: {otherwise} (no terminal to ask on)")
        return click.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True).encode()

    def open_store(self, read_only: bool = False):
        """Open the store; read_only for commands that only read (see Store.open)."""
        from chunkstore import Store
        from chunkstore.errors import PassphraseRequiredError

        self.passphrase = self.given_passphrase()
        try:
            return Store.open(self.store_url, passphrase=self.passphrase, read_only=read_only,
                              concurrency=self.concurrency)
        except PassphraseRequiredError:
            if self.passphrase is not None or not sys.stdin.isatty():
                raise
        self.passphrase = self.prompt_passphrase()
        return Store.open(self.store_url, passphrase=self.passphrase, read_only=read_only,
                          concurrency=self.concurrency)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The store: a folder path (or file://PATH), or s3://BUCKET/PREFIX. Default: $CHUNKSTORE_STORE, "
                   "else a folder in your user data directory.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (and what a command exists to print).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False), metavar="PATH",
              help=f"Read an encrypted store's passphrase (or key file) from PATH. Default: ${PASSPHRASE_VARIABLE}, "
                   "else a prompt on the terminal.")
@click.option("--concurrency", type=click.IntRange(1, 1024), envvar="CHUNKSTORE_CONCURRENCY", metavar="N",
              help="Chunk requests kept in flight (threads). Default: 32 for s3:// stores, one per core "
                   "for a folder. Also $CHUNKSTORE_CONCURRENCY.")
@click.version_option(__version__, prog_name="chunkstore")
@click.pass_context
def cli(click_context: click.Context, store_url: str | None, quiet: bool, passphrase_file: str | None,
        concurrency: int | None) -> None:
    """chunkstore: a deduplicating store for many versions of big, similar files.

    Files are cut into content-defined chunks (FastCDC), each chunk is named by its
    BLAKE3 hash, compressed with zstd and stored once. Start with `chunkstore init`,
    then `put` files and folders, and `get` or `restore` them byte for byte.

    Exit codes: 0 success, 1 error, 2 usage, 3 not found, 4 integrity error
    (corrupt, missing or mismatched data), 5 wrong key or passphrase.
    """
    click_context.obj = Context(store_url or default_store_url(), quiet, passphrase_file, concurrency)


commands.register(cli)
ingest.register(cli)
scan.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return (and exit with) its exit code."""
    try:
        # Outside standalone mode click returns the command's return value (our commands
        # return their exit code) or, after --help and --version, the Exit code.
        result = cli.main(args=argv, prog_name="chunkstore", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except click.exceptions.Abort:
        click.echo("chunkstore: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except ChunkstoreError as error:
        click.echo(f"chunkstore: {error}", err=True)
        code = error.exit_code
    except KeyboardInterrupt:
        click.echo("chunkstore: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`chunkstore get x | head`): not an error of ours.
        _silence_stdout()
        code = EXIT_OTHER
    except OSError as error:
        where = f" {error.filename}:" if error.filename else ""
        click.echo(f"chunkstore:{where} {error.strerror or error}", err=True)
        code = EXIT_OTHER
    if argv is None:
        sys.exit(code)
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    main()

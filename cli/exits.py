"""Exit codes, and the one place where an exception that ends a command becomes its
message on stderr and its exit code.

0 success, 1 other error, 2 usage, 3 not found, 4 integrity error, 5 wrong key or
passphrase (ChunkstoreError subclasses carry theirs: chunkstore/errors.py), 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import click

from chunkstore.errors import ChunkstoreError

from .output import printable, warn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def report(error: BaseException) -> int:
    """Say on stderr what ended the command and return its exit code; re-raise what is
    not ours to explain (a bug's traceback is then worth more than a guess)."""
    if isinstance(error, click.UsageError):
        # One line, as every other error: click's usage block would bury the reason.
        command = error.ctx.command_path if error.ctx else "chunkstore"
        warn(f"usage: {_one_line(error.format_message()).rstrip('.')} (see '{command} --help')")
        return error.exit_code
    if isinstance(error, click.ClickException):
        warn(_one_line(error.format_message()))
        return error.exit_code
    if isinstance(error, (click.exceptions.Abort, KeyboardInterrupt)):
        warn("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(error, ChunkstoreError):
        warn(str(error))
        return error.exit_code
    if isinstance(error, BrokenPipeError):
        # The reader of our output went away (`chunkstore get x | head`): not an error of ours.
        _silence_stdout()
        return EXIT_ERROR
    if isinstance(error, OSError):
        where = f" {printable(str(error.filename))}:" if error.filename else ""
        click.echo(f"chunkstore:{where} {printable(error.strerror or str(error))}", err=True)
        return EXIT_ERROR
    raise error


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass

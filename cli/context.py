"""What every command gets: the store URL, the output switches, and how to open the store
(asking for its passphrase when it is encrypted and none was given)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .secrets import PASSPHRASE_VARIABLE, read_secret_file


def default_store_url() -> str:
    url = os.environ.get("CHUNKSTORE_STORE")
    if url:
        return url
    import platformdirs

    return str(Path(platformdirs.user_data_dir("chunkstore")) / "store")


class Context:
    """The global options, as every command reads them."""

    def __init__(self, store_url: str, quiet: bool, passphrase_file: str | None = None, concurrency: int | None = None):
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

    def prompt_passphrase(
        self,
        label: str = "Passphrase",
        confirm: bool = False,
        otherwise: str = f"set {PASSPHRASE_VARIABLE} or use --passphrase-file",
    ) -> bytes:
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
            return Store.open(
                self.store_url, passphrase=self.passphrase, read_only=read_only, concurrency=self.concurrency
            )
        except PassphraseRequiredError:
            if self.passphrase is not None or not sys.stdin.isatty():
                raise
        self.passphrase = self.prompt_passphrase()
        return Store.open(self.store_url, passphrase=self.passphrase, read_only=read_only, concurrency=self.concurrency)

"""Where the command line finds an encrypted store's passphrase."""

from __future__ import annotations

PASSPHRASE_VARIABLE = "CHUNKSTORE_PASSPHRASE"
NEW_PASSPHRASE_VARIABLE = "CHUNKSTORE_NEW_PASSPHRASE"


def read_secret_file(path: str) -> bytes:
    """A passphrase or key file: its bytes, less one trailing newline (editors add one)."""
    with open(path, "rb") as handle:
        secret = handle.read()
    return secret[:-1] if secret.endswith(b"\n") else secret

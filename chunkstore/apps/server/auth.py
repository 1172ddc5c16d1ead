"""Bearer tokens: read-only or read-write, kept only as SHA-256 hashes.

A tokens file (and the CHUNKSTORE_TOKENS variable) holds one token a line:

    sha256:<64 hex digits> rw|ro NAME

Blank lines and lines starting with `#` are ignored. The variable may also separate
entries with `;`. Tokens are random (`new_token`), so one unsalted SHA-256 is enough:
there is no dictionary to search, and the server never holds a token in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from chunkstore.errors import InvalidArgumentError

TOKENS_VARIABLE = "CHUNKSTORE_TOKENS"
READ = "ro"
READ_WRITE = "rw"

_LINE = re.compile(r"^sha256:(?P<hash>[0-9a-fA-F]{64})\s+(?P<access>rw|ro)\s+(?P<name>\S.*)$")


@dataclass(frozen=True)
class Principal:
    """Who made a request, and what they may do."""

    name: str
    access: str  # READ or READ_WRITE

    @property
    def can_write(self) -> bool:
        return self.access == READ_WRITE


# With no tokens configured the server only listens on loopback, where everyone
# who can connect already has access to the machine.
LOCAL_USER = Principal("local", READ_WRITE)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "cs_" + secrets.token_urlsafe(32)


class TokenSet:
    """The configured tokens. Empty means authentication is off."""

    def __init__(self, entries: dict[bytes, Principal] | None = None):
        self._entries = dict(entries or {})

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str, source: str) -> TokenSet:
        entries: dict[bytes, Principal] = {}
        for number, raw in enumerate(re.split(r"[\n;]", text), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _LINE.match(line)
            if not match:
                raise InvalidArgumentError(
                    f"{source}: entry {number} is not 'sha256:<64 hex digits> rw|ro NAME' "
                    "(store token hashes, never tokens; `chunkstore serve-token` makes one)"
                )
            entries[bytes.fromhex(match["hash"])] = Principal(match["name"].strip(), match["access"])
        return cls(entries)

    @classmethod
    def load(cls, path: str | None, environment_value: str | None) -> TokenSet:
        """Tokens from a file and from the variable's value, together."""
        combined: dict[bytes, Principal] = {}
        if path is not None:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as error:
                raise InvalidArgumentError(f"cannot read tokens file {path}: {error.strerror}") from None
            combined.update(cls.parse(text, path)._entries)
        if environment_value:
            combined.update(cls.parse(environment_value, TOKENS_VARIABLE)._entries)
        return cls(combined)

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        # Compare against every entry in constant time, so timing reveals nothing about the hashes.
        found = None
        for stored, principal in self._entries.items():
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

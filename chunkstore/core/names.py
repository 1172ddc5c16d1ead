"""Stored names: the paths as given, normalised and made relative.

`put /data/x` and `put data/x` and `put ./data//x` all store `data/x`, which
`restore data/x -o DIR` writes to `DIR/data/x`.
"""

from __future__ import annotations

import os

from chunkstore.errors import InvalidArgumentError

# Longer names than Linux's PATH_MAX cannot be restored anywhere, so refuse them on the way in.
MAX_NAME_BYTES = 4096


def normalize_name(raw: str | os.PathLike[str]) -> str:
    """Return the stored form of a path or name, or raise InvalidArgumentError."""
    text = os.fspath(raw)
    if "\x00" in text:
        raise InvalidArgumentError(f"name contains a NUL byte: {text!r}")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"name is not valid UTF-8: {text!r}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidArgumentError(f"name is longer than {MAX_NAME_BYTES} bytes: {text[:60]!r}...")
    parts = []
    for part in text.replace(os.sep, "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidArgumentError(f"name contains '..': {text!r}")
        parts.append(part)
    if not parts:
        raise InvalidArgumentError(f"name is empty after normalisation: {text!r}")
    return "/".join(parts)


def is_stored_name(value: object) -> bool:
    """Whether value is a name as stored: a string that normalize_name keeps as it is."""
    if type(value) is not str:
        return False
    try:
        return normalize_name(value) == value
    except InvalidArgumentError:
        return False


def normalize_prefix(raw: str | None) -> str:
    """Like normalize_name, but a prefix with no segment besides '' and '.' (``, `/`, `./`)
    means everything. `..` and `...` are not such prefixes: one is refused, the other a name."""
    if raw is None or all(part in ("", ".") for part in raw.replace(os.sep, "/").split("/")):
        return ""
    return normalize_name(raw)


def name_matches_prefix(name: str, prefix: str) -> bool:
    """True when name is prefix itself or lies below it (`data` matches `data/x`, not `database`)."""
    return prefix == "" or name == prefix or name.startswith(prefix + "/")

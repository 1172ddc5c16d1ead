"""The store config: one small JSON object written at init and never rewritten by data commands.

It records every parameter that shapes stored data (chunker and its sizes, ID
and digest algorithms, compression, object and recipe formats, encryption, key
layout) and where the catalog lives, so that opening a store needs only its URL.
A config whose version or algorithms this chunkstore does not know is refused.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from chunkstore.core import crypto, objectformat, recipes
from chunkstore.core.chunking import ChunkerSpec
from chunkstore.core.compression import CompressionSpec
from chunkstore.errors import CorruptObjectError, UnsupportedFormatError

CONFIG_KEY = "config"
FORMAT_NAME = "chunkstore"
CONFIG_VERSION = 1
CHUNK_ID_ALGORITHMS = ("blake3-256",)
# Chunk objects live at chunks/<first two hex digits>/<hex id>: 256 folders keep
# each folder small on a local disk and spread S3 request load over prefixes.
CHUNK_KEY_PREFIX = "chunks/"
SHARD_HEX_DIGITS = 2


@dataclass(frozen=True)
class StoreConfig:
    chunker: ChunkerSpec
    compression: CompressionSpec
    catalog: dict
    store_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    chunk_id: str = "blake3-256"
    file_digest: str = "blake3-256"
    object_format: int = objectformat.VERSION
    recipe_format: int = recipes.VERSION
    encryption: dict | None = None

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT_NAME,
            "version": CONFIG_VERSION,
            "store_id": self.store_id,
            "created_at": self.created_at,
            "chunker": self.chunker.to_config(),
            "chunk_id": self.chunk_id,
            "file_digest": self.file_digest,
            "compression": self.compression.to_config(),
            "object_format": self.object_format,
            "recipe_format": self.recipe_format,
            "encryption": self.encryption,
            "layout": {"chunk_prefix": CHUNK_KEY_PREFIX, "shard_hex_digits": SHARD_HEX_DIGITS},
            "catalog": self.catalog,
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "StoreConfig":
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            # RecursionError: arrays nested thousands deep, which no config has.
            raise CorruptObjectError(f"store config is not valid JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise CorruptObjectError("store config is not a chunkstore config")
        version = document.get("version")
        if version != CONFIG_VERSION:
            raise UnsupportedFormatError(
                f"store config version {version!r} is not supported (this chunkstore reads version {CONFIG_VERSION})"
            )
        try:
            if document["chunk_id"] not in CHUNK_ID_ALGORITHMS or document["file_digest"] not in CHUNK_ID_ALGORITHMS:
                raise UnsupportedFormatError(f"store uses unknown hash {document['chunk_id']!r}/{document['file_digest']!r}")
            if document["object_format"] != objectformat.VERSION or document["recipe_format"] != recipes.VERSION:
                raise UnsupportedFormatError(
                    f"store uses object format {document['object_format']!r} / recipe format {document['recipe_format']!r}"
                )
            if document["encryption"] is not None:
                crypto.validate_section(document["encryption"])
            layout = document["layout"]
            if layout != {"chunk_prefix": CHUNK_KEY_PREFIX, "shard_hex_digits": SHARD_HEX_DIGITS}:
                raise UnsupportedFormatError(f"store uses unknown key layout {layout!r}")
            if not isinstance(document["catalog"], dict):
                raise CorruptObjectError("store config has no catalog section")
            return cls(
                chunker=ChunkerSpec.from_config(document["chunker"]),
                compression=CompressionSpec.from_config(document["compression"]),
                catalog=document["catalog"],
                store_id=str(document["store_id"]),
                created_at=str(document["created_at"]),
                chunk_id=document["chunk_id"],
                file_digest=document["file_digest"],
                object_format=document["object_format"],
                recipe_format=document["recipe_format"],
                encryption=document["encryption"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CorruptObjectError(f"store config is damaged: {type(error).__name__}: {error}") from None


def chunk_key(chunk_id: bytes) -> str:
    hex_id = chunk_id.hex()
    return f"{CHUNK_KEY_PREFIX}{hex_id[:SHARD_HEX_DIGITS]}/{hex_id}"


def chunk_id_from_key(key: str) -> bytes | None:
    """The chunk ID a blob key names, or None for keys that are not chunk objects."""
    if not key.startswith(CHUNK_KEY_PREFIX):
        return None
    hex_id = key.rsplit("/", 1)[-1]
    try:
        chunk_id = bytes.fromhex(hex_id)
    except ValueError:
        return None
    return chunk_id if len(chunk_id) == 32 and key == chunk_key(chunk_id) else None

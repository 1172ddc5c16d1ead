"""The store config: one small JSON object written at init and never rewritten by data commands.

It records every parameter that shapes stored data (chunker and its sizes, ID
and digest algorithms, compression, object and recipe formats, encryption, key
layout) and where the catalog lives, so that opening a store needs only its URL.
A config whose version or algorithms this chunkstore does not know is refused.

Config versions:
    1  the first format
    2  an encrypted store's config, which carries an authentication code
       (encryption.config_mac, crypto.py) over the rest of the config. Encrypted version 1
       configs are still read, and become version 2 when their passphrase is changed.
    3  a storage format 2 store's (packs and recipe pages, docs/design/format-v2.md), encrypted
       or not; encrypted, it carries the authentication code as version 2 does. Its recipe
       format is 2 and its `segments` section records where contents are cut into pages.
    4  an encrypted storage format 2 store that seals its catalog's metadata (names, stat data,
       snapshot records: docs/design/encrypted-metadata.md): version 3 with `metadata`
       naming the scheme. Its own version, so that a chunkstore that does not know it refuses
       the store rather than listing ciphertext as names.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from chunkstore.core import crypto, objectformat, pages, recipes
from chunkstore.core.chunking import ChunkerSpec
from chunkstore.core.compression import CompressionSpec
from chunkstore.errors import (
    CorruptObjectError,
    InvalidArgumentError,
    PassphraseRequiredError,
    UnsupportedFormatError,
    WrongKeyError,
)

CONFIG_KEY = "config"
FORMAT_NAME = "chunkstore"
CONFIG_VERSION = 1
AUTHENTICATED_CONFIG_VERSION = 2  # what an encrypted store's config is written as
FORMAT_2_CONFIG_VERSION = 3
SEALED_METADATA_CONFIG_VERSION = 4
# The config versions of storage format 2 stores.
FORMAT_2_CONFIG_VERSIONS = (FORMAT_2_CONFIG_VERSION, SEALED_METADATA_CONFIG_VERSION)
READABLE_CONFIG_VERSIONS = (
    CONFIG_VERSION,
    AUTHENTICATED_CONFIG_VERSION,
    FORMAT_2_CONFIG_VERSION,
    SEALED_METADATA_CONFIG_VERSION,
)
# The metadata schemes a version 4 config may name (chunkstore/backends/sealed.py).
METADATA_SCHEMES = ("sealed-1",)
CHUNK_ID_ALGORITHMS = ("blake3-256",)
# Chunk objects live at chunks/<first two hex digits>/<hex id>: 256 folders keep
# each folder small on a local disk and spread S3 request load over prefixes.
CHUNK_KEY_PREFIX = "chunks/"
SHARD_HEX_DIGITS = 2
# init writes a UUID in hex; the ID is also bound into the wrapped key and catalog items as
# bytes, so it must at least be printable ASCII.
_STORE_ID = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True)
class StoreConfig:
    chunker: ChunkerSpec
    compression: CompressionSpec
    catalog: dict
    store_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    chunk_id: str = "blake3-256"
    file_digest: str = "blake3-256"
    object_format: int = objectformat.VERSION
    recipe_format: int = recipes.VERSION
    encryption: dict | None = None
    version: int = CONFIG_VERSION
    segments: pages.SegmentSpec | None = None  # storage format 2 only
    metadata: str | None = None  # config version 4 only: how the catalog's metadata is sealed

    @property
    def storage_format(self) -> int:
        """1: a chunk object and a counted catalog row per chunk; 2: packs, recipe pages and
        content roots (docs/design/format-v2.md)."""
        return 2 if self.version in FORMAT_2_CONFIG_VERSIONS else 1

    def as_format_2(self, page_target_bytes: int = pages.PAGE_TARGET_BYTES) -> StoreConfig:
        """This (new, unencrypted) config as a storage format 2 store's: config version 3,
        recipe format 2, segments of about page_target_bytes of this chunker's chunks."""
        if self.encryption is not None:
            raise InvalidArgumentError("choose the storage format before encryption: the config's code covers it")
        segments = pages.SegmentSpec.for_chunks(self.chunker.avg_size, self.chunker.max_size, page_target_bytes)
        return replace(self, version=FORMAT_2_CONFIG_VERSION, recipe_format=pages.VERSION, segments=segments)

    def to_bytes(self) -> bytes:
        return (json.dumps(self._document(), indent=2, sort_keys=True) + "\n").encode()

    def _document(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": self.version,
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
            # Format 1 documents stay byte for byte what they were: their codes cover them.
            **({} if self.segments is None else {"segments": self.segments.to_config()}),
            **({} if self.metadata is None else {"metadata": self.metadata}),
        }

    def _authenticated_document(self, encryption: dict) -> dict:
        """What the authentication code covers: the whole config (whose encryption section is
        encryption) but the code itself."""
        document = self._document()
        document["encryption"] = {k: v for k, v in encryption.items() if k != "config_mac"}
        return document

    def with_encryption(self, passphrase: bytes, seal_metadata: bool = False) -> tuple[StoreConfig, crypto.Keys]:
        """This (new) config with a new encryption section, and the store's keys. seal_metadata
        (storage format 2 only) makes it a version 4 config, whose catalog metadata is sealed."""
        config = self
        if seal_metadata:
            if self.storage_format != 2:
                raise InvalidArgumentError("sealed metadata needs storage format 2")
            config = replace(self, version=SEALED_METADATA_CONFIG_VERSION, metadata=METADATA_SCHEMES[0])
        section, keys = crypto.new_encryption(passphrase, self.store_id)
        return config._authenticated(section, keys), keys

    def with_new_passphrase(self, old: bytes, new: bytes) -> StoreConfig:
        """This config with its key wrapped under a new passphrase, authenticated (version 2, or 3
        or 4 for format 2, as it was)."""
        if self.encryption is None:
            raise InvalidArgumentError("the store is not encrypted")
        section, keys = crypto.rewrap(self.encryption, old, new, self.store_id)
        return self._authenticated(section, keys)

    def _authenticated(self, section: dict, keys: crypto.Keys) -> StoreConfig:
        encryption = {k: v for k, v in section.items() if k != "config_mac"}
        unsigned = replace(self, version=max(self.version, AUTHENTICATED_CONFIG_VERSION), encryption=encryption)
        code = crypto.config_mac(keys, unsigned._authenticated_document(encryption))
        return replace(unsigned, encryption={**encryption, "config_mac": code})

    def unlock(self, passphrase: bytes | None) -> crypto.Keys | None:
        """The store's keys (None for a store that is not encrypted). Refused: a passphrase for a
        store whose config says it is not encrypted (WrongKeyError: the config may have been
        edited to store plaintext), and an encrypted config that was edited (CorruptObjectError)."""
        if self.encryption is None:
            if passphrase is not None:
                raise WrongKeyError(
                    "a passphrase was given, but the store's config says it is not encrypted; refusing to "
                    "store or read plaintext in a store meant to be encrypted (if its config was edited, "
                    "restore it from a backup; for a store that was never encrypted, give no passphrase)"
                )
            return None
        if passphrase is None:
            raise PassphraseRequiredError("the store is encrypted: give its passphrase")
        return crypto.unlock_authenticated(
            self.encryption,
            passphrase,
            self.store_id,
            self._authenticated_document(self.encryption),
            code_required=self.version >= AUTHENTICATED_CONFIG_VERSION,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> StoreConfig:
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            # RecursionError: arrays nested thousands deep, which no config has.
            raise CorruptObjectError(f"store config is not valid JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise CorruptObjectError("store config is not a chunkstore config")
        version = document.get("version")
        # Versions 2 and 4 are only ever an encrypted store's (their code needs the store's key).
        encrypted = document.get("encryption") is not None
        if version in (AUTHENTICATED_CONFIG_VERSION, SEALED_METADATA_CONFIG_VERSION) and not encrypted:
            raise UnsupportedFormatError(
                f"store config version {version} is only written for encrypted stores, and this config "
                "has no encryption section"
            )
        if type(version) is not int or version not in READABLE_CONFIG_VERSIONS:
            raise UnsupportedFormatError(
                f"store config version {version!r} is not supported (this chunkstore reads versions "
                f"{', '.join(map(str, READABLE_CONFIG_VERSIONS))})"
            )
        try:
            if document["chunk_id"] not in CHUNK_ID_ALGORITHMS or document["file_digest"] not in CHUNK_ID_ALGORITHMS:
                raise UnsupportedFormatError(
                    f"store uses unknown hash {document['chunk_id']!r}/{document['file_digest']!r}"
                )
            format_2 = version in FORMAT_2_CONFIG_VERSIONS
            metadata = document["metadata"] if version == SEALED_METADATA_CONFIG_VERSION else None
            if version == SEALED_METADATA_CONFIG_VERSION and metadata not in METADATA_SCHEMES:
                raise UnsupportedFormatError(
                    f"store seals its metadata with {metadata!r:.80}, which this chunkstore does not know "
                    f"(it knows {', '.join(METADATA_SCHEMES)})"
                )
            recipe_format = pages.VERSION if format_2 else recipes.VERSION
            if document["object_format"] != objectformat.VERSION or document["recipe_format"] != recipe_format:
                raise UnsupportedFormatError(
                    f"store uses object format {document['object_format']!r}"
                    f" / recipe format {document['recipe_format']!r}"
                )
            if document["encryption"] is not None:
                crypto.validate_section(document["encryption"])
            layout = document["layout"]
            if layout != {"chunk_prefix": CHUNK_KEY_PREFIX, "shard_hex_digits": SHARD_HEX_DIGITS}:
                raise UnsupportedFormatError(f"store uses unknown key layout {layout!r}")
            if not isinstance(document["catalog"], dict):
                raise CorruptObjectError("store config has no catalog section")
            store_id = document["store_id"]
            if not isinstance(store_id, str) or not _STORE_ID.fullmatch(store_id):
                raise CorruptObjectError(f"store config has an invalid store ID {store_id!r}")
            chunker = ChunkerSpec.from_config(document["chunker"])
            segments = pages.SegmentSpec.from_config(document["segments"], chunker.max_size) if format_2 else None
            return cls(
                chunker=chunker,
                compression=CompressionSpec.from_config(document["compression"]),
                catalog=document["catalog"],
                store_id=store_id,
                created_at=str(document["created_at"]),
                chunk_id=document["chunk_id"],
                file_digest=document["file_digest"],
                object_format=document["object_format"],
                recipe_format=document["recipe_format"],
                encryption=document["encryption"],
                version=version,
                segments=segments,
                metadata=metadata,
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

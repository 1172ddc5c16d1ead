"""A store: a config, a blob store for chunk objects and a catalog, opened from one URL.

Store opens and creates stores through the backend registry (chunkstore.backends.registry)
and offers every operation as a method; it knows nothing of any one backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from chunkstore.backends.backend import Backend
from chunkstore.backends.catalog import VersionRecord
from chunkstore.backends.registry import open_backend
from chunkstore.backends.sealed import MetadataCipher, SealedCatalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.core import crypto
from chunkstore.core.chunking import ChunkerSpec, Readable
from chunkstore.core.compression import DEFAULT_DICTIONARY_SIZE, DEFAULT_TRAINING_BYTES, CompressionSpec
from chunkstore.core.config import CONFIG_KEY, StoreConfig
from chunkstore.core.crypto import Keys
from chunkstore.core.names import normalize_prefix
from chunkstore.errors import (
    BlobNotFoundError,
    InvalidArgumentError,
    PassphraseRequiredError,
    StoreExistsError,
    StoreNotFoundError,
)
from chunkstore.operations import maintenance, migrate, put, read
from chunkstore.operations.context import StoreContext
from chunkstore.operations.results import FileResult, Progress, PutSummary
from chunkstore.operations.walk import PathArgument

# Chunkers whose boundaries reveal nothing without the key: fastcdc2020 takes a secret
# gear seed; fixed boundaries depend only on offsets.
ENCRYPTABLE_CHUNKERS = ("fastcdc2020", "fixed")
# What a put through the library records as its program, unless the caller says otherwise.
LIBRARY_PROGRAM = "chunkstore library"
# 1: a chunk object and a counted catalog row per chunk; 2: packs and recipe pages.
STORAGE_FORMATS = (1, 2)
# Format 2 stores 1.45x less than format 1 at their default chunk sizes on real releases and pays
# per 16 MiB pack instead of per chunk on S3 (docs/performance.md#the-default-storage-format).
DEFAULT_STORAGE_FORMAT = 2


class Store(StoreContext):
    """An open store. Use Store.init to create one and Store.open to open one."""

    def __init__(self, backend: Backend, config: StoreConfig, catalog, keys: Keys | None = None):
        # What seals the metadata of a store that seals it (config version 4): applications that
        # keep names of their own (the ingest ledger) use it too.
        self.metadata_cipher: MetadataCipher | None = None
        if config.metadata is not None:
            # Only an encrypted config names a metadata scheme, and it is unlocked before this.
            assert keys is not None
            self.metadata_cipher = MetadataCipher(keys)
            # Its passed-through methods are set on the class when sealed.py loads, unseen by mypy.
            catalog = SealedCatalog(catalog, self.metadata_cipher)  # type: ignore[abstract]
        super().__init__(backend.url, config, backend.blobs, catalog, keys)
        self.backend = backend

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        url: str,
        chunker: ChunkerSpec,
        compression: CompressionSpec,
        *,
        table: str | None = None,
        create: bool = False,
        passphrase: bytes | None = None,
        concurrency: int | None = None,
        storage_format: int = DEFAULT_STORAGE_FORMAT,
        dictionary_size: int | None = None,
        training_bytes: int = DEFAULT_TRAINING_BYTES,
        seal_metadata: bool | None = None,
    ) -> Store:
        """Create a store. For s3:// URLs, table names the DynamoDB table of its catalog, and
        create makes the bucket and the table if they do not exist. storage_format 2 stores
        chunks in packs and recipes as pages (docs/design/format-v2.md); with zstd it compresses
        them with a store dictionary of dictionary_size bytes (None: 112 KiB; 0: none) trained on
        the first training_bytes of new chunks. An encrypted format 2 store seals its catalog's
        names, stat data and snapshot records (docs/design/encrypted-metadata.md) unless
        seal_metadata is False (for comparison; None: seal where the format allows)."""
        if storage_format not in STORAGE_FORMATS:
            raise InvalidArgumentError(
                f"storage format {storage_format!r} does not exist (choose {' or '.join(map(str, STORAGE_FORMATS))})"
            )
        if storage_format == 1 and dictionary_size:
            raise InvalidArgumentError("a zstd dictionary needs storage format 2")
        if seal_metadata and passphrase is None:
            raise InvalidArgumentError("sealing the metadata needs encryption (a passphrase)")
        if seal_metadata and storage_format == 1:
            raise InvalidArgumentError("sealed metadata needs storage format 2")
        if dictionary_size is None:
            dictionary_size = DEFAULT_DICTIONARY_SIZE if storage_format == 2 and compression.name == "zstd" else 0
        compression = compression.with_dictionary(dictionary_size, training_bytes)
        backend = open_backend(url, concurrency=concurrency)
        catalog_section = backend.new_catalog_section(table, create)
        if create:
            backend.create_resources(catalog_section)
        blobs = backend.blobs
        if blobs.exists():
            try:
                blobs.stat(CONFIG_KEY)
                raise StoreExistsError(f"a store already exists at {url}")
            except BlobNotFoundError:
                pass
        blobs.create()
        config = StoreConfig(chunker=chunker, compression=compression, catalog=catalog_section)
        if storage_format == 2:
            config = config.as_format_2()
        keys = None
        if passphrase is not None:
            if chunker.name not in ENCRYPTABLE_CHUNKERS:
                raise InvalidArgumentError(
                    f"an encrypted store needs a keyed chunker ({', '.join(ENCRYPTABLE_CHUNKERS)}); "
                    f"{chunker.name} would reveal content through chunk boundaries"
                )
            # Format 1 stays as stores made before sealing were.
            seal = storage_format == 2 if seal_metadata is None else seal_metadata
            config, keys = config.with_encryption(passphrase, seal_metadata=seal)
        catalog = backend.open_catalog(catalog_section, store_id=config.store_id, create=True)
        # The config is written last: its presence is what makes the folder a store,
        # so an init that dies half-way can simply be run again.
        blobs.put(CONFIG_KEY, config.to_bytes())
        blobs.sync()
        return cls(backend, config, catalog, keys)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        passphrase: bytes | None = None,
        read_only: bool = False,
        concurrency: int | None = None,
    ) -> Store:
        """Open the store at url. An encrypted store needs its passphrase (or key file bytes):
        without one PassphraseRequiredError is raised, with a wrong one WrongKeyError.
        read_only promises that only reading operations (get, restore, list, verify, stats)
        will be used, which lets the catalog skip work only writers need."""
        backend = open_backend(url, concurrency=concurrency)
        # A missing folder or bucket fails the read too, so no separate check (a request on S3) is needed.
        try:
            raw = backend.blobs.get(CONFIG_KEY)
        except BlobNotFoundError:
            raise StoreNotFoundError(f"no store at {url} (create one with `chunkstore init`)") from None
        config = StoreConfig.from_bytes(raw)
        if config.encryption is not None and passphrase is None:
            raise PassphraseRequiredError(
                f"the store at {url} is encrypted: give its passphrase (CHUNKSTORE_PASSPHRASE, "
                "--passphrase-file, or at the prompt)"
            )
        keys = config.unlock(passphrase)
        catalog = backend.open_catalog(
            config.catalog, store_id=config.store_id, create=False, lease_seconds=lease_seconds, read_only=read_only
        )
        return cls(backend, config, catalog, keys)

    def change_passphrase(self, old: bytes, new: bytes) -> None:
        """Wrap the store's key under a new passphrase. No data is re-encrypted."""
        self.config = self.config.with_new_passphrase(old, new)
        self.blobs.put(CONFIG_KEY, self.config.to_bytes())
        self.blobs.sync()

    def export_key(self) -> bytes:
        """A backup of the store's wrapped key (still protected by the passphrase), as JSON."""
        if self.config.encryption is None:
            raise InvalidArgumentError("the store is not encrypted")
        return crypto.export_key(self.config.encryption, self.config.store_id)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- operations, each in its own module ------------------------------------------

    def request_counts(self) -> dict | None:
        """The requests this process has made to the store so far, or None where they cost nothing."""
        return self.backend.request_counts()

    def put(
        self,
        paths: Iterable[PathArgument],
        *,
        program: str = LIBRARY_PROGRAM,
        sync: bool = False,
        force_read: bool = False,
        at_ns: int | None = None,
        on_result: Callable[[FileResult], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> PutSummary:
        """Put files and folders and record the run as a snapshot (see operations.put.put)."""
        return put.put(
            self,
            paths,
            program=program,
            sync=sync,
            force_read=force_read,
            at_ns=at_ns,
            on_result=on_result,
            on_progress=on_progress,
        )

    def put_stream(
        self, stream: Readable, name: str, *, program: str = LIBRARY_PROGRAM, at_ns: int | None = None
    ) -> PutSummary:
        """Put one stream under name and record the run as a snapshot; its result is .results[0]."""
        return put.put_stream(self, stream, name, program=program, at_ns=at_ns)

    def get(self, name: str, output: BinaryIO, *, version: int | None = None, on_progress=None) -> VersionRecord:
        return read.get_to_stream(self, name, output, version=version, on_progress=on_progress)

    def get_to_path(
        self, name: str, path: str | os.PathLike[str], *, version: int | None = None, on_progress=None
    ) -> VersionRecord:
        return read.get_to_path(self, name, Path(path), version=version, on_progress=on_progress)

    def restore(self, prefix: str, destination: str | os.PathLike[str], **options) -> read.RestoreSummary:
        return read.restore(self, prefix, Path(destination), **options)

    def list(self, prefix: str = "", *, all_versions: bool = False):
        return self.catalog.list_versions(normalize_prefix(prefix), all_versions=all_versions)

    def remove(self, names, *, version: int | None = None, recursive: bool = False):
        return maintenance.remove(self, names, version=version, recursive=recursive)

    def gc(self, *, dry_run: bool = False, on_progress=None, max_repack: int | None = None) -> maintenance.GcReport:
        """max_repack bounds the live bytes a format 2 store's gc rewrites out of packs it repacks
        (None: no bound; 0: no repack)."""
        return maintenance.gc(self, dry_run=dry_run, on_progress=on_progress, max_repack=max_repack)

    def verify(
        self, *, read_data: bool = False, subset_percent: float = 100.0, repair: bool = False, on_progress=None
    ) -> maintenance.VerifyReport:
        return maintenance.verify(
            self, read_data=read_data, subset_percent=subset_percent, repair=repair, on_progress=on_progress
        )

    def stats(self) -> dict:
        return maintenance.stats(self)

    def migrate_to(
        self, dest: Store, *, on_progress: Callable[[migrate.MigrateProgress], None] | None = None
    ) -> migrate.MigrateReport:
        """Copy every version of this store, with its number, stat, stored-at time, deletion markers
        and snapshots, into dest: a new storage format 2 store, or one a migrate of this store left
        unfinished (see operations.migrate)."""
        return migrate.migrate(self, dest, on_progress=on_progress)

"""A store: a config, a blob store for chunk objects and a catalog, opened from one URL."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from chunkstore.core import crypto
from chunkstore.backends.blobstore import BlobNotFoundError, BlobStore
from chunkstore.backends.local import LocalBlobStore
from chunkstore.backends.catalog import Catalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.core.chunking import ChunkerSpec, make_chunker
from chunkstore.core.compression import CompressionSpec, Compressor
from chunkstore.core.config import CONFIG_KEY, StoreConfig
from chunkstore.core.crypto import Keys
from chunkstore.errors import InvalidArgumentError, PassphraseRequiredError, StoreExistsError, StoreNotFoundError, UnsupportedFormatError
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec

LOCAL_CATALOG_FILE = "catalog.sqlite"
# Chunkers whose boundaries reveal nothing without the key: fastcdc2020 takes a secret
# gear seed; fixed boundaries depend only on offsets.
ENCRYPTABLE_CHUNKERS = ("fastcdc2020", "fixed")


@dataclass(frozen=True)
class Location:
    """Where a store lives, parsed from its URL."""

    scheme: str  # "file" (a local folder) or "s3"
    path: str  # the folder, or BUCKET/PREFIX

    @classmethod
    def parse(cls, url: str) -> "Location":
        if not url:
            raise InvalidArgumentError("store URL is empty")
        if url.startswith("s3://"):
            return cls("s3", url[len("s3://"):].strip("/"))
        if url.startswith("file://"):
            url = url[len("file://"):]
        elif "://" in url:
            raise InvalidArgumentError(f"unsupported store URL {url!r} (use a folder path or s3://BUCKET/PREFIX)")
        return cls("file", str(Path(url).expanduser().absolute()))


def _local_blobstore(location: Location) -> BlobStore:
    return LocalBlobStore(location.path)


def _blobstore_for(location: Location, concurrency: int | None = None) -> BlobStore:
    """The blob store at location; concurrency, when given, overrides how many requests
    (or, locally, threads) put, get, verify and gc keep in flight."""
    if concurrency is not None and not 1 <= concurrency <= 1024:
        raise InvalidArgumentError(f"concurrency must be within 1..1024, got {concurrency}")
    if location.scheme == "file":
        blobs = _local_blobstore(location)
    elif location.scheme == "s3":
        # boto3 is imported here, and only here: AwsClients says how to install it if it is missing.
        from chunkstore.backends.aws import MAX_POOL_CONNECTIONS, AwsClients

        clients = AwsClients(max_pool_connections=max(MAX_POOL_CONNECTIONS, concurrency or 0))
        from chunkstore.backends.s3 import S3BlobStore

        blobs = S3BlobStore.from_location(location.path, clients)
    else:
        raise UnsupportedFormatError(f"{location.scheme}:// stores are not supported by this chunkstore")
    if concurrency is not None:
        blobs.concurrency = concurrency
    return blobs


def _catalog_section(location: Location, table: str | None, create: bool) -> dict:
    """The config's catalog section for a new store: SQLite in the folder, or a DynamoDB table for s3://."""
    if location.scheme == "s3":
        from chunkstore.backends.dynamodb import validate_table

        if not table:
            raise InvalidArgumentError("an s3:// store keeps its catalog in DynamoDB: give the table with --table TABLE")
        return {"type": "dynamodb", "table": validate_table(table)}
    if table is not None or create:
        raise InvalidArgumentError("--table and --create apply only to s3:// stores")
    return {"type": "sqlite", "path": LOCAL_CATALOG_FILE}


class Store:
    """An open store. Use Store.init to create one and Store.open to open one."""

    def __init__(self, url: str, config: StoreConfig, blobs: BlobStore, catalog: Catalog, keys: Keys | None = None):
        self.url = url
        self.config = config
        self.blobs = blobs
        self.catalog = catalog
        self.encrypted = keys is not None
        chunker = config.chunker
        if keys is None:
            self.hasher = Hasher()
        else:
            self.hasher = Hasher(keys.chunk_id, keys.file_digest)
            if chunker.name == "fastcdc2020":
                chunker = dataclasses.replace(chunker, seed=keys.chunker_seed)
        self.codec = ObjectCodec(Compressor(config.compression), max_chunk_size=config.chunker.max_size,
                                 sealer=keys.objects if keys else None)
        self.chunker = make_chunker(chunker)

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    def init(cls, url: str, chunker: ChunkerSpec, compression: CompressionSpec, *,
             table: str | None = None, create: bool = False, passphrase: bytes | None = None,
             concurrency: int | None = None) -> "Store":
        """Create a store. For s3:// URLs, table names the DynamoDB table of its catalog, and
        create makes the bucket and the table if they do not exist."""
        location = Location.parse(url)
        catalog_section = _catalog_section(location, table, create)
        blobs = _blobstore_for(location, concurrency)
        if create:
            from chunkstore.backends.dynamodb import DynamoDBCatalog

            blobs.create_bucket()
            DynamoDBCatalog.create_table(blobs.clients, table)
        if blobs.exists():
            try:
                blobs.stat(CONFIG_KEY)
                raise StoreExistsError(f"a store already exists at {url}")
            except BlobNotFoundError:
                pass
        blobs.create()
        config = StoreConfig(chunker=chunker, compression=compression, catalog=catalog_section)
        keys = None
        if passphrase is not None:
            if chunker.name not in ENCRYPTABLE_CHUNKERS:
                raise InvalidArgumentError(f"an encrypted store needs a keyed chunker ({', '.join(ENCRYPTABLE_CHUNKERS)}); "
                                           f"{chunker.name} would reveal content through chunk boundaries")
            config, keys = config.with_encryption(passphrase)
        catalog = cls._open_catalog(location, config, blobs, create=True)
        # The config is written last: its presence is what makes the folder a store,
        # so an init that dies half-way can simply be run again.
        blobs.put(CONFIG_KEY, config.to_bytes())
        blobs.sync()
        return cls(url, config, blobs, catalog, keys)

    @classmethod
    def open(cls, url: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
             passphrase: bytes | None = None, read_only: bool = False, concurrency: int | None = None) -> "Store":
        """Open the store at url. An encrypted store needs its passphrase (or key file bytes):
        without one PassphraseRequiredError is raised, with a wrong one WrongKeyError.
        read_only promises that only reading operations (get, restore, list, verify, stats)
        will be used, which lets the catalog skip work only writers need."""
        location = Location.parse(url)
        blobs = _blobstore_for(location, concurrency)
        # A missing folder or bucket fails the read too, so no separate check (a request on S3) is needed.
        try:
            raw = blobs.get(CONFIG_KEY)
        except BlobNotFoundError:
            raise StoreNotFoundError(f"no store at {url} (create one with `chunkstore init`)") from None
        config = StoreConfig.from_bytes(raw)
        if config.encryption is not None and passphrase is None:
            raise PassphraseRequiredError(
                f"the store at {url} is encrypted: give its passphrase (CHUNKSTORE_PASSPHRASE, "
                "--passphrase-file, or at the prompt)")
        keys = config.unlock(passphrase)
        catalog = cls._open_catalog(location, config, blobs, create=False, lease_seconds=lease_seconds,
                                    read_only=read_only)
        return cls(url, config, blobs, catalog, keys)

    def change_passphrase(self, old: bytes, new: bytes) -> None:
        """Wrap the store's key under a new passphrase. No data is re-encrypted."""
        if self.config.encryption is None:
            raise InvalidArgumentError("the store is not encrypted")
        self.config = self.config.with_new_passphrase(old, new)
        self.blobs.put(CONFIG_KEY, self.config.to_bytes())
        self.blobs.sync()

    def export_key(self) -> bytes:
        """A backup of the store's wrapped key (still protected by the passphrase), as JSON."""
        if self.config.encryption is None:
            raise InvalidArgumentError("the store is not encrypted")
        return crypto.export_key(self.config.encryption, self.config.store_id)

    @staticmethod
    def _open_catalog(location: Location, config: StoreConfig, blobs: BlobStore, *, create: bool,
                      lease_seconds: float = DEFAULT_LEASE_SECONDS, read_only: bool = False) -> Catalog:
        kind = config.catalog.get("type")
        if kind == "dynamodb" and location.scheme == "s3":
            from chunkstore.backends.dynamodb import DynamoDBCatalog

            return DynamoDBCatalog(blobs.clients, config.catalog.get("table"), store_id=config.store_id,
                                   store_url=blobs.url, create=create, lease_seconds=lease_seconds)
        if kind == "sqlite" and location.scheme == "file":
            from chunkstore.backends.sqlite import SQLiteCatalog

            relative = config.catalog.get("path", LOCAL_CATALOG_FILE)
            if not isinstance(relative, str) or "/" in relative or relative.startswith("."):
                raise UnsupportedFormatError(f"store config names an invalid catalog path {relative!r}")
            return SQLiteCatalog(Path(location.path) / relative, create=create, lease_seconds=lease_seconds,
                                 read_only=read_only)
        raise UnsupportedFormatError(f"store config names an unknown catalog type {kind!r}")

    @property
    def workers(self) -> int:
        """Threads worth running for chunk I/O: the blob store's concurrency, else one per core."""
        return self.blobs.concurrency or max(2, os.cpu_count() or 2)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- operations, each in its own module ------------------------------------------

    def put(self, paths, **options):
        from chunkstore.operations.put import put_paths

        return put_paths(self, paths, **options)

    def put_stream(self, stream, name: str, **options):
        from chunkstore.operations.put import put_stream

        return put_stream(self, stream, name, **options)

    def get(self, name: str, output, *, version: int | None = None, on_progress=None):
        from chunkstore.operations.read import get_to_stream

        return get_to_stream(self, name, output, version=version, on_progress=on_progress)

    def get_to_path(self, name: str, path: str | os.PathLike[str], *, version: int | None = None, on_progress=None):
        from chunkstore.operations.read import get_to_path

        return get_to_path(self, name, Path(path), version=version, on_progress=on_progress)

    def restore(self, prefix: str, destination: str | os.PathLike[str], **options):
        from chunkstore.operations.read import restore

        return restore(self, prefix, Path(destination), **options)

    def list(self, prefix: str = "", *, all_versions: bool = False):
        from chunkstore.core.names import normalize_prefix

        return self.catalog.list_versions(normalize_prefix(prefix), all_versions=all_versions)

    def remove(self, names, *, version: int | None = None, recursive: bool = False):
        from chunkstore.operations.maintenance import remove

        return remove(self, names, version=version, recursive=recursive)

    def gc(self, *, dry_run: bool = False, on_progress=None):
        from chunkstore.operations.maintenance import gc

        return gc(self, dry_run=dry_run, on_progress=on_progress)

    def verify(self, *, read_data: bool = False, subset_percent: float = 100.0, repair: bool = False,
               on_progress=None):
        from chunkstore.operations.maintenance import verify

        return verify(self, read_data=read_data, subset_percent=subset_percent, repair=repair,
                      on_progress=on_progress)

    def stats(self):
        from chunkstore.operations.maintenance import stats

        return stats(self)

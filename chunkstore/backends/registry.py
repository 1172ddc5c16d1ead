"""One way to open a store's place: a URL becomes a Backend, a blob store paired with the catalog
kind that goes with it.

    /path, file:///path    LocalBackend: objects in a folder, the catalog in SQLite inside it
    s3://BUCKET[/PREFIX]   S3Backend: objects in S3, the catalog in a DynamoDB table (boto3, imported
                           only for this scheme)
    memory://NAME          MemoryBackend: objects and catalog in this process, for tests and trials

The store's config says which catalog it uses (its "catalog" section); a backend refuses a
section it does not pair with, so an edited config cannot point a folder's store at a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from chunkstore.backends.backend import Backend
from chunkstore.backends.catalog import Catalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.errors import InvalidArgumentError, UnsupportedFormatError

if TYPE_CHECKING:
    from chunkstore.backends.aws import AwsClients

LOCAL_CATALOG_FILE = "catalog.sqlite"
# What a config may name as the catalog file: one plain name in the store's folder, short
# enough for any file system (NAME_MAX is 255 bytes), so no edit can point it elsewhere.
_CATALOG_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
MAX_CONCURRENCY = 1024


class LocalBackend(Backend):
    """A folder holding the objects, with the SQLite catalog beside them."""

    def __init__(self, folder: str, concurrency: int | None):
        from chunkstore.backends.local import LocalBlobStore

        blobs = LocalBlobStore(folder)
        if concurrency is not None:
            blobs.concurrency = concurrency
        super().__init__(folder, blobs)
        self.folder = Path(folder)

    def new_catalog_section(self, table: str | None, create: bool) -> dict:
        if table is not None or create:
            raise InvalidArgumentError("--table and --create apply only to s3:// stores")
        return {"type": "sqlite", "path": LOCAL_CATALOG_FILE}

    def open_catalog(
        self,
        catalog_section: dict,
        *,
        store_id: str,
        create: bool,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ) -> Catalog:
        if catalog_section.get("type") != "sqlite":
            raise self.refuse(catalog_section)
        from chunkstore.backends.sqlite import SQLiteCatalog

        relative = catalog_section.get("path", LOCAL_CATALOG_FILE)
        # The file lies in the store's folder: a config edited to name another path is refused.
        if not isinstance(relative, str) or not _CATALOG_FILE_NAME.fullmatch(relative):
            raise UnsupportedFormatError(f"store config names an invalid catalog path {relative!r}")
        return SQLiteCatalog(self.folder / relative, create=create, lease_seconds=lease_seconds, read_only=read_only)


class S3Backend(Backend):
    """Objects under a bucket's prefix, the catalog in a DynamoDB table; one set of clients for both."""

    def __init__(self, path: str, concurrency: int | None):
        from chunkstore.backends.aws import MAX_POOL_CONNECTIONS, AwsClients
        from chunkstore.backends.s3 import S3BlobStore, validate_bucket

        validate_bucket(path.partition("/")[0])  # a bad URL is told as such, before any AWS setting
        self.clients = AwsClients(max_pool_connections=max(MAX_POOL_CONNECTIONS, concurrency or 0))
        blobs = S3BlobStore.from_location(path, self.clients)
        if concurrency is not None:
            blobs.concurrency = concurrency
        super().__init__(blobs.url, blobs)
        self.s3_blobs = blobs

    @property
    def aws_clients(self) -> AwsClients:
        return self.clients

    def new_catalog_section(self, table: str | None, create: bool) -> dict:
        from chunkstore.backends.dynamodb import validate_table

        if not table:
            raise InvalidArgumentError(
                "an s3:// store keeps its catalog in DynamoDB: give the table with --table TABLE"
            )
        return {"type": "dynamodb", "table": validate_table(table)}

    def create_resources(self, catalog_section: dict) -> None:
        from chunkstore.backends.dynamodb import DynamoDBCatalog

        self.s3_blobs.create_bucket()
        DynamoDBCatalog.create_table(self.clients, catalog_section["table"])

    def open_catalog(
        self,
        catalog_section: dict,
        *,
        store_id: str,
        create: bool,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ) -> Catalog:
        if catalog_section.get("type") != "dynamodb":
            raise self.refuse(catalog_section)
        from chunkstore.backends.dynamodb import DynamoDBCatalog
        from chunkstore.backends.dynamodb.table import validate_table

        return DynamoDBCatalog(
            self.clients,
            validate_table(catalog_section.get("table")),
            store_id=store_id,
            store_url=self.url,
            create=create,
            lease_seconds=lease_seconds,
        )


def _memory_backend(name: str, concurrency: int | None) -> Backend:
    from chunkstore.backends.memory import MemoryBackend

    return MemoryBackend(name, concurrency)


# scheme -> what opens it (rest of the URL, concurrency). Each backend imports its modules
# only when a URL names it: boto3 loads for s3:// alone.
_SCHEMES: dict[str, Callable[[str, int | None], Backend]] = {
    "file": LocalBackend,
    "s3": S3Backend,
    "memory": _memory_backend,
}


def split_url(url: str) -> tuple[str, str]:
    """(scheme, the rest): a plain path is a folder (made absolute), s3://BUCKET/PREFIX keeps its
    bucket and prefix, memory://NAME its name."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError("store URL is empty")
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "file", url
    if scheme not in _SCHEMES:
        raise InvalidArgumentError(
            f"unsupported store URL {url!r} (use a folder path, s3://BUCKET/PREFIX or memory://NAME)"
        )
    if scheme == "file":
        return scheme, str(Path(rest).expanduser().absolute())
    return scheme, rest.strip("/")


def open_backend(url: str, *, concurrency: int | None = None) -> Backend:
    """The backend at url. concurrency, when given, overrides how many requests (or, locally,
    threads) put, get, verify and gc keep in flight."""
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidArgumentError(f"concurrency must be within 1..{MAX_CONCURRENCY}, got {concurrency}")
    scheme, rest = split_url(url)
    return _SCHEMES[scheme](rest, concurrency)

"""The Backend interface: a store's place, opened. chunkstore.backends.registry picks the
implementation for a URL."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.catalog import Catalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from chunkstore.errors import InvalidArgumentError, UnsupportedFormatError

if TYPE_CHECKING:
    from chunkstore.backends.aws import AwsClients


class Backend(ABC):
    """A store's place, opened: its blob store, and how to make and open its catalog.

    Capabilities an application may use are declared here, with a default for backends
    that do not have them."""

    def __init__(self, url: str, blobs: BlobStore):
        self.url = url
        self.blobs = blobs

    @abstractmethod
    def new_catalog_section(self, table: str | None, create: bool) -> dict:
        """The config's catalog section for a new store here. Raises InvalidArgumentError for
        options this backend does not take (table and create are for s3:// stores)."""

    def create_resources(self, catalog_section: dict) -> None:
        """Make what init --create makes (a bucket and a table). Only called when asked for."""
        raise InvalidArgumentError("--create applies only to s3:// stores")

    @abstractmethod
    def open_catalog(
        self,
        catalog_section: dict,
        *,
        store_id: str,
        create: bool,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        read_only: bool = False,
    ) -> Catalog:
        """Open (create: make) the catalog the config names. Raises UnsupportedFormatError for a
        section this backend does not pair with."""

    @property
    def aws_clients(self) -> AwsClients | None:
        """The AWS clients this store's requests go through, for applications that talk to the
        same account and count their requests together (the ingest function); None off AWS."""
        return None

    def request_counts(self) -> dict | None:
        """The requests this process has made to the store so far (RequestCounter.snapshot),
        or None where requests cost nothing."""
        clients = self.aws_clients
        return clients.requests.snapshot() if clients is not None else None

    def refuse(self, catalog_section: dict) -> UnsupportedFormatError:
        """The error for a config whose catalog section this backend does not pair with."""
        return UnsupportedFormatError(
            f"the store config at {self.url} names a catalog of type "
            f"{catalog_section.get('type')!r}, which a store there cannot use"
        )

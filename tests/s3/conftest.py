"""Fixtures for the s3:// store: buckets and tables on the moto server (moto_endpoint, from
tests/support/moto_fixtures.py)."""

from __future__ import annotations

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.aws import AwsClients
from chunkstore.backends.dynamodb import DynamoDBCatalog
from support.s3helpers import unique_name


@pytest.fixture
def table(moto_endpoint) -> str:
    """The name of a DynamoDB table that does not exist yet."""
    return unique_name("table")


@pytest.fixture
def s3_url(bucket) -> str:
    """Where an s3:// store goes (nothing exists under the prefix until it is created)."""
    return f"s3://{bucket}/store"


@pytest.fixture
def s3_store(s3_url, table):
    """A new storage format 1 s3:// store with 1 KiB average chunks and zstd:3, its table made by init."""
    spec = ChunkerSpec.from_average(avg_size=1024)
    with Store.init(
        s3_url, spec, CompressionSpec.parse("zstd:3"), table=table, create=True, storage_format=1
    ) as opened:
        yield opened


@pytest.fixture
def make_dynamodb_catalog(table, moto_endpoint):
    """Open DynamoDBCatalog handles on one new table (the first creates it); close them all at the end."""
    opened: list[DynamoDBCatalog] = []

    def make(lease_seconds: float | None = None) -> DynamoDBCatalog:
        clients = AwsClients()
        if not opened:
            DynamoDBCatalog.create_table(clients, table)
        options = {} if lease_seconds is None else {"lease_seconds": lease_seconds}
        catalog = DynamoDBCatalog(
            clients, table, store_id="conformance", store_url="s3://conformance/catalog", create=not opened, **options
        )
        opened.append(catalog)
        return catalog

    yield make
    for catalog in opened:
        catalog.close()

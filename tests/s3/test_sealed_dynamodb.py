"""Sealed metadata over the DynamoDB catalog, on moto's server over real HTTP: the catalog
contract kept, and items that hold sealed names, stat data, snapshots and session hosts only."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from chunkstore.backends.catalog import FileStat, SnapshotRecord
from chunkstore.backends.sealed import MetadataCipher, SealedCatalog
from chunkstore.backends.sessions import HOST
from chunkstore.core.crypto import Keys
from support.catalog_conformance import CatalogConformance, new_version, put

KEYS = Keys.from_master(bytes(range(32)))


class TestSealedDynamoDBCatalog(CatalogConformance):
    @pytest.fixture
    def make_catalog(self, make_dynamodb_catalog):
        return lambda lease_seconds=None: SealedCatalog(make_dynamodb_catalog(lease_seconds), MetadataCipher(KEYS))


def test_items_hold_sealed_fields_only(make_dynamodb_catalog, clients, table):
    catalog = SealedCatalog(make_dynamodb_catalog(), MetadataCipher(KEYS))
    stat = FileStat(10, mtime_ns=1_111_222_333_444_555_666, mode=0o100600, inode=424_242_424_242, ctime_ns=7)
    put(catalog, replace(new_version("quarterly/secret-plan.txt", [1]), stat=stat))
    put(catalog, replace(new_version("quarterly/secret-plan.txt", [2]), stat=stat))
    put(catalog, new_version("quarterly/copy-of-plan.txt", [1]))  # a duplicate: its content item names the first
    catalog.mark_deleted([("quarterly/copy-of-plan.txt", 1)], at_ns=time.time_ns())
    catalog.record_snapshot(SnapshotRecord("snap", 1, "alices-laptop.example", ("quarterly",), program="put"))
    catalog.open_session("put")  # left open: its item stays

    pages = clients.dynamodb.get_paginator("scan").paginate(TableName=table)
    dumped = repr([item for page in pages for item in page["Items"]])
    secrets = ["quarterly", "secret-plan", "copy-of-plan", "alices-laptop", "424242424242", "1111222333"]
    for secret in secrets + ([HOST] if len(HOST) >= 6 else []):  # a shorter host name may be in any text
        assert secret not in dumped
    assert "'x': {'B'" in dumped
    listed = catalog.list_versions("quarterly", all_versions=True, deleted=True)
    assert [(record.name, record.version, record.deleted) for record in listed] == [
        ("quarterly/copy-of-plan.txt", 1, False),
        ("quarterly/copy-of-plan.txt", 2, True),
        ("quarterly/secret-plan.txt", 1, False),
        ("quarterly/secret-plan.txt", 2, False),
    ]
    assert catalog.get_version("quarterly/secret-plan.txt").stat == stat
    assert catalog.list_snapshots()[0].host == "alices-laptop.example"

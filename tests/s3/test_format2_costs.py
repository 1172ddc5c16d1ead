"""Requests and costs of a storage format 2 store on S3 and DynamoDB (moto).

A put pays per 16 MiB pack, per recipe page and per file, not per chunk; an unchanged re-put
pays no S3 PUT; and the cost estimate `stats` prints (chunkstore.backends.aws.cost_estimate)
agrees with what the counted requests cost at list prices, DynamoDB's units billed from the
requests themselves (support/dynamodbbilling.py: moto does not bill by item size)."""

from __future__ import annotations

import io
import math
import random

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends import aws
from chunkstore.backends.aws import cost_estimate
from chunkstore.backends.dictionaries import DICTIONARY_KEY_PREFIX
from chunkstore.backends.packs import PACK_KEY_PREFIX, PACK_TARGET_SIZE
from support.clirunner import Chunkstore, random_bytes, text_bytes
from support.dynamodbbilling import DynamoDBBill

MB = 1_000_000
GB = 1e9
BLOCK = 256 * 1024
# Requests of a put command whatever its size: the session (open, renew, close), the snapshot,
# and the table's move to schema 3 at its first pack item.
FIXED_WRITE_REQUESTS = 5
# Per pack: its item created PENDING, then turned PRESENT.
WRITE_REQUESTS_PER_PACK = 2
# One transaction writes the file's pages, one commits it.
WRITE_REQUESTS_PER_FILE = 2
# Hook items go in batch writes of up to 25.
HOOKS_PER_WRITE_REQUEST = 25
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


def mixed_data(size: int, seed: int) -> bytes:
    """Blocks of 256 KiB, each random bytes, text (zstd makes it ~3x smaller) or a repeat of an
    earlier block, drawn at random: the store finds repeats inside the file and compresses some."""
    rng = random.Random(seed)
    blocks: list[bytes] = []
    while len(blocks) * BLOCK < size:
        kind = rng.choice(("random", "text", "repeat"))
        if kind == "repeat" and blocks:
            blocks.append(rng.choice(blocks))
        else:
            maker = text_bytes if kind == "text" else random_bytes
            blocks.append(maker(BLOCK, rng.getrandbits(32)))
    return b"".join(blocks)[:size]


def request_counts(store: Store, service: str) -> dict[str, int]:
    """The requests the store has sent to one service so far, by operation."""
    counts = store.request_counts()
    assert counts is not None
    return counts[service]


def s3_puts(store: Store) -> int:
    return request_counts(store, "s3").get("PutObject", 0)


def dynamodb_writes(store: Store) -> int:
    return sum(request_counts(store, "dynamodb").get(operation, 0) for operation in DYNAMODB_WRITES)


def hook_items(store: Store) -> int:
    """The hook items in the store's table (a consistent scan)."""
    catalog = store.catalog
    scans = catalog.clients.dynamodb.get_paginator("scan").paginate(
        TableName=catalog.table.name,
        FilterExpression="begins_with(pk, :hook)",
        ExpressionAttributeValues={":hook": {"S": "h#"}},
        Select="COUNT",
        ConsistentRead=True,
    )
    return sum(page["Count"] for page in scans)


class Meter:
    """The S3 requests a store sends and the DynamoDB units they are billed, from a starting point."""

    def __init__(self, store: Store):
        clients = store.backend.aws_clients
        assert clients is not None
        self.store = store
        self.bill = DynamoDBBill()
        self.bill.listen(clients.dynamodb)
        self.start()

    def start(self) -> None:
        self._s3 = request_counts(self.store, "s3")
        self._writes, self._reads = self.bill.write_units, self.bill.read_units

    def s3(self, operation: str) -> int:
        return request_counts(self.store, "s3").get(operation, 0) - self._s3.get(operation, 0)

    @property
    def puts(self) -> int:
        return self.s3("PutObject")

    @property
    def gets(self) -> int:
        return self.s3("GetObject")

    def usd(self) -> float:
        """What the requests since start() cost at the list prices chunkstore uses (a put and a
        restore send S3 nothing but PUTs and GET-priced requests)."""
        s3_requests = sum(self.s3(operation) for operation in request_counts(self.store, "s3"))
        return (
            self.puts * aws.S3_PUT_PER_1000 / 1000
            + (s3_requests - self.puts) * aws.S3_GET_PER_1000 / 1000
            + (self.bill.write_units - self._writes) * aws.DYNAMODB_WRITE_UNIT_PER_MILLION / 1e6
            + (self.bill.read_units - self._reads) * aws.DYNAMODB_READ_UNIT_PER_MILLION / 1e6
        )


@pytest.fixture
def format_2_store(s3_url, table):
    """A new format 2 s3:// store at the design's 8 KiB chunks and 16 MiB pages."""
    with Store.init(
        s3_url,
        ChunkerSpec.from_average(avg_size=8192),
        CompressionSpec.parse("zstd:3"),
        table=table,
        create=True,
        storage_format=2,
    ) as store:
        yield store


def test_a_put_pays_per_pack_page_and_file_and_stats_prices_it(format_2_store, s3_url, tmp_path):
    store = format_2_store
    # Seed 5 cuts the file's chunks into four segments (a 16 MiB segment holds ~1,600 chunks).
    data = mixed_data(40 * MB, seed=5)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    meter = Meter(store)
    writes_before = dynamodb_writes(store)
    result = store.put([(source, "data.bin")]).results[0]
    assert result.outcome == "stored"
    put_usd, pack_puts, write_requests = meter.usd(), meter.puts, dynamodb_writes(store) - writes_before
    figures = store.stats()
    packs = sorted(info.size for info in store.blobs.list(PACK_KEY_PREFIX))
    dictionaries = len(list(store.blobs.list(DICTIONARY_KEY_PREFIX)))

    # One PUT per pack, packs closed at 16 MiB: every pack but the last holds 16 MiB or a record
    # more, so the PUTs are the stored bytes in 16 MiB, rounded up (2 here: 40 MB, 27 MB of it
    # distinct, 18 MB stored); and one for the store's dictionary, trained on the first 16 MiB.
    assert dictionaries == 1
    assert pack_puts - dictionaries == len(packs) == figures["packs"]
    assert len(packs) == math.ceil(figures["stored_bytes"] / PACK_TARGET_SIZE)
    assert all(size >= PACK_TARGET_SIZE for size in packs[1:])
    # DynamoDB: per pack and per file, nothing per chunk.
    assert figures["chunks"] > 2_000
    hooks = hook_items(store)
    assert 0 < hooks < figures["chunks"] / 10
    assert write_requests == (
        FIXED_WRITE_REQUESTS
        + WRITE_REQUESTS_PER_PACK * len(packs)
        + WRITE_REQUESTS_PER_FILE
        + math.ceil(hooks / HOOKS_PER_WRITE_REQUEST)
    )
    assert write_requests < figures["chunks"] / 100

    # The estimate per GB of new data, from the store's own packs and pages, is within a factor of
    # 2 of what this put cost per GB of the new bytes it stored (the put's fixed requests included).
    measured_per_gb = put_usd / (result.new_bytes / GB)
    estimate = cost_estimate(figures)
    assert 0.5 < estimate["ingest_usd_per_gb_new_data"] / measured_per_gb < 2
    assert estimate["chunk_objects_per_gb"] == round(figures["packs"] / (figures["unique_bytes"] / GB))
    # The per-chunk formula of format 1 priced this store hundreds of times too high.
    per_chunk = cost_estimate({**figures, "storage_format": 1})
    assert per_chunk["ingest_usd_per_gb_new_data"] > 300 * estimate["ingest_usd_per_gb_new_data"]

    # A restore GETs each pack's table and its records, in reads of at most RESTORE_READ_BYTES of
    # bytes and chunks decoded (measured: 24 GETs for 2 packs of 0.8 and 16.9 MB, 29.5 estimated).
    store.close()
    with Store.open(s3_url, read_only=True) as reader:
        meter = Meter(reader)
        out = io.BytesIO()
        reader.get("data.bin", out)
        assert out.getvalue() == data
        # And the dictionary, once.
        gets = meter.gets - dictionaries
        assert len(packs) < gets <= 1.5 * (len(packs) + (sum(packs) + len(data)) / aws.RESTORE_READ_BYTES)
        measured_per_gb = meter.usd() / (len(data) / GB)
        assert 0.5 < estimate["restore_usd_per_gb"] / measured_per_gb < 2

    # `chunkstore stats` prints the estimate and calls the objects packs.
    stats = Chunkstore(s3_url, tmp_path)("stats").out
    assert f"{estimate['chunk_objects_per_gb']:,} pack objects/GB" in stats
    assert f"${estimate['ingest_usd_per_gb_new_data']:.6f} to put new data" in stats


def test_versions_with_scattered_edits_cost_what_stats_estimates(format_2_store, s3_url):
    """Each version rewrites 1,000 bytes every 400 KB: new chunks all over the file, so every
    segment gets a fresh page whose runs alternate between the old packs and the new one."""
    store = format_2_store
    data = bytearray(mixed_data(20 * MB, seed=5))
    versions = []
    meter = Meter(store)
    new_bytes = 0
    for number in range(4):
        if number:
            rng = random.Random(number)
            for offset in range(rng.randrange(400_000), len(data), 400_000):
                data[offset : offset + 1_000] = random_bytes(1_000, rng.getrandbits(32))
        versions.append(bytes(data))
        new_bytes += store.put_stream(io.BytesIO(data), "database.bin").results[0].new_bytes
    put_usd = meter.usd()
    figures = store.stats()
    estimate = cost_estimate(figures)
    assert figures["versions"] == 4 and new_bytes < 2 * len(data)
    assert 0.5 < estimate["ingest_usd_per_gb_new_data"] / (put_usd / (new_bytes / GB)) < 2

    store.close()
    with Store.open(s3_url, read_only=True) as reader:
        meter = Meter(reader)
        for number, expected in enumerate(versions, 1):
            out = io.BytesIO()
            reader.get("database.bin", out, version=number)
            assert out.getvalue() == expected
        # Version n names the first put's pack and the pack of each version since (their edits
        # stay): a table GET per pack, and reads of at most RESTORE_READ_BYTES of bytes and chunks
        # decoded (the n packs hold no more than the store's stored bytes; measured: 64 GETs).
        assert figures["packs"] == len(versions)
        # And a dictionary once, if a put stored 16 MiB of new chunks and trained one.
        dictionaries = len(list(reader.blobs.list(DICTIONARY_KEY_PREFIX)))
        tables = sum(range(1, len(versions) + 1))
        reads = (figures["stored_bytes"] + len(data)) / aws.RESTORE_READ_BYTES
        assert tables < meter.gets - dictionaries <= 1.5 * (tables + len(versions) * reads)


def test_an_unchanged_put_makes_no_s3_put(format_2_store, tmp_path):
    store = format_2_store
    source = tmp_path / "data.bin"
    source.write_bytes(mixed_data(20 * MB, seed=2))
    store.put([(source, "data.bin")])
    puts = s3_puts(store)

    assert store.put([(source, "data.bin")]).results[0].outcome == "unchanged"
    # Read again (no stat to compare): every chunk is found in the previous version's packs.
    with open(source, "rb") as stream:
        assert store.put_stream(stream, "data.bin").results[0].new_bytes == 0
    assert s3_puts(store) == puts


def test_the_bill_follows_dynamodb_billing_rules(clients, table):
    clients.dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    bill = DynamoDBBill()
    bill.listen(clients.dynamodb)

    def key(name: str) -> dict:
        return {"pk": {"S": name}, "sk": {"S": "s"}}

    def item(name: str, size: int) -> dict:
        # "pk" and a 2-letter name, "sk" and "s", "data" and its bytes: 4 + 3 + 4 + (size - 11).
        return {**key(name), "data": {"B": bytes(size - 11)}}

    clients.dynamodb.put_item(TableName=table, Item=item("aa", 1_024))
    assert bill.write_units == 1
    clients.dynamodb.put_item(TableName=table, Item=item("bb", 1_025))
    assert bill.write_units == 1 + 2
    clients.dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": item("cc", 4_097)}}])
    assert bill.write_units == 3 + 2 * 5
    clients.dynamodb.get_item(TableName=table, Key=key("cc"), ConsistentRead=True)
    assert bill.read_units == 2
    clients.dynamodb.get_item(TableName=table, Key=key("aa"))
    clients.dynamodb.get_item(TableName=table, Key=key("no"))
    assert bill.read_units == 2 + 0.5 + 0.5


def test_cost_estimate_of_format_2_figures():
    figures = {
        "storage_format": 2,
        "chunks": 10_000,
        "unique_bytes": 10**8,
        "stored_bytes": 5 * 10**7,
        "logical_bytes": 3 * 10**8,
        "versions": 6,
        "packs": 30,
        # Pages of 888 bytes: 1,024 with the item's key and attributes, 1 KB.
        "pages": 60,
        "page_bytes": 60 * 888,
        # Root pages of 1,000 bytes: 1,136 with the item's, 2 KB.
        "root_pages": 4,
        "root_bytes": 4 * 1_000,
        "chunker": {"avg_size": 8192},
    }
    estimate = cost_estimate(figures)
    # Per GB, ten times the counts of 0.1 GB. Put: 300 PUTs; 300 packs x 2 + 600 pages x 2 x 1 +
    # 40 root pages x (2 x 2 + 2 for the round check) + 60 commits x 6 = 2,400 write units, and
    # 8 hooks a page: 4,800 more; 60 versions x 4 + 4,800 hook lookups x 0.5 = 2,640 read units.
    assert estimate["ingest_usd_per_gb_new_data"] == pytest.approx(
        300 * 0.005 / 1000 + (2_400 + 4_800) * 0.625 / 1e6 + (240 + 2_400) * 0.125 / 1e6, rel=1e-3
    )
    # Restore: 300 table GETs, and 0.5 GB stored + 1 GB decoded in reads of 2 MiB of both: 715 GETs;
    # 600 pages x 0.5 + 20 files per GB (6 in 0.3 GB) x 3 = 360 read units.
    gets = 300 + 1.5 * 10**9 / 2**21
    assert estimate["restore_usd_per_gb"] == pytest.approx(gets * 0.0004 / 1000 + 360 * 0.125 / 1e6, rel=1e-3)
    assert estimate["chunk_objects_per_gb"] == 300
    assert estimate["average_chunk_bytes"] == 10_000
    assert estimate["storage_usd_per_month"] == pytest.approx(0.05 * 0.023)


def test_cost_estimate_of_an_empty_format_2_store_assumes_a_first_put():
    figures = {
        "storage_format": 2,
        "chunks": 0,
        "unique_bytes": 0,
        "stored_bytes": 0,
        "logical_bytes": 0,
        "versions": 0,
        "packs": 0,
        "pages": 0,
        "page_bytes": 0,
        "root_pages": 0,
        "root_bytes": 0,
        "chunker": {"avg_size": 8192},
    }
    estimate = cost_estimate(figures)
    # 1 GB in 16 MiB packs: 60 PUTs, ~$0.0003; the catalog's writes about as much again. A restore:
    # 60 table GETs and 954 reads of 2 MiB of bytes and chunks decoded, ~$0.0004.
    assert estimate["chunk_objects_per_gb"] == 60
    assert 0.0003 < estimate["ingest_usd_per_gb_new_data"] < 0.001
    assert 0.0003 < estimate["restore_usd_per_gb"] < 0.0005

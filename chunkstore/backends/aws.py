"""AWS access for s3:// stores: boto3 clients, error translation, request accounting and cost estimates.

boto3 is imported only when an s3:// store is opened, so the local store works
without it. Credentials, region and endpoints come from boto3's standard chain
(AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL_DYNAMODB, ...), and AWS_REGION first, as the AWS CLI reads it:
S3-compatible services and local emulators need no option of chunkstore's own.

Every HTTP request the clients send is counted per service and operation through
botocore's event hooks, and DynamoDB calls ask for the capacity they consumed, so
a command can report what it cost at list prices.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from chunkstore.backends.packs import GETS_IN_FLIGHT, HELD_BYTES, PACK_TARGET_SIZE
from chunkstore.core import pages
from chunkstore.errors import AccessDeniedError, AwsError, ChunkstoreError, ResourceNotFoundError

INSTALL_HINT = "pip install 'chunkstore[s3]'"

# botocore's adaptive mode retries throttling and transient errors with backoff and
# also rate-limits the client when the service keeps throttling it.
RETRY_ATTEMPTS = 10
# Connections per client: enough for the upload or download pool of a command plus
# the catalog's own pool, which run at the same time.
MAX_POOL_CONNECTIONS = 64

# AWS list prices, us-east-1 (S3 Standard and DynamoDB on-demand), in US dollars.
S3_PUT_PER_1000 = 0.005  # PUT, COPY, POST, LIST
S3_GET_PER_1000 = 0.0004  # GET, HEAD and other reads
S3_STORAGE_PER_GB_MONTH = 0.023
DYNAMODB_WRITE_UNIT_PER_MILLION = 0.625
DYNAMODB_READ_UNIT_PER_MILLION = 0.125
PRICE_SOURCE = "AWS list prices, us-east-1: S3 Standard and DynamoDB on-demand"

_S3_FREE = {"DeleteObject", "DeleteObjects"}
_S3_PUT_CLASS_PREFIXES = ("Put", "Copy", "Create", "List", "Post", "Upload", "CompleteMultipart")
_DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable"}

# Write units a new chunk costs in the DynamoDB catalog: its PENDING row, marking it
# PRESENT and its count, each a transactional write (2 units) batched 100 to a request.
WRITE_UNITS_PER_NEW_CHUNK = 6
# Reads of a chunk's row by put (the claim and the pre-commit check, strongly consistent).
READ_UNITS_PER_NEW_CHUNK = 2

# Storage format 2 (docs/design/format-v2.md, "Cost per operation"): requests go by pack, page and
# version, not by chunk. A pack item is created PENDING before the upload and turned PRESENT after
# it: two single writes of a ~200-byte item.
WRITE_UNITS_PER_PACK = 2
# A page or root page item holds the page's bytes plus its key and attributes (136 bytes for a
# page item, fewer for a root page), billed per started KB.
INDEX_ITEM_EXTRA_BYTES = 136
# A write inside a transaction (TransactWriteItems) is billed twice.
TRANSACTION_WRITE_FACTOR = 2
# A commit is one transaction of three items under 1 KB (content, version, name counter); root
# pages join it at 2 units per started KB.
WRITE_UNITS_PER_COMMIT = 3 * TRANSACTION_WRITE_FACTOR
# A transaction that writes pages also checks that the gc round has not moved.
WRITE_UNITS_PER_ROUND_CHECK = TRANSACTION_WRITE_FACTOR
# Strongly consistent reads of a put per version: the name's latest version and its counter, the
# content (whole-file dedup) and the round.
READ_UNITS_PER_VERSION_PUT = 4
# Reads of a restore per file: its version, its content item and its root pages.
READ_UNITS_PER_FILE_RESTORED = 3
# GETs of a restore: each pack's table (one suffix GET), then its records in reads that take at
# most this much of bytes read and chunks decoded (PackReader.read_chunks: its bound over its GETs
# in flight; a pack that fits the bound with its chunks, 8 MiB of incompressible records or less,
# may come whole). A pack read to the end costs (its bytes + their plaintext) / 2 MiB GETs: ~40
# for a 16 MiB pack of records compressed 4:1. A version that takes a few scattered percent of an
# older pack makes one GET per place 256 KiB or more from the next.
RESTORE_READ_BYTES = HELD_BYTES / GETS_IN_FLIGHT
# A format 2 store with no data yet is priced as a first put of one GB file of incompressible
# data: full packs, one page per 16 MiB segment holding 14 runs (a first put's pages hold 13-14).
ASSUMED_PAGE_BYTES = pages.PAGE_HEADER.size + 14 * pages.RUN.size


_ACCESS_DENIED_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "UnauthorizedOperation",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchBucket", "ResourceNotFoundException"}


def import_boto3():
    """boto3, or an error that says how to install it."""
    try:
        import boto3
    except ImportError:
        raise ChunkstoreError(f"s3:// stores need boto3, which is not installed: {INSTALL_HINT}") from None
    return boto3


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, or None for any other exception."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


@contextmanager
def translate_errors(what: str, *, missing: str | None = None) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into ChunkstoreErrors with one clear line.

    what says what was being done ("reading s3://bucket/config"); missing is the
    message for a bucket or table that does not exist."""
    import botocore.exceptions as aws

    try:
        yield
    except aws.ClientError as error:
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message") or ""
        if code in _ACCESS_DENIED_CODES:
            raise AccessDeniedError(
                f"{what}: access denied ({code}{': ' + message if message else ''}); check the credentials "
                "(AWS_PROFILE, AWS_ACCESS_KEY_ID) and that the IAM policy allows this operation"
            ) from None
        if code in _NOT_FOUND_CODES:
            raise ResourceNotFoundError(missing or f"{what}: {message or code}") from None
        raise AwsError(f"{what}: {code}: {message}" if message else f"{what}: {code}") from None
    except aws.NoCredentialsError:
        raise AccessDeniedError(
            f"{what}: no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except aws.NoRegionError:
        raise AwsError(
            f"{what}: no AWS region configured (set AWS_REGION or AWS_DEFAULT_REGION, or a region in your AWS profile)"
        ) from None
    except aws.BotoCoreError as error:
        raise AwsError(f"{what}: {error}") from None


class RequestCounter:
    """HTTP requests sent per service and operation (retries included), and the
    DynamoDB capacity units consumed per operation. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._capacity: defaultdict[str, float] = defaultdict(float)

    def record_request(self, service: str, operation: str) -> None:
        with self._lock:
            self._requests[service, operation] += 1

    def record_capacity(self, operation: str, units: float) -> None:
        with self._lock:
            self._capacity[operation] += units

    def snapshot(self) -> dict:
        """{"s3": {op: n}, "dynamodb": {op: n}, "total": n, "dynamodb_capacity_units": {...}, "estimated_usd": x}"""
        with self._lock:
            requests = dict(self._requests)
            capacity = dict(self._capacity)
        by_service: dict[str, dict[str, int]] = {"s3": {}, "dynamodb": {}}
        for (service, operation), count in sorted(requests.items()):
            by_service.setdefault(service, {})[operation] = count
        read_units = sum(units for operation, units in capacity.items() if operation in _DYNAMODB_READS)
        write_units = sum(capacity.values()) - read_units
        s3_cost = sum(count * _s3_request_price(operation) for operation, count in by_service["s3"].items())
        dynamodb_cost = (
            read_units * DYNAMODB_READ_UNIT_PER_MILLION + write_units * DYNAMODB_WRITE_UNIT_PER_MILLION
        ) / 1e6
        return {
            **by_service,
            "total": sum(requests.values()),
            "dynamodb_capacity_units": {"read": round(read_units, 1), "write": round(write_units, 1)},
            "estimated_usd": round(s3_cost + dynamodb_cost, 8),
        }


def _s3_request_price(operation: str) -> float:
    if operation in _S3_FREE:
        return 0.0
    if operation.startswith(_S3_PUT_CLASS_PREFIXES):
        return S3_PUT_PER_1000 / 1000
    return S3_GET_PER_1000 / 1000


_session_lock = threading.Lock()
_session = None


def _shared_session():
    """One boto3 session per process: clients made from it share its parsed service models
    (making an S3 client from a fresh session costs ~0.15 s). Sessions are not thread-safe,
    so clients are made under _session_lock."""
    global _session
    if _session is None:
        # boto3 reads AWS_DEFAULT_REGION but not AWS_REGION, which the AWS CLI v2 and the other
        # SDKs read first (and Lambda sets): a user who set only AWS_REGION got "no region".
        _session = import_boto3().session.Session(region_name=os.environ.get("AWS_REGION") or None)
    return _session


def session_client(service: str, config):
    """A client of the process's one boto3 session."""
    with _session_lock:
        return _shared_session().client(service, config=config)


class AwsClients:
    """One S3 and one DynamoDB client sharing a retry policy and a request counter.

    botocore clients are thread-safe, so one AwsClients serves every thread of a command."""

    def __init__(self, *, max_pool_connections: int = MAX_POOL_CONNECTIONS):
        import_boto3()
        from botocore.config import Config

        config = Config(
            retries={"mode": "adaptive", "max_attempts": RETRY_ATTEMPTS}, max_pool_connections=max_pool_connections
        )
        self.requests = RequestCounter()
        with translate_errors("setting up the AWS clients"):
            self.s3 = session_client("s3", config)
            self.dynamodb = session_client("dynamodb", config)
        for client in (self.s3, self.dynamodb):
            client.meta.events.register("before-send", self._count_request)
        self.dynamodb.meta.events.register("provide-client-params.dynamodb", self._ask_for_capacity)
        self.dynamodb.meta.events.register("after-call.dynamodb", self._count_capacity)

    @property
    def region(self) -> str | None:
        return self.dynamodb.meta.region_name

    def _count_request(self, event_name: str, **_) -> None:
        # event_name is "before-send.<service>.<Operation>", once per attempt.
        service, operation = event_name.split(".", 2)[1:]
        self.requests.record_request(service, operation)

    @staticmethod
    def _ask_for_capacity(params: dict, model, **_) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _count_capacity(self, parsed: dict, model, **_) -> None:
        consumed = parsed.get("ConsumedCapacity") if isinstance(parsed, dict) else None
        if not consumed:
            return
        entries = consumed if isinstance(consumed, list) else [consumed]
        self.requests.record_capacity(model.name, sum(entry.get("CapacityUnits", 0.0) for entry in entries))


# ---- what a store's requests cost ----------------------------------------------------


def cost_estimate(figures: dict) -> dict:
    """What a store with these stats (maintenance.stats) costs at AWS list prices.

    In storage format 1 the chunk size drives the request costs: every new chunk is one S3 PUT
    and a few DynamoDB writes, every chunk restored one S3 GET. A format 2 store pays per pack,
    recipe page and version instead (_format_2_requests). The per-GB figures use this store's own
    average sizes, so they show what its settings and its data cost."""
    gb = 1e9
    chunks = figures["chunks"]
    unique, stored, logical = figures["unique_bytes"], figures["stored_bytes"], figures["logical_bytes"]
    average_chunk = unique / chunks if chunks else figures["chunker"]["avg_size"]
    if figures.get("storage_format") == 2:
        objects_per_gb, ingest_per_gb, restore_per_gb = _format_2_requests(figures)
    else:
        objects_per_gb = gb / average_chunk
        ingest_per_gb = objects_per_gb * (
            S3_PUT_PER_1000 / 1000
            + WRITE_UNITS_PER_NEW_CHUNK * DYNAMODB_WRITE_UNIT_PER_MILLION / 1e6
            + READ_UNITS_PER_NEW_CHUNK * DYNAMODB_READ_UNIT_PER_MILLION / 1e6
        )
        # A restore reads the recipe (a 36-byte entry per chunk, in 4 KB read units) and GETs every chunk.
        restore_per_gb = objects_per_gb * (S3_GET_PER_1000 / 1000 + 36 / 4096 * DYNAMODB_READ_UNIT_PER_MILLION / 1e6)
    storage_per_month = stored / gb * S3_STORAGE_PER_GB_MONTH
    return {
        "prices": {
            "source": PRICE_SOURCE,
            "s3_put_per_1000_usd": S3_PUT_PER_1000,
            "s3_get_per_1000_usd": S3_GET_PER_1000,
            "s3_storage_per_gb_month_usd": S3_STORAGE_PER_GB_MONTH,
            "dynamodb_write_unit_per_million_usd": DYNAMODB_WRITE_UNIT_PER_MILLION,
            "dynamodb_read_unit_per_million_usd": DYNAMODB_READ_UNIT_PER_MILLION,
        },
        "average_chunk_bytes": round(average_chunk),
        # The S3 objects a GB of new data makes: chunk objects in format 1, packs in format 2.
        "chunk_objects_per_gb": round(objects_per_gb),
        "ingest_usd_per_gb_new_data": round(ingest_per_gb, 6),
        "restore_usd_per_gb": round(restore_per_gb, 6),
        "storage_usd_per_month": round(storage_per_month, 6),
        # What keeping one GB of the files put costs, after dedup and compression.
        "storage_usd_per_logical_gb_month": round(stored / logical * S3_STORAGE_PER_GB_MONTH, 6) if logical else None,
    }


def _format_2_requests(figures: dict) -> tuple[float, float, float]:
    """Packs per GB of new data, and the request costs of putting and of restoring a GB, for a
    format 2 store (docs/design/format-v2.md, "Cost per operation").

    Each count per GB is the store's own: its packs, recipe pages, root pages and versions per GB
    of its unique data, its pages' mean size. So a store of versions that each change a little
    pays its many versions and fragmented pages per GB of what they added; a new store is priced
    as a first put of incompressible data. Hooks, about 8 a new recipe page, cost a write unit
    each and half a read unit to look up. Not counted: the GETs of the previous version's pack
    tables (one per pack it names) and what each put command costs whatever its size (session,
    snapshot, the queries of the names it may update: 5 write and 17 read units)."""
    gb = 1e9
    if figures["unique_bytes"]:
        shape = figures
    else:
        segments = gb / pages.PAGE_TARGET_BYTES
        shape = {
            "unique_bytes": gb,
            "stored_bytes": gb,
            "logical_bytes": gb,
            "versions": 1,
            "packs": gb / PACK_TARGET_SIZE,
            "pages": segments,
            "page_bytes": segments * ASSUMED_PAGE_BYTES,
            "root_pages": 1,
            "root_bytes": pages.ROOT_HEADER.size + segments * pages.ROOT_ENTRY.size,
        }
    per_gb = gb / shape["unique_bytes"]
    packs, recipe_pages, root_pages, versions = (
        shape[name] * per_gb for name in ("packs", "pages", "root_pages", "versions")
    )
    page_item_bytes = INDEX_ITEM_EXTRA_BYTES + (shape["page_bytes"] / shape["pages"] if shape["pages"] else 0)
    root_item_bytes = INDEX_ITEM_EXTRA_BYTES + (shape["root_bytes"] / shape["root_pages"] if shape["root_pages"] else 0)
    hooks = recipe_pages * 2**pages.HOOKS_PER_SEGMENT_BITS
    write_units = (
        hooks
        + packs * WRITE_UNITS_PER_PACK
        + recipe_pages * TRANSACTION_WRITE_FACTOR * math.ceil(page_item_bytes / 1024)
        # Each content with a root writes its new pages in a transaction with a round check.
        + root_pages * (TRANSACTION_WRITE_FACTOR * math.ceil(root_item_bytes / 1024) + WRITE_UNITS_PER_ROUND_CHECK)
        + versions * WRITE_UNITS_PER_COMMIT
    )
    ingest = (
        packs * S3_PUT_PER_1000 / 1000
        + write_units * DYNAMODB_WRITE_UNIT_PER_MILLION / 1e6
        + (versions * READ_UNITS_PER_VERSION_PUT + hooks * 0.5) * DYNAMODB_READ_UNIT_PER_MILLION / 1e6
    )
    # A restore reads pages eventually consistent: half a unit per started 4 KB.
    files_restored = shape["versions"] * gb / shape["logical_bytes"]
    read_units = recipe_pages * 0.5 * math.ceil(page_item_bytes / 4096) + files_restored * READ_UNITS_PER_FILE_RESTORED
    restore_gets = packs + (shape["stored_bytes"] * per_gb + gb) / RESTORE_READ_BYTES
    restore = restore_gets * S3_GET_PER_1000 / 1000 + read_units * DYNAMODB_READ_UNIT_PER_MILLION / 1e6
    return packs, ingest, restore

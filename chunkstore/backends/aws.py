"""AWS access for s3:// stores: boto3 clients, error translation, request accounting and cost estimates.

boto3 is imported only when an s3:// store is opened, so the local store works
without it. Credentials, region and endpoints come from boto3's standard chain
(AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL_DYNAMODB, ...): S3-compatible services and local emulators need
no option of chunkstore's own.

Every HTTP request the clients send is counted per service and operation through
botocore's event hooks, and DynamoDB calls ask for the capacity they consumed, so
a command can report what it cost at list prices.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

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
        raise AwsError(f"{what}: no AWS region configured (set AWS_REGION or a region in your AWS profile)") from None
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
        _session = import_boto3().session.Session()
    return _session


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
        with translate_errors("setting up the AWS clients"), _session_lock:
            session = _shared_session()
            self.s3 = session.client("s3", config=config)
            self.dynamodb = session.client("dynamodb", config=config)
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

    Chunk size drives the request costs: every new chunk is one S3 PUT and a few
    DynamoDB writes, every chunk restored one S3 GET. The per-GB figures use this
    store's own average chunk sizes, so they show what its chunker settings cost."""
    gb = 1e9
    chunks = figures["chunks"]
    unique, stored, logical = figures["unique_bytes"], figures["stored_bytes"], figures["logical_bytes"]
    average_chunk = unique / chunks if chunks else figures["chunker"]["avg_size"]
    chunks_per_gb = gb / average_chunk
    ingest_per_gb = chunks_per_gb * (
        S3_PUT_PER_1000 / 1000
        + WRITE_UNITS_PER_NEW_CHUNK * DYNAMODB_WRITE_UNIT_PER_MILLION / 1e6
        + READ_UNITS_PER_NEW_CHUNK * DYNAMODB_READ_UNIT_PER_MILLION / 1e6
    )
    # A restore reads the recipe (a 36-byte entry per chunk, in 4 KB read units) and GETs every chunk.
    restore_per_gb = chunks_per_gb * (S3_GET_PER_1000 / 1000 + 36 / 4096 * DYNAMODB_READ_UNIT_PER_MILLION / 1e6)
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
        "chunk_objects_per_gb": round(chunks_per_gb),
        "ingest_usd_per_gb_new_data": round(ingest_per_gb, 6),
        "restore_usd_per_gb": round(restore_per_gb, 6),
        "storage_usd_per_month": round(storage_per_month, 6),
        # What keeping one GB of the files put costs, after dedup and compression.
        "storage_usd_per_logical_gb_month": round(stored / logical * S3_STORAGE_PER_GB_MONTH, 6) if logical else None,
    }

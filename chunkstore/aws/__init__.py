"""AWS for chunkstore: the clients of s3:// stores, upload-triggered ingest and bucket scans.

    clients.py   boto3 clients, retries, error translation, request accounting, cost estimates
    objects.py   S3 objects outside a store: listing, and streamed parallel ranged reads
    events.py    S3 event notifications (direct, through SQS, through EventBridge) as records
    ledger.py    the DynamoDB table that makes ingest process each object version once
    ingest.py    the Lambda handler and the same ingest for a bucket already full
    scan.py      duplicate objects in a bucket, what they cost, and their removal
    observe.py   structured logs and CloudWatch metrics (aws-lambda-powertools)

Only clients.py is imported here: boto3 loads when an s3:// store is opened, never
for a local one.
"""

from .clients import (
    DYNAMODB_READ_UNIT_PER_MILLION,
    DYNAMODB_WRITE_UNIT_PER_MILLION,
    INSTALL_HINT,
    MAX_POOL_CONNECTIONS,
    PRICE_SOURCE,
    READ_UNITS_PER_NEW_CHUNK,
    RETRY_ATTEMPTS,
    S3_GET_PER_1000,
    S3_PUT_PER_1000,
    S3_STORAGE_PER_GB_MONTH,
    WRITE_UNITS_PER_NEW_CHUNK,
    AccessDeniedError,
    AwsClients,
    AwsError,
    RequestCounter,
    ResourceNotFoundError,
    cost_estimate,
    error_code,
    import_boto3,
    request_counts,
    store_clients,
    translate_errors,
)

__all__ = [
    "DYNAMODB_READ_UNIT_PER_MILLION", "DYNAMODB_WRITE_UNIT_PER_MILLION", "INSTALL_HINT", "MAX_POOL_CONNECTIONS",
    "PRICE_SOURCE", "READ_UNITS_PER_NEW_CHUNK", "RETRY_ATTEMPTS", "S3_GET_PER_1000", "S3_PUT_PER_1000",
    "S3_STORAGE_PER_GB_MONTH", "WRITE_UNITS_PER_NEW_CHUNK", "AccessDeniedError", "AwsClients", "AwsError",
    "RequestCounter", "ResourceNotFoundError", "cost_estimate", "error_code", "import_boto3", "request_counts",
    "store_clients", "translate_errors",
]

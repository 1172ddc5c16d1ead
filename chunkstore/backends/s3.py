"""A blob store in an S3 bucket (or any S3-compatible service): one object per key under a prefix.

S3 is strongly consistent for reads after writes and deletes, and a PUT is atomic
and durable when it returns, so sync() has nothing to do. Two writers putting the
same chunk at once both succeed and leave one object: keys name their content, so
the second PUT rewrites identical bytes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

# Opened only through AwsClients, which has already imported boto3 (or explained how to install it).
import botocore.exceptions

from chunkstore.backends.aws import AwsClients, error_code, translate_errors
from chunkstore.backends.blobstore import BlobInfo, BlobStore, is_valid_key, validate_key
from chunkstore.errors import BlobNotFoundError, InvalidArgumentError, ResourceNotFoundError

# Concurrent requests a command should run against this store (uploads, downloads):
# S3 latency, not bandwidth or CPU, bounds one request, so many run at once.
DEFAULT_CONCURRENCY = 32
# A GET whose body breaks off mid-stream is not retried by botocore; retry it here.
_BODY_READ_ATTEMPTS = 3

_BROKEN_BODY = (
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.IncompleteReadError,
)
# HEAD requests carry no error body: a missing bucket or key is only a 404.
_MISSING_CODES = ("404", "NoSuchBucket", "NoSuchKey", "NotFound")

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket(bucket: str) -> str:
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidArgumentError(f"{bucket!r} is not a valid S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')")
    return bucket


class S3BlobStore(BlobStore):
    """Objects at s3://BUCKET/PREFIX/KEY. The prefix follows the key rules (validate_key) or is empty."""

    def __init__(self, bucket: str, prefix: str, clients: AwsClients, *, concurrency: int = DEFAULT_CONCURRENCY):
        self.bucket = validate_bucket(bucket)
        if prefix and not is_valid_key(prefix):
            raise InvalidArgumentError(
                f"invalid store prefix {prefix!r} in s3://{bucket}/{prefix} (lower-case letters, digits, '.', '-', "
                "'_' and '/' between parts)"
            )
        self.prefix = prefix
        self.clients = clients
        self.concurrency = concurrency
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    @classmethod
    def from_location(cls, path: str, clients: AwsClients) -> S3BlobStore:
        """Open BUCKET/PREFIX (the part of an s3:// URL after the scheme)."""
        bucket, _, prefix = path.partition("/")
        return cls(bucket, prefix.strip("/"), clients)

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing_bucket(self) -> str:
        return f"S3 bucket {self.bucket!r} does not exist (create it, or run `chunkstore init --create`)"

    def _errors(self, doing: str, key: str | None = None):
        where = f"{self.url}/{key}" if key is not None else self.url
        return translate_errors(f"{doing} {where}", missing=self._missing_bucket())

    # ---- the bucket ------------------------------------------------------------------

    def exists(self) -> bool:
        s3 = self.clients.s3
        with self._errors("checking"):
            try:
                s3.head_bucket(Bucket=self.bucket)
            except s3.exceptions.ClientError as error:
                if error_code(error) in _MISSING_CODES:
                    return False
                raise
        return True

    def create(self) -> None:
        """The bucket must exist already: create_bucket() makes one."""
        if not self.exists():
            raise ResourceNotFoundError(self._missing_bucket())

    def create_bucket(self) -> None:
        """Make the bucket if it does not exist, private and encrypted by default."""
        if self.exists():
            return
        s3 = self.clients.s3
        region = s3.meta.region_name
        with self._errors("creating bucket for"):
            options = {}
            if region and region != "us-east-1":
                options["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=self.bucket, **options)
            s3.put_public_access_block(
                Bucket=self.bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
            s3.put_bucket_encryption(
                Bucket=self.bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
                    ]
                },
            )

    # ---- objects ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        object_key = self._object_key(key)
        with self._errors("writing", key):
            self.clients.s3.put_object(Bucket=self.bucket, Key=object_key, Body=data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        object_key = self._object_key(key)
        if length == 0:
            self.stat(key)
            return b""
        options = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            options["Range"] = f"bytes={offset}-{end}"
        s3 = self.clients.s3
        attempt = 1
        with self._errors("reading", key):
            while True:
                try:
                    response = s3.get_object(Bucket=self.bucket, Key=object_key, **options)
                    data = response["Body"].read()
                except s3.exceptions.NoSuchKey:
                    raise BlobNotFoundError(f"no object {key!r} in {self.url}") from None
                except s3.exceptions.ClientError as error:
                    if error_code(error) == "InvalidRange":  # offset at or past the end
                        return b""
                    raise
                except _BROKEN_BODY:
                    if attempt == _BODY_READ_ATTEMPTS:
                        raise
                else:
                    # A short body is returned on the last attempt: the reader's hash check rejects it.
                    if len(data) == response["ContentLength"] or attempt == _BODY_READ_ATTEMPTS:
                        return data
                attempt += 1

    def stat(self, key: str) -> BlobInfo:
        object_key = self._object_key(key)
        s3 = self.clients.s3
        with self._errors("checking", key):
            try:
                response = s3.head_object(Bucket=self.bucket, Key=object_key)
            except s3.exceptions.ClientError as error:
                if error_code(error) in _MISSING_CODES:
                    raise BlobNotFoundError(f"no object {key!r} in {self.url}") from None
                raise
        return BlobInfo(key, response["ContentLength"])

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._errors("deleting", key):
            self.clients.s3.delete_object(Bucket=self.bucket, Key=object_key)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        # S3 lists keys in ascending UTF-8 byte order, the order the contract asks for.
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        with self._errors("listing", prefix or None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(base) :]
                    # Objects under the prefix that no key can name are not ours.
                    if is_valid_key(key):
                        yield BlobInfo(key, entry["Size"])

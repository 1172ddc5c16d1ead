"""S3BlobStore: the conformance suite over real HTTP to moto, plus what only a bucket has."""

from __future__ import annotations

import pytest

from chunkstore.backends.aws import AwsClients
from chunkstore.backends.s3 import S3BlobStore
from chunkstore.errors import AccessDeniedError, BlobNotFoundError, InvalidArgumentError, ResourceNotFoundError
from support.blobstore_conformance import BlobStoreConformance
from support.s3helpers import answer_with_error, unique_name


class TestS3BlobStore(BlobStoreConformance):
    @pytest.fixture
    def make_blobstore(self, bucket):
        return lambda: S3BlobStore(bucket, "blobs", AwsClients())


@pytest.fixture
def blobs(bucket, clients) -> S3BlobStore:
    return S3BlobStore(bucket, "store", clients)


def test_objects_live_under_the_prefix_and_foreign_keys_are_not_listed(blobs, clients, bucket):
    blobs.put("chunks/ab/cd", b"chunk")
    clients.s3.put_object(Bucket=bucket, Key="store/NOT-A-KEY", Body=b"x")
    clients.s3.put_object(Bucket=bucket, Key="elsewhere/chunks/ab/cd", Body=b"x")
    assert clients.s3.get_object(Bucket=bucket, Key="store/chunks/ab/cd")["Body"].read() == b"chunk"
    assert [info.key for info in blobs.list()] == ["chunks/ab/cd"]


def test_a_store_at_the_bucket_root(bucket, clients):
    root = S3BlobStore(bucket, "", clients)
    root.put("config", b"{}")
    assert root.url == f"s3://{bucket}"
    assert clients.s3.get_object(Bucket=bucket, Key="config")["Body"].read() == b"{}"


@pytest.mark.parametrize(
    ("bucket_name", "prefix"), [("ab", ""), ("Upper", ""), ("ok-bucket", "Bad/prefix"), ("ok-bucket", "a//b")]
)
def test_invalid_bucket_or_prefix_is_refused(clients, bucket_name, prefix):
    with pytest.raises(InvalidArgumentError):
        S3BlobStore(bucket_name, prefix, clients)


def test_a_missing_bucket_is_reported_as_not_found(moto_endpoint, clients):
    missing = S3BlobStore(unique_name("missing"), "store", clients)
    assert not missing.exists()
    with pytest.raises(ResourceNotFoundError, match="does not exist") as raised:
        missing.get("config")
    assert raised.value.exit_code == 3
    with pytest.raises(ResourceNotFoundError):
        missing.create()
    with pytest.raises(ResourceNotFoundError):
        list(missing.list())


def test_create_bucket_blocks_public_access_and_encrypts_by_default(moto_endpoint, clients):
    made = S3BlobStore(unique_name("made"), "store", clients)
    made.create_bucket()
    made.create_bucket()  # idempotent
    made.create()
    block = clients.s3.get_public_access_block(Bucket=made.bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = clients.s3.get_bucket_encryption(Bucket=made.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_access_denied_is_one_clear_error(blobs):
    answer_with_error(blobs.clients.s3, "GetObject", 403, "AccessDenied")
    with pytest.raises(AccessDeniedError) as raised:
        blobs.get("chunks/ab/cd")
    message = str(raised.value)
    assert "access denied" in message and "IAM policy" in message and f"{blobs.url}/chunks/ab/cd" in message
    assert raised.value.exit_code == 1


def test_a_head_request_refused_with_403_is_access_denied(blobs):
    blobs.put("config", b"{}")
    answer_with_error(blobs.clients.s3, "HeadObject", 403, "403")
    with pytest.raises(AccessDeniedError):
        blobs.stat("config")


def test_throttling_is_retried(blobs):
    blobs.put("config", b"{}")
    answered = answer_with_error(blobs.clients.s3, "GetObject", 503, "SlowDown", times=1)
    assert blobs.get("config") == b"{}"
    assert answered == [503]


def test_requests_are_counted_per_operation(bucket):
    blobs = S3BlobStore(bucket, "store", AwsClients())
    for index in range(3):
        blobs.put(f"k{index}", b"x")
    blobs.get("k0")
    with pytest.raises(BlobNotFoundError):
        blobs.stat("absent")
    blobs.delete("k1")
    counts = blobs.clients.requests.snapshot()
    assert counts["s3"] == {"PutObject": 3, "GetObject": 1, "HeadObject": 1, "DeleteObject": 1}
    assert counts["total"] == 6
    # PUTs at $0.005 per 1,000, GET and HEAD at $0.0004 per 1,000, DELETE free.
    assert counts["estimated_usd"] == pytest.approx(3 * 0.005 / 1000 + 2 * 0.0004 / 1000)

"""A moto server on a free local port that serves S3 and DynamoDB over real HTTP, shared by
every test that needs an s3:// store (registered as a plugin from tests/conftest.py), with
boto3 clients on it and new buckets.

The server is benchmarks/emulator.py's: DynamoDB requests one at a time, as atomic as
DynamoDB's. boto3 reaches it through AWS_ENDPOINT_URL, as a user would point chunkstore
at MinIO or any S3-compatible service; subprocesses (the CLI) inherit it.
"""

from __future__ import annotations

import pytest

from benchmarks.emulator import emulator
from chunkstore.backends.aws import AwsClients
from support.s3helpers import unique_name

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """The URL of a moto server that serves S3 and DynamoDB; the environment points boto3 at it."""
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    with emulator() as endpoint, pytest.MonkeyPatch.context() as patch:
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"):
            patch.delenv(variable, raising=False)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        # No configuration of the machine's user may leak in.
        patch.setenv("AWS_CONFIG_FILE", str(nowhere))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        yield endpoint


@pytest.fixture
def clients(moto_endpoint) -> AwsClients:
    return AwsClients()


@pytest.fixture
def bucket(clients) -> str:
    """A new, empty bucket."""
    name = unique_name("bucket")
    clients.s3.create_bucket(Bucket=name)
    return name

"""The region of an s3:// store's clients: AWS_REGION first, as the AWS CLI reads it, then
boto3's own chain (AWS_DEFAULT_REGION, the profile)."""

from __future__ import annotations

import pytest

from chunkstore.backends import aws
from chunkstore.backends.aws import AwsClients
from chunkstore.errors import AwsError


@pytest.fixture
def fresh_session(monkeypatch, tmp_path):
    """No shared session made yet, and no configuration of the machine's user."""
    monkeypatch.setattr(aws, "_session", None)
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    yield monkeypatch


@pytest.mark.parametrize(
    ("variables", "region"),
    [
        ({"AWS_REGION": "eu-west-3"}, "eu-west-3"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
        ({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "ap-south-1"}, "eu-west-3"),
    ],
)
def test_the_region_comes_from_aws_region_then_aws_default_region(fresh_session, variables, region):
    for variable, value in variables.items():
        fresh_session.setenv(variable, value)
    assert AwsClients().region == region


def test_no_region_is_an_error_naming_both_variables(fresh_session):
    with pytest.raises(AwsError, match="no AWS region configured.*AWS_REGION or AWS_DEFAULT_REGION"):
        AwsClients()

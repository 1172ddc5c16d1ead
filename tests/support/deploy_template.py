"""deploy/template.yaml as the tests read it, and the IAM actions each request of the functions needs."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"

# The IAM action that authorises each request the handler makes (S3 HEAD is authorised as a GET;
# transactions through the writes they contain).
S3_ACTIONS = {
    "HeadObject": {"s3:GetObject"},
    "GetObject": {"s3:GetObject"},
    "PutObject": {"s3:PutObject"},
    "DeleteObject": {"s3:DeleteObject"},
    "ListObjectsV2": {"s3:ListBucket"},
}
VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}
TRANSACTION_ACTIONS = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def load_template() -> dict:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return template


def machine() -> dict:
    return load_template()["Resources"]["DistributedStateMachine"]["Properties"]


def definition() -> dict:
    return machine()["Definition"]


def substituted(node, values: dict):
    """node with every ${Name} in its strings replaced by values[Name], as CloudFormation does."""
    if isinstance(node, dict):
        return {key: substituted(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substituted(value, values) for value in node]
    if isinstance(node, str):
        return re.sub(r"\$\{(\w+)\}", lambda match: values[match.group(1)], node)
    return node

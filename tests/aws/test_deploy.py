"""The deployment template: cfn-lint finds no error, and its function role allows exactly the
kinds of requests the handler was seen to make, on the template's own resources."""

from __future__ import annotations

import pytest

from chunkstore.apps.ingest.ingestor import handler
from support.aws_events import lambda_context, put_object, s3_event
from support.deploy_template import S3_ACTIONS, TEMPLATE, TRANSACTION_ACTIONS, VERSIONED, load_template


def test_cfn_lint_finds_no_error():
    from cfnlint.api import lint_file

    problems = lint_file(TEMPLATE)
    errors = [str(problem) for problem in problems if problem.rule.id.startswith("E")]
    assert not errors, "\n".join(errors)
    assert not problems, "\n".join(str(problem) for problem in problems)


def role_actions() -> dict[str, set[str]]:
    """Allowed actions of the function role, per statement Sid (including the optional delete policy)."""
    role = load_template()["Resources"]["IngestRole"]["Properties"]
    statements = []
    for policy in role["Policies"]:
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        statements.extend(policy["PolicyDocument"]["Statement"])
    allowed = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(resource != "*" for resource in resources), statement
        allowed[statement["Sid"]] = set(actions)
    return allowed


def test_no_wildcards_and_no_admin():
    template = load_template()
    role_actions()
    assert "ManagedPolicyArns" not in template["Resources"]["IngestRole"]["Properties"]
    for name in ("InboxBucketPolicy", "StoreBucketPolicy"):
        for statement in template["Resources"][name]["Properties"]["PolicyDocument"]["Statement"]:
            # The only statement open to "*" is the deny of plain HTTP.
            assert statement["Effect"] == "Deny" and statement["Condition"] == {
                "Bool": {"aws:SecureTransport": "false"}
            }


def test_the_role_allows_every_request_the_handler_makes(lambda_env, clients, inbox, monkeypatch):
    monkeypatch.setenv("CHUNKSTORE_DELETE_AFTER_INGEST", "true")
    clients.s3.put_bucket_versioning(Bucket=inbox, VersioningConfiguration={"Status": "Enabled"})
    first = put_object(clients, inbox, "a.bin", b"x" * 30_000)
    copy = put_object(clients, inbox, "b.bin", b"x" * 30_000)
    results = handler(s3_event(first, copy, first), lambda_context())["results"]
    assert [result["outcome"] for result in results] == ["stored", "duplicate", "skipped"]
    s3_ops = set().union(*(result["requests"]["s3"] for result in results))
    dynamodb_ops = set().union(*(result["requests"]["dynamodb"] for result in results))

    allowed = role_actions()
    inbox_actions = allowed["ReadUploads"] | allowed["DeleteIngestedUploads"]
    store_actions = allowed["ChunkObjectsAndConfig"]
    for operation in s3_ops:
        needed = S3_ACTIONS[operation]
        # Inbox requests are pinned to a version here, so they need the *Version actions too.
        assert needed & store_actions or {VERSIONED.get(action, action) for action in needed} <= inbox_actions, (
            operation
        )
    catalog = allowed["Catalog"] | allowed["Ledger"]
    for operation in dynamodb_ops:
        needed = TRANSACTION_ACTIONS if operation == "TransactWriteItems" else {f"dynamodb:{operation}"}
        assert needed <= catalog, operation
    # And nothing the handler never needs: no scans, no table management.
    assert not {"dynamodb:Scan", "dynamodb:CreateTable", "dynamodb:DeleteTable"} & catalog


@pytest.mark.parametrize("section", ["CatalogTable", "LedgerTable"])
def test_tables_are_on_demand_with_point_in_time_recovery(section):
    table = load_template()["Resources"][section]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_catalog_table_matches_what_the_store_creates():
    from chunkstore.backends.dynamodb import DIGEST_INDEX

    table = load_template()["Resources"]["CatalogTable"]["Properties"]
    assert [key["AttributeName"] for key in table["KeySchema"]] == ["pk", "sk"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == DIGEST_INDEX

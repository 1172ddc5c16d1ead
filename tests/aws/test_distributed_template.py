"""The Distributed Map of deploy/template.yaml: its definition is valid Amazon States Language,
its map reads, batches, bounds and writes as intended, and its roles allow only what is used.

ASL validation: no package on PyPI validates Distributed Map fields (the maintained validators,
asl-validator and statelint, are npm and Ruby packages), so the definition is checked against
the ASL schema cfn-lint ships for its rule E3601, and the fields that schema leaves open
(ItemReader, ItemBatcher, ResultWriter are plain objects there) are checked here."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from support.aws_events import lambda_context, log_lines
from support.deploy_template import (
    S3_ACTIONS,
    TEMPLATE,
    TRANSACTION_ACTIONS,
    VERSIONED,
    definition,
    load_template,
    machine,
    substituted,
)

MAP_STATES = ("ListedObjects", "InventoryObjects")
# Step Functions refuses a batch input above 256 KiB.
MAX_BATCH_INPUT_BYTES = 256 * 1024


def policy_statements(role: str) -> list[dict]:
    statements = []
    for policy in load_template()["Resources"][role]["Properties"]["Policies"]:
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statement_actions(role: str) -> dict[str, set[str]]:
    allowed = {}
    for statement in policy_statements(role):
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), statement
        assert all(resource != "*" for resource in as_list(statement["Resource"])), statement
        allowed[statement["Sid"]] = set(actions)
    return allowed


def test_cfn_lint_validates_the_definition(tmp_path):
    """E3601 is cfn-lint's States Language rule: it finds nothing in the template and does find a
    broken state in a copy (so the definition really is checked)."""
    from cfnlint.api import lint_file

    assert not lint_file(TEMPLATE)
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Type: Choice", "Type: Decision"))
    assert "E3601" in {problem.rule.id for problem in lint_file(broken)}


def test_definition_is_valid_states_language():
    import cfnlint.data.schemas.other.step_functions as schemas

    schema = json.loads((Path(schemas.__file__).parent / "statemachine.json").read_text())
    values = {
        name: "arn:aws:lambda:us-east-1:123456789012:function:x" if name.endswith("Arn") else "7"
        for name in machine()["DefinitionSubstitutions"]
    }
    deployed = substituted(definition(), values)
    jsonschema.Draft7Validator(schema).validate(deployed)

    def check_transitions(states: dict, start: str) -> None:
        assert start in states
        for name, state in states.items():
            targets = [state.get("Next"), state.get("Default")] + [c["Next"] for c in state.get("Choices", ())]
            assert all(target in states for target in targets if target), name
            assert state.get("End") or any(targets), name
            if "ItemProcessor" in state:
                check_transitions(state["ItemProcessor"]["States"], state["ItemProcessor"]["StartAt"])

    check_transitions(deployed["States"], deployed["StartAt"])


def test_map_reads_batches_bounds_and_writes_results():
    states = definition()["States"]
    listed, inventory = (states[name] for name in MAP_STATES)
    assert listed["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:listObjectsV2",
        "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.prefix"},
    }
    assert inventory["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert inventory["ItemReader"]["ReaderConfig"] == {"InputType": "MANIFEST"}
    assert inventory["ItemReader"]["Parameters"] == {"Bucket.$": "$.manifest.bucket", "Key.$": "$.manifest.key"}
    # The input picks the reader: a manifest when one is given.
    choice = states["ItemSource"]
    assert choice["Choices"] == [{"Variable": "$.manifest", "IsPresent": True, "Next": "InventoryObjects"}]
    assert choice["Default"] == "ListedObjects"

    settings = states["Settings"]
    assert settings["ResultPath"] == "$.settings"
    parameters = machine()["DefinitionSubstitutions"]
    for state in (listed, inventory):
        batcher = state["ItemBatcher"]
        assert batcher["MaxItemsPerBatchPath"] == "$.settings.max_items_per_batch"
        assert 0 < batcher["MaxInputBytesPerBatch"] <= MAX_BATCH_INPUT_BYTES
        assert batcher["BatchInput"] == {"action.$": "$.action", "bucket.$": "$.bucket"}
        assert state["MaxConcurrencyPath"] == "$.settings.max_concurrency"
        assert state["ToleratedFailurePercentagePath"] == "$.settings.tolerated_failure_percentage"
        assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
        task = state["ItemProcessor"]["States"]["Batch"]
        assert task["Resource"] == "arn:aws:states:::lambda:invoke"
        assert task["Parameters"] == {"FunctionName": "${BatchFunctionArn}", "Payload.$": "$"}
        assert "IngestRetryError" in {error for retry in task["Retry"] for error in retry["ErrorEquals"]}
        assert state["ResultWriter"] == {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "${ResultsBucket}", "Prefix": "runs"},
        }
    # Each path the maps read is set by the Settings state from a template parameter.
    for path, parameter in (
        ("max_concurrency", "MaxConcurrency"),
        ("max_items_per_batch", "MaxItemsPerBatch"),
        ("tolerated_failure_percentage", "ToleratedFailurePercentage"),
    ):
        assert settings["Parameters"][f"{path}.$"] == f"States.StringToJson('${{{parameter}}}')"
        assert parameters[parameter] == {"Ref": parameter}
    template_parameters = load_template()["Parameters"]
    assert template_parameters["MaxConcurrency"]["MaxValue"] == 10000
    assert template_parameters["ToleratedFailurePercentage"]["MaxValue"] == 100


def test_state_machine_role_is_least_privilege():
    allowed = statement_actions("DistributedRole")
    assert allowed == {
        "ListSource": {"s3:ListBucket"},
        "InvokeBatchFunction": {"lambda:InvokeFunction"},
        "ChildExecutions": {"states:StartExecution"},
        "WatchChildExecutions": {"states:DescribeExecution", "states:StopExecution"},
        "WriteResults": {"s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"},
        "ReadInventoryManifests": {"s3:GetObject"},
    }
    by_sid = {statement["Sid"]: statement for statement in policy_statements("DistributedRole")}
    # Child executions: this state machine only, named as the template names it.
    name = machine()["StateMachineName"]["Fn::Sub"]
    assert by_sid["ChildExecutions"]["Resource"]["Fn::Sub"].endswith(f":stateMachine:{name}")
    assert by_sid["WatchChildExecutions"]["Resource"]["Fn::Sub"].endswith(f":execution:{name}/*")
    # Results: only under the prefix the ResultWriter writes to.
    assert by_sid["WriteResults"]["Resource"] == {"Fn::Sub": "${ResultsBucket.Arn}/runs/*"}
    assert by_sid["InvokeBatchFunction"]["Resource"][0] == {"Fn::GetAtt": ["BatchFunction", "Arn"]}
    assert "ManagedPolicyArns" not in load_template()["Resources"]["DistributedRole"]["Properties"]


def test_batch_role_allows_every_request_the_batch_handler_makes(lambda_env, clients, inbox, capsys):
    from test_batch_handler import batch, listed_items

    from chunkstore.apps.ingest.batch import handler

    clients.s3.put_object(Bucket=inbox, Key="a.bin", Body=b"a" * 30_000)
    clients.s3.put_object(Bucket=inbox, Key="b.bin", Body=b"a" * 30_000)
    event = batch(listed_items(clients, inbox), inbox)
    handler(event, lambda_context())
    handler(event, lambda_context())  # a retried batch: replays
    lines = [line for line in log_lines(capsys.readouterr().out) if "requests" in line]
    assert sorted(line["outcome"] for line in lines) == ["duplicate", "skipped", "skipped", "stored"]
    s3_ops = set().union(*(line["requests"]["s3"] for line in lines))
    dynamodb_ops = set().union(*(line["requests"]["dynamodb"] for line in lines))

    allowed = statement_actions("BatchRole")
    for operation in s3_ops:
        needed = S3_ACTIONS[operation]
        assert (
            needed & allowed["ChunkObjectsAndConfig"]
            or {VERSIONED.get(action, action) for action in needed} | needed <= allowed["ReadSource"]
        ), operation
    tables = allowed["Catalog"] | allowed["Ledger"]
    for operation in dynamodb_ops:
        needed = TRANSACTION_ACTIONS if operation == "TransactWriteItems" else {f"dynamodb:{operation}"}
        assert needed <= tables, operation
    # It reads the source and never changes it.
    assert not {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"} & allowed["ReadSource"]
    assert "sqs:ReceiveMessage" not in set().union(*allowed.values())


@pytest.mark.parametrize("role", ["BatchRole", "DistributedRole"])
def test_roles_have_no_wildcard_action(role):
    statement_actions(role)

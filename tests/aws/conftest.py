"""Fixtures for ingest and scan: an inbox bucket, an s3:// store and an ingest ledger on the
moto server (tests/support/moto_fixtures.py). The event payloads are in tests/support/aws_events.py."""

from __future__ import annotations

import json
import uuid

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.apps.distributed import stepfunctions_client
from chunkstore.apps.ingest.ledger import IngestLedger
from support.aws_events import ACCOUNT
from support.deploy_template import definition, machine, substituted
from support.s3helpers import unique_name


@pytest.fixture
def inbox(bucket) -> str:
    """The bucket uploads land in (empty)."""
    return bucket


@pytest.fixture
def storage_format() -> int:
    """The storage format of s3_store; a test module overrides this fixture to test another."""
    return 1


@pytest.fixture
def s3_store(moto_endpoint, storage_format):
    """A new s3:// store (4 KiB chunks) whose bucket and catalog table init makes."""
    spec = ChunkerSpec.from_average(avg_size=4096)
    with Store.init(
        f"s3://{unique_name('store')}/store",
        spec,
        CompressionSpec.parse("zstd:1"),
        table=unique_name("catalog"),
        create=True,
        storage_format=storage_format,
    ) as opened:
        yield opened


@pytest.fixture
def ledger_table(clients) -> str:
    table = unique_name("ledger")
    IngestLedger.create_table(clients, table)
    return table


@pytest.fixture
def lambda_env(monkeypatch, s3_store, ledger_table):
    """The function's environment, as the template sets it."""
    monkeypatch.setenv("CHUNKSTORE_STORE", s3_store.url)
    monkeypatch.setenv("CHUNKSTORE_INGEST_TABLE", ledger_table)
    monkeypatch.delenv("CHUNKSTORE_DELETE_AFTER_INGEST", raising=False)
    monkeypatch.delenv("CHUNKSTORE_INGEST_MAX_BYTES", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Chunkstore")
    return s3_store


@pytest.fixture
def state_machine(moto_endpoint) -> str:
    """The template's state machine, as deployed (substitutions made), on the moto server."""
    values = {
        name: f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:cs-batch" if name.endswith("Arn") else "results"
        for name in machine()["DefinitionSubstitutions"]
    }
    values.update(MaxConcurrency="200", MaxItemsPerBatch="100", ToleratedFailurePercentage="1")
    response = stepfunctions_client().create_state_machine(
        name=f"cs-distributed-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(substituted(definition(), values)),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cs-distributed",
    )
    return response["stateMachineArn"]

"""`chunkstore ingest|scan --distributed`: the real command against Step Functions and S3 on the
moto server; a finished run (which moto cannot produce) is given to the command in-process."""

from __future__ import annotations

import json

import pytest

from chunkstore.apps import distributed
from chunkstore.apps.distributed import progress_from, run_input, run_progress, stepfunctions_client
from chunkstore.apps.ingest.batch import handler
from chunkstore.errors import IngestRetryError
from support.aws_events import batch, finished_execution, lambda_context, listed_items, write_results
from support.clirunner import random_bytes, run_command


def test_detach_then_status(state_machine, inbox):
    started = run_command("ingest", f"s3://{inbox}/2019", "--distributed", "--state-machine", state_machine, "--detach")
    first, follow = started.stdout.decode().splitlines()
    arn = first.removeprefix("started ")
    assert follow == f"follow it with: chunkstore ingest --status {arn}"
    assert run_progress(stepfunctions_client(), arn).run_input == {
        "action": "ingest",
        "bucket": inbox,
        "prefix": "2019",
    }
    stepfunctions_client().stop_execution(executionArn=arn)
    stopped = run_command("ingest", "--status", arn, expect=1)
    assert stopped.stderr.decode().splitlines()[0] == f"chunkstore: run aborted ({arn})"


@pytest.mark.parametrize(
    "args, message",
    [
        (("scan", "s3://b", "--distributed"), "--distributed needs --state-machine"),
        (("ingest", "--status", "arn:x", "s3://b"), "--status takes no source"),
        (("ingest",), "give s3://BUCKET[/PREFIX]"),
        (("scan", "s3://b", "--detach"), "--inventory and --detach go with --distributed"),
        (("scan", "s3://b", "--distributed", "--state-machine", "arn:x", "--chunk-level"), "--chunk-level and"),
        (("ingest", "s3://b", "--distributed", "--state-machine", "arn:x", "--store", "s3://s/x"), "--store and"),
    ],
)
def test_usage_errors(args, message, moto_endpoint):
    done = run_command(*args, expect=2)
    assert message in done.stderr.decode()


def test_a_missing_state_machine_is_one_line(moto_endpoint):
    done = run_command(
        "scan",
        "s3://b",
        "--distributed",
        "--state-machine",
        "arn:aws:states:us-east-1:123456789012:stateMachine:nothing-here",
        expect=3,
    )
    assert done.stderr.decode().startswith("chunkstore: no state machine")


@pytest.fixture
def finished(monkeypatch):
    """Make the command see a finished execution whose results are in S3."""

    def finish(run_document: dict, map_output: dict) -> None:
        progress = progress_from(finished_execution(run_document, map_output), None)
        monkeypatch.setattr(distributed, "run_progress", lambda _sfn, _arn: progress)

    return finish


def test_status_of_a_finished_ingest_reports_each_object(
    lambda_env, clients, inbox, bucket, finished, capsys, monkeypatch
):
    from chunkstore_cli.main import main

    monkeypatch.setenv("CHUNKSTORE_INGEST_MAX_BYTES", "60000")
    clients.s3.put_object(Bucket=inbox, Key="a.bin", Body=random_bytes(50_000, 1))
    clients.s3.put_object(Bucket=inbox, Key="big.iso", Body=random_bytes(70_000, 2))
    clients.s3.put_object(Bucket=inbox, Key="b.bin", Body=random_bytes(50_000, 1))
    event = batch(listed_items(clients, inbox), inbox)
    lost = batch([{"Key": "lost.bin", "Size": 5, "Etag": '"x"'}], inbox)
    finished(
        run_input("ingest", f"s3://{inbox}"),
        write_results(clients, bucket, [(event, handler(event, lambda_context())), (lost, IngestRetryError("1 of 1"))]),
    )
    capsys.readouterr()
    assert main(["ingest", "--status", "arn:aws:states:us-east-1:1:execution:m:run", "--table", "LEDGER"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"s3://{inbox}/: 4 objects (deferred 1, duplicate 1, failed batch 1, stored 1); 97.7 KiB in the store"
    )
    assert lines[1:] == [
        f"deferred (too large for one invocation): chunkstore ingest s3://{inbox}/big.iso --table LEDGER",
        "failed: lost.bin",
    ]


def test_status_of_a_finished_scan_writes_the_report(clients, inbox, bucket, finished, capsys, tmp_path):
    from chunkstore_cli.main import main

    for key, seed in (("x/1", 1), ("x/2", 1), ("x/3", 2)):
        clients.s3.put_object(Bucket=inbox, Key=key, Body=random_bytes(50_000, seed))
    event = batch(listed_items(clients, inbox, "x/"), inbox, action="scan")
    finished(run_input("scan", f"s3://{inbox}/x/"), write_results(clients, bucket, [(event, handler(event, None))]))
    report = tmp_path / "report.json"
    capsys.readouterr()
    assert main(["scan", "--status", "arn:aws:states:us-east-1:1:execution:m:run", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("1 groups of identical objects, 1 duplicates")
    written = json.loads(report.read_text())
    assert written["objects"] == 3 and written["groups"][0]["keep"] == "x/1"
    assert written["groups"][0]["duplicates"] == ["x/2"]


def test_ctrl_c_detaches_and_says_how_to_reattach(monkeypatch, capsys, moto_endpoint):
    from test_distributed_runs import EXECUTION, MAP_RUN

    import chunkstore_cli.distributed_run
    from chunkstore_cli.main import main

    answers = iter([progress_from(EXECUTION, None), progress_from(EXECUTION, MAP_RUN)])

    def next_answer(_sfn, _arn):
        for answer in answers:
            return answer
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "run_progress", next_answer)
    monkeypatch.setattr(chunkstore_cli.distributed_run, "POLL_SECONDS", 0)
    assert main(["scan", "--status", EXECUTION["executionArn"]]) == 130
    err = capsys.readouterr().err
    arn = EXECUTION["executionArn"]
    assert err.strip() == f"detached; the run goes on. Follow it with: chunkstore scan --status {arn}"


def test_the_detail_gives_the_run_s_own_time_left():
    from datetime import timedelta

    from test_distributed_runs import EXECUTION, MAP_RUN, STARTED

    from chunkstore_cli.distributed_run import _detail

    assert _detail(progress_from(EXECUTION, None)) == "running: waiting for the map to start"
    started_earlier = {**EXECUTION, "startDate": STARTED.now(STARTED.tzinfo) - timedelta(hours=2)}
    # 10.98 M of 50 M objects in 2 hours: 7.1 hours left.
    assert _detail(progress_from(started_earlier, MAP_RUN)) == "30,000 failed, 20,000 running, about 7 h 06 min left"

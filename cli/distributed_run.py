"""`--distributed` of `chunkstore ingest` and `chunkstore scan`: start a run of the Step Functions
Distributed Map (or reattach to one), follow it until it ends or Ctrl-C detaches, then hand
back the finished run (chunkstore/apps/distributed.py does the work; this only prints)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import click

from chunkstore.apps.bucket import parse_s3_url

from .exits import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from .output import human_bytes, printable, warn
from .progress import ProgressDisplay

# DescribeMapRun's counts move as batches finish: a batch takes seconds to minutes.
POLL_SECONDS = 10.0


def distributed_options(command):
    """The options both commands take for a distributed run."""
    options = [
        click.option(
            "--distributed",
            is_flag=True,
            help="Run on AWS Step Functions (the Distributed Map of deploy/template.yaml): thousands of "
            "Lambda functions read the objects instead of this machine.",
        ),
        click.option(
            "--state-machine",
            metavar="ARN",
            envvar="CHUNKSTORE_STATE_MACHINE",
            help="With --distributed: the state machine (the stack's DistributedStateMachineArn output). "
            "Default: $CHUNKSTORE_STATE_MACHINE.",
        ),
        click.option(
            "--inventory",
            "manifest_url",
            metavar="s3://BUCKET/KEY/manifest.json",
            help="With --distributed: read the objects from this S3 Inventory manifest instead of "
            "listing the bucket (faster to start on tens of millions of objects).",
        ),
        click.option("--detach", is_flag=True, help="With --distributed: start the run and return at once."),
        click.option(
            "--status",
            "execution_arn",
            metavar="EXECUTION_ARN",
            help="Follow (or report) a distributed run started before, by its execution ARN.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_distributed_usage(
    source: str | None,
    distributed: bool,
    state_machine: str | None,
    manifest_url: str | None,
    detach: bool,
    execution_arn: str | None,
) -> None:
    if execution_arn:
        if distributed or source or manifest_url:
            raise click.UsageError("--status takes no source and no --distributed or --inventory: the run has them")
        return
    if source is None:
        raise click.UsageError("give s3://BUCKET[/PREFIX] (or --status EXECUTION_ARN)")
    if not distributed:
        # (--state-machine is not checked: $CHUNKSTORE_STATE_MACHINE may be set for every command.)
        if manifest_url or detach:
            raise click.UsageError("--inventory and --detach go with --distributed")
        return
    if not state_machine:
        raise click.UsageError("--distributed needs --state-machine ARN (or $CHUNKSTORE_STATE_MACHINE)")


def _detail(progress) -> str:
    """What the bar's own columns do not say. The time left is the run's, at its rate since it
    started: the bar's own estimate would count a reattach's first update as done in no time."""
    if progress.total is None:
        return f"{progress.status.lower()}: waiting for the map to start"
    eta = progress.eta_seconds()
    left = f", about {human_duration(eta)} left" if eta is not None else ""
    return f"{progress.failed:,} failed, {progress.running:,} running{left}"


def human_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def follow_run(
    context,
    action: str,
    source: str | None,
    state_machine: str | None,
    manifest_url: str | None,
    detach: bool,
    execution_arn: str | None,
):
    """Start or reattach, then wait for the end: returns the finished RunProgress, or an exit code
    when there is nothing more to do here (detached, or interrupted with the run going on)."""
    from chunkstore.apps.distributed import run_progress, start_run, stepfunctions_client

    sfn = stepfunctions_client()
    if execution_arn is None:
        assert state_machine is not None and source is not None  # check_distributed_usage asked for both
        execution_arn = start_run(sfn, state_machine, action, source, manifest_url)
        if not context.quiet or detach:
            click.echo(f"started {execution_arn}")
    reattach = f"chunkstore {action} --status {execution_arn}"
    if detach:
        click.echo(f"follow it with: {reattach}")
        return EXIT_OK
    try:
        with ProgressDisplay(context.show_progress, counting="objects") as display:
            while True:
                progress = run_progress(sfn, execution_arn)
                display.update(progress.done, progress.total, detail=_detail(progress))
                if progress.finished:
                    return progress
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo(f"detached; the run goes on. Follow it with: {reattach}", err=True)
        return EXIT_INTERRUPTED


@dataclass
class FinishedRun:
    progress: object  # chunkstore.apps.distributed.RunProgress
    url: str  # s3://BUCKET/PREFIX the run read
    records: Iterator  # its batches, as the ResultWriter recorded them
    exit_code: int  # EXIT_ERROR when the run did not succeed


def finished_run(
    context,
    action: str,
    s3,
    source: str | None,
    state_machine: str | None,
    manifest_url: str | None,
    detach: bool,
    execution_arn: str | None,
):
    """Follow the run to its end: a FinishedRun, or the exit code when there are no results to
    read here (detached, interrupted, or a run that ended without writing any)."""
    from chunkstore.apps.distributed import read_results, results_manifest

    progress = follow_run(context, action, source, state_machine, manifest_url, detach, execution_arn)
    if isinstance(progress, int):
        return progress
    code = _report_run_status(progress)
    if not progress.output:
        return code or EXIT_ERROR
    url = f"s3://{progress.run_input['bucket']}/{progress.run_input['prefix']}"
    return FinishedRun(progress, url, read_results(s3, results_manifest(s3, progress)), code)


def _report_run_status(progress) -> int:
    """A line for a run that did not succeed (its results, if any, are still reported); the exit code."""
    if progress.status == "SUCCEEDED":
        return EXIT_OK
    reason = ": ".join(part for part in (progress.error, progress.cause) if part)
    warn(f"run {progress.status.lower()}{': ' + reason if reason else ''} ({progress.execution_arn})")
    return EXIT_ERROR


def print_ingest_summary(context, source: str, summary, ledger_hint: str) -> None:
    if context.quiet:
        return
    counts = ", ".join(f"{outcome} {count:,}" for outcome, count in sorted(summary.counts.items()))
    click.echo(
        f"{printable(source)}: {summary.objects:,} objects ({counts}); "
        f"{human_bytes(summary.ingested_bytes)} in the store"
    )
    bucket, _ = parse_s3_url(source)
    for key in summary.deferred:
        click.echo(
            f"deferred (too large for one invocation): chunkstore ingest "
            f"{printable(f's3://{bucket}/{key}')}{ledger_hint}"
        )
    for key in summary.failed:
        click.echo(f"failed: {printable(str(key))}")
    shown = len(summary.deferred) + len(summary.failed)
    if summary.deferred_count + summary.failed_count > shown:
        click.echo(f"... and {summary.deferred_count + summary.failed_count - shown:,} more in the run's results")

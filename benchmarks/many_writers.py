"""Many writers on one s3:// store at once, as the distributed ingest runs them: 1, 8, 32 writer
processes each putting small distinct objects, against S3 and DynamoDB on a local moto server.

    python -m benchmarks.many_writers [--writers 1,8,32] [--objects 20] [--size 2K] [--out DIR]

Per level: objects per second (all writers, and per writer), the DynamoDB and S3 requests per
object, and the responses that made a writer retry, by error code: throttling (botocore
retries it) and transactions cancelled by a conflicting one (the catalog's table layer retries
those). Every writer puts names of its own, so the only items all writers write are in the
partitions they share: the session items (pk "s", one item per open store session, created and
deleted around each put), the snapshot items (pk "snap", one per put) and the name shards'
version and counter items (n#SHARD / m#SHARD, 8 shards); the meta item is only read.

moto serves DynamoDB one request at a time (its tables are not thread-safe) on this machine's
cores: the absolute rates are moto's. What carries over to AWS is the request mix per object
and whether writers conflict; docs/aws.md turns those into the bounds DynamoDB's partitions set.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import random
import time
import uuid
from collections import Counter
from pathlib import Path

from .report import environment, markdown_table, write_reports
from .suite import moto_server

# Error codes that mean a writer had to try again.
_RETRY_REASONS = (
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflict",
    "TransactionConflictException",
    "SlowDown",
    "ThrottlingError",
)


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _count_retry_reasons(counter: Counter):
    """A botocore needs-retry hook that only looks: it counts each error response by code, the
    cancellation reasons of a cancelled transaction, and requests that failed before any answer
    (a connection reset or timeout: botocore retries them too)."""

    def observe(response=None, caught_exception=None, **_):
        if caught_exception is not None:
            counter[type(caught_exception).__name__] += 1
            return None
        parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else None
        if not isinstance(parsed, dict) or "Error" not in parsed:
            return None
        code = parsed["Error"].get("Code")
        reasons = [reason.get("Code") for reason in parsed.get("CancellationReasons") or ()]
        for reason in [code, *reasons]:
            if reason in _RETRY_REASONS:
                counter[reason] += 1
        return None

    return observe


def _writer(url: str, writer: int, objects: int, size: int, start, results) -> None:
    from chunkstore import Store

    retries: Counter = Counter()
    with Store.open(url) as store:
        clients = store.backend.aws_clients
        if clients is None:
            raise SystemExit(f"{url} is not an s3:// store: the writers measure DynamoDB and S3 requests")
        hook = _count_retry_reasons(retries)
        clients.dynamodb.meta.events.register("needs-retry.dynamodb", hook)
        clients.s3.meta.events.register("needs-retry.s3", hook)
        bodies = [random.Random(f"{writer}/{number}").randbytes(size) for number in range(objects)]
        before = clients.requests.snapshot()
        start.wait()
        began = time.perf_counter()
        for number, body in enumerate(bodies):
            store.put_stream(io.BytesIO(body), f"writer-{writer:03d}/object-{number:05d}.bin")
        seconds = time.perf_counter() - began
        after = clients.requests.snapshot()
    operations = {
        service: {
            operation: count - before.get(service, {}).get(operation, 0) for operation, count in after[service].items()
        }
        for service in ("s3", "dynamodb")
    }
    made = {service: sum(counts.values()) for service, counts in operations.items()}
    transactions = after["dynamodb"].get("TransactWriteItems", 0) - before["dynamodb"].get("TransactWriteItems", 0)
    units = {
        kind: after["dynamodb_capacity_units"][kind] - before["dynamodb_capacity_units"][kind]
        for kind in ("read", "write")
    }
    results.put(
        {
            "writer": writer,
            "seconds": seconds,
            "objects": objects,
            "requests": made,
            "operations": operations,
            "transactions": transactions,
            "capacity_units": units,
            "retries": dict(retries),
        }
    )


def run_level(url: str, writers: int, objects: int, size: int) -> dict:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(writers + 1)
    results = context.Queue()
    processes = [
        context.Process(target=_writer, args=(url, number, objects, size, start, results)) for number in range(writers)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.perf_counter()
    reports = [results.get() for _ in processes]
    wall = time.perf_counter() - began
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit(f"a writer failed (exit {process.exitcode})")
    total = writers * objects
    retries = sum((Counter(report["retries"]) for report in reports), Counter())
    operations = {
        service: sum((Counter(report["operations"][service]) for report in reports), Counter())
        for service in ("s3", "dynamodb")
    }
    return {
        "writers": writers,
        "objects": total,
        "wall_seconds": wall,
        "objects_per_second": total / wall,
        "per_writer_objects_per_second": sum(report["objects"] / report["seconds"] for report in reports) / writers,
        "dynamodb_requests_per_object": sum(report["requests"]["dynamodb"] for report in reports) / total,
        "transactions_per_object": sum(report["transactions"] for report in reports) / total,
        "s3_requests_per_object": sum(report["requests"]["s3"] for report in reports) / total,
        "write_units_per_object": sum(report["capacity_units"]["write"] for report in reports) / total,
        "read_units_per_object": sum(report["capacity_units"]["read"] for report in reports) / total,
        "retries": dict(retries),
        "requests_per_object": {
            service: {operation: count / total for operation, count in sorted(counts.items())}
            for service, counts in operations.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_writers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,8,32", help="comma-separated writer counts (default 1,8,32)")
    parser.add_argument("--objects", type=int, default=20, help="objects each writer puts (default 20)")
    parser.add_argument("--size", default="2K", help="bytes per object (default 2K)")
    parser.add_argument("--out", type=Path, default=Path("bench-report"), help="report folder (default bench-report/)")
    args = parser.parse_args(argv)
    size = _parse_size(args.size)
    from chunkstore import ChunkerSpec, CompressionSpec, Store

    started = environment()
    levels = []
    for writers in (int(level) for level in args.writers.split(",")):
        # A server per level: each starts from empty tables, as moto slows down as they grow.
        with moto_server():
            url = f"s3://bench-{uuid.uuid4().hex[:12]}/store"
            Store.init(
                url,
                ChunkerSpec.from_average(avg_size=4096),
                CompressionSpec.parse("zstd:3"),
                table=f"bench-{uuid.uuid4().hex[:12]}",
                create=True,
                # The request mix per object that docs/aws.md turns into DynamoDB's bounds is format 1's.
                storage_format=1,
            ).close()
            levels.append(run_level(url, writers, args.objects, size))
            print(f"{writers} writers: {levels[-1]['objects_per_second']:.1f} objects/s", flush=True)
    headers = [
        "writers",
        "objects",
        "objects/s (all)",
        "objects/s per writer",
        "DynamoDB requests/object",
        "transactions/object",
        "write units/object",
        "read units/object",
        "S3 requests/object",
        "retries (by reason)",
    ]
    rows = [
        [
            str(level["writers"]),
            str(level["objects"]),
            f"{level['objects_per_second']:.1f}",
            f"{level['per_writer_objects_per_second']:.2f}",
            f"{level['dynamodb_requests_per_object']:.1f}",
            f"{level['transactions_per_object']:.2f}",
            f"{level['write_units_per_object']:.1f}",
            f"{level['read_units_per_object']:.1f}",
            f"{level['s3_requests_per_object']:.1f}",
            ", ".join(f"{reason} {count}" for reason, count in sorted(level["retries"].items())) or "none",
        ]
        for level in levels
    ]
    table = markdown_table(headers, rows)
    markdown = f"# Many writers on one s3:// store (moto server)\n\n`{started['command']}`\n\n{table}\n"
    write_reports(
        args.out,
        "many_writers",
        markdown,
        {"environment": started, "levels": levels, "object_bytes": size, "objects_per_writer": args.objects},
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""benchmarks/many_writers.py on the moto server: a small level runs, every object is stored once,
and the retry counter counts what makes a writer retry (and nothing else)."""

from __future__ import annotations

import uuid
from collections import Counter

from chunkstore import ChunkerSpec, CompressionSpec, Store


def test_two_writers_store_every_object(moto_endpoint):
    from benchmarks.many_writers import run_level

    url = f"s3://bench-{uuid.uuid4().hex[:12]}/store"
    Store.init(
        url,
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:1"),
        table=f"bench-{uuid.uuid4().hex[:12]}",
        create=True,
        storage_format=1,
    ).close()
    level = run_level(url, writers=2, objects=3, size=2048)
    assert level["objects"] == 6 and level["objects_per_second"] > 0
    # One chunk object per small object; the catalog's transactions: the content, its chunk, the version.
    assert level["s3_requests_per_object"] == 1.0 and level["transactions_per_object"] >= 1
    with Store.open(url) as store:
        names = [record.name for record in store.list("")]
    assert sorted(names) == [
        f"writer-{writer:03d}/object-{number:05d}.bin" for writer in range(2) for number in range(3)
    ]


def test_retry_reasons_are_counted_from_error_responses():
    from benchmarks.many_writers import _count_retry_reasons

    counted = Counter()
    observe = _count_retry_reasons(counted)
    cancelled = {
        "Error": {"Code": "TransactionCanceledException"},
        "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
    }
    for parsed in (
        cancelled,
        {"Error": {"Code": "ThrottlingException"}},
        {"Error": {"Code": "SlowDown"}},
        {"Error": {"Code": "ConditionalCheckFailedException"}},
        {"Items": []},
    ):
        assert observe(response=(object(), parsed)) is None  # it never decides a retry itself
    observe(response=None)
    observe(response=None, caught_exception=ConnectionResetError())
    assert counted == {"TransactionConflict": 1, "ThrottlingException": 1, "SlowDown": 1, "ConnectionResetError": 1}

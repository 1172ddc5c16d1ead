"""Every operation under injected storage and catalog faults either succeeds or fails with a
clear ChunkstoreError or OSError, never returns wrong bytes, and leaves a store that, once the
fault is gone, verifies clean, restores every committed file exactly and is emptied of leaks by gc.

Each runs on a store of storage format 1 (chunk objects) and of format 2 (packs, recipe pages
and the pack index, whose calls FaultyCatalog faults as the catalog's own)."""

from __future__ import annotations

import random

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.faulty import FaultPlan, FaultyBlobStore, InjectedFault
from support.faultkit import (
    BLOB_METHODS_THAT_READ,
    BLOB_METHODS_THAT_WRITE,
    CATALOG_METHODS,
    Corpus,
    Fault,
    attempt,
    backend_of,
    check_get,
    check_store_after_faults,
    data_key_prefix,
    faults_installed,
    init_store,
    random_mix,
    report_figures,
    run_operations_under_faults,
)
from support.storechecks import assert_no_garbage

# The scenarios an s3:// store runs in the quick tier (each takes about 7 s on moto): a catalog
# call that lands but whose reply is lost, and a random mix of every kind of fault; the long
# tier runs them all.
QUICK_ON_S3 = {"catalog-commit-lost-reply", "random-mix-seed-0"}
STORAGE_FORMATS = (1, 2)


@pytest.fixture(params=STORAGE_FORMATS, ids=lambda storage_format: f"format{storage_format}")
def storage_format(request) -> int:
    return request.param


def _scenarios():
    for storage_format in STORAGE_FORMATS:
        for blob_faults, catalog_faults, seed, name in _faults_of(storage_format):
            yield pytest.param(
                storage_format,
                blob_faults,
                catalog_faults,
                seed,
                id=f"format{storage_format}-{name}",
                marks=[] if name in QUICK_ON_S3 else [pytest.mark.slow_on_s3],
            )


def _faults_of(storage_format):
    """(blob faults, catalog faults, seed, name) of each scenario on a store of storage_format."""
    for method in BLOB_METHODS_THAT_WRITE + BLOB_METHODS_THAT_READ:
        yield [Fault(method, "error")], [], 0, f"blob-{method}-error"
        yield [Fault(method, "error", after=1, times=None)], [], 0, f"blob-{method}-error-from-2nd"
    for method in BLOB_METHODS_THAT_WRITE:
        yield [Fault(method, "lost_reply", times=3)], [], 0, f"blob-{method}-lost-reply"
    truncated = Fault("get", "truncate", times=None, key_prefix=data_key_prefix(storage_format))
    yield [truncated], [], 0, "blob-get-truncated"
    yield [Fault("get", "truncate", probability=0.3, times=None)], [], 0, "blob-get-truncated-30pct"
    slow = [
        Fault(method, "slow", times=None, probability=0.2, delay=0.002)
        for method in BLOB_METHODS_THAT_WRITE + BLOB_METHODS_THAT_READ
    ]
    yield slow, [], 0, "blob-slow-everything"
    for method in CATALOG_METHODS[storage_format]:
        yield [], [Fault(method, "error")], 0, f"catalog-{method}-error"
        yield [], [Fault(method, "lost_reply")], 0, f"catalog-{method}-lost-reply"
    for seed in range(4):
        yield *random_mix(0.05, storage_format), seed, f"random-mix-seed-{seed}"


@pytest.fixture
def stocked(new_backend, tmp_path, storage_format):
    """A small-chunk store of storage_format (in a folder, or s3:// with its catalog in DynamoDB,
    where the faults wrap S3BlobStore and DynamoDBCatalog) holding data/{a..e}.bin, and the corpus
    that knows their bytes. Each file is put on its own: in format 2 it has a pack of its own,
    which gc deletes once the file is removed, and its pages (SMALL_SEGMENTS) too."""
    objects = new_backend(tmp_path)
    url = objects.url
    corpus = Corpus.create(tmp_path / "source", seed="faults")
    for letter in "abcde":
        corpus.write(f"data/{letter}.bin")
    init_store(objects, storage_format, avg_size=1024)
    store = Store.open(url)
    for letter in "abcde":
        summary = store.put([(corpus.root / f"data/{letter}.bin", f"data/{letter}.bin")])
        assert summary.count("stored") == 1
    yield url, store, corpus
    store.close()


@pytest.mark.parametrize(("storage_format", "blob_faults", "catalog_faults", "seed"), list(_scenarios()))
def test_operations_under_a_fault_leave_a_recoverable_store(stocked, tmp_path, blob_faults, catalog_faults, seed):
    url, store, corpus = stocked
    injected = run_operations_under_faults(store, corpus, tmp_path, blob_faults, catalog_faults, seed)
    assert injected > 0, "the fault never fired: the scenario tests nothing"
    store.close()
    checked = check_store_after_faults(url, corpus)
    assert checked >= 2  # data/a and b were stored before the faults; c, d and e are removed under them
    report_figures(
        "fault scenario",
        {"backend": backend_of(url), "faults_injected": injected, "versions_checked": checked, "problems": 0},
    )


@pytest.mark.slow_on_s3
def test_a_put_retried_after_a_lost_upload_reply_commits_every_file(stocked, storage_format):
    url, store, corpus = stocked
    for index in range(3):
        corpus.write(f"new/{index}.bin")
    with faults_installed(store, [Fault("put", "lost_reply", key_prefix=data_key_prefix(storage_format))]) as plans:
        _, error = attempt(store.put, [(corpus.root / "new", "new")])
    assert plans.injected == 1 and "reply was lost" in str(error)
    summary = store.put([(corpus.root / "new", "new")])
    assert [result.outcome for result in summary.results if result.outcome not in ("stored", "unchanged")] == []
    assert {record.name for record in store.list("new")} == {f"new/{index}.bin" for index in range(3)}
    store.close()
    check_store_after_faults(url, corpus)


@pytest.mark.slow_on_s3
def test_truncated_reads_are_refused_never_returned(stocked, storage_format):
    _, store, corpus = stocked
    with faults_installed(store, [Fault("get", "truncate", times=None, key_prefix=data_key_prefix(storage_format))]):
        assert not check_get(store, corpus, "data/a.bin")
        report = store.verify(read_data=True)
    assert not report.ok and "data/a.bin@1" in report.damaged_names


def test_the_fault_plan_replays_exactly_from_its_seed(tmp_path):
    def fired_calls(seed):
        plan = FaultPlan([Fault("get", "error", times=None, probability=0.5)], seed)
        return [plan.decide("get", f"k{index}") is not None for index in range(64)]

    assert fired_calls(7) == fired_calls(7)
    assert fired_calls(7) != fired_calls(8)
    assert 10 < sum(fired_calls(7)) < 54


def test_faulty_blob_store_kinds(tmp_path):
    from chunkstore.backends.local import LocalBlobStore

    inner = LocalBlobStore(tmp_path / "blobs")
    inner.create()
    plan = FaultPlan([Fault("put", "lost_reply"), Fault("get", "truncate"), Fault("delete", "error")])
    faulty = FaultyBlobStore(inner, plan)
    with pytest.raises(InjectedFault, match="took effect"):
        faulty.put("k", b"0123456789")
    assert inner.get("k") == b"0123456789"
    assert faulty.get("k") == b"01234"
    assert faulty.get("k") == b"0123456789"
    with pytest.raises(OSError, match="injected fault"):
        faulty.delete("k")
    assert inner.get("k") == b"0123456789"
    assert plan.injected == 3


def test_a_gc_that_fails_to_release_its_lock_does_not_block_the_next_gc(stocked):
    _, store, corpus = stocked
    store.remove(["data/a.bin"])
    with faults_installed(store, catalog_faults=[Fault("release_gc_lock", "error")]) as plans:
        _, error = attempt(store.gc)
    assert plans.injected == 1 and error is not None
    # Same process, full lease: only a closed session frees the lock at once.
    report = store.gc()
    assert report.dry_run is False
    assert_no_garbage(store)


# Uploads that succeed before the one that fails: chunk objects of 64 KiB, or packs of 16 MiB.
UPLOADS_BEFORE_THE_FAILURE = {1: 5, 2: 1}


def test_an_upload_failure_in_a_large_put_is_reported_as_an_upload_failure(tmp_path, storage_format):
    """More new data than put keeps in flight, so the failed upload is met while reading another file."""
    source = tmp_path / "source"
    source.mkdir()
    rng = random.Random("large put")
    for index in range(20):
        (source / f"f{index:02d}").write_bytes(rng.randbytes(2 * 1024 * 1024))
    with Store.init(
        str(tmp_path / "store"),
        ChunkerSpec.from_average(),
        CompressionSpec.parse("zstd:3"),
        storage_format=storage_format,
    ) as store:
        upload = Fault(
            "put", "error", after=UPLOADS_BEFORE_THE_FAILURE[storage_format], key_prefix=data_key_prefix(storage_format)
        )
        with faults_installed(store, [upload]) as plans:
            summary, error = attempt(store.put, [(source, "source")])
        assert plans.injected == 1
        if error is not None:
            assert "injected fault" in str(error), f"the put failed with {type(error).__name__}: {error}"
        else:
            failed = [result for result in summary.results if result.outcome == "error"]
            assert failed and all("injected fault" in result.error for result in failed)
            assert len(list(store.list())) == 20 - len(failed)

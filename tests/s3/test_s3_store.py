"""An s3:// store through the library: paged recipes, missing objects, concurrent writers, request counts."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.aws import cost_estimate
from chunkstore.core.config import CHUNK_KEY_PREFIX, chunk_key
from chunkstore.errors import IntegrityError
from chunkstore.operations.objectput import ObjectWriter
from chunkstore.operations.read import iter_recipe


def write_random(path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def chunk_objects(store: Store) -> set[str]:
    return {info.key for info in store.blobs.list(CHUNK_KEY_PREFIX)}


def test_a_recipe_of_many_pages_round_trips(s3_store, tmp_path, monkeypatch):
    monkeypatch.setattr(ObjectWriter, "page_entries", 5)
    data = write_random(tmp_path / "big.bin", 160_000, seed=1)
    (result,) = s3_store.put([(tmp_path / "big.bin", "big.bin")]).results
    assert result.outcome == "stored"
    record = s3_store.catalog.get_version("big.bin")
    content = s3_store.catalog.get_content(record.digest)
    assert content.chunk_count > 100  # more chunks than one DynamoDB transaction can count
    assert content.page_count == math.ceil(content.chunk_count / 5)
    s3_store.get_to_path("big.bin", tmp_path / "restored")
    assert (tmp_path / "restored").read_bytes() == data
    assert s3_store.verify().ok


def test_a_deleted_object_is_an_integrity_error_naming_the_file(s3_store, tmp_path):
    write_random(tmp_path / "victim", 20_000, seed=2)
    s3_store.put([(tmp_path / "victim", "docs/victim")])
    entry = next(iter_recipe(s3_store, s3_store.catalog.get_version("docs/victim").digest))
    s3_store.blobs.delete(chunk_key(entry.chunk_id))
    with pytest.raises(IntegrityError, match="docs/victim") as raised:
        s3_store.get_to_path("docs/victim", tmp_path / "out")
    assert raised.value.exit_code == 4
    assert not (tmp_path / "out").exists()
    report = s3_store.verify()
    assert [(problem.kind, problem.names) for problem in report.problems] == [("missing-object", ["docs/victim@1"])]


def test_two_writers_storing_the_same_new_file_at_once_store_it_once(s3_url, s3_store, tmp_path):
    data = write_random(tmp_path / "same", 40_000, seed=3)
    stores = [s3_store, Store.open(s3_url)]
    start = threading.Barrier(2)
    outcomes = {}

    def put(index: int) -> None:
        start.wait()
        (result,) = stores[index].put([(tmp_path / "same", f"copy{index}")]).results
        outcomes[index] = result.outcome

    threads = [threading.Thread(target=put, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stores[1].close()
    assert sorted(outcomes.values()) in (["duplicate", "stored"], ["stored", "stored"])
    digest = s3_store.catalog.get_version("copy0").digest
    assert s3_store.catalog.get_content(digest).refcount == 2
    assert len(chunk_objects(s3_store)) == s3_store.catalog.stats().chunks
    for index in range(2):
        s3_store.get_to_path(f"copy{index}", tmp_path / f"out{index}")
        assert (tmp_path / f"out{index}").read_bytes() == data
    assert s3_store.verify().ok


def test_requests_of_a_put_are_counted_and_priced(s3_url, table, tmp_path):
    spec = ChunkerSpec.from_average(avg_size=4096)
    Store.init(s3_url, spec, CompressionSpec.parse("zstd:3"), table=table, create=True, storage_format=1).close()
    for index in range(3):
        write_random(tmp_path / f"file{index}", 30_000, seed=10 + index)
    with Store.open(s3_url) as store:
        store.put([tmp_path])
        counts = store.request_counts()
        chunks = store.catalog.stats().chunks
        figures = store.stats()
    # One PUT per new chunk object, and DynamoDB writes in batches, not one per chunk.
    assert counts["s3"]["PutObject"] == chunks
    assert counts["dynamodb"]["TransactWriteItems"] < chunks
    assert counts["dynamodb_capacity_units"]["write"] > 0
    assert counts["estimated_usd"] > chunks * 0.005 / 1000
    cost = cost_estimate(figures)
    assert cost["chunk_objects_per_gb"] == round(1e9 / (figures["unique_bytes"] / figures["chunks"]))
    assert cost["ingest_usd_per_gb_new_data"] > cost["chunk_objects_per_gb"] * 0.005 / 1000
    assert cost["storage_usd_per_month"] == pytest.approx(figures["stored_bytes"] / 1e9 * 0.023, abs=1e-6)


def test_a_local_store_has_no_request_counts(tmp_path):
    with Store.init(str(tmp_path / "local"), ChunkerSpec.from_average(), CompressionSpec.parse("zstd:3")) as store:
        assert store.request_counts() is None


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_boto3_is_imported_only_for_s3_stores(tmp_path):
    local_use = run_python(
        "import sys\n"
        "from chunkstore import ChunkerSpec, CompressionSpec, Store\n"
        "store = Store.init('local', ChunkerSpec.from_average(), CompressionSpec.parse('zstd:3'))\n"
        "open('f', 'wb').write(b'data')\n"
        "store.put(['f'])\n"
        "print(store.request_counts(), 'boto3' in sys.modules)\n",
        tmp_path,
    )
    assert local_use.stdout == "None False\n", local_use.stderr


def test_without_boto3_an_s3_store_says_how_to_install_it(tmp_path):
    missing = run_python(
        "import sys\n"
        "sys.modules['boto3'] = None  # as if it were not installed\n"
        "from chunkstore_cli.main import main\n"
        "sys.exit(main(['--store', 's3://some-bucket/store', 'ls']))\n",
        tmp_path,
    )
    assert missing.returncode == 1
    assert (
        missing.stderr == "chunkstore: s3:// stores need boto3, which is not installed: pip install 'chunkstore[s3]'\n"
    )

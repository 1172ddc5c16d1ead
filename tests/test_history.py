"""chunkstore.operations.history below the command line: times, durations and retention rules, the
safety of put --sync, and catalogs written before history existed (schema 1)."""

from __future__ import annotations

import io
import sqlite3
import tarfile
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chunkstore import Store
from chunkstore.backends.catalog import SnapshotRecord
from chunkstore.errors import InvalidArgumentError, NameNotFoundError, NotFoundError, UnsupportedFormatError
from chunkstore.operations import history

DATA = Path(__file__).resolve().parent / "data"
NS = 10**9


@pytest.fixture
def store_url(memory_store_url) -> str:
    """Stores of these tests are memory:// stores, but for the schema 1 folder."""
    return memory_store_url


@pytest.fixture
def berlin(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def utc_ns(*fields) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp()) * NS


# ---- times and durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, end_of_day, expected",
    [
        ("2026-11-20", True, utc_ns(2026, 11, 20, 23) - 1),  # the last instant of the local day (UTC+1)
        ("2026-11-20", False, utc_ns(2026, 11, 19, 23)),
        ("2026-07-20", False, utc_ns(2026, 7, 19, 22)),  # summer time: UTC+2
        ("2026-11-20T03:00", True, utc_ns(2026, 11, 20, 2)),
        ("2026-11-20 03:00:30", True, utc_ns(2026, 11, 20, 2, 0, 30)),
        ("2026-11-20T03:00:00.5Z", True, utc_ns(2026, 11, 20, 3) + NS // 2),
        ("2026-11-20T03:00+05:30", True, utc_ns(2026, 11, 19, 21, 30)),
    ],
)
def test_times_are_local_unless_they_name_their_zone(berlin, text, end_of_day, expected):
    assert history.parse_time(text, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["2026-02-30", "2026-11-20T25:00", "20261120", "tomorrow", "", "2026-11-20T03"])
def test_what_is_not_a_time(text):
    with pytest.raises(InvalidArgumentError):
        history.parse_time(text, end_of_day=True)


@pytest.mark.parametrize(
    "text, back_to",
    [
        ("30d", (2026, 3, 1, 12)),
        ("2w", (2026, 3, 17, 12)),
        ("1m", (2026, 2, 28, 12)),  # 31 March less a month: the end of February
        ("1y1m", (2025, 2, 28, 12)),
        ("36h", (2026, 3, 30, 0)),
        ("1d12h", (2026, 3, 30, 0)),
    ],
)
def test_durations_count_calendar_days_and_months(berlin, text, back_to):
    # Berlin moves to summer time on 29 March 2026: days are counted on the local calendar.
    latest = int(datetime(2026, 3, 31, 12).astimezone().timestamp()) * NS
    assert history.Duration.parse(text).before(latest) == int(datetime(*back_to).astimezone().timestamp()) * NS


@pytest.mark.parametrize("text", ["", "30", "d", "1x", "1d 2h", "-1d"])
def test_what_is_not_a_duration(text):
    with pytest.raises(InvalidArgumentError):
        history.Duration.parse(text)


def test_rules_keep_the_newest_point_of_each_of_their_newest_periods(berlin):
    def at(day, hour):
        return int(datetime(2026, 11, day, hour).astimezone().timestamp()) * NS

    # Newest first: two points on the 20th, one on the 19th and 16th (a Monday), two on the 15th.
    points = [at(20, 22), at(20, 8), at(19, 3), at(16, 3), at(15, 23), at(15, 1)]
    policy = history.Policy(last=2, daily=3, weekly=2, within=history.Duration.parse("1d"))
    assert policy.reasons(points) == [
        ["last", "daily", "weekly", "within 1d"],
        ["last", "within 1d"],
        ["daily"],
        ["daily"],
        ["weekly"],
        [],
    ]
    assert history.Policy(hourly=2).reasons(points[:3]) == [["hourly"], ["hourly"], []]
    assert history.Policy(monthly=5, yearly=1).reasons(points) == [["monthly", "yearly"], [], [], [], [], []]


def test_a_policy_needs_a_rule():
    with pytest.raises(InvalidArgumentError, match="at least one keep rule"):
        history.Policy()


# ---- snapshots ---------------------------------------------------------------------------------


def test_snapshot_ids_resolve_by_unique_prefix(store):
    for snapshot_id in ("abcd1111" + "0" * 24, "abcd2222" + "0" * 24):
        store.catalog.record_snapshot(SnapshotRecord(snapshot_id, utc_ns(2026, 11, 20), "host", ("x",)))
    assert history.resolve_as_of(store, "ABCD2").snapshot.snapshot_id.startswith("abcd2222")
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        history.resolve_as_of(store, "abcd")
    with pytest.raises(NotFoundError):
        history.resolve_as_of(store, "abce")
    assert history.resolve_as_of(store, "2026-11-20T00:00Z") == history.AsOf(utc_ns(2026, 11, 20))


def test_sync_leaves_alone_what_it_cannot_see(store, tmp_path, monkeypatch):
    """A stored name is marked deleted only when its path is gone or has become a folder: not
    when it cannot be looked at, and not below a folder argument that is missing altogether."""
    folder = tmp_path / "data"
    for name in ("kept", "gone", "unreadable", "now-a-folder"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_bytes(b"x")
    store.put([(folder, "data"), (tmp_path / "elsewhere", "elsewhere")])
    (folder / "gone").unlink()
    (folder / "now-a-folder").unlink()
    (folder / "now-a-folder").mkdir()
    (tmp_path / "elsewhere" / "x").unlink()
    (tmp_path / "elsewhere").rmdir()
    real_lstat = Path.lstat

    def lstat(path):  # as a folder without search permission answers, even to root
        if path.name == "unreadable":
            raise PermissionError(13, "Permission denied", str(path))
        return real_lstat(path)

    monkeypatch.setattr(Path, "lstat", lstat)
    run = store.put([(folder, "data"), (tmp_path / "elsewhere", "elsewhere")], sync=True)
    assert sorted(marker.name for marker in run.deleted) == ["data/gone", "data/now-a-folder"]
    assert run.snapshot.deleted == 2 and run.snapshot.paths == ("data", "elsewhere")
    assert [record.name for record in store.list()] == ["data/kept", "data/unreadable", "elsewhere/x"]


def test_rm_removes_the_history_of_deleted_files_too(store, tmp_path):
    folder = tmp_path / "data"
    for name in ("a", "b", "c"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(name.encode() * 100)
    store.put([(folder, "data")])
    for name in ("a", "b"):
        (folder / name).unlink()
    store.put([(folder, "data")], sync=True)
    assert sorted((record.name, record.deleted) for record in store.remove(["data/a"])) == [
        ("data/a", False),
        ("data/a", True),
    ]
    assert sorted(record.name for record in store.remove(["data"], recursive=True)) == ["data/b", "data/b", "data/c"]
    assert list(store.catalog.list_versions(all_versions=True, deleted=True)) == []
    assert store.gc().chunks_deleted == 3


# ---- catalogs from before history ----------------------------------------------------------------


def test_a_schema_1_store_is_upgraded_when_opened(tmp_path):
    """tests/data/store-v1.tar.gz was made by chunkstore before schema 2: docs/ put twice (a.txt
    changed in between), and the folder as it was at the second put."""
    with tarfile.open(DATA / "store-v1.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    url, source = str(tmp_path / "store"), tmp_path / "src" / "docs"
    with closing(sqlite3.connect(tmp_path / "store" / "catalog.sqlite")) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    # Even a command that only reads upgrades it, once.
    with Store.open(url, read_only=True) as store:
        listed = [(record.name, record.version, record.deleted) for record in store.list(all_versions=True)]
        assert listed == [
            ("docs/a.txt", 1, False),
            ("docs/a.txt", 2, False),
            ("docs/b.txt", 1, False),
            ("docs/link", 1, False),
        ]
        first = io.BytesIO()
        store.get("docs/a.txt", first, version=1)
        assert first.getvalue() == b"first version\n"
        assert store.catalog.list_snapshots() == []
    with closing(sqlite3.connect(tmp_path / "store" / "catalog.sqlite")) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)
    with Store.open(url) as store:
        (source / "b.txt").unlink()
        run = store.put([(source, "docs")], sync=True)
        assert [marker.name for marker in run.deleted] == ["docs/b.txt"]
        assert [snapshot.program for snapshot in store.catalog.list_snapshots()] == ["chunkstore library"]
        assert store.verify(read_data=True).ok
        restored = tmp_path / "restored"
        store.restore("docs", restored)
        assert sorted(path.name for path in (restored / "docs").iterdir()) == ["a.txt", "link"]
        with pytest.raises(NameNotFoundError, match="deleted"):
            store.get("docs/b.txt", io.BytesIO())


def test_a_dynamodb_table_moves_to_schema_2_with_its_first_history_item(moto_endpoint):
    from chunkstore.backends.aws import AwsClients
    from chunkstore.backends.dynamodb import DynamoDBCatalog

    clients, table = AwsClients(), f"chunkstore-test-history-{uuid.uuid4().hex[:12]}"
    DynamoDBCatalog.create_table(clients, table)

    def open_catalog(create: bool = False) -> DynamoDBCatalog:
        return DynamoDBCatalog(clients, table, store_id="s", store_url="s3://b/p", create=create)

    def schema() -> str:
        item = clients.dynamodb.get_item(TableName=table, Key={"pk": {"S": "meta"}, "sk": {"S": "meta"}})["Item"]
        return item["schema"]["N"]

    def set_schema(number: int) -> None:
        clients.dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "meta"}, "sk": {"S": "meta"}},
            UpdateExpression="SET #s = :n",
            ExpressionAttributeNames={"#s": "schema"},
            ExpressionAttributeValues={":n": {"N": str(number)}},
        )

    open_catalog(create=True).close()
    set_schema(1)  # what a table made before history holds: the same items, schema 1
    catalog = open_catalog()
    assert list(catalog.list_versions()) == [] and schema() == "1"  # reading writes nothing
    catalog.record_snapshot(SnapshotRecord("f" * 32, utc_ns(2026, 11, 20), "host", ("x",)))
    assert schema() == "2"
    catalog.close()
    set_schema(4)
    with pytest.raises(UnsupportedFormatError, match="schema version 4"):
        open_catalog()

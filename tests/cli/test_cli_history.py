"""Backups over time: `put --sync`, `--as-of`, `snapshots`, `diff` and `forget`.

The main test puts a folder every night for a month while it evolves (files added,
changed, deleted, renamed, a symlink retargeted, a night with no change), with the
clock set by `put --time`; then every night restores exactly by time and by snapshot
ID, a retention policy keeps exactly the versions an independent computation names,
and gc frees exactly the chunks no kept version needs.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chunkstore import Store
from chunkstore.core.config import chunk_key
from chunkstore.operations.read import iter_recipe
from chunkstore_cli.main import main
from support.clirunner import Run, assert_one_error, assert_usage_error, check_error_output, text_bytes, write

# New York leaves daylight saving time on 1 November 2026: the month crosses it.
ZONE = "America/New_York"
FIRST_NIGHT = date(2026, 10, 20)
# Nights on which the folder does not change at all: their puts record nothing new.
QUIET_NIGHTS = {5, 9, 10}


@dataclass(frozen=True)
class Calendar:
    """How many nights to simulate, and the retention policy to apply after them."""

    nights: int
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    within_days: int = 0

    def policy(self) -> tuple[str, ...]:
        rules = (("--keep-daily", self.daily), ("--keep-weekly", self.weekly), ("--keep-monthly", self.monthly))
        return tuple(part for option, count in rules if count for part in (option, str(count)))


MONTH = Calendar(30, daily=7, weekly=4, monthly=12, within_days=5)
# The month's s3 run takes minutes on moto (a request costs milliseconds, a restore dozens of
# them); in the default run s3 gets six nights, with a policy that still removes something.
WEEK = Calendar(6, daily=2, weekly=1, within_days=2)


@pytest.fixture
def local_zone(monkeypatch):
    """Local time is New York's, in this process and in the commands it starts."""
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class InProcess:
    """Runs chunkstore commands in this process, through the same entry point as the real
    command (chunkstore_cli.main.main), with the same checks as the subprocess runner: a month of
    nightly puts and restores is about a hundred commands, too many to pay a Python start
    and a boto3 import for each in the default test run."""

    def __init__(self, store_url: str, workdir: Path):
        self.store_url = store_url
        self.workdir = workdir

    def __call__(self, *args, expect: int = 0) -> Run:
        arguments = tuple(str(arg) for arg in args)
        stdout = io.BytesIO()
        text = io.TextIOWrapper(stdout, encoding="utf-8", write_through=True)  # get writes bytes to its buffer
        stderr = io.StringIO()
        previous = Path.cwd()
        os.chdir(self.workdir)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(stderr):
                code = main(["--store", self.store_url, *arguments])
        finally:
            os.chdir(previous)
        text.detach()
        run = Run(arguments, code, stdout.getvalue(), stderr.getvalue())
        assert code == expect, f"chunkstore {' '.join(arguments)} exited {code}, not {expect}\n{run.out}\n{run.err}"
        if code:
            check_error_output(run)
        else:
            assert run.err == "", run.err
        return run

    def json(self, *args):
        import json

        return json.loads(self(*args, "--json").stdout)


# ---- the folder over a month ---------------------------------------------------------------


@dataclass
class Link:
    target: str


@dataclass
class Month:
    """What the test knows of every night, written down as it made them."""

    states: list[dict[str, bytes | Link]] = field(default_factory=list)  # relative path -> content, a night each
    snapshots: list[str] = field(default_factory=list)  # snapshot ID of each night's put
    versions: dict[str, list[tuple[int, int, bool]]] = field(default_factory=dict)  # name -> (version, night, marker)

    def record(self, night: int, put: dict) -> None:
        """Follow version numbers as the catalog contract gives them: each new version or
        deletion marker of a name takes the next number."""
        self.snapshots.append(put["snapshot"]["id"])
        for result in put["results"]:
            if result["outcome"] in ("stored", "duplicate"):
                self.versions.setdefault(result["name"], []).append((result["version"], night, False))
        for name in put["deleted"]:
            number = self.versions[name][-1][0] + 1
            self.versions[name].append((number, night, True))

    def state_at(self, name: str, night: int) -> tuple[int, int, bool] | None:
        before = [entry for entry in self.versions[name] if entry[1] <= night]
        return before[-1] if before else None

    def points(self) -> list[int]:
        """Nights on which some version or marker was recorded, newest first."""
        return sorted({night for entries in self.versions.values() for _, night, _ in entries}, reverse=True)


def night_time(night: int) -> datetime:
    return datetime.combine(FIRST_NIGHT + timedelta(days=night), time_of_day(3, 0), tzinfo=ZoneInfo(ZONE))


def as_local_text(night: int) -> str:
    """03:00 of the night as the command reads it: a date-time without a zone, in local time."""
    return night_time(night).strftime("%Y-%m-%dT%H:%M")


def evolve(state: dict[str, bytes | Link], night: int) -> None:
    rng = random.Random(night)
    files = sorted(name for name, content in state.items() if isinstance(content, bytes))
    if night == 0:
        for index in range(8):
            state[f"{'docs' if index % 2 else 'data'}/file{index}.txt"] = text_bytes(rng.randint(2_000, 20_000), index)
        state["logs/a.log"] = text_bytes(6_000, 100)
        state["logs/b.log"] = text_bytes(3_000, 101)
        state["latest"] = Link("docs/file1.txt")
        return
    if night in QUIET_NIGHTS:
        return
    for name in rng.sample(files, 2):  # an edit in the middle: most chunks stay shared
        content = state[name]
        cut = rng.randint(0, len(content))
        state[name] = content[:cut] + text_bytes(rng.randint(10, 3_000), 1000 + night) + content[cut + 50 :]
    if night % 2 == 0:
        state[f"new/night{night}.txt"] = text_bytes(rng.randint(500, 9_000), 2000 + night)
    if night % 3 == 0:
        del state[rng.choice(files)]
    if night % 4 == 1:
        moved = rng.choice(sorted(set(files) & set(state)))
        state[f"moved/{Path(moved).name}.{night}"] = state.pop(moved)
    if night == 12:
        for name in [name for name in state if name.startswith("logs/")]:
            del state[name]
    if night == 20:
        state["logs/a.log"] = text_bytes(6_000, 100)  # back, with the content it had before night 12
    if night in (5, 17):
        state["latest"] = Link(rng.choice(sorted(name for name in state if name != "latest")))


def write_folder(root: Path, state: dict[str, bytes | Link]) -> None:
    """Make root hold exactly state (folders left empty by deletions stay, as they would)."""
    on_disk = {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file() or path.is_symlink()}
    for name in on_disk - state.keys():
        (root / name).unlink()
    for name, content in state.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            if path.is_symlink() and os.readlink(path) == content.target:
                continue
            if path.is_symlink():
                path.unlink()
            path.symlink_to(content.target)
        elif not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)


def size_of(content: bytes | Link | None) -> int:
    """What chunkstore stores of it: a file's bytes, a symlink's target."""
    if content is None:
        return 0
    return len(content.target.encode()) if isinstance(content, Link) else len(content)


def read_folder(root: Path) -> dict[str, bytes | Link]:
    found: dict[str, bytes | Link] = {}
    for path in root.rglob("*"):
        if path.is_symlink():
            found[path.relative_to(root).as_posix()] = Link(os.readlink(path))
        elif path.is_file():
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def restored(run: InProcess, as_of: str, into: Path) -> dict[str, bytes | Link]:
    run("restore", "src", "-o", into, "--as-of", as_of)
    return read_folder(into / "src")


# ---- an independent reading of the policy ------------------------------------------------


def expected_points(
    points: list[int], daily: int = 0, weekly: int = 0, monthly: int = 0, within_days: int = 0
) -> dict[int, list[str]]:
    """Kept nights and their rules: per rule, the newest night of each of its newest periods."""
    reasons: dict[int, list[str]] = {night: [] for night in points}
    for rule, count, period_of in (
        ("daily", daily, lambda moment: moment.date()),
        ("weekly", weekly, lambda moment: moment.isocalendar()[:2]),
        ("monthly", monthly, lambda moment: (moment.year, moment.month)),
    ):
        periods_seen = []
        for night in points:
            period = period_of(night_time(night))
            if period not in periods_seen and len(periods_seen) < count:
                periods_seen.append(period)
                reasons[night].append(rule)
    if within_days:
        # Nights are at 03:00 local, so "newer than the newest minus N days" is the N newest calendar days.
        for night in points:
            if night > points[0] - within_days:
                reasons[night].append(f"within {within_days}d")
    return {night: rules for night, rules in reasons.items() if rules}


def expected_kept_versions(month: Month, kept_nights) -> set[tuple[str, int]]:
    kept = set()
    for name, entries in month.versions.items():
        for night in kept_nights:
            state = month.state_at(name, night)
            if state is not None:
                kept.add((name, state[0]))
        if not entries[-1][2]:
            kept.add((name, entries[-1][0]))
    return kept


def chunks_of_versions(store_url: str) -> dict[tuple[str, int], set[str]]:
    """The chunk object keys each content version under src needs, from its recipe."""
    with Store.open(store_url, read_only=True) as store:
        return {
            (record.name, record.version): {
                str(chunk_key(entry.chunk_id)) for entry in iter_recipe(store, record.digest)
            }
            for record in store.catalog.list_versions("src", all_versions=True)
        }


# ---- the month -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "calendar", [pytest.param(MONTH, marks=pytest.mark.slow_on_s3, id="month"), pytest.param(WEEK, id="week")]
)
def test_nightly_backups(chunkstore, local_zone, tmp_path, calendar):
    run = InProcess(chunkstore.store, chunkstore.workdir)
    nights = range(calendar.nights)
    month, state = Month(), {}
    for night in nights:
        before = set(state)
        evolve(state, night)
        write_folder(chunkstore.workdir / "src", state)
        month.states.append(dict(state))
        put = run.json("put", "src", "--sync", "--time", as_local_text(night))
        assert sorted(put["deleted"]) == sorted(f"src/{name}" for name in before - state.keys())
        month.record(night, put)

    # Each snapshot is the put of its night, at its time (shown in local time, offsets and all).
    listed = run.json("snapshots")
    assert [snapshot["id"] for snapshot in listed] == month.snapshots
    assert [(snapshot["at_ns"], snapshot["time"]) for snapshot in listed] == [
        (int(night_time(night).timestamp()) * 10**9, night_time(night).isoformat()) for night in nights
    ]
    assert all(snapshot["paths"] == ["src"] for snapshot in listed)
    for night in QUIET_NIGHTS & set(nights):
        assert (listed[night]["unchanged"], listed[night]["stored"], listed[night]["deleted"]) == (
            len(month.states[night]),
            0,
            0,
        )

    # Every night restores exactly, by time, by snapshot ID and (some) by date.
    for night in nights:
        assert restored(run, as_local_text(night), tmp_path / f"t{night}") == month.states[night], night
        assert restored(run, month.snapshots[night][:10], tmp_path / f"s{night}") == month.states[night], night
    for night in (3, calendar.nights - 1):
        assert restored(run, night_time(night).date().isoformat(), tmp_path / f"d{night}") == month.states[night]

    # Without --as-of, deleted files are gone from ls, restore and get; their versions stay readable.
    assert {entry["name"] for entry in run.json("ls", "src")} == {f"src/{name}" for name in month.states[-1]}
    probe, gone = max(
        (night, name)
        for night in nights
        for name, content in month.states[night].items()
        if name not in month.states[-1] and isinstance(content, bytes)
    )
    born = min(night for night in nights if gone in month.states[night])
    assert_one_error(run("get", f"src/{gone}", expect=3), "deleted")
    assert run("get", f"src/{gone}", "--version", "1").stdout == month.states[born][gone]
    assert run("get", f"src/{gone}", "--as-of", as_local_text(probe)).stdout == month.states[probe][gone]
    assert run.json("ls", f"src/{gone}", "--versions")[-1]["deleted"]

    # diff names what changed between two nights, with sizes.
    first, last = calendar.nights - 5, calendar.nights - 2
    changes = run.json("diff", "src", "--from", as_local_text(first), "--to", month.snapshots[last])
    before, after = month.states[first], month.states[last]
    changed = {name for name in before.keys() & after.keys() if before[name] != after[name]}
    assert {change["name"][4:]: change["change"] for change in changes["changes"]} == {
        **{name: "added" for name in after.keys() - before.keys()},
        **{name: "deleted" for name in before.keys() - after.keys()},
        **{name: "changed" for name in changed},
    }
    assert {change["name"][4:]: change["size_change"] for change in changes["changes"]} == {
        name: size_of(after.get(name)) - size_of(before.get(name)) for name in (before.keys() ^ after.keys()) | changed
    }

    # A dry run of keep-within names the nights within so many days of the newest one, and changes nothing.
    points = month.points()
    assert set(nights) - set(points) == QUIET_NIGHTS & set(nights)
    versions_before = run.json("ls", "src", "--versions")
    plan = run.json("forget", "src", "--keep-within", f"{calendar.within_days}d", "--dry-run")
    assert {_night_of(point["time"]): point["reasons"] for point in plan["points"] if point["keep"]} == (
        expected_points(points, within_days=calendar.within_days)
    )
    assert run.json("ls", "src", "--versions") == versions_before

    # The policy keeps exactly the versions that are the state of their name at a kept night.
    chunks_before = chunks_of_versions(chunkstore.store)
    assert {str(key) for key in chunkstore.objects()} == set().union(*chunks_before.values())
    kept_points = expected_points(points, daily=calendar.daily, weekly=calendar.weekly, monthly=calendar.monthly)
    plan = run.json("forget", "src", *calendar.policy())
    assert {_night_of(point["time"]): point["reasons"] for point in plan["points"] if point["keep"]} == kept_points
    kept = expected_kept_versions(month, kept_points)
    assert {(entry["name"], entry["version"]) for entry in plan["versions"] if entry["keep"]} == kept
    assert {(entry["name"], entry["version"]) for entry in run.json("ls", "src", "--versions")} == kept
    assert run.json("forget", "src", *calendar.policy(), "--dry-run")["removed"] == 0  # the same again: nothing
    # Snapshots whose state is gone are forgotten with it.
    assert [snapshot["id"] for snapshot in run.json("snapshots")] == [
        month.snapshots[night] for night in nights if max(p for p in points if p <= night) in kept_points
    ]

    # gc frees exactly the chunks only removed versions needed; every kept night still restores.
    needed = set().union(*(chunks_before[version] for version in kept if version in chunks_before))
    freed = set().union(*chunks_before.values()) - needed
    assert freed, "the policy should free something"
    assert run.json("gc")["chunks_deleted"] == len(freed)
    assert {str(key) for key in chunkstore.objects()} == needed
    assert run.json("verify", "--read-data")["ok"]
    for night in kept_points:
        assert restored(run, month.snapshots[night][:8], tmp_path / f"k{night}") == month.states[night]


def _night_of(local_iso: str) -> int:
    return (datetime.fromisoformat(local_iso).date() - FIRST_NIGHT).days


# ---- the command line, in its own process ------------------------------------------------
# What these check does not depend on the store's backend (the nightly test runs the same
# commands on s3:// in-process), so most run on the local store only.

LOCAL_ONLY = pytest.mark.local_only("the output and the options do not depend on the backend")


@pytest.fixture
def two_nights(chunkstore):
    """src with a.txt and b.txt on 2026-11-01; a.txt changed and b.txt deleted on 2026-11-02."""
    write(chunkstore.workdir / "src" / "a.txt", b"a, first")
    write(chunkstore.workdir / "src" / "b.txt", b"b")
    chunkstore("put", "src", "--sync", "--time", "2026-11-01T03:00Z")
    write(chunkstore.workdir / "src" / "a.txt", b"a, second")
    (chunkstore.workdir / "src" / "b.txt").unlink()
    out = chunkstore("put", "src", "--sync", "--time", "2026-11-02T03:00Z", "--verbose").out
    assert "src/b.txt: deleted" in out and "1 deleted since the last put" in out
    return chunkstore


@LOCAL_ONLY
def test_deleted_files_stay_in_the_past(two_nights, tmp_path):
    assert [line.split()[-1] for line in two_nights("ls", "src").out.splitlines()] == ["src/a.txt"]
    assert_one_error(two_nights("get", "src/b.txt", expect=3), "src/b.txt", "deleted")
    assert two_nights("get", "src/b.txt", "--as-of", "2026-11-01T12:00Z").stdout == b"b"
    snapshot = two_nights.json("snapshots", "--json")[0]["id"]
    two_nights("restore", "src", "-o", tmp_path / "then", "--as-of", snapshot[:6])
    assert read_folder(tmp_path / "then" / "src") == {"a.txt": b"a, first", "b.txt": b"b"}
    lines = two_nights("ls", "src/b.txt", "--versions").out.splitlines()
    assert [line.split()[1] for line in lines] == ["1", "deleted"]


@LOCAL_ONLY
def test_only_sync_records_deletions_and_never_for_a_missing_folder(chunkstore):
    write(chunkstore.workdir / "src" / "a", b"a")
    write(chunkstore.workdir / "src" / "b", b"b")
    chunkstore("put", "src")
    (chunkstore.workdir / "src" / "b").unlink()
    assert chunkstore.json("put", "src", "--json")["deleted"] == []
    assert chunkstore("get", "src/b").stdout == b"b"
    # A folder missing altogether is an error, not a deletion (it may be a disk not mounted).
    (chunkstore.workdir / "src" / "a").unlink()
    (chunkstore.workdir / "src").rmdir()
    assert "src" in chunkstore("put", "src", "--sync", expect=1).err
    assert [entry["name"] for entry in chunkstore.json("ls", "--json")] == ["src/a", "src/b"]


@LOCAL_ONLY
def test_snapshots_lists_every_put(two_nights):
    write(two_nights.workdir / "other", b"o")
    two_nights("put", "other", "--time", "2026-11-03")
    snapshots = two_nights.json("snapshots", "--json")
    assert [(s["paths"], s["stored"], s["deleted"]) for s in snapshots] == [
        (["src"], 2, 0),
        (["src"], 1, 1),
        (["other"], 1, 0),
    ]
    assert [s["id"] for s in two_nights.json("snapshots", "src", "--json")] == [s["id"] for s in snapshots[:2]]
    header, *rows = two_nights("snapshots").out.splitlines()
    assert header.split()[:2] == ["ID", "time"] and [row.split()[0] for row in rows] == [s["id"][:8] for s in snapshots]


@LOCAL_ONLY
def test_forget_prints_what_it_keeps_removes_and_why(two_nights):
    out = two_nights("forget", "src", "--keep-last", "1", "--dry-run").out.splitlines()
    assert out[0] == "points in time under src, newest first:"
    assert out[1].split()[0] == "keep" and out[1].endswith("last")
    assert out[2].split()[:2] == ["would", "remove"]
    assert "  keep          src/a.txt  v2  last, latest" in out
    assert "  would remove  src/a.txt  v1" in out
    assert "  keep          src/b.txt  v2 (deletion marker)  last" in out
    assert out[-1].startswith("kept 2 versions, would remove 2 (0 deletion markers)")
    removed = two_nights("forget", "src", "--keep-last", "1").out.splitlines()[-1]
    assert removed.endswith("run `chunkstore gc` to free their chunks")
    assert [(entry["name"], entry["version"]) for entry in two_nights.json("ls", "src", "--versions", "--json")] == [
        ("src/a.txt", 2),
        ("src/b.txt", 2),
    ]


def test_unknown_snapshots_are_one_line_errors(chunkstore):
    assert_one_error(
        chunkstore("restore", "src", "-o", "out", "--as-of", "deadbeef", expect=3), "no snapshot 'deadbeef'"
    )
    assert_one_error(chunkstore("diff", "--from", "2026-11-01", "--to", "0000ffff", expect=3), "no snapshot")


@LOCAL_ONLY
def test_bad_input_is_a_one_line_error(chunkstore):
    for args, fragment in (
        (("ls", "src", "--as-of", "2026-13-45"), "not a valid date"),
        (("ls", "src", "--as-of", "last tuesday"), "is not a date"),
    ):
        assert_one_error(chunkstore(*args, expect=2), fragment)
    for args, fragment in (
        (("get", "a", "--version", "1", "--as-of", "2026-11-01"), "--version and --as-of"),
        (("forget", "src"), "at least one --keep"),
        (("forget", "src", "--keep-within", "a fortnight"), "not a duration"),
        (("forget", "src", "--keep-daily", "0"), "--keep-daily"),
        (("put", "-", "--as", "x", "--sync"), "--sync"),
        (("put", "src", "--time", "noon"), "noon"),
    ):
        assert_usage_error(chunkstore(*args, expect=2), fragment)


@LOCAL_ONLY
def test_help_explains_the_history_commands(chunkstore):
    assert "restic" in chunkstore("forget", "--help").out
    assert "deletion marker" in chunkstore("put", "--help").out
    assert "snapshot" in chunkstore("restore", "--help").out
    for command in ("snapshots", "diff"):
        assert chunkstore(command, "--help").out.startswith(f"Usage: chunkstore {command}")

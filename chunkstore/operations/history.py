"""Backups over time: the snapshots put records, the state of a folder at any past time,
what changed between two times, and retention.

The catalog keeps the history (see chunkstore/backends/catalog.py): every version carries the
time it was stored (UTC), and a deletion marker is a version saying its name stopped
existing. A put records all its versions, its markers and its snapshot at one time,
the time it started, so a put is one point in time and `--as-of SNAPSHOT` is exactly
what it saw. Times are parsed and bucketed in local time and stored in UTC.

Retention (forget) works on points in time, the way restic's works on snapshots: the
points of a prefix are the distinct times its versions and markers were stored at; a
policy keeps some points (keep-last N: the N newest; keep-daily N: the newest point of
each of the N newest days that have one; and so on; keep-within D: the points after
the newest point minus D); then every version that is the state of its name at a kept
point is kept, and the others are removed. So `--as-of` any kept point restores
exactly as before, and a deleted name goes once no kept point still sees it. The latest
version of a name that exists is never removed.
"""

from __future__ import annotations

import bisect
import itertools
import re
import stat as stat_module
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from chunkstore.backends.catalog import SnapshotRecord, VersionRecord
from chunkstore.core.names import name_matches_prefix, normalize_name, normalize_prefix
from chunkstore.errors import InvalidArgumentError, NameNotFoundError, NotFoundError
from chunkstore.operations.context import StoreContext

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?")
# Snapshot IDs are 32 hex digits; a prefix this long is already unlikely to be ambiguous.
_SNAPSHOT_PREFIX = re.compile(r"[0-9a-f]{4,32}")
_TIME_FORMS = (
    "a date (2026-11-20, meaning the end of that day), a date-time (2026-11-20T03:00, local time "
    "unless it ends in Z or +HH:MM) or a snapshot ID (4 or more of its hex digits)"
)


# ---- times ------------------------------------------------------------------------------


def _to_ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def local_datetime(at_ns: int) -> datetime:
    return (_EPOCH + timedelta(microseconds=at_ns // 1000)).astimezone()


def iso_time(at_ns: int) -> str:
    """A stored time as local ISO 8601 with its offset (for JSON)."""
    return local_datetime(at_ns).isoformat(timespec="seconds")


def parse_time(text: str, *, end_of_day: bool) -> int:
    """A date or date-time, in local time unless it names its zone, as UTC nanoseconds.

    A date alone means its first instant, or with end_of_day its last one (so that
    "as of 2026-11-20" includes what was stored that day)."""
    text = text.strip()
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            if not end_of_day:
                return _to_ns(datetime(day.year, day.month, day.day).astimezone())
            following = day + timedelta(days=1)
            return _to_ns(datetime(following.year, following.month, following.day).astimezone()) - 1
        if _DATE_TIME.fullmatch(text):
            moment = datetime.fromisoformat(text)
            return _to_ns(moment if moment.tzinfo is not None else moment.astimezone())
    except (ValueError, OverflowError) as error:
        raise InvalidArgumentError(f"{text!r} is not a valid date or time ({error})") from None
    raise InvalidArgumentError(f"{text!r} is not {_TIME_FORMS}")


@dataclass(frozen=True)
class AsOf:
    """A point in time asked for by date, date-time or snapshot."""

    at_ns: int
    snapshot: SnapshotRecord | None = None

    def describe(self) -> str:
        made = f"snapshot {self.snapshot.snapshot_id[:8]} at " if self.snapshot else ""
        return made + iso_time(self.at_ns)


def find_snapshot(store: StoreContext, text: str) -> SnapshotRecord:
    """The snapshot whose ID is text or starts with it."""
    prefix = text.strip().lower()
    matches = [snapshot for snapshot in store.catalog.list_snapshots() if snapshot.snapshot_id.startswith(prefix)]
    if not matches:
        raise NotFoundError(f"no snapshot {text!r} (`chunkstore snapshots` lists them)")
    if len(matches) > 1:
        raise InvalidArgumentError(
            f"snapshot ID {text!r} is ambiguous: {len(matches)} snapshots start with it; give more of its digits"
        )
    return matches[0]


def resolve_as_of(store: StoreContext, text: str) -> AsOf:
    """--as-of: a snapshot ID (or a unique prefix of one), a date or a date-time."""
    if _SNAPSHOT_PREFIX.fullmatch(text.strip().lower()):
        snapshot = find_snapshot(store, text)
        return AsOf(snapshot.at_ns, snapshot)
    return AsOf(parse_time(text, end_of_day=True))


def snapshots(store: StoreContext, prefix: str = "") -> list[SnapshotRecord]:
    """Snapshots, oldest first; with a prefix, those whose paths hold it or lie under it."""
    prefix = normalize_prefix(prefix)
    return [
        snapshot
        for snapshot in store.catalog.list_snapshots()
        if any(name_matches_prefix(path, prefix) or name_matches_prefix(prefix, path) for path in snapshot.paths)
    ]


def snapshot_json(snapshot: SnapshotRecord) -> dict:
    return {
        "id": snapshot.snapshot_id,
        "time": iso_time(snapshot.at_ns),
        "at_ns": snapshot.at_ns,
        "host": snapshot.host,
        "paths": list(snapshot.paths),
        "stored": snapshot.stored,
        "duplicate": snapshot.duplicate,
        "unchanged": snapshot.unchanged,
        "deleted": snapshot.deleted,
        "errors": snapshot.errors,
        "added_bytes": snapshot.added_bytes,
        "added_stored_bytes": snapshot.added_stored_bytes,
        "program": snapshot.program,
    }


# ---- the past ---------------------------------------------------------------------------


def versions(
    store: StoreContext, prefix: str = "", *, all_versions: bool = False, as_of_ns: int | None = None
) -> list[VersionRecord]:
    """What `ls` shows: the latest version of each name that exists (at as_of_ns, or now), or
    with all_versions every version, deletion markers included."""
    return list(
        store.catalog.list_versions(normalize_prefix(prefix), all_versions, as_of_ns=as_of_ns, deleted=all_versions)
    )


def version_at(store: StoreContext, name: str, at_ns: int) -> VersionRecord:
    """The version name had at at_ns."""
    name = normalize_name(name)
    for record in store.catalog.list_versions(name, as_of_ns=at_ns):
        if record.name == name:
            return record
    raise NameNotFoundError(f"no file named {name!r} existed at {iso_time(at_ns)}")


@dataclass(frozen=True)
class Change:
    name: str
    kind: str  # "added", "changed" or "deleted"
    before: VersionRecord | None
    after: VersionRecord | None

    @property
    def size_change(self) -> int:
        return (self.after.size if self.after else 0) - (self.before.size if self.before else 0)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "change": self.kind,
            "before": None if self.before is None else {"version": self.before.version, "size": self.before.size},
            "after": None if self.after is None else {"version": self.after.version, "size": self.after.size},
            "size_change": self.size_change,
        }


@dataclass
class Diff:
    prefix: str
    from_ns: int
    to_ns: int | None  # None: now
    changes: list[Change]

    def of_kind(self, kind: str) -> list[Change]:
        return [change for change in self.changes if change.kind == kind]

    def size_change(self, kind: str) -> int:
        return sum(change.size_change for change in self.of_kind(kind))

    def to_json(self) -> dict:
        totals = {
            kind: {"files": len(self.of_kind(kind)), "size_change": self.size_change(kind)}
            for kind in ("added", "changed", "deleted")
        }
        return {
            "prefix": self.prefix,
            "from": iso_time(self.from_ns),
            "to": None if self.to_ns is None else iso_time(self.to_ns),
            "from_ns": self.from_ns,
            "to_ns": self.to_ns,
            "totals": totals,
            "changes": [change.to_json() for change in self.changes],
        }


def diff(store: StoreContext, prefix: str, from_ns: int, to_ns: int | None = None) -> Diff:
    """The files under prefix added, changed and deleted from one time to another (None: now), by name."""
    prefix = normalize_prefix(prefix)
    before = {record.name: record for record in store.catalog.list_versions(prefix, as_of_ns=from_ns)}
    after = {record.name: record for record in store.catalog.list_versions(prefix, as_of_ns=to_ns)}
    changes = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old is None:
            changes.append(Change(name, "added", None, new))
        elif new is None:
            changes.append(Change(name, "deleted", old, None))
        elif old.digest != new.digest or stat_module.S_IFMT(old.stat.mode) != stat_module.S_IFMT(new.stat.mode):
            changes.append(Change(name, "changed", old, new))
    return Diff(prefix, from_ns, to_ns, changes)


# ---- retention --------------------------------------------------------------------------


_DURATION = re.compile(r"(\d+)([ymwdh])")


@dataclass(frozen=True)
class Duration:
    """A span of calendar time, as restic takes it: years, months, days and hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Duration:
        """`30d`, `2w`, `6m`, `1y6m`, `12h`: y years, m months, w weeks, d days, h hours."""
        compact = text.strip().lower()
        parts = _DURATION.findall(compact)
        if not parts or "".join(number + unit for number, unit in parts) != compact:
            raise InvalidArgumentError(f"{text!r} is not a duration (examples: 30d, 2w, 6m, 1y6m, 12h)")
        amounts = {unit: 0 for unit in "ymwdh"}
        for number, unit in parts:
            amounts[unit] += int(number)
        return cls(amounts["y"], amounts["m"], amounts["w"] * 7 + amounts["d"], amounts["h"], compact)

    def before(self, at_ns: int) -> int:
        """The time this long before at_ns: years, months and days on the local calendar, then hours."""
        wall = local_datetime(at_ns).replace(tzinfo=None)
        months = wall.year * 12 + wall.month - 1 - self.years * 12 - self.months
        year, month = divmod(months, 12)
        last_day = (date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1) - timedelta(days=1)).day
        wall = wall.replace(year=year, month=month + 1, day=min(wall.day, last_day)) - timedelta(days=self.days)
        return _to_ns(wall.astimezone()) - self.hours * 3600 * 10**9


# Bucketed rules: (name, the local-time period a point falls in).
BUCKETS = (
    ("hourly", lambda moment: (moment.year, moment.month, moment.day, moment.hour)),
    ("daily", lambda moment: (moment.year, moment.month, moment.day)),
    ("weekly", lambda moment: tuple(moment.isocalendar())[:2]),
    ("monthly", lambda moment: (moment.year, moment.month)),
    ("yearly", lambda moment: moment.year),
)


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None

    def __post_init__(self):
        counts = (self.last, *(getattr(self, rule) for rule, _ in BUCKETS))
        if any(count < 0 for count in counts):
            raise InvalidArgumentError("keep counts cannot be negative")
        if not any(counts) and self.within is None:
            raise InvalidArgumentError(
                "a retention policy needs at least one keep rule "
                "(keep-last, -hourly, -daily, -weekly, -monthly, -yearly or -within)"
            )

    def reasons(self, points: Sequence[int]) -> list[list[str]]:
        """For points newest first, the rules that keep each (an empty list: not kept)."""
        reasons: list[list[str]] = [[] for _ in points]
        for index in range(min(self.last, len(points))):
            reasons[index].append("last")
        for rule, period_of in BUCKETS:
            left, previous = getattr(self, rule), None
            for index, at_ns in enumerate(points):
                if left == 0:
                    break
                period = period_of(local_datetime(at_ns))
                if period != previous:
                    reasons[index].append(rule)
                    previous, left = period, left - 1
        if self.within is not None and points:
            cutoff = self.within.before(points[0])
            for index, at_ns in enumerate(points):
                if at_ns > cutoff:
                    reasons[index].append(f"within {self.within.text}")
        return reasons

    def to_json(self) -> dict:
        rules = {"last": self.last, **{rule: getattr(self, rule) for rule, _ in BUCKETS}}
        return {
            **{rule: count for rule, count in rules.items() if count},
            **({"within": self.within.text} if self.within is not None else {}),
        }


@dataclass(frozen=True)
class Point:
    at_ns: int
    reasons: tuple[str, ...]

    @property
    def kept(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Decision:
    """A version, whether forget keeps it, and why: the rules of the kept points at which it is
    its name's state ("latest" for the latest version of a name that exists)."""

    record: VersionRecord
    reasons: tuple[str, ...]

    @property
    def kept(self) -> bool:
        return bool(self.reasons)


@dataclass
class ForgetPlan:
    prefix: str
    policy: Policy
    dry_run: bool
    points: list[Point]  # newest first
    decisions: list[Decision]  # by name, then version
    forgotten_snapshots: list[SnapshotRecord]

    @property
    def removed(self) -> list[VersionRecord]:
        return [decision.record for decision in self.decisions if not decision.kept]

    @property
    def kept(self) -> list[VersionRecord]:
        return [decision.record for decision in self.decisions if decision.kept]

    def to_json(self) -> dict:
        return {
            "prefix": self.prefix,
            "dry_run": self.dry_run,
            "policy": self.policy.to_json(),
            "points": [
                {
                    "time": iso_time(point.at_ns),
                    "at_ns": point.at_ns,
                    "keep": point.kept,
                    "reasons": list(point.reasons),
                }
                for point in self.points
            ],
            "versions": [
                {
                    "name": decision.record.name,
                    "version": decision.record.version,
                    "deleted": decision.record.deleted,
                    "size": decision.record.size,
                    "time": iso_time(decision.record.stored_at_ns),
                    "keep": decision.kept,
                    "reasons": list(decision.reasons),
                }
                for decision in self.decisions
            ],
            "forgotten_snapshots": [snapshot.snapshot_id for snapshot in self.forgotten_snapshots],
            "kept": len(self.kept),
            "removed": len(self.removed),
        }


def plan_forget(store: StoreContext, prefix: str, policy: Policy, *, dry_run: bool = True) -> ForgetPlan:
    """Decide, without changing anything, what forget keeps and removes under prefix."""
    prefix = normalize_prefix(prefix)
    records = list(store.catalog.list_versions(prefix, all_versions=True, deleted=True))
    if not records:
        raise NameNotFoundError(f"no stored file under {prefix!r}" if prefix else "the store holds no files")
    times = sorted({record.stored_at_ns for record in records}, reverse=True)
    points = [Point(at_ns, tuple(reasons)) for at_ns, reasons in zip(times, policy.reasons(times), strict=True)]
    kept_points = sorted((point for point in points if point.kept), key=lambda point: point.at_ns)
    decisions: list[Decision] = []
    for _, group in itertools.groupby(records, key=lambda record: record.name):
        decisions += _decide(list(group), kept_points)
    # A snapshot of nothing but prefix goes when its state there, the one of the last point
    # at or before it, is not kept.
    ascending = times[::-1]
    kept_times = {point.at_ns for point in kept_points}
    forgotten = []
    for snapshot in store.catalog.list_snapshots():
        if snapshot.paths and all(name_matches_prefix(path, prefix) for path in snapshot.paths):
            index = bisect.bisect_right(ascending, snapshot.at_ns)
            if index == 0 or ascending[index - 1] not in kept_times:
                forgotten.append(snapshot)
    return ForgetPlan(prefix, policy, dry_run, points, decisions, forgotten)


def _decide(versions_of_name: list[VersionRecord], kept_points: list[Point]) -> list[Decision]:
    """Keep each version that is the name's state at a kept point (its highest-numbered version
    stored by then), and the name's latest version if that is not a deletion marker."""
    by_time = sorted(versions_of_name, key=lambda record: (record.stored_at_ns, record.version))
    times = [record.stored_at_ns for record in by_time]
    state_then = list(itertools.accumulate(by_time, _higher_numbered))
    reasons: dict[int, set[str]] = {record.version: set() for record in versions_of_name}
    for point in kept_points:
        index = bisect.bisect_right(times, point.at_ns)
        if index:
            reasons[state_then[index - 1].version].update(point.reasons)
    latest = versions_of_name[-1]
    if not latest.deleted:
        reasons[latest.version].add("latest")
    return [Decision(record, tuple(sorted(reasons[record.version]))) for record in versions_of_name]


def _higher_numbered(best: VersionRecord, record: VersionRecord) -> VersionRecord:
    return record if record.version > best.version else best


def forget(store: StoreContext, prefix: str, policy: Policy, *, dry_run: bool = False) -> ForgetPlan:
    """Remove the versions (and deletion markers) under prefix that policy does not keep, and the
    snapshot records whose state they were. Like rm, this only drops references: the next gc
    frees the chunks nothing references any more."""
    plan = plan_forget(store, prefix, policy, dry_run=dry_run)
    if not dry_run:
        if plan.removed:
            store.catalog.remove_versions([(record.name, record.version) for record in plan.removed])
        if plan.forgotten_snapshots:
            store.catalog.remove_snapshots([snapshot.snapshot_id for snapshot in plan.forgotten_snapshots])
    return plan

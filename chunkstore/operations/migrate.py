"""migrate: copy every version of a store into a new storage format 2 store.

docs/design/format-v2.md, "v1 compatibility and migration". Each version's content is read from
SOURCE (every chunk checked against its ID, the whole against the version's size and digest) and
streamed into DEST's put writer (operations.put.writer_for), whose chunker cuts it anew: DEST's
chunk size and layout differ, so chunks cannot be moved as they are. Memory stays bounded:
SOURCE's reader fetches a window of chunks ahead, DEST's writer holds what its put holds.

Kept exactly: names, version numbers, each version's stat (size, mtime, mode, inode, ctime) and
stored-at time, deletion markers and the snapshot records. Contents get DEST's digests (the same
bytes as SOURCE's unless one store is encrypted, whose digests are keyed).

Version numbers. DEST's catalog numbers a name's versions 1, 2, 3, ... as they are committed;
SOURCE's may have gaps, the numbers of versions removed by rm or forget. A gap is filled with a
filler version (an empty file, or one or two zero bytes, always other than the versions on
either side of it, which the catalog would otherwise take for the same version again) that is
removed once the version after it is committed. So DEST numbers every version as SOURCE does,
and a name whose two versions of the same content were separated by a removed one keeps both.

Order: name by name, each name's versions in number order, read as the catalog lists them (one
name's versions in memory at a time). A name's history depends only on its own versions, and the
time each was stored is recorded with it, so this gives DEST the history a copy in stored order
would. Versions are committed in batches, as a put commits them (one flush of DEST's packs per
batch); a deletion marker is written when its name's earlier versions are committed.

Resumable: DEST must be a new format 2 store, or one that a migrate of SOURCE left unfinished. A
version DEST already holds under its number, with the same stat, stored-at time and marker flag
(and digest, where both stores hash alike), is skipped; a filler left by an interrupted run is
removed; any other version of DEST that SOURCE does not have stops the migrate before it writes
a thing for that name. The snapshot records are copied last, each one DEST lacks.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from chunkstore.backends.catalog import FileStat, VersionRecord
from chunkstore.errors import ConcurrentModificationError, InvalidArgumentError
from chunkstore.operations.context import StoreContext
from chunkstore.operations.put import writer_for
from chunkstore.operations.read import ChunkFetcher, check_whole, naming_errors, with_small_contents_ahead
from chunkstore.operations.results import FileResult
from chunkstore.operations.writer import PendingFile

# What fills a gap in a name's version numbers: the first of these whose DEST digest differs
# from both neighbours (three always leave one). They are told apart from real versions, should
# an interrupted run leave one, by a mode of 0 (a real version's mode has a file type; a
# deletion marker's is 0 too but is no content).
FILLER_CONTENTS = (b"", b"\0", b"\0\0")


@dataclass
class MigrateProgress:
    """What migrate reports while it runs: versions (deletion markers and skipped ones included)
    and their bytes done, of the totals in SOURCE."""

    versions_done: int
    versions_total: int
    bytes_done: int
    bytes_total: int
    current: str | None = None


@dataclass
class MigrateReport:
    """What one migrate run did."""

    source: str
    dest: str
    names: int = 0
    versions: int = 0  # versions with content copied by this run
    markers: int = 0  # deletion markers copied by this run
    skipped: int = 0  # versions and markers DEST already held
    snapshots: int = 0  # snapshot records copied by this run
    snapshots_skipped: int = 0
    logical_bytes: int = 0  # bytes of the versions copied
    new_bytes: int = 0  # plaintext of the chunks DEST stored for them
    stored_new_bytes: int = 0  # what those chunks take in DEST's packs
    seconds: float = 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "dest": self.dest,
            "names": self.names,
            "versions": self.versions,
            "markers": self.markers,
            "skipped": self.skipped,
            "snapshots": self.snapshots,
            "snapshots_skipped": self.snapshots_skipped,
            "logical_bytes": self.logical_bytes,
            "new_bytes": self.new_bytes,
            "stored_new_bytes": self.stored_new_bytes,
            "seconds": round(self.seconds, 4),
            "mb_per_second": round(self.megabytes_per_second, 2),
        }


def check_destination(source: StoreContext, dest: StoreContext) -> None:
    """Refuse a DEST that migrate cannot write: not storage format 2, or SOURCE itself."""
    if dest.config.store_id == source.config.store_id:
        raise InvalidArgumentError(f"{dest.url} is the source store itself: migrate into a new store")
    if dest.storage_format != 2:
        raise InvalidArgumentError(
            f"{dest.url} is a storage format {dest.storage_format} store: migrate copies into a new "
            "format 2 store (create it with `chunkstore --store DEST init --format 2`)"
        )


def migrate(
    source: StoreContext, dest: StoreContext, *, on_progress: Callable[[MigrateProgress], None] | None = None
) -> MigrateReport:
    """Copy every version of source into dest, a new storage format 2 store (see the module
    docstring for what is kept and how a run that stopped half-way is resumed)."""
    check_destination(source, dest)
    started = time.monotonic()
    versions_total = bytes_total = 0
    for record in source.catalog.list_versions("", all_versions=True, deleted=True):
        versions_total += 1
        bytes_total += record.size
    report = MigrateReport(source.url, dest.url)
    progress = _Progress(on_progress, versions_total, bytes_total)
    with ChunkFetcher(source) as fetcher, _Copier(dest, fetcher, report, progress) as copier:
        listing = source.catalog.list_versions("", all_versions=True, deleted=True)
        # Small files are read ahead by the fetcher's pool, as restore reads them: 6,843 versions
        # of a source tree (48 MB) took 6.0 s read one after the other, 5.1 s read ahead (medians
        # of 5, 2 busy cores). A resumed run skips most versions: it reads none ahead.
        listed = (
            with_small_contents_ahead(fetcher, listing)
            if copier.dest_was_empty
            else ((record, None) for record in listing)
        )
        for name, items in itertools.groupby(listed, key=lambda item: item[0].name):
            copier.copy_name(name, items)
        copier.commit()
    present = {snapshot.snapshot_id for snapshot in dest.catalog.list_snapshots()}
    for snapshot in source.catalog.list_snapshots():
        if snapshot.snapshot_id in present:
            report.snapshots_skipped += 1
        else:
            dest.catalog.record_snapshot(snapshot)
            report.snapshots += 1
    progress.report()
    report.seconds = time.monotonic() - started
    return report


class _Progress:
    def __init__(self, callback: Callable[[MigrateProgress], None] | None, versions_total: int, bytes_total: int):
        self._callback = callback
        self._versions_total = versions_total
        self._bytes_total = bytes_total
        self.versions_done = 0
        self.bytes_done = 0
        self.current: str | None = None

    def report(self) -> None:
        if self._callback:
            self._callback(
                MigrateProgress(
                    self.versions_done, self._versions_total, self.bytes_done, self._bytes_total, self.current
                )
            )

    def start(self, name: str) -> None:
        self.current = name
        self.report()

    def on_bytes(self, count: int) -> None:
        self.bytes_done += count
        self.report()

    def version_done(self, size_left: int = 0) -> None:
        """A version is done; size_left of its bytes were not counted as they were read."""
        self.versions_done += 1
        self.bytes_done += size_left
        self.report()


@dataclass(frozen=True)
class _Queued:
    """A version queued in DEST's writer: the number DEST must give it, and whether it is a filler."""

    number: int
    filler: bool


@dataclass(frozen=True)
class _Marker:
    name: str
    number: int
    at_ns: int


class _Copier:
    """DEST's writer and SOURCE's reader, and the versions, markers and fillers waiting for the
    next commit."""

    def __init__(self, dest: StoreContext, fetcher: ChunkFetcher, report: MigrateReport, progress: _Progress):
        self._dest = dest
        self._fetcher = fetcher
        self._report = report
        self._progress = progress
        # Unencrypted stores (and only they) give the same content the same digest.
        self._digests_comparable = not fetcher.store.encrypted and not dest.encrypted
        self.dest_was_empty = next(iter(dest.catalog.list_versions("", deleted=True)), None) is None
        self._fillers = [(content, _digest_of(dest, content)) for content in FILLER_CONTENTS]
        self._writer = writer_for(dest)
        self._queued: list[_Queued] = []
        self._markers: list[_Marker] = []
        self._fillers_to_remove: list[tuple[str, int]] = []
        # The name being copied: DEST's highest number and its digest (b"" for a marker), and
        # its latest version with content, committed and queued (the parent a put dedups against).
        self._latest_number = 0
        self._latest_digest = b""
        self._parent: VersionRecord | None = None
        self._queued_parent: VersionRecord | None = None

    def __enter__(self) -> _Copier:
        return self

    def __exit__(self, *exc_info) -> None:
        self._writer.close()

    # ---- one name ----------------------------------------------------------------------

    def copy_name(self, name: str, items: Iterable[tuple[VersionRecord, Future[bytes] | None]]) -> None:
        """Copy name's versions, in order; each comes with its content when it was read ahead
        (taken one at a time: a name's versions are as many as the read-ahead holds at most)."""
        self._latest_number, self._latest_digest = 0, b""
        self._parent = self._queued_parent = None
        existing: dict[int, VersionRecord] = {}
        if not self.dest_was_empty:
            # Nothing is read ahead for a DEST that held versions (see migrate): the name's records alone.
            items = list(items)
            existing = self._existing_in_dest(name, [record for record, _ in items])
        self._report.names += 1
        for record, content in items:
            self._progress.start(name)
            held = existing.get(record.version)
            if held is not None:
                self._check_same(held, record)
                self._report.skipped += 1
                self._progress.version_done(record.size)
                continue
            if record.version <= self._latest_number:
                raise InvalidArgumentError(
                    f"version {record.version} of {name!r} cannot be copied with its number: {self._dest.url} "
                    f"holds version {self._latest_number} of it but not this one (was it removed there?)"
                )
            if self._markers and self._markers[-1].name == name:
                # The marker must be written before anything that follows it.
                self.commit()
            if record.deleted:
                self._fill_gap(name, record.version, None, record.stored_at_ns)
                self._markers.append(_Marker(name, record.version, record.stored_at_ns))
                self._latest_number, self._latest_digest = record.version, b""
                self._progress.version_done()
            else:
                self._copy_content(record, content)
            if self._writer.commit_due():
                self.commit()

    def _existing_in_dest(self, name: str, records: Sequence[VersionRecord]) -> dict[int, VersionRecord]:
        """DEST's versions of name, checked against SOURCE's; sets the name's latest number, digest
        and parent from them, and queues the removal of fillers an interrupted run left."""
        held = {
            record.version: record
            for record in self._dest.catalog.list_versions(name, all_versions=True, deleted=True)
            if record.name == name
        }
        numbers = {record.version for record in records}
        for number, record in sorted(held.items()):
            if number not in numbers:
                if not _is_filler(record):
                    raise InvalidArgumentError(
                        f"{self._dest.url} holds version {number} of {name!r}, which the source store does not "
                        "have: migrate into a new store"
                    )
                self._fillers_to_remove.append((name, number))
            self._latest_number, self._latest_digest = number, record.digest
            if not record.deleted and number in numbers:
                self._parent = self._queued_parent = record
        return {number: record for number, record in held.items() if number in numbers}

    def _check_same(self, held: VersionRecord, record: VersionRecord) -> None:
        same = (
            held.deleted == record.deleted
            and held.stat == record.stat
            and held.stored_at_ns == record.stored_at_ns
            and (held.digest == record.digest or not self._digests_comparable)
        )
        if not same:
            raise InvalidArgumentError(
                f"version {record.version} of {record.name!r} in {self._dest.url} differs from the source "
                "store's: migrate into a new store"
            )

    def _copy_content(self, record: VersionRecord, content: Future[bytes] | None) -> None:
        stream: io.RawIOBase | io.BytesIO
        if content is None:
            stream = _VerifiedContent(self._fetcher, record)
        else:
            with naming_errors(record):
                stream = io.BytesIO(content.result())
        pending = self._writer.add_stream(
            stream,
            record.name,
            record.stat,
            self._progress.on_bytes,
            self._parent,
        )
        digest = pending.version.digest
        self._fill_gap(record.name, record.version, digest, record.stored_at_ns)
        self._queue(pending, record.version, record.stored_at_ns, filler=False)
        self._latest_number, self._latest_digest = record.version, digest
        self._queued_parent = VersionRecord(record.name, record.version, digest, record.stat, record.stored_at_ns)
        self._report.versions += 1
        self._report.logical_bytes += record.size
        self._progress.version_done()

    def _fill_gap(self, name: str, number: int, next_digest: bytes | None, at_ns: int) -> None:
        """Queue fillers for the numbers between DEST's latest version of name and number."""
        for gap in range(self._latest_number + 1, number):
            avoid = {self._latest_digest, next_digest} if gap == number - 1 else {self._latest_digest}
            content, digest = next((content, digest) for content, digest in self._fillers if digest not in avoid)
            stat = FileStat(len(content), 0, 0)
            pending = self._writer.add_stream(io.BytesIO(content), name, stat)
            self._queue(pending, gap, at_ns, filler=True)
            self._fillers_to_remove.append((name, gap))
            self._latest_number, self._latest_digest = gap, digest

    def _queue(self, pending: PendingFile, number: int, at_ns: int, *, filler: bool) -> None:
        pending.at_ns = at_ns
        self._writer.queue(pending)
        self._queued.append(_Queued(number, filler))

    # ---- commit ------------------------------------------------------------------------

    def commit(self) -> None:
        """Commit the queued versions, then write the markers that follow them, then remove the
        fillers, whose numbers are taken by then."""
        results = self._writer.commit()
        queued, self._queued = self._queued, []
        for result, expected in zip(results, queued, strict=True):
            self._check_number(result.name, result.version, expected.number, result)
            if not expected.filler:
                self._report.new_bytes += result.new_bytes
                self._report.stored_new_bytes += result.stored_new_bytes
        self._parent = self._queued_parent
        markers, self._markers = self._markers, []
        for at_ns, group in itertools.groupby(markers, key=lambda marker: marker.at_ns):
            wanted = list(group)
            written = self._dest.catalog.mark_deleted([(marker.name, marker.number - 1) for marker in wanted], at_ns)
            numbers = {record.name: record.version for record in written}
            for marker in wanted:
                self._check_number(marker.name, numbers.get(marker.name), marker.number)
            self._report.markers += len(wanted)
        fillers, self._fillers_to_remove = self._fillers_to_remove, []
        if fillers:
            self._dest.catalog.remove_versions(fillers)

    def _check_number(self, name: str, given: int | None, expected: int, result: FileResult | None = None) -> None:
        if given != expected or (result is not None and result.outcome == "unchanged"):
            raise ConcurrentModificationError(
                f"{self._dest.url} numbered a version of {name!r} {given} instead of {expected}: another "
                "writer changed it during the migrate"
            )


def _is_filler(record: VersionRecord) -> bool:
    return not record.deleted and record.stat.mode == 0 and record.stat.size < len(FILLER_CONTENTS)


def _digest_of(store: StoreContext, content: bytes) -> bytes:
    digest = store.hasher.file_hasher()
    digest.update(content)
    return digest.digest()


class _VerifiedContent(io.RawIOBase):
    """A version's content read from its store as a binary stream: each chunk checked against its
    ID as it comes (ChunkFetcher), the whole against the version's size and digest at the end;
    a mismatch raises the IntegrityError, naming the version, that get would."""

    def __init__(self, fetcher: ChunkFetcher, record: VersionRecord):
        super().__init__()
        self._record = record
        self._chunks: Iterator[bytes] = fetcher.content_chunks(record.digest)
        self._digest = fetcher.store.hasher.file_hasher()
        self._current = memoryview(b"")
        self._length = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current:
            if self._ended:
                return 0
            with naming_errors(self._record):
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._ended = True
                    check_whole(self._record, self._length, self._digest.digest())
                    return 0
            self._digest.update(chunk)
            self._length += len(chunk)
            self._current = memoryview(chunk)
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count

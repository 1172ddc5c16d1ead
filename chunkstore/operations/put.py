"""put: the one put path of the command line, the library, the web upload and the ingest
function. It walks the paths, skips unchanged files, hands the others to the writer of the
store's storage format (chunkstore.operations.writer), and records the run as a snapshot."""

from __future__ import annotations

import io
import os
import stat as stat_module
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from chunkstore.backends.catalog import SnapshotRecord, VersionRecord
from chunkstore.backends.sessions import HOST, now_ns
from chunkstore.core.chunking import Readable
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.errors import ConcurrentModificationError, NameNotFoundError, SourceError
from chunkstore.operations.context import StoreContext
from chunkstore.operations.objectput import ObjectWriter
from chunkstore.operations.packedput import PackedWriter
from chunkstore.operations.results import FileResult, Progress, PutSummary
from chunkstore.operations.walk import (
    PathArgument,
    Source,
    collect_sources,
    file_stat,
    is_unchanged,
    stored_path_and_name,
    vanished_names,
)
from chunkstore.operations.writer import ChangedWhileReading, PendingFile, Writer


def writer_for(store: StoreContext, *, at_ns: int | None = None) -> Writer:
    """The writer of the store's storage format."""
    if store.storage_format == 2:
        return PackedWriter(store, at_ns=at_ns)
    return ObjectWriter(store, at_ns=at_ns)


# ---- entry points ---------------------------------------------------------------------


def put(
    store: StoreContext,
    paths: Iterable[PathArgument],
    *,
    program: str,
    sync: bool = False,
    force_read: bool = False,
    at_ns: int | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> PutSummary:
    """Put files and folders and record the run as a snapshot (unless every file failed: then
    summary.snapshot is None). Every file gets a FileResult; unreadable ones an error result.

    program says what ran the put ("chunkstore put", "web upload", ...), for the snapshot.
    With sync, every stored name under a folder of paths that no longer exists there
    (gone, or now a folder itself) gets a deletion marker. A name put could not read,
    or below a folder it could not read, exists still and is left alone; so is every
    name under a path that is missing altogether (an unmounted disk is not a deletion).
    at_ns: the time the versions, markers and snapshot are recorded at (default: now)."""
    started = time.monotonic()
    paths = list(paths)
    at = now_ns() if at_ns is None else at_ns
    sources, problems = collect_sources(paths)
    summary = PutSummary()

    def report(results: Iterable[FileResult]) -> None:
        for result in results:
            summary.results.append(result)
            if on_result:
                on_result(result)

    report(problems)
    latest = _latest_versions(store, sources)
    total_bytes = sum(source.stat.st_size for source in sources)
    done_bytes = 0
    done_files = 0

    def progress(current: str | None) -> None:
        if on_progress:
            on_progress(Progress(done_files, len(sources), done_bytes, total_bytes, current))

    def on_bytes(count: int) -> None:
        nonlocal done_bytes
        done_bytes += count
        progress(None)

    batches = _Batches(store, at)
    try:
        for source in sources:
            progress(source.name)
            if not force_read and is_unchanged(latest.get(source.name), source.stat):
                report(
                    [
                        FileResult(
                            source.name,
                            "unchanged",
                            size=source.stat.st_size,
                            version=latest[source.name].version,
                            path=source.path,
                        )
                    ]
                )
                done_bytes += source.stat.st_size
            else:
                before = done_bytes
                report(batches.add(source, latest.get(source.name), on_bytes))
                done_bytes = before + source.stat.st_size
            done_files += 1
            if batches.writer.commit_due():
                report(batches.commit())
        report(batches.commit())
    finally:
        batches.writer.close()
    progress(None)
    if sync:
        gone = vanished_names(store.catalog, paths, {result.name for result in summary.results})
        summary.deleted = store.catalog.mark_deleted(gone, at)
    # A run in which every file failed records nothing: a snapshot of it would stand among the
    # backups (and count towards forget's --keep-last) while holding none of its files.
    failed_entirely = summary.results and summary.count("error") == len(summary.results) and not summary.deleted
    if not failed_entirely:
        names = [stored_path_and_name(item)[1] for item in paths]
        summary.snapshot = _record_snapshot(store, program, at, names, summary)
    summary.seconds = time.monotonic() - started
    return summary


def put_stream(
    store: StoreContext, stream: Readable, name: str, *, program: str, at_ns: int | None = None
) -> PutSummary:
    """Put one stream of unknown length (stdin, an upload, an S3 object) under name and record
    the run as a snapshot; its one result is summary.results[0]. program and at_ns as for put."""
    started = time.monotonic()
    name = normalize_name(name)
    at = now_ns() if at_ns is None else at_ns
    writer = writer_for(store, at_ns=at)
    try:
        pending = writer.add_stream(stream, name, None, parent=_parent_of_stream(store, name))
        writer.queue(pending)
        summary = PutSummary(writer.commit())
    finally:
        writer.close()
    summary.snapshot = _record_snapshot(store, program, at, [name], summary)
    summary.seconds = time.monotonic() - started
    return summary


class _Batches:
    """put's writer, and the files it queued since its last commit. A commit fails with
    ConcurrentModificationError, committing nothing of the batch, when a gc collected what the
    batch relies on: in format 2 a page or pack it deduplicated against (docs/design/format-v2.md,
    Protocols / Put), in either format chunks of a put stalled past its session's lease. The files
    are still there to read, so the batch is put once more by a new writer, which looks at the
    store as it is now. A second failure of the same batch is raised: a gc that died while
    sweeping fails every try until a gc finishes its round (the error says so)."""

    def __init__(self, store: StoreContext, at_ns: int):
        self._store = store
        self._at_ns = at_ns
        self.writer = writer_for(store, at_ns=at_ns)
        self._queued: list[tuple[Source, VersionRecord | None]] = []
        self._retried = False

    def add(self, source: Source, parent: VersionRecord | None, on_bytes) -> list[FileResult]:
        """Queue source; the error results of the files that could not be read (source's, or on
        a retry, any of the batch's)."""
        try:
            return self._add(source, parent, on_bytes)
        except ConcurrentModificationError as error:
            errors = self._retry(error)
            return errors + self._add(source, parent, on_bytes)

    def commit(self) -> list[FileResult]:
        """Commit the batch; the results of its files."""
        try:
            results = self.writer.commit()
        except ConcurrentModificationError as error:
            errors = self._retry(error)
            results = errors + self.writer.commit()
        self._queued.clear()
        self._retried = False
        return results

    def _add(self, source: Source, parent: VersionRecord | None, on_bytes) -> list[FileResult]:
        try:
            pending = _put_file(self.writer, source, on_bytes, parent)
        except (OSError, ChangedWhileReading, SourceError) as error:
            message = getattr(error, "strerror", None) or str(error)
            return [FileResult(source.name, "error", size=source.stat.st_size, path=source.path, error=message)]
        self.writer.queue(pending)
        self._queued.append((source, parent))
        return []

    def _retry(self, error: ConcurrentModificationError) -> list[FileResult]:
        """Put the batch's files again with a new writer; raise error if this batch was retried."""
        if self._retried:
            raise error
        self._retried = True
        failed, self.writer = self.writer, writer_for(self._store, at_ns=self._at_ns)
        failed.close()
        queued, self._queued = self._queued, []
        # Their bytes were counted in the progress already.
        return [result for source, parent in queued for result in self._add(source, parent, None)]


def _record_snapshot(
    store: StoreContext, program: str, at_ns: int, names: Sequence[str | None], summary: PutSummary
) -> SnapshotRecord:
    snapshot = SnapshotRecord(
        uuid.uuid4().hex,
        at_ns,
        HOST,
        tuple(name for name in names if name is not None),
        stored=summary.count("stored"),
        duplicate=summary.count("duplicate"),
        unchanged=summary.count("unchanged"),
        deleted=len(summary.deleted),
        errors=summary.count("error"),
        added_bytes=summary.new_bytes,
        added_stored_bytes=summary.stored_new_bytes,
        program=program,
    )
    store.catalog.record_snapshot(snapshot)
    return snapshot


def _latest_versions(store: StoreContext, sources: list[Source]) -> dict[str, VersionRecord]:
    """Latest versions of the names a put may touch, read once (not one query per file)."""
    if not sources:
        return {}
    wanted = {source.name for source in sources}
    common = os.path.commonpath([source.name for source in sources]) if len(sources) > 1 else sources[0].name
    prefix = normalize_prefix(common.replace(os.sep, "/"))
    return {record.name: record for record in store.catalog.list_versions(prefix) if record.name in wanted}


def _parent_of_stream(store: StoreContext, name: str) -> VersionRecord | None:
    """The latest version of name, for a format 2 put to deduplicate against (one catalog read;
    format 1 deduplicates chunk by chunk in the catalog and needs none)."""
    if store.storage_format == 1:
        return None
    try:
        return store.catalog.get_version(name)
    except NameNotFoundError:
        return None


def _put_file(writer: Writer, source: Source, on_bytes, parent: VersionRecord | None) -> PendingFile:
    if stat_module.S_ISLNK(source.stat.st_mode):
        return _put_symlink(writer, source)
    try:
        # Opened outside `with` so that only open's own error becomes a SourceError.
        handle = open(source.path, "rb", buffering=0)  # noqa: SIM115 - closed by the `with handle` below
    except OSError as error:
        raise SourceError(f"cannot open: {error.strerror}") from None
    with handle:
        before = os.fstat(handle.fileno())
        if not stat_module.S_ISREG(before.st_mode):
            raise SourceError("not a regular file")
        pending = writer.add_stream(handle, source.name, file_stat(before), on_bytes, parent)
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        writer.discard(pending.result)
        raise ChangedWhileReading("file changed while it was read; not stored (put it again)")
    pending.result.path = source.path
    return pending


def _put_symlink(writer: Writer, source: Source) -> PendingFile:
    """A symlink is stored as a version whose content is its target and whose mode says link."""
    try:
        target = os.fsencode(os.readlink(source.path))
        st = os.lstat(source.path)
    except OSError as error:
        raise SourceError(f"cannot read link: {error.strerror}") from None
    if not stat_module.S_ISLNK(st.st_mode):
        raise ChangedWhileReading("changed from a symlink while it was read; not stored (put it again)")
    pending = writer.add_stream(io.BytesIO(target), source.name, file_stat(st))
    pending.result.path = source.path
    return pending

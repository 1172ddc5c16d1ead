"""Duplicate objects in a bucket: what they waste, what chunking would save, and their removal.

A scan lists the bucket, groups objects by size and reads (streamed, BLAKE3) only the
objects whose size another object shares: a unique size cannot have a copy. With
chunk_level every object is read and cut into chunks as the store would, to measure what
chunk-level deduplication would save beyond whole-file duplicates.

In each group of identical objects the copy kept is the oldest (then the first key); the
others are the duplicates. delete_duplicates removes a duplicate only after comparing its
bytes with the kept copy's, both pinned to the versions the scan read (a version replaced
since is left alone), and records each removal in a JSON Lines manifest as it happens.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chunkstore.apps.bucket import PART_SIZE, ObjectReader, S3Object, delete_object, list_objects, parse_s3_url
from chunkstore.backends.aws import PRICE_SOURCE, S3_STORAGE_PER_GB_MONTH
from chunkstore.core.chunking import ChunkerSpec, make_chunker
from chunkstore.core.hashing import Hasher
from chunkstore.errors import InvalidArgumentError, ObjectChangedError, ObjectMissingError

REPORT_FORMATS = ("json", "csv", "html")
# Objects read at once; each reads PARALLEL_PARTS ranges itself, so this bounds memory
# to 4 x 32 MiB and keeps ~16 requests in flight.
OBJECTS_AT_ONCE = 4
GB = 1e9


def monthly_usd(size: int) -> float:
    return size / GB * S3_STORAGE_PER_GB_MONTH


@dataclass
class DuplicateGroup:
    digest: str
    size: int
    keep: S3Object
    duplicates: list[S3Object]

    @property
    def wasted_bytes(self) -> int:
        return self.size * len(self.duplicates)

    def to_json(self) -> dict:
        return {
            "digest": self.digest,
            "size": self.size,
            "keep": self.keep.key,
            "duplicates": [found.key for found in self.duplicates],
            "wasted_bytes": self.wasted_bytes,
            "wasted_usd_per_month": round(monthly_usd(self.wasted_bytes), 9),
        }


@dataclass
class ScanReport:
    url: str
    objects: list[S3Object] = field(default_factory=list)
    groups: list[DuplicateGroup] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # key -> digest, for the objects read
    bytes_read: int = 0
    chunk_level: dict | None = None

    @property
    def total_bytes(self) -> int:
        return sum(found.size or 0 for found in self.objects)

    @property
    def wasted_bytes(self) -> int:
        return sum(group.wasted_bytes for group in self.groups)

    def unique_objects(self) -> list[S3Object]:
        """One object per distinct content (the kept copy of each group), empty objects left out."""
        duplicates = {found.key for group in self.groups for found in group.duplicates}
        return [found for found in self.objects if found.size and found.key not in duplicates]

    def to_json(self) -> dict:
        return {
            "url": self.url,
            "objects": len(self.objects),
            "total_bytes": self.total_bytes,
            "objects_read": len(self.digests),
            "bytes_read": self.bytes_read,
            "duplicate_groups": len(self.groups),
            "duplicate_objects": sum(len(group.duplicates) for group in self.groups),
            "wasted_bytes": self.wasted_bytes,
            "wasted_usd_per_month": round(monthly_usd(self.wasted_bytes), 9),
            "price": {"s3_storage_per_gb_month_usd": S3_STORAGE_PER_GB_MONTH, "source": PRICE_SOURCE},
            "chunk_level": self.chunk_level,
            "groups": [group.to_json() for group in self.groups],
        }


class _ChunkTally:
    """Distinct chunks seen across objects (thread-safe): what a chunk store would keep."""

    def __init__(self, spec: ChunkerSpec):
        self.spec = spec
        self.chunker = make_chunker(spec)
        self.hasher = Hasher()
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self.unique_bytes = 0
        self.chunks = 0

    def add(self, chunk_id: bytes, size: int) -> None:
        # 16 bytes of a 32-byte BLAKE3 ID tell chunks apart as surely for this estimate, at half the memory.
        short = chunk_id[:16]
        with self._lock:
            self.chunks += 1
            if short not in self._seen:
                self._seen.add(short)
                self.unique_bytes += size


def object_digest(s3, found: S3Object, tally: _ChunkTally | None = None) -> str:
    """The BLAKE3 digest of one object version, feeding its chunks to tally when given."""
    digest = Hasher().file_hasher()
    with ObjectReader(s3, found) as reader:
        if tally is None:
            for block in iter(lambda: reader.read(PART_SIZE), b""):
                digest.update(block)
        else:
            for chunk in tally.chunker(reader):
                digest.update(chunk)
                tally.add(tally.hasher.chunk_id(chunk), len(chunk))
    return digest.hexdigest()


def scan_bucket(
    s3,
    url: str,
    *,
    chunk_level: bool = False,
    chunker: ChunkerSpec | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ScanReport:
    """Find every group of byte-identical objects under s3://BUCKET[/PREFIX].

    on_progress is called with the bytes of each object read."""
    bucket, prefix = parse_s3_url(url)
    report = ScanReport(url)
    by_size: dict[int, list[S3Object]] = defaultdict(list)
    for found in list_objects(s3, bucket, prefix):
        report.objects.append(found)
        # Empty objects (and the "folder/" markers consoles make) cost nothing to keep.
        if found.size:
            by_size[found.size].append(found)
    tally = _ChunkTally(chunker or ChunkerSpec.from_average()) if chunk_level else None
    to_read = [found for same in by_size.values() for found in same if chunk_level or len(same) > 1]

    def read(found: S3Object) -> tuple[S3Object, str | None]:
        try:
            digest = object_digest(s3, found, tally)
        except (ObjectMissingError, ObjectChangedError):
            return found, None  # gone or replaced since the listing: not a copy of anything now
        if on_progress:
            on_progress(found.size or 0)
        return found, digest

    by_digest: dict[str, list[S3Object]] = defaultdict(list)
    with ThreadPoolExecutor(OBJECTS_AT_ONCE, thread_name_prefix="chunkstore-scan") as pool:
        for found, digest in pool.map(read, to_read):
            if digest is not None:
                report.digests[found.key] = digest
                report.bytes_read += found.size or 0
                by_digest[digest].append(found)
    for digest, same in sorted(by_digest.items(), key=lambda item: (-(item[1][0].size or 0) * len(item[1]), item[0])):
        if len(same) > 1:
            keep, *duplicates = sorted(same, key=keep_order)
            report.groups.append(DuplicateGroup(digest, keep.size or 0, keep, duplicates))
    if tally is not None:
        report.chunk_level = _chunk_level_figures(report, by_digest, tally)
    return report


def keep_order(found: S3Object) -> tuple:
    modified = found.last_modified or datetime.max.replace(tzinfo=UTC)
    return modified, found.key


def _chunk_level_figures(report: ScanReport, by_digest: dict[str, list[S3Object]], tally: _ChunkTally) -> dict:
    unique_file_bytes = sum(same[0].size or 0 for same in by_digest.values())
    saving = unique_file_bytes - tally.unique_bytes
    return {
        "chunker": tally.spec.to_config(),
        "chunks": tally.chunks,
        "unique_file_bytes": unique_file_bytes,
        "unique_chunk_bytes": tally.unique_bytes,
        "additional_saving_bytes": saving,
        "additional_saving_usd_per_month": round(monthly_usd(saving), 9),
        "total_saving_bytes": report.wasted_bytes + saving,
    }


# ---- reports ------------------------------------------------------------------------


def report_format(path: str | Path) -> str:
    """json, csv or html, from the file name; anything else is refused before a scan starts."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in REPORT_FORMATS:
        raise InvalidArgumentError(f"report file {str(path)!r} must end in .json, .csv or .html")
    return suffix


def _rows(report: ScanReport) -> Iterable[dict]:
    for number, group in enumerate(report.groups, 1):
        for role, found in [("keep", group.keep)] + [("duplicate", dup) for dup in group.duplicates]:
            yield {
                "group": number,
                "digest": group.digest,
                "size": group.size,
                "role": role,
                "key": found.key,
                "etag": found.etag or "",
                "last_modified": found.last_modified.isoformat() if found.last_modified else "",
            }


_CSV_FIELDS = ["group", "digest", "size", "role", "key", "etag", "last_modified"]


def render_report(report: ScanReport, kind: str) -> str:
    if kind == "json":
        return json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
    if kind == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_rows(report))
        return out.getvalue()
    return _html(report)


def write_report(report: ScanReport, path: str | Path) -> None:
    Path(path).write_text(render_report(report, report_format(path)), encoding="utf-8")


def _html(report: ScanReport) -> str:
    figures = report.to_json()
    e = html.escape
    summary = [
        ("Objects", f"{figures['objects']:,} ({figures['total_bytes']:,} bytes)"),
        ("Groups of identical objects", f"{figures['duplicate_groups']:,}"),
        ("Duplicate objects", f"{figures['duplicate_objects']:,}"),
        ("Wasted", f"{figures['wasted_bytes']:,} bytes, ${figures['wasted_usd_per_month']:.4f} per month"),
    ]
    if report.chunk_level:
        chunk = report.chunk_level
        summary.append(
            (
                "Chunk-level dedup would save besides",
                f"{chunk['additional_saving_bytes']:,} bytes, "
                f"${chunk['additional_saving_usd_per_month']:.4f} per month",
            )
        )
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{e(str(row[name]))}</td>" for name in _CSV_FIELDS) + "</tr>" for row in _rows(report)
    )
    head = "".join(f"<th>{e(name)}</th>" for name in _CSV_FIELDS)
    items = "\n".join(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in summary)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Duplicate scan of {e(report.url)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head>
<body><h1>Duplicate scan of {e(report.url)}</h1>
<table>{items}</table>
<p>Prices: {e(PRICE_SOURCE)}, ${S3_STORAGE_PER_GB_MONTH} per GB-month.</p>
<h2>Groups</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""


# ---- removing duplicates ------------------------------------------------------------


@dataclass
class Removal:
    found: S3Object
    kept: S3Object
    digest: str
    outcome: str  # "would delete", "deleted", "kept: changed", "kept: differs"

    def to_json(self) -> dict:
        return {
            "bucket": self.found.bucket,
            "key": self.found.key,
            "etag": self.found.etag,
            "version_id": self.found.version_id,
            "size": self.found.size,
            "digest": self.digest,
            "kept_key": self.kept.key,
            "kept_etag": self.kept.etag,
            "outcome": self.outcome,
            "at": datetime.now(UTC).isoformat(),
        }


def same_bytes(s3, first: S3Object, second: S3Object) -> bool:
    """Compare two object versions byte for byte, streamed (ObjectChangedError or
    ObjectMissingError when either has been replaced or removed since it was listed)."""
    if first.size != second.size:
        return False
    with ObjectReader(s3, first) as one, ObjectReader(s3, second) as other:
        left, right = io.BufferedReader(one, PART_SIZE), io.BufferedReader(other, PART_SIZE)
        while True:
            block = left.read(PART_SIZE)
            if block != right.read(PART_SIZE):
                return False
            if not block:
                return True


def delete_duplicates(
    s3,
    report: ScanReport,
    *,
    dry_run: bool = True,
    manifest: str | Path | None = None,
    on_removal: Callable[[Removal], None] | None = None,
) -> list[Removal]:
    """Delete the duplicates of report (or, with dry_run, only say which would go).

    Each deletion is appended to manifest (JSON Lines) as soon as it is done, so the
    manifest is complete even if the run stops half-way."""
    if not dry_run and manifest is None:
        raise InvalidArgumentError("deleting duplicates needs a manifest file to record what it removes")
    removals = []
    with contextlib.ExitStack() as stack:
        # Opened when deleting only (a manifest is required then).
        handle = None if dry_run or manifest is None else stack.enter_context(open(manifest, "a", encoding="utf-8"))
        for group in report.groups:
            for duplicate in group.duplicates:
                removal = Removal(duplicate, group.keep, group.digest, "would delete")
                if handle is not None:
                    removal.outcome = _remove(s3, group.keep, duplicate)
                    if removal.outcome == "deleted":
                        handle.write(json.dumps(removal.to_json(), sort_keys=True) + "\n")
                        handle.flush()
                removals.append(removal)
                if on_removal:
                    on_removal(removal)
    return removals


def _remove(s3, keep: S3Object, duplicate: S3Object) -> str:
    try:
        if not same_bytes(s3, keep, duplicate):
            return "kept: differs from the kept copy"
    except (ObjectChangedError, ObjectMissingError):
        return "kept: it or the kept copy changed since the scan"
    return "deleted" if delete_object(s3, duplicate) else "kept: it changed since the scan"

"""What a put reports: each file's result, the run's summary, and progress while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from chunkstore.backends.catalog import SnapshotRecord, VersionRecord
from chunkstore.operations.history import snapshot_json


@dataclass(slots=True)
class FileResult:
    """The outcome of one file of a put."""

    name: str
    outcome: str  # "stored", "duplicate", "unchanged" or "error"
    size: int = 0
    version: int | None = None
    duplicate_of: str | None = None
    new_bytes: int = 0  # plaintext bytes of chunks this file added to the store
    stored_new_bytes: int = 0  # bytes of the objects written for them
    path: str | None = None
    error: str | None = None

    @property
    def upload_outcome(self) -> tuple[str, str | None]:
        """("stored" or "duplicate", the name it duplicates) as an upload is reported: the
        same content again under the same name, which adds no version, is a duplicate of itself."""
        if self.outcome == "unchanged":
            return "duplicate", self.name
        return self.outcome, self.duplicate_of

    @property
    def message(self) -> str:
        if self.outcome == "duplicate":
            return f"duplicate of {self.duplicate_of}"
        if self.outcome == "error":
            return f"error: {self.error}"
        return self.outcome

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "message": self.message,
            "size": self.size,
            "version": self.version,
            "duplicate_of": self.duplicate_of,
            "new_bytes": self.new_bytes,
            "stored_new_bytes": self.stored_new_bytes,
            "path": self.path,
            "error": self.error,
        }


@dataclass
class PutSummary:
    """What one put run did: every file's result, the deletion markers put --sync recorded, and
    the snapshot that records the run in the catalog."""

    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    deleted: list[VersionRecord] = field(default_factory=list)
    snapshot: SnapshotRecord | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def logical_bytes(self) -> int:
        return sum(result.size for result in self.results if result.outcome != "error")

    @property
    def read_bytes(self) -> int:
        return sum(result.size for result in self.results if result.outcome in ("stored", "duplicate"))

    @property
    def new_bytes(self) -> int:
        return sum(result.new_bytes for result in self.results)

    @property
    def stored_new_bytes(self) -> int:
        return sum(result.stored_new_bytes for result in self.results)

    @property
    def dedup_ratio(self) -> float:
        """Bytes this put read, over the new bytes it had to store."""
        return self.read_bytes / self.new_bytes if self.new_bytes else float("inf") if self.read_bytes else 1.0

    @property
    def megabytes_per_second(self) -> float:
        return self.logical_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self, *, results_as_objects: bool = False) -> dict:
        """The totals and every file's result; results_as_objects leaves the results as
        FileResult objects (each with its own to_json), for a writer that streams them."""
        return {
            "files": len(self.results),
            "stored": self.count("stored"),
            "duplicate": self.count("duplicate"),
            "unchanged": self.count("unchanged"),
            "errors": self.count("error"),
            "logical_bytes": self.logical_bytes,
            "new_bytes": self.new_bytes,
            "stored_new_bytes": self.stored_new_bytes,
            "dedup_ratio": None if self.dedup_ratio == float("inf") else round(self.dedup_ratio, 4),
            "seconds": round(self.seconds, 4),
            "mb_per_second": round(self.megabytes_per_second, 2),
            "results": self.results if results_as_objects else [result.to_json() for result in self.results],
            "deleted": [marker.name for marker in self.deleted],
            "snapshot": None if self.snapshot is None else snapshot_json(self.snapshot),
        }


@dataclass
class Progress:
    """What put reports while it runs."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str | None = None

"""Upload-triggered ingest: every object that lands in an inbox bucket is streamed into a
chunkstore under its key and reported as stored ("File processed successfully") or as a
duplicate ("Duplicate file detected", naming the stored name with the same content).

`handler(event, context)` is the AWS Lambda entry point, for S3 ObjectCreated events
delivered directly, through SQS (with partial batch failures) or through EventBridge.
`Ingestor.ingest_listing` runs the same steps over a bucket that is already full, for
`chunkstore ingest s3://INBOX/PREFIX` (backfill, and objects deferred by the function).

Per object:
  1. HEAD it, pinned to the event's version (or ETag): gone -> skipped "missing", replaced
     -> skipped "superseded" (the newer version has its own event), empty -> skipped "empty".
  2. Claim the version in the ingest ledger (ledger.py): a replay, an older event after a
     newer one, or a version another invocation is processing is refused there.
  3. Too large for what is left of this invocation -> recorded "deferred" for the batch path.
  4. Stream it into the store (ranged GETs, parallel, bounded memory: objects.py) and commit.
  5. Record the outcome in the ledger; then, if configured, delete the inbox object (that
     version only) -- after the commit, so a crash in between leaves the object to be
     processed again, never a deleted object that was not stored.

Configuration (environment variables of the function; `chunkstore ingest` has options):
  CHUNKSTORE_STORE                 the store, s3://BUCKET/PREFIX (required)
  CHUNKSTORE_INGEST_TABLE          the ledger's DynamoDB table (required in Lambda)
  CHUNKSTORE_DELETE_AFTER_INGEST   "true": delete each inbox object once it is stored
  CHUNKSTORE_INGEST_MAX_BYTES      objects above this are deferred (default 8 GiB)
  CHUNKSTORE_INGEST_MIN_MBPS       the ingest rate assumed to decide whether an object fits
                                   the time an invocation has left (default 20 MB/s)
  CHUNKSTORE_PASSPHRASE            for an encrypted store (better kept out of Lambda)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from chunkstore.apps.bucket import ObjectReader, S3Object, delete_object, head_object, list_objects, parse_s3_url
from chunkstore.apps.ingest.events import EventRecord, event_source, parse_event
from chunkstore.apps.ingest.ledger import IngestLedger
from chunkstore.apps.uploads import UPLOAD_MESSAGES
from chunkstore.backends.aws import AwsClients, error_code
from chunkstore.core.names import normalize_name
from chunkstore.errors import (
    AccessDeniedError,
    ChunkstoreError,
    IngestRetryError,
    IntegrityError,
    InvalidArgumentError,
    ObjectChangedError,
    ObjectMissingError,
    UnsupportedFormatError,
    WrongKeyError,
)
from chunkstore.store import Store

# What the snapshots of the objects the Lambda function stores say ran them.
LAMBDA_PROGRAM = "lambda ingest"

SKIP_MESSAGES = {
    "test_event": "S3 test event: nothing to ingest",
    "not_created": "not an ObjectCreated event: nothing to ingest",
    "missing": "object deleted before it was processed",
    "superseded": "a newer version of the object replaced this one (it is ingested on its own event)",
    "replay": "this version was already processed (a repeated event)",
    "empty": "zero-byte object: nothing to store",
}

# 8 GiB: at the 20 MB/s assumed below, the largest object that fits a 15-minute invocation
# with room to spare. Larger ones are deferred to `chunkstore ingest`, which has no time limit.
DEFAULT_MAX_OBJECT_BYTES = 8 * 1024**3
DEFAULT_MIN_MBPS = 20.0
# Stop taking new objects when less than this is left of an invocation: a started put that
# the timeout kills is only wasted work, but it is work repeated on every retry.
SAFETY_MS = 10_000
# How long a claim from a listing holds: no invocation timer ends it, so it is sized from
# the object, at a rate well below what ingest reaches.
LISTED_LEASE_MS = 15 * 60 * 1000
LISTED_LEASE_BYTES_PER_MS = 2_000  # 2 MB/s


@dataclass(frozen=True)
class IngestSettings:
    store_url: str
    ledger_table: str | None = None
    delete_after: bool = False
    max_object_bytes: int | None = None
    min_mbps: float = DEFAULT_MIN_MBPS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> IngestSettings:
        store_url = environ.get("CHUNKSTORE_STORE", "").strip()
        if not store_url:
            raise InvalidArgumentError("CHUNKSTORE_STORE is not set: give the store's s3://BUCKET/PREFIX")
        return cls(
            store_url=store_url,
            ledger_table=environ.get("CHUNKSTORE_INGEST_TABLE", "").strip() or None,
            delete_after=_flag(environ, "CHUNKSTORE_DELETE_AFTER_INGEST"),
            max_object_bytes=_number(environ, "CHUNKSTORE_INGEST_MAX_BYTES", int, DEFAULT_MAX_OBJECT_BYTES),
            min_mbps=_number(environ, "CHUNKSTORE_INGEST_MIN_MBPS", float, DEFAULT_MIN_MBPS),
        )


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise InvalidArgumentError(f"{name} must be true or false, not {value!r}")


def _number(environ: Mapping[str, str], name: str, kind, default):
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a number, not {value!r}") from None
    if number <= 0:
        raise InvalidArgumentError(f"{name} must be above 0, not {value!r}")
    return number


@dataclass
class IngestResult:
    """What happened to one object (or one unusable event record): a log line's fields."""

    bucket: str | None
    key: str | None
    outcome: str  # stored, duplicate, skipped, deferred, retry (try later), error
    reason: str = ""
    version_id: str | None = None
    etag: str | None = None
    size: int = 0
    name: str | None = None
    version: int | None = None
    duplicate_of: str | None = None
    new_bytes: int = 0
    stored_new_bytes: int = 0
    deleted: bool = False
    duration_ms: float = 0.0
    requests: dict = field(default_factory=dict)
    error: str | None = None
    message_id: str | None = None
    permanent: bool = False  # an error that retrying cannot fix (see permanent_error)
    recorded: str | None = None  # a replay: the outcome the ledger recorded when the version was processed

    @classmethod
    def for_object(cls, found: S3Object | None, outcome: str = "error", reason: str = "") -> IngestResult:
        if found is None:
            return cls(None, None, outcome, reason)
        return cls(found.bucket, found.key, outcome, reason, found.version_id, found.etag, found.size or 0)

    @property
    def message(self) -> str:
        if self.outcome in UPLOAD_MESSAGES:
            return UPLOAD_MESSAGES[self.outcome]
        if self.outcome == "error":
            return f"error: {self.error}"
        if self.outcome == "deferred":
            return (
                f"too large for one invocation ({self.size} bytes): left for "
                f"`chunkstore ingest s3://{self.bucket}/{self.key}`"
            )
        if self.outcome == "retry":
            return f"not processed now, retried later: {self.reason}"
        return f"skipped: {SKIP_MESSAGES.get(self.reason, self.reason)}"

    def to_json(self) -> dict:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "outcome": self.outcome,
            "message": self.message,
            "reason": self.reason or None,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "stored_name": self.name,
            "version": self.version,
            "duplicate_of": self.duplicate_of,
            "new_bytes": self.new_bytes,
            "stored_new_bytes": self.stored_new_bytes,
            "deleted": self.deleted,
            "duration_ms": round(self.duration_ms, 1),
            "requests": self.requests,
            "error": self.error,
        }


# Object errors that a retry cannot fix: S3 refuses to read an archived object (GLACIER,
# DEEP_ARCHIVE) until it is restored.
_PERMANENT_AWS_CODES = {"InvalidObjectState"}


def permanent_error(error: BaseException) -> bool:
    """Whether retrying cannot help: refused access, a bad name or key, damaged or unknown data,
    an archived object. Throttling, timeouts and other AWS errors are worth retrying."""
    if isinstance(
        error, (AccessDeniedError, InvalidArgumentError, WrongKeyError, IntegrityError, UnsupportedFormatError)
    ):
        return True
    # translate_errors raises from None, which keeps the botocore error as the context.
    return error_code(error.__context__) in _PERMANENT_AWS_CODES if error.__context__ else False


def _requests_since(before: dict, after: dict) -> dict:
    """The S3 and DynamoDB requests made between two RequestCounter snapshots, per operation."""
    made: dict[str, dict[str, int]] = {}
    for service in ("s3", "dynamodb"):
        counts = {op: n - before.get(service, {}).get(op, 0) for op, n in after.get(service, {}).items()}
        made[service] = {op: n for op, n in counts.items() if n}
    return made


class Ingestor:
    """Puts inbox objects into one store, with the ledger when there is a table for it."""

    def __init__(
        self,
        store: Store,
        settings: IngestSettings,
        *,
        program: str = LAMBDA_PROGRAM,
        clients: AwsClients | None = None,
    ):
        """program: what the snapshot of each object's put says ran it."""
        self.store = store
        self.settings = settings
        self.program = program
        # An s3:// store's clients serve the inbox too, so one counter sees every request.
        self.clients = clients or store.backend.aws_clients or AwsClients()
        self.s3 = self.clients.s3
        self.ledger = (
            IngestLedger(self.clients, settings.ledger_table, store.metadata_cipher) if settings.ledger_table else None
        )

    # ---- one object ------------------------------------------------------------------

    def ingest(self, found: S3Object, *, from_event: bool, remaining_ms: int | None = None) -> IngestResult:
        """Process one object version; never raises for a problem of the object itself
        (errors become an "error" result, which the caller retries)."""
        started = time.monotonic()
        before = self.clients.requests.snapshot()
        result = IngestResult.for_object(found)
        try:
            self._ingest(found, from_event, remaining_ms, result)
        except (ChunkstoreError, OSError) as error:
            result.outcome, result.error, result.permanent = "error", str(error), permanent_error(error)
        except Exception as error:  # noqa: BLE001 - one object's failure must not fail its batch
            result.outcome, result.error = "error", f"{type(error).__name__}: {error}"
        result.duration_ms = (time.monotonic() - started) * 1000
        result.requests = _requests_since(before, self.clients.requests.snapshot())
        return result

    def _ingest(self, found: S3Object, from_event: bool, remaining_ms: int | None, result: IngestResult) -> None:
        try:
            name = normalize_name(found.key)
        except InvalidArgumentError as error:
            result.outcome, result.reason = "skipped", f"invalid name: {error}"
            return
        try:
            current = replace(head_object(self.s3, found), sequencer=found.sequencer)
        except ObjectMissingError:
            result.outcome, result.reason = "skipped", "missing"
            return
        except ObjectChangedError:
            result.outcome, result.reason = "skipped", "superseded"
            return
        size = current.size or 0  # a HEAD always gives the length
        result.size, result.etag, result.version_id = size, current.etag, current.version_id
        if size == 0:
            result.outcome, result.reason = "skipped", "empty"
            return
        ledger, claim = self.ledger, None
        if ledger is not None:
            claim = ledger.claim(current, self._lease_ms(size, remaining_ms), from_event=from_event)
            if not claim.granted:
                result.outcome = "retry" if claim.refused == "in_progress" else "skipped"
                result.reason = claim.refused or "refused"
                result.recorded = (claim.previous or {}).get("res")
                return
        try:
            if self._too_large(size, remaining_ms):
                if ledger is not None and claim is not None:
                    ledger.defer(claim, size)
                result.outcome = "deferred"
                return
            self._put(current, name, result)
        except BaseException:
            if ledger is not None and claim is not None:
                ledger.release(claim)
            raise
        if ledger is not None and claim is not None:
            ledger.finish(claim, result.outcome, result.duplicate_of, size)
        if self.settings.delete_after:
            result.deleted = delete_object(self.s3, current)

    def _lease_ms(self, size: int, remaining_ms: int | None) -> int:
        if remaining_ms is not None:
            # The invocation ends by then whatever happens, so the claim cannot outlive a live holder.
            return remaining_ms + 5_000
        return LISTED_LEASE_MS + size // LISTED_LEASE_BYTES_PER_MS

    def above_cap(self, size: int) -> bool:
        """Larger than any invocation takes (CHUNKSTORE_INGEST_MAX_BYTES)."""
        return self.settings.max_object_bytes is not None and size > self.settings.max_object_bytes

    def fits(self, size: int, remaining_ms: int | None) -> bool:
        """Whether size can be ingested in remaining_ms at the assumed rate, the safety margin kept."""
        if remaining_ms is None:
            return True
        seconds_needed = size / (self.settings.min_mbps * 1e6)
        return seconds_needed * 1000 <= remaining_ms - SAFETY_MS

    def _too_large(self, size: int, remaining_ms: int | None) -> bool:
        return self.above_cap(size) or not self.fits(size, remaining_ms)

    def _put(self, current: S3Object, name: str, result: IngestResult) -> None:
        with ObjectReader(self.s3, current) as reader:
            put = self.store.put_stream(reader, name, program=self.program).results[0]
        result.name, result.version = put.name, put.version
        result.new_bytes, result.stored_new_bytes = put.new_bytes, put.stored_new_bytes
        result.outcome, result.duplicate_of = put.upload_outcome

    # ---- many objects ----------------------------------------------------------------

    def ingest_records(
        self, records: Iterable[EventRecord], *, remaining_ms: Callable[[], int | None] = lambda: None
    ) -> list[IngestResult]:
        results = []
        for record in records:
            left = remaining_ms()
            if record.skip is not None or record.found is None:
                result = IngestResult.for_object(record.found, "skipped", record.skip or "malformed: no object")
            elif left is not None and left < SAFETY_MS:
                result = IngestResult.for_object(record.found, "retry", "the invocation is about to time out")
            else:
                result = self.ingest(record.found, from_event=True, remaining_ms=left)
            result.message_id = record.message_id
            results.append(result)
        return results

    def ingest_listing(
        self, url: str, *, on_result: Callable[[IngestResult], None] | None = None
    ) -> list[IngestResult]:
        """Ingest every object under s3://BUCKET/PREFIX as it is now."""
        bucket, prefix = parse_s3_url(url)
        results = []
        for found in list_objects(self.s3, bucket, prefix):
            result = self.ingest(found, from_event=False)
            results.append(result)
            if on_result:
                on_result(result)
        return results


# ---- the Lambda function ------------------------------------------------------------


_ingestors: dict[IngestSettings, Ingestor] = {}


def lambda_ingestor(settings: IngestSettings) -> Ingestor:
    """One open store per configuration, kept across the invocations of a warm function."""
    if settings not in _ingestors:
        if not settings.ledger_table:
            raise InvalidArgumentError(
                "CHUNKSTORE_INGEST_TABLE is not set: events arrive more than once and "
                "out of order, and the ledger table is what orders them"
            )
        passphrase = os.environ.get("CHUNKSTORE_PASSPHRASE")
        store = Store.open(settings.store_url, passphrase=passphrase.encode() if passphrase else None)
        _ingestors[settings] = Ingestor(store, settings)
    return _ingestors[settings]


def handler(event, context) -> dict:
    """AWS Lambda entry point. For SQS batches returns {"batchItemFailures": [...]}, naming the
    messages to deliver again; otherwise {"results": [...]}, and raises IngestRetryError when an
    object must be retried."""
    from chunkstore.apps.ingest.observe import Observer

    observer = Observer.for_invocation(context)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    try:
        ingestor = lambda_ingestor(IngestSettings.from_environment())
        results = ingestor.ingest_records(parse_event(event), remaining_ms=remaining or (lambda: None))
        for result in results:
            observer.result(result)
    except Exception as error:
        observer.logger.exception("ingest failed before any object was processed", extra={"error": str(error)})
        raise
    finally:
        observer.flush()
    to_retry = [result for result in results if result.outcome in ("error", "retry")]
    if event_source(event) == "sqs":
        failed = dict.fromkeys(result.message_id for result in to_retry if result.message_id)
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
    if to_retry:
        raise IngestRetryError(f"{len(to_retry)} of {len(results)} objects must be retried")
    return {"results": [result.to_json() for result in results]}

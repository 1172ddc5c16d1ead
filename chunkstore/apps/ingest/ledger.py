"""The ingest ledger: one DynamoDB item per inbox key, so that each object version is
ingested once although S3 delivers events at least once and in any order.

Item (pk = "BUCKET/KEY"):
    ver    the version being or last processed (version ID, else ETag)
    seq    the highest event sequencer seen for the key (padded, see events.py)
    st     "processing", "done" or "deferred" (too large for the function: see ingest.py)
    lease  processing: until when (epoch ms) its holder may still be working
    tok    processing: the holder's random token; only the holder finishes or releases
    res, dup, at, size   the outcome (result), the name it duplicates, when, how large

For a store that seals its metadata (docs/design/encrypted-metadata.md), the key is a keyed
hash of "BUCKET/KEY" and `ver` one of the version, which the ledger only compares, and `dup` is
not recorded: the ledger then names no inbox key and no content (an ETag is the MD5 of an
object's bytes), and the store's own catalog says what duplicates what.

A claim is one conditional write, atomic in DynamoDB, so of two deliveries of one event
only one proceeds, and an event whose sequencer is not above the recorded one (a replay,
or an older version arriving after a newer one) is refused without touching anything.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass

from chunkstore.apps.bucket import S3Object
from chunkstore.backends.aws import AwsClients, translate_errors
from chunkstore.backends.sealed import MetadataCipher

PROCESSING, DONE, DEFERRED = "processing", "done", "deferred"
# Attribute names that are DynamoDB reserved words, written as #name in expressions.
_RESERVED = ("#lease", "#at", "#size")

# Event claims: a new key; a later event (higher sequencer); a key recorded by a backfill
# (no sequencer) holding another version; or this same version whose holder died.
_EVENT_CLAIM = (
    "attribute_not_exists(pk)"
    " OR (attribute_exists(seq) AND seq < :seq)"
    " OR (attribute_not_exists(seq) AND ver <> :ver)"
    " OR (ver = :ver AND st = :processing AND lease < :now)"
)
# Claims from a listing (backfill, deferred objects): the listing shows the current version,
# so any other version recorded is older; the same version is taken again only when it was
# deferred or its holder died. The recorded sequencer stays, so older events stay refused.
_LISTED_CLAIM = (
    "attribute_not_exists(pk)"
    " OR (st = :processing AND lease < :now)"
    " OR (st <> :processing AND (ver <> :ver OR st = :deferred))"
)


@dataclass
class Claim:
    """The right to process one object version, or why it was refused."""

    found: S3Object
    token: str | None = None  # set when granted
    refused: str | None = None  # "replay", "superseded" or "in_progress"
    previous: dict | None = None  # the item as it was when refused

    @property
    def granted(self) -> bool:
        return self.token is not None


def _now_ms() -> int:
    return int(time.time() * 1000)


class IngestLedger:
    def __init__(self, clients: AwsClients, table: str, cipher: MetadataCipher | None = None):
        """cipher: the store's, if it seals its metadata."""
        self.db = clients.dynamodb
        self.table = table
        self._cipher = cipher

    @staticmethod
    def create_table(clients: AwsClients, table: str) -> None:
        """Make the table (on-demand) if it does not exist; for tests and first runs without the template."""
        db = clients.dynamodb
        with translate_errors(f"creating DynamoDB table {table!r}"):
            with contextlib.suppress(db.exceptions.ResourceInUseException):
                db.create_table(
                    TableName=table,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                )
            db.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def _errors(self):
        return translate_errors(
            f"ingest ledger (DynamoDB table {self.table!r})",
            missing=f"DynamoDB table {self.table!r} (the ingest ledger) does not exist",
        )

    def _key(self, found: S3Object) -> dict:
        return {"pk": {"S": self._stand_in("ledger key", f"{found.bucket}/{found.key}")}}

    def _stand_in(self, purpose: str, text: str) -> str:
        return text if self._cipher is None else self._cipher.label(purpose, text)

    def claim(self, found: S3Object, lease_ms: int, *, from_event: bool) -> Claim:
        """Take found for processing for lease_ms, or say why not. Events with a sequencer
        are ordered by it; anything else (a listing, an event without one) by the listing rule."""
        token = secrets.token_hex(8)
        now = _now_ms()
        names = {"#lease": "lease"}
        values = {
            ":ver": {"S": self._stand_in("ledger version", found.identity)},
            ":processing": {"S": PROCESSING},
            ":now": {"N": str(now)},
            ":tok": {"S": token},
            ":until": {"N": str(now + lease_ms)},
        }
        update = "SET ver = :ver, st = :processing, #lease = :until, tok = :tok"
        if from_event and found.sequencer:
            condition = _EVENT_CLAIM
            values[":seq"] = {"S": found.sequencer}
            update += ", seq = :seq"
        else:
            condition = _LISTED_CLAIM
            values[":deferred"] = {"S": DEFERRED}
        condition = condition.replace("lease", "#lease")
        with self._errors():
            try:
                self.db.update_item(
                    TableName=self.table,
                    Key=self._key(found),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            except self.db.exceptions.ConditionalCheckFailedException:
                return self._refusal(found, now)
        return Claim(found, token=token)

    def _refusal(self, found: S3Object, now: int) -> Claim:
        with self._errors():
            item = self.db.get_item(TableName=self.table, Key=self._key(found), ConsistentRead=True).get("Item", {})
        state = item.get("st", {}).get("S")
        recorded_seq = item.get("seq", {}).get("S")
        if state == PROCESSING and int(item.get("lease", {}).get("N", "0")) >= now:
            refused = "in_progress"
        elif found.sequencer and recorded_seq and recorded_seq > found.sequencer:
            refused = "superseded"
        else:
            refused = "replay"
        return Claim(found, refused=refused, previous={k: next(iter(v.values())) for k, v in item.items()})

    def _update(self, claim: Claim, update: str, values: dict) -> None:
        # A failed condition is ignored: our lease ran out and another holder took the key; its
        # outcome is the one kept.
        with self._errors(), contextlib.suppress(self.db.exceptions.ConditionalCheckFailedException):
            self.db.update_item(
                TableName=self.table,
                Key=self._key(claim.found),
                UpdateExpression=update,
                ConditionExpression="tok = :tok",
                ExpressionAttributeNames={name: name[1:] for name in _RESERVED if name in update},
                ExpressionAttributeValues={":tok": {"S": claim.token}, **values},
            )

    def finish(self, claim: Claim, outcome: str, duplicate_of: str | None, size: int) -> None:
        values = {
            ":done": {"S": DONE},
            ":out": {"S": outcome},
            ":zero": {"N": "0"},
            ":at": {"N": str(_now_ms())},
            ":size": {"N": str(size)},
        }
        update = "SET st = :done, res = :out, #lease = :zero, #at = :at, #size = :size"
        if duplicate_of and self._cipher is None:
            values[":dup"] = {"S": duplicate_of}
            update += ", dup = :dup"
        self._update(claim, update + " REMOVE tok", values)

    def defer(self, claim: Claim, size: int) -> None:
        """Leave found for the batch path (`chunkstore ingest`), which claims deferred versions."""
        self._update(
            claim,
            "SET st = :deferred, #lease = :zero, #at = :at, #size = :size REMOVE tok",
            {
                ":deferred": {"S": DEFERRED},
                ":zero": {"N": "0"},
                ":at": {"N": str(_now_ms())},
                ":size": {"N": str(size)},
            },
        )

    def release(self, claim: Claim) -> None:
        """Give the claim up after a failure, so that the retry of the event may take it at once."""
        self._update(claim, "SET #lease = :zero", {":zero": {"N": "0"}})

    def get(self, found: S3Object) -> dict | None:
        with self._errors():
            item = self.db.get_item(TableName=self.table, Key=self._key(found), ConsistentRead=True).get("Item")
        return {k: next(iter(v.values())) for k, v in item.items()} if item else None

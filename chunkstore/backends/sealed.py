"""Sealed metadata: the catalog fields an encrypted store of config version 4 keeps encrypted,
and SealedCatalog, the layer that seals them on the way into any catalog and opens them on the
way out.

docs/design/encrypted-metadata.md gives the design and what stays visible. In short:

- a name is stored as its components sealed one by one with AES-SIV (deterministic), each
  bound to the sealed components before it, joined by "/": equal names give equal stored
  names, and a prefix of components seals to a prefix of the stored names under it, so
  catalogs look names up and list folders on the sealed form exactly as on plain names;
- a version's mtime, mode, inode and ctime, and a snapshot's host, paths and program, are
  sealed by the store's AEAD (a fresh key per message) and bound to the row they belong to.

SealedCatalog works over any Catalog (SQLite, DynamoDB, memory), which stores the sealed
forms as it stores plain ones: sealed names use only [A-Za-z0-9_-/], and the stat and
snapshot ciphertexts go to the `sealed` fields FileStat and SnapshotRecord keep for them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from chunkstore.backends.catalog import (
    MAX_MODE,
    Catalog,
    CommitOutcome,
    FileStat,
    NewVersion,
    SnapshotRecord,
    VersionRecord,
    WrappedCatalog,
)
from chunkstore.backends.packindex import RoundGuard
from chunkstore.backends.sessions import HOST
from chunkstore.core.crypto import Keys
from chunkstore.core.names import MAX_NAME_BYTES, is_stored_name
from chunkstore.errors import (
    CorruptObjectError,
    IntegrityError,
    InvalidArgumentError,
    NameNotFoundError,
    VersionNotFoundError,
)

_NAME_CONTEXT = b"chunkstore name 1"
_STAT_CONTEXT = b"chunkstore stat 1"
_SNAPSHOT_CONTEXT = b"chunkstore snapshot 1"
# Components are padded to a multiple of this, so a sealed name shows each component's length
# only to 16 bytes.
_PAD_TO = 16
# Folders whose sealed and opened forms are kept: a put or a listing meets the same folders
# over and over, and each component costs one AES-SIV call (1.3 us to seal, 1.0 to open).
_CACHED_FOLDERS = 4096


def _pad(data: bytes) -> bytes:
    """ISO/IEC 7816-4: 0x80, then zeros up to a multiple of _PAD_TO."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % _PAD_TO)


def _unpad(data: bytes) -> bytes:
    end = data.rfind(b"\x80")
    if end < 0 or data[end + 1 :].strip(b"\x00") or len(data) % _PAD_TO:
        raise ValueError("bad padding")
    return data[:end]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    # The unused bits of the last character are ignored by the decoder: without this, four
    # stored forms would open to the same name.
    if _b64(data) != text:
        raise ValueError("not the canonical encoding")
    return data


class MetadataCipher:
    """Seals and opens one store's names, stat data and snapshot records. Thread-safe."""

    def __init__(self, keys: Keys):
        self._siv = AESSIV(keys.names)
        self._records = keys.records
        self._labels = keys.labels
        # Per instance: the caches hold one store's names.
        self._seal_folder = functools.lru_cache(maxsize=_CACHED_FOLDERS)(self._seal_path)
        self._open_folder = functools.lru_cache(maxsize=_CACHED_FOLDERS)(self._open_path)

    # ---- names -----------------------------------------------------------------------

    def seal_name(self, name: str) -> str:
        """The stored form of a (normalised) name; InvalidArgumentError if it is too long to store."""
        sealed = self._seal_path(name)
        if len(sealed) > MAX_NAME_BYTES:
            raise InvalidArgumentError(
                f"name is too long for a store that encrypts its names ({len(sealed)} bytes sealed, "
                f"at most {MAX_NAME_BYTES}): {name[:60]!r}..."
            )
        return sealed

    def seal_prefix(self, prefix: str) -> str:
        """The stored form of a listing prefix: "" (everything) stays ""."""
        return prefix and self.seal_name(prefix)

    def _seal_path(self, path: str) -> str:
        folder, _, component = path.rpartition("/")
        sealed_folder = self._seal_folder(folder) if folder else ""
        token = _b64(self._siv.encrypt(_pad(component.encode()), [_NAME_CONTEXT, sealed_folder.encode()]))
        return f"{sealed_folder}/{token}" if sealed_folder else token

    def open_name(self, sealed: str) -> str:
        """The name a stored name seals; IntegrityError if it does not open with this store's key."""
        try:
            return self._open_path(sealed)
        except (ValueError, InvalidTag, binascii.Error, UnicodeError):
            raise IntegrityError(
                f"stored name {sealed[:80]!r} does not open with this store's key: the catalog row was "
                "altered, or comes from another store"
            ) from None

    def _open_path(self, sealed: str) -> str:
        sealed_folder, _, token = sealed.rpartition("/")
        folder = self._open_folder(sealed_folder) if sealed_folder else ""
        component = _unpad(self._siv.decrypt(_unb64(token), [_NAME_CONTEXT, sealed_folder.encode()])).decode()
        # The folder passed this check when it was opened; the name is shorter than its sealed
        # form, which the catalog held to MAX_NAME_BYTES.
        if component in ("", ".", "..") or "/" in component or "\0" in component:
            raise ValueError(f"{component!r:.80} is no component of a stored name")
        return f"{folder}/{component}" if folder else component

    def label(self, purpose: str, text: str) -> str:
        """A one-way stand-in for text where it is only compared (a session's host, an ingest
        ledger's key): keyed BLAKE3 of purpose and text, in hex."""
        return blake3.blake3(f"{purpose}\0{text}".encode(), key=self._labels).hexdigest()

    # ---- stat data -------------------------------------------------------------------

    def seal_stat(self, sealed_name: str, digest: bytes, stat: FileStat) -> FileStat:
        """stat as a sealed store's row keeps it: the size in clear, the rest sealed."""
        plaintext = json.dumps([stat.mtime_ns, stat.mode, stat.inode, stat.ctime_ns]).encode()
        return FileStat(stat.size, 0, 0, sealed=self._records.seal(plaintext, _stat_context(sealed_name, digest)))

    def open_stat(self, sealed_name: str, digest: bytes, stat: FileStat) -> FileStat:
        where = f"the stat of stored name {sealed_name[:80]!r}"
        try:
            plaintext = self._records.open(stat.sealed, _stat_context(sealed_name, digest))
            fields = json.loads(plaintext)
        except (CorruptObjectError, ValueError) as error:
            raise IntegrityError(f"{where} does not open with this store's key: {error}") from None
        if not (
            isinstance(fields, list)
            and len(fields) == 4
            and all(type(value) is int for value in fields)
            and 0 <= fields[1] <= MAX_MODE
            and fields[2] >= 0
        ):
            raise IntegrityError(f"{where} holds {fields!r:.80}, not four whole numbers")
        mtime_ns, mode, inode, ctime_ns = fields
        return FileStat(stat.size, mtime_ns, mode, inode, ctime_ns)

    # ---- snapshot records ------------------------------------------------------------

    def seal_snapshot(self, snapshot: SnapshotRecord) -> SnapshotRecord:
        plaintext = json.dumps({"host": snapshot.host, "paths": list(snapshot.paths), "program": snapshot.program})
        sealed = self._records.seal(plaintext.encode(), _snapshot_context(snapshot.snapshot_id))
        return replace(snapshot, host="", paths=(), program="", sealed=sealed)

    def open_snapshot(self, snapshot: SnapshotRecord) -> SnapshotRecord:
        where = f"snapshot {snapshot.snapshot_id[:80]!r}"
        try:
            fields = json.loads(self._records.open(snapshot.sealed, _snapshot_context(snapshot.snapshot_id)))
        except (CorruptObjectError, ValueError) as error:
            raise IntegrityError(f"{where} does not open with this store's key: {error}") from None
        host, paths, program = (fields.get(key) if isinstance(fields, dict) else None for key in _SNAPSHOT_FIELDS)
        if not (
            type(host) is str
            and type(program) is str
            and isinstance(paths, list)
            and all(type(path) is str and (path == "" or is_stored_name(path)) for path in paths)
        ):
            raise IntegrityError(f"{where} holds {fields!r:.80}, not a host, paths and a program")
        return replace(snapshot, host=host, paths=tuple(paths), program=program, sealed=b"")


_SNAPSHOT_FIELDS = ("host", "paths", "program")


def _stat_context(sealed_name: str, digest: bytes) -> bytes:
    return b"%s\0%s\0%s" % (_STAT_CONTEXT, sealed_name.encode(), digest)


def _snapshot_context(snapshot_id: str) -> bytes:
    return b"%s\0%s" % (_SNAPSHOT_CONTEXT, snapshot_id.encode())


class SealedCatalog(WrappedCatalog):
    """inner, holding cipher's sealed forms of names, stat data and snapshot records: the methods
    of the Catalog contract that take or return them are defined here; every other method (chunks,
    contents, sessions, gc, repair) and the pack index pass through unchanged."""

    def __init__(self, inner: Catalog, cipher: MetadataCipher):
        super().__init__(inner)
        self.cipher = cipher
        self.pack_index = inner.pack_index
        # Sessions record a keyed hash of the host name, which liveness compares as it compares names.
        inner.session_host = cipher.label("session host", HOST)

    # ---- what is sealed on the way in -----------------------------------------------

    def commit(
        self,
        session: str,
        versions: Sequence[NewVersion],
        at_ns: int | None = None,
        *,
        round_guard: RoundGuard | None = None,
    ) -> list[CommitOutcome]:
        sealed = []
        for new in versions:
            name = self.cipher.seal_name(new.name)
            sealed.append(replace(new, name=name, stat=self.cipher.seal_stat(name, new.digest, new.stat)))
        outcomes = self.inner.commit(session, sealed, at_ns, round_guard=round_guard)
        return [
            replace(
                outcome,
                name=new.name,
                duplicate_of=None if outcome.duplicate_of is None else self.cipher.open_name(outcome.duplicate_of),
            )
            for new, outcome in zip(versions, outcomes, strict=True)
        ]

    def record_snapshot(self, snapshot: SnapshotRecord) -> None:
        self.inner.record_snapshot(self.cipher.seal_snapshot(snapshot))

    def mark_deleted(self, expected: Sequence[tuple[str, int]], at_ns: int) -> list[VersionRecord]:
        sealed = [(self.cipher.seal_name(name), version) for name, version in expected]
        return [self._opened(record) for record in self.inner.mark_deleted(sealed, at_ns)]

    def remove_versions(self, selections: Sequence[tuple[str, int | None]]) -> list[VersionRecord]:
        sealed = [(self.cipher.seal_name(name), version) for name, version in selections]
        with _named_in_errors(
            {sealed_name: name for (sealed_name, _), (name, _) in zip(sealed, selections, strict=True)}
        ):
            removed = self.inner.remove_versions(sealed)
        return [self._opened(record) for record in removed]

    # ---- what is opened on the way out ----------------------------------------------

    def get_version(self, name: str, version: int | None = None) -> VersionRecord:
        sealed = self.cipher.seal_name(name)
        with _named_in_errors({sealed: name}):
            return self._opened(self.inner.get_version(sealed, version))

    def list_versions(
        self, prefix: str = "", all_versions: bool = False, *, as_of_ns: int | None = None, deleted: bool = False
    ) -> Iterator[VersionRecord]:
        # The inner catalog orders by sealed name; the contract orders by name, so the listing
        # is held and sorted (docs/design/encrypted-metadata.md: ~200 bytes a version).
        listed = self.inner.list_versions(
            self.cipher.seal_prefix(prefix), all_versions, as_of_ns=as_of_ns, deleted=deleted
        )
        return iter(sorted(map(self._opened, listed), key=lambda record: (record.name, record.version)))

    def find_name_with_digest(self, digest: bytes) -> str | None:
        sealed = self.inner.find_name_with_digest(digest)
        return None if sealed is None else self.cipher.open_name(sealed)

    def list_snapshots(self) -> list[SnapshotRecord]:
        return [self.cipher.open_snapshot(snapshot) for snapshot in self.inner.list_snapshots()]

    def _opened(self, record: VersionRecord) -> VersionRecord:
        # Built, not replace()d: a listing opens every version it yields, and replace() took
        # 1.58 us a record against 0.73 us to build one (timeit).
        name = self.cipher.open_name(record.name)
        stat = record.stat
        if not record.deleted:
            if not stat.sealed:
                raise IntegrityError(
                    f"version {record.version} of {name!r} has its stat in clear in a store that seals it"
                )
            stat = self.cipher.open_stat(record.name, record.digest, stat)
        return VersionRecord(name, record.version, record.digest, stat, record.stored_at_ns, record.deleted)


@contextmanager
def _named_in_errors(names: dict[str, str]) -> Iterator[None]:
    """Within it, a NameNotFoundError or VersionNotFoundError of the inner catalog is raised again
    with each sealed name in its message replaced by the name it seals."""
    try:
        yield
    except (NameNotFoundError, VersionNotFoundError) as error:
        message = str(error)
        for sealed, name in names.items():
            message = message.replace(sealed, name)
        raise type(error)(message) from None


def _passed_through(method: str):
    def call(self: SealedCatalog, *args, **kwargs):
        return getattr(self.inner, method)(*args, **kwargs)

    call.__name__ = method
    call.__doc__ = getattr(Catalog, method).__doc__
    return call


# The methods of the contract that hold no name, stat or snapshot record.
PASSED_THROUGH = sorted(Catalog.__abstractmethods__ - set(vars(SealedCatalog)))
for _method in PASSED_THROUGH:
    setattr(SealedCatalog, _method, _passed_through(_method))
SealedCatalog.__abstractmethods__ = frozenset()
del _method

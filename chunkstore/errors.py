"""The error tree. Every error the library raises on purpose is a ChunkstoreError.

Each class carries the process exit code the command line maps it to, so the
mapping lives in one place and scripts can rely on it:

    0 success, 1 other error, 2 usage, 3 not found, 4 integrity, 5 wrong key.
"""

from __future__ import annotations


class ChunkstoreError(Exception):
    """Base of every error chunkstore raises on purpose."""

    exit_code = 1


class InvalidArgumentError(ChunkstoreError, ValueError):
    """A caller passed something chunkstore cannot accept (a bad name, a bad size)."""

    exit_code = 2


class NotFoundError(ChunkstoreError, LookupError):
    """Something named by the caller does not exist."""

    exit_code = 3


class StoreNotFoundError(NotFoundError):
    """No store (no config object) at the given location."""


class NameNotFoundError(NotFoundError):
    """No stored file has that name (or no name starts with that prefix)."""


class VersionNotFoundError(NotFoundError):
    """The name exists but not at the requested version."""


class BlobNotFoundError(NotFoundError):
    """A blob store has no object under the key."""


class ObjectMissingError(NotFoundError):
    """An S3 object outside the store (one to ingest or scan), or the version asked for, no longer exists."""


class ObjectChangedError(ChunkstoreError):
    """An S3 object outside the store was replaced by another version since it was found."""


class SourceError(ChunkstoreError, OSError):
    """A file given to put cannot be read (missing, unreadable, not a regular file)."""


class StoreExistsError(ChunkstoreError):
    """init was asked to create a store where one already exists."""


class CatalogOfAnotherStoreError(ChunkstoreError):
    """The catalog the store's config names (a DynamoDB table) holds the catalog of another store.

    Like StoreExistsError, which init raises for the same table, a problem with how stores
    were set up, not damaged data."""


class StoreWriteError(ChunkstoreError):
    """Writing to the store failed; what was committed before stays, nothing more is."""


class UnsupportedFormatError(ChunkstoreError):
    """The store was written by a format version or with an algorithm this chunkstore does not know."""


class IntegrityError(ChunkstoreError):
    """Stored data is corrupt, missing or does not match what the catalog says."""

    exit_code = 4


class CorruptObjectError(IntegrityError):
    """A stored object cannot be decoded (bad magic, unknown version, bad length)."""


class MissingChunkError(IntegrityError):
    """A recipe names a chunk whose object is not in the blob store."""


class ChunkMismatchError(IntegrityError):
    """A chunk's content does not hash to its ID."""


class DigestMismatchError(IntegrityError):
    """A restored file does not hash to its recorded whole-file digest."""


class WrongKeyError(ChunkstoreError):
    """The passphrase or key file does not open this store."""

    exit_code = 5


class PassphraseRequiredError(WrongKeyError):
    """The store is encrypted and no passphrase or key file was given."""


class ConcurrentModificationError(ChunkstoreError):
    """Another process changed the store in a way this operation cannot proceed past."""


class AwsError(ChunkstoreError):
    """A request to AWS (or an S3/DynamoDB-compatible service) failed."""


class AccessDeniedError(AwsError):
    """The credentials are missing, invalid, or not allowed to do what the command needs."""


class ResourceNotFoundError(StoreNotFoundError):
    """The bucket or the table of a store does not exist."""


class IngestRetryError(ChunkstoreError):
    """Some objects of a direct or EventBridge invocation failed: raised after all the others
    were processed, so that Lambda retries the invocation (a no-op for those that succeeded)."""


class UnsafePathError(InvalidArgumentError):
    """A name would be written outside the restore folder or through a symlink."""


class RoundMovedError(ConcurrentModificationError):
    """The gc round item is no longer the value the writer read: the write that checked it wrote
    nothing. The writer reads the round again, validates what it names again, and writes again."""


class IndexItemChangedError(ConcurrentModificationError):
    """A pack or page of the pack index is not in the state a change required (gc or another
    writer changed it since it was read); nothing was changed."""

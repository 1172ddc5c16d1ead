"""A store's zstd dictionaries (storage format 2): objects under `dicts/`, loaded on first need.

docs/design/format-v2.md, The dictionary object. A dictionary is stored once, under
`dicts/<16 hex digits>`: its ID, the first 8 bytes of the store's chunk hasher over its bytes
(keyed in an encrypted store, so the name reveals nothing of them). The object is the
dictionary encoded as a chunk record with compression none, with the ID in place of a chunk
ID: sealed in an encrypted store (a dictionary is made of chunks' plaintext), the ID bound as
associated data. Records compressed with it (compression ID 2) name it by its ID; a reader
loads each dictionary it meets once per process, with one GET, and checks its hash.
"""

from __future__ import annotations

import threading

from chunkstore.backends.blobstore import BlobStore
from chunkstore.core import compression
from chunkstore.core.compression import DICTIONARY_ID_SIZE, CompressionSpec, Compressor
from chunkstore.core.crypto import NONCE_SIZE, TAG_SIZE, Sealer
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import HEADER_SIZE, ObjectCodec
from chunkstore.errors import BlobNotFoundError, CorruptObjectError

DICTIONARY_KEY_PREFIX = "dicts/"
# The largest object a dictionary is stored as (the largest dictionary, sealed): a reader reads no
# more than one byte past it, whatever an object under dicts/ has been made to hold.
MAX_OBJECT_BYTES = HEADER_SIZE + NONCE_SIZE + TAG_SIZE + compression.DICTIONARY_SIZES.stop - 1


def dictionary_key(dictionary_id: bytes) -> str:
    return f"{DICTIONARY_KEY_PREFIX}{dictionary_id.hex()}"


def dictionary_id_from_key(key: str) -> bytes | None:
    """The dictionary ID a key names, or None for keys that are not dictionary objects."""
    try:
        dictionary_id = bytes.fromhex(key.removeprefix(DICTIONARY_KEY_PREFIX))
    except ValueError:
        return None
    return dictionary_id if len(dictionary_id) == DICTIONARY_ID_SIZE and key == dictionary_key(dictionary_id) else None


class Dictionaries:
    """The dictionaries of one store; a compression.DictionarySource (call it with an ID).
    Safe to share between threads: a dictionary is fetched once, under a lock."""

    def __init__(self, blobs: BlobStore, hasher: Hasher, sealer: Sealer | None = None):
        self._blobs = blobs
        self._hasher = hasher
        self._codec = ObjectCodec(
            Compressor(CompressionSpec("none")), max_chunk_size=compression.DICTIONARY_SIZES.stop - 1, sealer=sealer
        )
        self._loaded: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def dictionary_id(self, data: bytes) -> bytes:
        return self._hasher.chunk_id(data)[:DICTIONARY_ID_SIZE]

    def stored_ids(self) -> list[bytes]:
        """The IDs of the dictionaries in the store, lowest first (one LIST of `dicts/`)."""
        found = (dictionary_id_from_key(info.key) for info in self._blobs.list(DICTIONARY_KEY_PREFIX))
        return sorted(dictionary_id for dictionary_id in found if dictionary_id is not None)

    def store(self, data: bytes) -> bytes:
        """Store a new dictionary (writing it again if it exists: same ID, same bytes); its ID."""
        dictionary_id = self.dictionary_id(data)
        self._blobs.put(dictionary_key(dictionary_id), self._codec.encode(dictionary_id, data))
        with self._lock:
            self._loaded[dictionary_id] = data
        return dictionary_id

    def __call__(self, dictionary_id: bytes) -> bytes:
        """The dictionary's bytes, checked against its ID; CorruptObjectError naming its key when it
        is missing, does not decode or does not match."""
        # Asked at every record decoded with a dictionary: a dictionary once loaded is returned
        # without the lock (one dict lookup, atomic in CPython).
        data = self._loaded.get(dictionary_id)
        if data is not None:
            return data
        with self._lock:
            data = self._loaded.get(dictionary_id)
            if data is None:
                data = self._loaded[dictionary_id] = self.fetch(dictionary_id)
        return data

    def fetch(self, dictionary_id: bytes) -> bytes:
        """The dictionary's bytes read from the store now (verify's check), as __call__ checks them."""
        key = dictionary_key(dictionary_id)
        try:
            blob = self._blobs.get(key, 0, MAX_OBJECT_BYTES + 1)
        except BlobNotFoundError:
            raise CorruptObjectError(
                f"dictionary {key} is missing: the records compressed with it cannot be read"
            ) from None
        if len(blob) > MAX_OBJECT_BYTES:
            raise CorruptObjectError(
                f"dictionary {key} is corrupt: larger than any dictionary's {MAX_OBJECT_BYTES} bytes"
            )
        try:
            data = self._codec.decode(dictionary_id, blob)
        except CorruptObjectError as error:
            raise CorruptObjectError(f"dictionary {key} is corrupt: {error}") from None
        if self.dictionary_id(data) != dictionary_id:
            raise CorruptObjectError(f"dictionary {key} is corrupt: its bytes do not hash to its ID")
        return data

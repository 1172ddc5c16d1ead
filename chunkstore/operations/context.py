"""What every operation needs of an open store, and nothing of how it was opened."""

from __future__ import annotations

import dataclasses
import os

from chunkstore.backends.blobstore import BlobStore
from chunkstore.backends.catalog import Catalog
from chunkstore.backends.dictionaries import Dictionaries
from chunkstore.backends.packs import PackFormat
from chunkstore.core.chunking import make_chunker
from chunkstore.core.compression import Compressor
from chunkstore.core.config import StoreConfig
from chunkstore.core.crypto import Keys
from chunkstore.core.hashing import Hasher
from chunkstore.core.objectformat import ObjectCodec


class StoreContext:
    """An open store as operations see it: its config, its blob store and catalog, and the
    hasher, codec and chunker that its config and keys make.

    Operations (put, get, restore, rm, gc, verify, stats, history) take one of these; the
    Store of chunkstore.store is one, with the code that opens it."""

    def __init__(self, url: str, config: StoreConfig, blobs: BlobStore, catalog: Catalog, keys: Keys | None = None):
        self.url = url
        self.config = config
        self.blobs = blobs
        self.catalog = catalog
        self.encrypted = keys is not None
        chunker = config.chunker
        if keys is None:
            self.hasher = Hasher()
        else:
            self.hasher = Hasher(keys.chunk_id, keys.file_digest)
            if chunker.name == "fastcdc2020":
                chunker = dataclasses.replace(chunker, seed=keys.chunker_seed)
        # A store's zstd dictionaries (format 2), loaded when a record names one; writers train
        # or find the one they compress with (operations/packedput.py).
        self.dictionaries = Dictionaries(blobs, self.hasher, keys.objects if keys else None)
        self.codec = ObjectCodec(
            Compressor(config.compression),
            max_chunk_size=config.chunker.max_size,
            sealer=keys.objects if keys else None,
            dictionaries=self.dictionaries,
        )
        self.chunker = make_chunker(chunker)
        # Storage format 2: what packs are written and read with, and what page IDs are keyed
        # with (the chunk-ID key: equal chunk sequences give equal page IDs only within a store).
        self.packs = PackFormat(self.codec, self.hasher, config.chunker.max_size, keys.pack_tables if keys else None)
        self.chunk_id_key = keys.chunk_id if keys else None

    def use_stored_dictionary(self) -> bool:
        """Make the codec compress with the store's dictionary where its config asks for one and
        one is stored (the lowest ID: first writers that raced each stored one); True when the
        config asks for one and none is stored, so a writer should train it. One LIST of `dicts/`,
        once per open store."""
        compressor = self.codec.compressor
        if not self.config.compression.dictionary_size or compressor.dictionary_id is not None:
            return False
        stored = self.dictionaries.stored_ids()
        if not stored:
            return True
        compressor.use_dictionary(stored[0], self.dictionaries(stored[0]))
        return False

    @property
    def storage_format(self) -> int:
        return self.config.storage_format

    @property
    def workers(self) -> int:
        """Threads worth running for chunk I/O: the blob store's concurrency, else one per core."""
        return self.blobs.concurrency or max(2, os.cpu_count() or 2)
